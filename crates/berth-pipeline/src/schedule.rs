//! The job graph as a pure state machine: which jobs start, which become ready when one ends,
//! which are skipped. The runner drives it; it does no I/O.

use std::collections::HashMap;

use crate::{Event, Filter, Pipeline, Requirement};

/// What starts a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// Jobs triggered by this event (`~commit`, `~pr:branch`, `~tag:/re/` ...), then downstream.
    Event {
        event: Event,
        branch: String,
        tag: Option<String>,
    },
    /// Exactly these jobs (`--job`, repeatable), nothing downstream.
    Jobs(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectError {
    #[error("unknown job `{name}`{}", suggestion.as_ref().map(|s| format!(", did you mean `{s}`?")).unwrap_or_default())]
    UnknownJob {
        name: String,
        suggestion: Option<String>,
    },
    #[error("no job is triggered by {0}")]
    NothingTriggered(String),
}

/// A job that did not run, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub job: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Not started; may still become ready.
    Pending,
    /// Ready, not yet handed out by `take_ready`.
    Queued,
    /// Handed out, not finished.
    Running,
    Succeeded,
    Failed,
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct Scheduler {
    names: Vec<String>,
    /// Per job: local job requirements as (upstream index, any).
    upstream: Vec<Vec<(usize, bool)>>,
    /// Per job: jobs that have a local requirement on it.
    downstream: Vec<Vec<usize>>,
    state: Vec<State>,
    /// Reachable from the started jobs through requirements (the started ones included).
    reachable: Vec<bool>,
    queue: Vec<usize>,
    /// `Start::Jobs`: nothing downstream runs.
    only_selected: bool,
}

impl Scheduler {
    pub fn new(pipeline: &Pipeline, start: &Start) -> Result<Scheduler, SelectError> {
        let names: Vec<String> = pipeline.jobs.keys().cloned().collect();
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut upstream = vec![Vec::new(); names.len()];
        let mut downstream = vec![Vec::new(); names.len()];
        for (i, job) in pipeline.jobs.values().enumerate() {
            for r in &job.requires {
                if let Requirement::Job { name, any } = r
                    && let Some(&up) = index.get(name.as_str())
                    && up != i
                    && !upstream[i].contains(&(up, *any))
                {
                    upstream[i].push((up, *any));
                    if !downstream[up].contains(&i) {
                        downstream[up].push(i);
                    }
                }
            }
        }
        let (starts, only_selected) = match start {
            Start::Jobs(list) => {
                let mut starts = Vec::new();
                for name in list {
                    let Some(&i) = index.get(name.as_str()) else {
                        return Err(SelectError::UnknownJob {
                            name: name.clone(),
                            suggestion: crate::suggest::suggest(
                                name,
                                names.iter().map(String::as_str),
                            ),
                        });
                    };
                    if !starts.contains(&i) {
                        starts.push(i);
                    }
                }
                if starts.is_empty() {
                    return Err(SelectError::NothingTriggered(
                        "an empty job list".to_string(),
                    ));
                }
                (starts, true)
            }
            Start::Event { event, branch, tag } => {
                let starts: Vec<usize> = pipeline
                    .jobs
                    .values()
                    .enumerate()
                    .filter(|(_, job)| {
                        job.requires
                            .iter()
                            .any(|r| triggers(r, *event, branch, tag.as_deref()))
                    })
                    .map(|(i, _)| i)
                    .collect();
                if starts.is_empty() {
                    return Err(SelectError::NothingTriggered(describe(
                        *event,
                        branch,
                        tag.as_deref(),
                    )));
                }
                (starts, false)
            }
        };
        let mut reachable = vec![false; names.len()];
        let mut todo = starts.clone();
        while let Some(i) = todo.pop() {
            if !reachable[i] {
                reachable[i] = true;
                if !only_selected {
                    todo.extend(downstream[i].iter().copied());
                }
            }
        }
        let mut state = vec![State::Pending; names.len()];
        for &i in &starts {
            state[i] = State::Queued;
        }
        Ok(Scheduler {
            names,
            upstream,
            downstream,
            state,
            reachable,
            queue: starts,
            only_selected,
        })
    }

    /// Jobs that became ready since the last call, each returned exactly once per run.
    pub fn take_ready(&mut self) -> Vec<String> {
        let queue = std::mem::take(&mut self.queue);
        queue
            .into_iter()
            .map(|i| {
                self.state[i] = State::Running;
                self.names[i].clone()
            })
            .collect()
    }

    /// Records that a job ended.
    pub fn finish(&mut self, job: &str, succeeded: bool) {
        let Some(i) = self.names.iter().position(|n| n == job) else {
            return;
        };
        if matches!(
            self.state[i],
            State::Succeeded | State::Failed | State::Skipped(_)
        ) {
            return;
        }
        self.state[i] = if succeeded {
            State::Succeeded
        } else {
            State::Failed
        };
        if self.only_selected {
            return;
        }
        if succeeded {
            for d in self.downstream[i].clone() {
                if self.state[d] != State::Pending {
                    continue;
                }
                let any = self.upstream[d].iter().any(|&(u, any)| u == i && any);
                let plain: Vec<usize> = self.upstream[d]
                    .iter()
                    .filter(|(_, any)| !any)
                    .map(|&(u, _)| u)
                    .collect();
                let join_done =
                    !plain.is_empty() && plain.iter().all(|&u| self.state[u] == State::Succeeded);
                if any || join_done {
                    self.state[d] = State::Queued;
                    self.queue.push(d);
                }
            }
        } else {
            self.skip_downstream(i, job);
        }
    }

    /// Skips, transitively, the jobs below `from` that can no longer become ready.
    fn skip_downstream(&mut self, from: usize, failed: &str) {
        let mut todo = vec![from];
        while let Some(u) = todo.pop() {
            for d in self.downstream[u].clone() {
                let mut memo = vec![None; self.names.len()];
                if self.state[d] == State::Pending && !self.can_run(d, &mut memo) {
                    self.state[d] = State::Skipped(format!("upstream `{failed}` failed"));
                    todo.push(d);
                }
            }
        }
    }

    /// Whether a pending job may still become ready in this run. `memo` holds answers already
    /// known (`Some`) and guards against requirement cycles (in progress counts as `false`).
    fn can_run(&self, j: usize, memo: &mut Vec<Option<bool>>) -> bool {
        if let Some(known) = memo[j] {
            return known;
        }
        if !self.reachable[j] {
            return false;
        }
        memo[j] = Some(false);
        let mut possible = |u: usize| match self.state[u] {
            State::Queued | State::Running | State::Succeeded => true,
            State::Failed | State::Skipped(_) => false,
            State::Pending => self.can_run(u, memo),
        };
        let reqs = &self.upstream[j];
        let mut via_any = false;
        let mut via_join = reqs.iter().any(|(_, any)| !any);
        for &(u, any) in reqs {
            if any {
                via_any = via_any || possible(u);
            } else {
                via_join = via_join && possible(u);
            }
        }
        let result = via_any || via_join;
        memo[j] = Some(result);
        result
    }

    /// Jobs that will not run in this run (upstream failed, join never completed), with reasons.
    /// Meaningful once nothing is running and `take_ready` returns nothing (before that, jobs that
    /// may still become ready are left out).
    pub fn skipped(&self) -> Vec<Skipped> {
        let mut out = Vec::new();
        let mut memo = vec![None; self.names.len()];
        for (i, state) in self.state.iter().enumerate() {
            let reason = match state {
                State::Skipped(reason) => reason.clone(),
                State::Pending if self.reachable[i] && !self.can_run(i, &mut memo) => {
                    self.missing(i)
                }
                _ => continue,
            };
            out.push(Skipped {
                job: self.names[i].clone(),
                reason,
            });
        }
        out
    }

    /// Why a reachable pending job never became ready.
    fn missing(&self, j: usize) -> String {
        let reqs = &self.upstream[j];
        let not_done = reqs
            .iter()
            .filter(|(_, any)| !any)
            .chain(reqs.iter().filter(|(_, any)| *any))
            .find(|&&(u, _)| self.state[u] != State::Succeeded);
        match not_done {
            Some(&(u, _)) if self.state[u] == State::Failed => {
                format!("upstream `{}` failed", self.names[u])
            }
            Some(&(u, _)) => format!("requirement `{}` did not run", self.names[u]),
            None => "its requirements did not complete".to_string(),
        }
    }
}

/// Whether requirement `r` is a trigger matching this event.
fn triggers(r: &Requirement, event: Event, branch: &str, tag: Option<&str>) -> bool {
    let Requirement::Trigger { event: e, filter } = r else {
        return false;
    };
    if *e != event {
        return false;
    }
    let Some(filter) = filter else { return true };
    let subject = match event {
        Event::Commit | Event::Pr => Some(branch),
        Event::Tag | Event::Release => tag,
    };
    match (filter, subject) {
        (_, None) => false,
        (Filter::Exact(s), Some(v)) => s == v,
        (Filter::Regex(re), Some(v)) => re.is_match(v),
    }
}

fn describe(event: Event, branch: &str, tag: Option<&str>) -> String {
    match (event, tag) {
        (Event::Commit, _) => format!("~commit on branch {branch}"),
        (Event::Pr, _) => format!("~pr on branch {branch}"),
        (Event::Tag, Some(t)) => format!("~tag {t}"),
        (Event::Tag, None) => "~tag".to_string(),
        (Event::Release, Some(t)) => format!("~release {t}"),
        (Event::Release, None) => "~release".to_string(),
    }
}
