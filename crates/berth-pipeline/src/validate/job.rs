//! One job section (a job under `jobs`, or `shared`) and merging `shared` into each job.

use indexmap::IndexMap;

use super::docker::{self, DindPartial, DockerKey};
use super::{Ctx, annotations, map_entries, requires, services, steps, string, unknown_key, vars};
use crate::yaml::Node;
use crate::{Job, Location, Parameter, Requirement, Service, Step};

const JOB_KEYS: &[&str] = &[
    "image",
    "steps",
    "requires",
    "environment",
    "secrets",
    "annotations",
    "settings",
    "description",
    "parameters",
    "sourcePaths",
    "services",
    "docker",
    "dind",
    "blockedBy",
    "freezeWindows",
    "template",
    "stages",
];

/// What one section says, before `shared` is merged in.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub image: Option<String>,
    pub description: Option<String>,
    pub steps: Option<Vec<Step>>,
    pub requires: Vec<(Requirement, Location)>,
    pub environment: IndexMap<String, String>,
    pub secrets: Vec<String>,
    pub annotations: IndexMap<String, Node>,
    pub parameters: IndexMap<String, Parameter>,
    pub services: Option<Vec<Service>>,
    pub docker: Option<(DockerKey, Location)>,
    pub dind: Option<(DindPartial, Location)>,
    /// Keys an unknown key was probably meant to be (no "missing" error for those).
    pub misspelt: Vec<String>,
}

impl Section {
    pub fn empty() -> Self {
        Section {
            image: None,
            description: None,
            steps: None,
            requires: Vec::new(),
            environment: IndexMap::new(),
            secrets: Vec::new(),
            annotations: IndexMap::new(),
            parameters: IndexMap::new(),
            services: None,
            docker: None,
            dind: None,
            misspelt: Vec::new(),
        }
    }
}

/// Reads a job section; `job` is the job's name, `None` for `shared`.
pub(crate) fn section(cx: &mut Ctx, node: &Node, job: Option<&str>) -> Section {
    let mut s = Section::empty();
    let what = match job {
        Some(name) => format!("job `{name}`"),
        None => "shared".to_string(),
    };
    let entries = map_entries(cx, node, &what);
    for (k, v) in entries {
        let key = k.key_text();
        match key.as_str() {
            "image" => {
                s.image = string(cx, v, "image");
                if s.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
                    cx.error(v.location, "`image` must not be empty");
                }
            }
            "description" => {
                s.description = v.scalar_text().or_else(|| {
                    cx.error(
                        v.location,
                        format!("`description` must be a string, found {}", v.type_name()),
                    );
                    None
                });
            }
            "steps" => s.steps = Some(steps::steps(cx, v)),
            "requires" if job.is_none() => {
                cx.error(k.location, "`requires` is not allowed in `shared`");
            }
            "requires" => s.requires = requires::requires(cx, v),
            "environment" => s.environment = vars::environment(cx, v, "environment"),
            "secrets" => s.secrets = vars::secrets(cx, v),
            "annotations" => {
                s.annotations = map_entries(cx, v, "annotations")
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.clone()))
                    .collect();
            }
            "parameters" => s.parameters = vars::parameters(cx, v),
            "services" => s.services = Some(services::services(cx, v)),
            "docker" => s.docker = docker::docker_key(cx, v).map(|d| (d, v.location)),
            "dind" => s.dind = docker::dind(cx, v).map(|d| (d, k.location)),
            "settings" | "sourcePaths" | "blockedBy" | "freezeWindows" => {
                cx.warning(k.location, format!("`{key}` is not applied by local runs"));
            }
            "template" | "stages" => cx.error(k.location, format!("`{key}` is not supported yet")),
            _ => s.misspelt.extend(unknown_key(cx, k, JOB_KEYS)),
        }
    }
    s
}

/// Merges `shared` into a job section; `None` when the job is unusable (errors reported).
pub(crate) fn merge(
    cx: &mut Ctx,
    shared: &Section,
    job: Section,
    name: &str,
    location: Location,
) -> Option<Job> {
    let image = job.image.or_else(|| shared.image.clone());
    let misspelt = |key: &str| {
        job.misspelt
            .iter()
            .chain(&shared.misspelt)
            .any(|m| m == key)
    };
    if image.is_none() && !misspelt("image") {
        cx.error(
            location,
            format!("job `{name}` has no `image` (set it in the job or in `shared`)"),
        );
    }
    let steps = job.steps.or_else(|| shared.steps.clone());
    if steps.is_none() && !misspelt("steps") {
        cx.error(
            location,
            format!("job `{name}` has no `steps` (set them in the job or in `shared`)"),
        );
    }

    let mut environment = shared.environment.clone();
    environment.extend(job.environment);
    let mut secrets = shared.secrets.clone();
    for s in job.secrets {
        if !secrets.contains(&s) {
            secrets.push(s);
        }
    }
    let mut annotation_nodes = shared.annotations.clone();
    annotation_nodes.extend(job.annotations);
    let acted = annotations::acted_on(cx, &annotation_nodes);
    let job_dind = job.dind.as_ref().map(|(_, loc)| *loc);
    let docker = docker::resolve(
        cx,
        job.docker.or(shared.docker),
        docker::merge_dind(shared.dind.clone(), job.dind),
        job_dind,
        acted.docker_enabled,
    );

    Some(Job {
        name: name.to_string(),
        image: image?,
        description: job.description,
        steps: steps?,
        requires: job.requires.into_iter().map(|(r, _)| r).collect(),
        environment,
        parameters: {
            let mut parameters = shared.parameters.clone();
            parameters.extend(job.parameters);
            parameters
        },
        secrets,
        annotations: annotation_nodes
            .iter()
            .map(|(k, v)| (k.clone(), v.to_value()))
            .collect(),
        timeout: acted.timeout,
        resources: acted.resources,
        services: job
            .services
            .or_else(|| shared.services.clone())
            .unwrap_or_default(),
        docker,
        location,
    })
}
