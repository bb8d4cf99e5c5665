// berth web UI: a small client-side app over the JSON API and its SSE streams.
// No framework, no build step, nothing loaded from the internet.
"use strict";

const app = document.getElementById("app");
const FINAL = new Set(["success", "failure", "cancelled", "error", "interrupted"]);
let token = sessionStorage.getItem("berth-token");
let pageAbort = null; // aborts the current page's streams when navigating

// ---------- API ----------
function authHeaders(extra) {
  return Object.assign({ Authorization: "Bearer " + token }, extra || {});
}
async function api(path, opts) {
  opts = opts || {};
  const r = await fetch(path, Object.assign({}, opts, { headers: authHeaders(opts.headers) }));
  if (r.status === 401) { askToken("That token was refused (unknown or revoked)."); throw new Error("unauthorized"); }
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error(body && body.message ? body.message : r.status + " " + r.statusText);
  return body;
}

// Server-Sent Events over fetch (EventSource cannot send the Authorization header).
// Reconnects with Last-Event-ID, so nothing is missed.
function follow(path, onEvent, signal) {
  let last = null;
  const live = document.getElementById("live");
  (async () => {
    while (!signal.aborted) {
      try {
        const h = authHeaders(last ? { "Last-Event-ID": String(last) } : {});
        const r = await fetch(path, { headers: h, signal });
        if (r.status === 401) { askToken("That token was refused."); return; }
        live.classList.add("on");
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "", id = null, data = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl).replace(/\r$/, "");
            buf = buf.slice(nl + 1);
            if (line.startsWith("id:")) id = Number(line.slice(3).trim());
            else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
            else if (line === "" && data) {
              if (id !== null) last = id;
              try { onEvent(JSON.parse(data)); } catch (e) { console.error(e); }
              data = ""; id = null;
            }
          }
        }
      } catch (e) {
        if (signal.aborted) return;
      }
      live.classList.remove("on");
      await new Promise((res) => setTimeout(res, 1500));
    }
  })();
}

// ---------- helpers ----------
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined && k !== false) e.append(k instanceof Node ? k : String(k));
  return e;
}
function badge(status, id) {
  return el("span", { class: "badge s-" + status, id, dataset: { status } }, status);
}
function dur(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return ms + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  const m = Math.floor(s / 60), r = Math.round(s % 60);
  if (m < 60) return m + "m " + r + "s";
  return Math.floor(m / 60) + "h " + (m % 60) + "m";
}
function ago(ms) {
  if (!ms) return "";
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.round(s / 60) + "m ago";
  if (s < 86400) return Math.round(s / 3600) + "h ago";
  return new Date(ms).toLocaleString();
}
function debounce(f, ms) {
  let t = null;
  return () => { clearTimeout(t); t = setTimeout(f, ms); };
}

// ANSI SGR → spans. Keeps colour state across chunks; strips other escape sequences.
class Ansi {
  constructor(target) { this.target = target; this.cls = []; this.pending = ""; }
  push(text) {
    text = this.pending + text;
    this.pending = "";
    const cut = text.lastIndexOf("\x1b");
    if (cut >= 0 && !/^\x1b\[[0-9;?]*[A-Za-z]/.test(text.slice(cut)) && text.length - cut < 32) {
      this.pending = text.slice(cut); text = text.slice(0, cut);
    }
    const re = /\x1b\[([0-9;?]*)([A-Za-z])/g;
    let at = 0, m;
    const frag = document.createDocumentFragment();
    while ((m = re.exec(text))) {
      this.emit(frag, text.slice(at, m.index));
      at = re.lastIndex;
      if (m[2] === "m") this.sgr(m[1]);
    }
    this.emit(frag, text.slice(at));
    this.target.append(frag);
  }
  emit(frag, s) {
    s = s.replace(/\r(?!\n)/g, "\n").replace(/\r/g, "");
    if (!s) return;
    if (!this.cls.length) frag.append(s);
    else frag.append(el("span", { class: this.cls.join(" ") }, s));
  }
  sgr(params) {
    for (const p of (params || "0").split(";").map(Number)) {
      if (p === 0) this.cls = [];
      else if (p === 1) this.cls.push("a-b");
      else if (p === 2) this.cls.push("a-d");
      else if (p === 3) this.cls.push("a-i");
      else if (p === 4) this.cls.push("a-u");
      else if ((p >= 30 && p <= 37) || (p >= 90 && p <= 97)) { this.cls = this.cls.filter((c) => !c.startsWith("f")); this.cls.push("f" + p); }
      else if (p === 39) this.cls = this.cls.filter((c) => !c.startsWith("f"));
      else if (p >= 40 && p <= 47) { this.cls = this.cls.filter((c) => !c.startsWith("b")); this.cls.push("b" + p); }
      else if (p === 49) this.cls = this.cls.filter((c) => !c.startsWith("b"));
    }
  }
}

// ---------- auth ----------
function askToken(msg) {
  const d = document.getElementById("login");
  const err = document.getElementById("login-error");
  err.hidden = !msg; err.textContent = msg || "";
  if (!d.open) d.showModal();
}
document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const value = document.getElementById("token-input").value.trim();
  const r = await fetch("/api/builds?limit=1", { headers: { Authorization: "Bearer " + value } });
  if (!r.ok) { askToken("That token was refused (unknown or revoked)."); return; }
  token = value;
  sessionStorage.setItem("berth-token", token);
  document.getElementById("login").close();
  route();
});
document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem("berth-token"); token = null; route();
});

// ---------- routing ----------
function go(path) { history.pushState(null, "", path); route(); }
window.addEventListener("popstate", route);
document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[href^='/']");
  if (a && !ev.ctrlKey && !ev.metaKey && !a.hasAttribute("download")) { ev.preventDefault(); go(a.getAttribute("href")); }
});
function route() {
  if (pageAbort) pageAbort.abort();
  pageAbort = new AbortController();
  document.getElementById("signout").hidden = !token;
  app.replaceChildren();
  if (!token) { askToken(); return; }
  const m = location.pathname.match(/^\/builds\/(\d+)$/);
  if (m) buildPage(Number(m[1]), pageAbort.signal);
  else listPage(pageAbort.signal);
}

// ---------- builds list ----------
const STATUSES = ["", "running", "queued", "success", "failure", "cancelled", "error", "interrupted"];
function listPage(signal) {
  const q = new URLSearchParams(location.search);
  const status = q.get("status") || "";
  const offset = Number(q.get("offset") || 0), limit = 25;
  const body = el("tbody");
  const pager = el("div", { class: "pager" });
  const chips = el("div", { class: "chips" }, STATUSES.map((s) =>
    el("button", { class: "chip" + (s === status ? " on" : ""), onclick: () => go("/?" + new URLSearchParams(s ? { status: s } : {})) }, s || "all")));
  app.append(
    el("div", { class: "toolbar" }, el("h1", {}, "Builds"), el("span", { class: "spacer" }), chips),
    el("div", { class: "panel" },
      el("table", { class: "builds" },
        el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "Status"), el("th", {}, "Trigger"),
          el("th", { class: "hide-s" }, "Submitted"), el("th", {}, "Duration"), el("th", { class: "hide-s" }, "By"))),
        body),
      pager));
  const load = async () => {
    const p = new URLSearchParams({ limit, offset });
    if (status) p.set("status", status);
    const page = await api("/api/builds?" + p);
    body.replaceChildren();
    if (!page.builds.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No builds yet. Submit one with POST /api/builds.")));
    for (const b of page.builds) {
      const src = b.request.source || {};
      body.append(el("tr", { dataset: { build: b.id }, onclick: () => go("/builds/" + b.id) },
        el("td", { class: "id" }, el("a", { href: "/builds/" + b.id }, "#" + b.id)),
        el("td", {}, badge(b.status), b.position ? el("span", { class: "muted" }, "  #" + b.position + " in queue") : null),
        el("td", {}, b.request.jobs && b.request.jobs.length ? b.request.jobs.join(", ") : el("span", { class: "muted" }, "~" + b.request.event),
          src.kind === "git" ? el("div", { class: "muted" }, src.url + " @ " + src.ref) : null),
        el("td", { class: "hide-s", title: new Date(b.created_at).toLocaleString() }, ago(b.created_at)),
        el("td", {}, dur(b.duration_ms)),
        el("td", { class: "hide-s muted" }, b.submitted_by)));
    }
    pager.replaceChildren(
      el("span", { class: "muted" }, page.total ? `${offset + 1}–${Math.min(offset + limit, page.total)} of ${page.total}` : ""),
      el("span", {},
        el("button", { disabled: offset === 0, onclick: () => go("/?" + new URLSearchParams(Object.assign(status ? { status } : {}, { offset: Math.max(0, offset - limit) }))) }, "Newer"), " ",
        el("button", { disabled: offset + limit >= page.total, onclick: () => go("/?" + new URLSearchParams(Object.assign(status ? { status } : {}, { offset: offset + limit }))) }, "Older")));
  };
  load().catch((e) => app.append(el("p", { class: "error" }, e.message)));
  const reload = debounce(() => load().catch(() => {}), 300);
  // Only status changes matter here; `after=now` skips the history.
  follow("/api/events?after=now", (ev) => { if (ev.event === "build_status") reload(); }, signal);
}

// ---------- build page ----------
function levels(graph) {
  const names = new Set(graph.map((j) => j.name));
  const deps = Object.fromEntries(graph.map((j) => [j.name, j.requires.map((r) => r.replace(/^~/, "")).filter((r) => names.has(r))]));
  const level = {};
  const depth = (n, seen) => {
    if (level[n] !== undefined) return level[n];
    if (seen.has(n)) return 0;
    seen.add(n);
    const d = deps[n].length ? 1 + Math.max(...deps[n].map((x) => depth(x, seen))) : 0;
    return (level[n] = d);
  };
  graph.forEach((j) => depth(j.name, new Set()));
  const cols = [];
  for (const j of graph) (cols[level[j.name]] = cols[level[j.name]] || []).push(j);
  return cols.filter(Boolean);
}

function buildPage(id, signal) {
  let build = null, selected = null, logAbort = null, logJob = null;
  const head = el("div");
  const graphBox = el("div", { class: "panel graph", id: "graph" });
  const stepsBox = el("div", { class: "panel steps", id: "steps" });
  const logPre = el("pre", { class: "log", id: "log" });
  const logTitle = el("strong", {});
  const artifacts = el("button", { id: "artifacts", onclick: () => download() }, "Download artifacts");
  const followBox = el("input", { type: "checkbox", id: "follow", checked: true });
  const logBox = el("div", { class: "panel logbox" },
    el("div", { class: "loghead" }, logTitle, el("span", { class: "actions" },
      el("label", { class: "muted" }, followBox, " follow"), artifacts)),
    logPre);
  app.append(head, graphBox, el("div", { class: "detail" }, stepsBox, logBox));

  const jobOf = (name) => (build.jobs || []).find((j) => j.name === name);
  const download = async () => {
    const r = await fetch(`/api/builds/${id}/artifacts/${encodeURIComponent(selected)}`, { headers: authHeaders() });
    if (!r.ok) { alert((await r.json()).message); return; }
    const url = URL.createObjectURL(await r.blob());
    const a = el("a", { href: url, download: `build-${id}-${selected}-artifacts.tar` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 5000);
  };

  const renderHead = () => {
    const live = !FINAL.has(build.status);
    const src = build.request.source || {};
    head.replaceChildren(...[
      el("div", { class: "build-head" },
        el("h1", {}, "Build #" + build.id, badge(build.status, "build-status"),
          build.position ? el("span", { class: "muted" }, "#" + build.position + " in queue") : null),
        el("div", { class: "toolbar" },
          live ? el("button", { class: "danger", id: "cancel", onclick: async (ev) => { ev.target.disabled = true; try { await api(`/api/builds/${id}/cancel`, { method: "POST" }); } catch (e) { alert(e.message); } } }, "Cancel") : null,
          el("button", { id: "rerun", onclick: async () => { try { const r = await api(`/api/builds/${id}/rerun`, { method: "POST" }); go("/builds/" + r.id); } catch (e) { alert(e.message); } } }, "Re-run"))),
      el("div", { class: "meta" },
        el("span", {}, "by ", el("b", {}, build.submitted_by)),
        el("span", { title: new Date(build.created_at).toLocaleString() }, "submitted ", el("b", {}, ago(build.created_at))),
        build.duration_ms !== null ? el("span", {}, live ? "running for " : "took ", el("b", {}, dur(build.duration_ms))) : null,
        el("span", {}, "source ", el("b", {}, src.kind === "git" ? `${src.url} @ ${src.ref}` : src.kind === "tar" ? `uploaded tar (${Math.ceil(src.bytes / 1024)} KiB)` : "none")),
        el("span", {}, "start ", el("b", {}, build.request.jobs.length ? build.request.jobs.join(", ") : "~" + build.request.event + (build.request.branch ? ":" + build.request.branch : ""))),
        build.rerun_of ? el("span", {}, "re-run of ", el("a", { href: "/builds/" + build.rerun_of }, "#" + build.rerun_of)) : null),
      build.message ? el("p", { class: "message" }, build.message) : null].filter(Boolean));
  };

  const renderGraph = () => {
    const cols = levels(build.graph || []);
    graphBox.replaceChildren(...cols.map((col) => el("div", { class: "stage" }, col.map((g) => {
      const j = jobOf(g.name);
      const status = j ? j.status : (FINAL.has(build.status) ? "skipped" : "pending");
      return el("button", { class: "job" + (g.name === selected ? " sel" : ""), dataset: { job: g.name, status }, onclick: () => select(g.name) },
        el("span", { class: "name" }, g.name),
        el("span", { class: "sub" }, status + (j && j.duration_ms !== null ? " · " + dur(j.duration_ms) : "")));
    }))));
  };

  const renderSteps = () => {
    const j = jobOf(selected);
    const steps = j ? j.steps : [];
    stepsBox.replaceChildren(el("h2", {}, "Steps"),
      steps.length ? el("ol", {}, steps.map((s) => el("li", { dataset: { step: s.name, status: s.status } },
        el("span", { class: "dot " + s.status }),
        el("span", { class: "step-name", title: s.name }, s.name),
        el("span", { class: "dur" }, s.status === "running" ? "running" : s.exit_code !== null && s.exit_code !== 0 ? `exit ${s.exit_code} · ${dur(s.duration_ms)}` : s.duration_ms !== null ? dur(s.duration_ms) : s.status))))
        : el("p", { class: "muted" }, j ? "No steps yet." : "This job has not started."));
    artifacts.disabled = !j || !FINAL.has(j.status) && !["timeout", "oom-killed", "skipped"].includes(j.status);
  };

  const streamLog = (name) => {
    if (logAbort) logAbort.abort();
    logAbort = new AbortController();
    logJob = name;
    logPre.replaceChildren();
    logTitle.textContent = name + " log";
    const ansi = new Ansi(logPre);
    const sig = logAbort.signal;
    (async () => {
      try {
        const r = await fetch(`/api/builds/${id}/jobs/${encodeURIComponent(name)}/log?follow=true`, { headers: authHeaders(), signal: sig });
        if (!r.ok) { logPre.textContent = (await r.json()).message; return; }
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const atBottom = logPre.scrollHeight - logPre.scrollTop - logPre.clientHeight < 40;
          ansi.push(dec.decode(value, { stream: true }));
          if (followBox.checked && atBottom) logPre.scrollTop = logPre.scrollHeight;
        }
        logPre.dataset.done = "true";
      } catch (e) { /* navigated away */ }
    })();
  };

  const select = (name) => {
    selected = name;
    renderGraph(); renderSteps();
    streamLog(name);
  };

  const refresh = async () => {
    build = await api(`/api/builds/${id}`);
    if (!selected) {
      const running = (build.jobs || []).find((j) => !FINAL.has(j.status) && j.status !== "skipped");
      const first = running || (build.jobs || [])[0] || (build.graph || [])[0];
      selected = first ? first.name : null;
    }
    renderHead(); renderGraph(); renderSteps();
    // A job's log stream ends when it ends; (re)open it once it has started.
    const j = jobOf(selected);
    if (selected && (logJob !== selected || (j && !FINAL.has(j.status) && logPre.dataset.done === "true"))) {
      delete logPre.dataset.done;
      streamLog(selected);
    }
  };
  refresh().catch((e) => app.replaceChildren(el("p", { class: "error" }, e.message)));
  const again = debounce(() => refresh().catch(() => {}), 200);
  follow(`/api/builds/${id}/events`, (ev) => {
    if (ev.type === "output") return; // the log stream shows output
    again();
  }, signal);
  signal.addEventListener("abort", () => { if (logAbort) logAbort.abort(); });
}

route();
