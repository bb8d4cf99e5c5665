//! What a build was asked to do, as stored with it (JSON in `builds.request`). Secret *names*
//! are kept so a re-run can say what it needs; their values never are.

use std::collections::BTreeMap;

use berth_pipeline::{Event, Start};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceSpec {
    /// No source: jobs start in an empty workspace.
    None,
    /// An uploaded tar, kept as `<build>/source.tar`.
    Tar { bytes: u64 },
    /// Cloned inside a container when the build starts.
    Git {
        url: String,
        #[serde(rename = "ref")]
        git_ref: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildRequest {
    /// The pipeline file's name, for messages (`screwdriver.yaml`).
    pub file: String,
    pub source: SourceSpec,
    /// Run exactly these jobs (nothing downstream); else the event decides.
    #[serde(default)]
    pub jobs: Vec<String>,
    pub event: String,
    pub branch: String,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub secret_names: Vec<String>,
    #[serde(default)]
    pub docker_mode: Option<String>,
}

pub fn parse_event(s: &str) -> Option<Event> {
    Some(match s {
        "commit" => Event::Commit,
        "pr" => Event::Pr,
        "tag" => Event::Tag,
        "release" => Event::Release,
        _ => return None,
    })
}

pub fn parse_docker_mode(s: &str) -> Option<berth_runner::DefaultDockerMode> {
    use berth_runner::DefaultDockerMode as M;
    Some(match s {
        "none" => M::None,
        "socket" => M::Socket,
        "dind" => M::Dind,
        "scoped" => M::Scoped,
        _ => return None,
    })
}

impl BuildRequest {
    pub fn start(&self) -> Start {
        if self.jobs.is_empty() {
            Start::Event {
                event: parse_event(&self.event).unwrap_or(Event::Commit),
                branch: self.branch.clone(),
                tag: self.tag.clone(),
            }
        } else {
            Start::Jobs(self.jobs.clone())
        }
    }
}
