//! The job's setup archive: the source tree plus berth's step scripts, one tar that travels
//! through the Engine API (no bind mount, so a remote daemon works too): on the first step's
//! exec's standard input to the image's `tar`, or uploaded when the image has none.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_pipeline::Step;

/// Where the workspace lives inside a job container by default (Screwdriver's layout).
pub(crate) const WORKSPACE: &str = "/sd/workspace";
pub(crate) const BERTH_DIR: &str = "/sd/berth";

/// Where a job's workspace lives inside its container. Screwdriver's `/sd/workspace` by
/// default; socket mode moves it to the host directory that backs it, so that paths a step
/// hands to the host's daemon (`docker run -v "$PWD:/src"`) name the same files there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Absolute path of the workspace root (`SD_ROOT_DIR`).
    pub workspace: String,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            workspace: WORKSPACE.to_string(),
        }
    }
}

impl Layout {
    /// `SD_SOURCE_DIR`
    pub(crate) fn source(&self) -> String {
        format!("{}/src", self.workspace)
    }
    /// `SD_ARTIFACTS_DIR`
    pub(crate) fn artifacts(&self) -> String {
        format!("{}/artifacts", self.workspace)
    }
}

/// A file berth adds to the setup archive besides the source tree (e.g. TLS client certificates).
#[derive(Debug, Clone)]
pub(crate) struct ExtraFile {
    /// Absolute path inside the job container.
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Runs one step with the job's shell state: sourced by bash when the image has it, else sh.
/// Exported variables and the working directory are saved on exit (any exit) for the next step.
const WRAP: &str = r#"__berth_state=/sd/berth/state
if [ -s "$__berth_state/env" ]; then . "$__berth_state/env" 2>/dev/null; fi
cd "$(cat "$__berth_state/cwd")" 2>/dev/null || cd "$SD_SOURCE_DIR"
__berth_save() {
  __berth_rc=$?
  export -p > "$__berth_state/env.new" 2>/dev/null && mv -f "$__berth_state/env.new" "$__berth_state/env"
  pwd > "$__berth_state/cwd" 2>/dev/null
  exit $__berth_rc
}
trap __berth_save EXIT
. "$1"
"#;

/// The exec command that runs step file `path`.
pub(crate) fn step_command(path: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        "if command -v bash >/dev/null 2>&1; then exec bash /sd/berth/wrap \"$0\"; else exec sh /sd/berth/wrap \"$0\"; fi".into(),
        path.into(),
    ]
}

/// Written by [`setup_step_command`] once the setup archive is unpacked.
pub(crate) const UNPACKED: &str = "/sd/berth/unpacked";

/// [`step_command`] for the first step: first unpacks the setup archive arriving on standard
/// input with the image's `tar` (exit 254 without running the step when it cannot), then runs
/// the step with standard input from `/dev/null`, like every other step.
pub(crate) fn setup_step_command(path: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "{{ command -v tar && tar -xf - -C / && : > {UNPACKED}; }} >/dev/null 2>&1 || exit 254; \
             if command -v bash >/dev/null 2>&1; then exec bash /sd/berth/wrap \"$0\" </dev/null; else exec sh /sd/berth/wrap \"$0\" </dev/null; fi"
        ),
        path.into(),
    ]
}

pub(crate) fn step_path(index: usize) -> String {
    format!("{BERTH_DIR}/steps/{index:03}")
}

/// The files of `dir` to copy: a git checkout's tracked and untracked-not-ignored files,
/// else everything but `.git` and the `exclude`d directories.
pub(crate) fn list_source_files(dir: &Path, exclude: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    if !maybe_git_checkout(dir) {
        let mut files = Vec::new();
        walk(dir, Path::new(""), exclude, &mut files)?;
        files.sort();
        return Ok(files);
    }
    let git = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    if let Ok(out) = git
        && out.status.success()
    {
        let mut files: Vec<PathBuf> = out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
            .filter(|p| dir.join(p).symlink_metadata().is_ok())
            .filter(|p| !exclude.iter().any(|e| dir.join(p).starts_with(e)))
            .collect();
        files.sort();
        files.dedup();
        // A directory git ignores (or an empty checkout) lists nothing: copy what is there.
        if !files.is_empty() {
            return Ok(files);
        }
    }
    let mut files = Vec::new();
    walk(dir, Path::new(""), exclude, &mut files)?;
    files.sort();
    Ok(files)
}

/// Whether git could see a checkout at `dir`: a `.git` there or in an ancestor, or `GIT_DIR`
/// set. When not, git is not spawned at all (a few milliseconds of every run).
fn maybe_git_checkout(dir: &Path) -> bool {
    if std::env::var_os("GIT_DIR").is_some() {
        return true;
    }
    match std::fs::canonicalize(dir) {
        Ok(abs) => abs
            .ancestors()
            .any(|a| a.join(".git").symlink_metadata().is_ok()),
        Err(_) => true,
    }
}

fn walk(root: &Path, rel: &Path, exclude: &[PathBuf], out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let rel_path = rel.join(entry.file_name());
        let full = root.join(&rel_path);
        if entry.file_name() == ".git" || exclude.iter().any(|e| full.starts_with(e)) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            walk(root, &rel_path, exclude, out)?;
        } else {
            out.push(rel_path);
        }
    }
    Ok(())
}

fn dir_header(mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(mode);
    h.set_size(0);
    h.set_mtime(0);
    h
}

fn file_header(len: usize, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_size(len as u64);
    h.set_mtime(0);
    h
}

/// Builds the setup archive, to be extracted at `/` in the job container.
pub(crate) fn setup_archive(
    source: &Path,
    files: &[PathBuf],
    steps: &[Step],
    layout: &Layout,
    extra: &[ExtraFile],
) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let ws = layout.workspace.trim_start_matches('/').to_string();
    let mut dirs: Vec<(String, u32)> = Vec::new();
    // Parents of the workspace keep ordinary permissions; the workspace itself is open to all.
    let parts: Vec<&str> = ws.split('/').collect();
    for i in 1..parts.len() {
        dirs.push((format!("{}/", parts[..i].join("/")), 0o755));
    }
    dirs.push((format!("{ws}/"), 0o777));
    dirs.push((format!("{ws}/src/"), 0o777));
    // Empty, with mtime 0: `job::artifacts` skips the download while its mtime is still the epoch.
    dirs.push((format!("{ws}/artifacts/"), 0o777));
    for (path, mode) in [
        ("sd/", 0o755),
        ("sd/berth/", 0o755),
        ("sd/berth/steps/", 0o755),
        ("sd/berth/state/", 0o777),
    ] {
        if !dirs.iter().any(|(d, _)| d == path) {
            dirs.push((path.to_string(), mode));
        }
    }
    for (path, mode) in &dirs {
        b.append_data(&mut dir_header(*mode), path, io::empty())?;
    }
    let add = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32| {
        b.append_data(&mut file_header(data.len(), mode), path, data)
    };
    add(&mut b, "sd/berth/wrap", WRAP.as_bytes(), 0o644)?;
    add(&mut b, "sd/berth/state/env", b"", 0o666)?;
    let cwd = format!("{}\n", layout.source());
    add(&mut b, "sd/berth/state/cwd", cwd.as_bytes(), 0o666)?;
    for f in extra {
        let path = f.path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            b.append_data(&mut dir_header(0o755), format!("{parent}/"), io::empty())?;
        }
        add(&mut b, path, &f.data, f.mode)?;
    }
    for (i, step) in steps.iter().enumerate() {
        let mut text = step.command.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let path = step_path(i);
        add(&mut b, path.trim_start_matches('/'), text.as_bytes(), 0o644)?;
    }
    for rel in files {
        let full = source.join(rel);
        let name = Path::new(&ws).join("src").join(rel);
        b.append_path_with_name(&full, &name)?;
    }
    b.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_excludes_git_and_output() {
        let dir = std::env::temp_dir().join(format!("berth-src-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(".berth/builds")).unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.txt"), "a").unwrap();
        std::fs::write(dir.join("sub/b.txt"), "b").unwrap();
        std::fs::write(dir.join(".berth/builds/x.log"), "x").unwrap();
        let mut files = Vec::new();
        walk(&dir, Path::new(""), &[dir.join(".berth")], &mut files).unwrap();
        files.sort();
        assert_eq!(
            files,
            vec![PathBuf::from("a.txt"), PathBuf::from("sub/b.txt")]
        );
        let tar = setup_archive(&dir, &files, &[], &Layout::default(), &[]).unwrap();
        let mut names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.retain(|n| n.starts_with("sd/workspace/src/"));
        assert_eq!(
            names,
            vec![
                "sd/workspace/src/",
                "sd/workspace/src/a.txt",
                "sd/workspace/src/sub/b.txt"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
