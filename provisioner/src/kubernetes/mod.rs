//! In-cluster objects: the baseline (namespaces, network policies, quotas, priority classes,
//! RBAC) and the control plane (config, secrets, Deployment, Service, HPA, PDB, worker pools).
//!
//! Objects are rendered from the tera templates in `provisioner/templates/kubernetes/`, compiled
//! into the binary. Every value from the stack goes through the `json` filter, so a value can never
//! break the YAML around it. Rendering does no IO.

pub mod access;
pub mod apply;
pub mod checksums;
pub mod diff;
pub mod drift;
pub mod eks_auth;
pub mod install;
pub mod teardown;
mod values;

pub use values::cluster_autoscaler_image;

use std::fmt;
use std::sync::LazyLock;

use serde_json::Value as Json;
use tera::{Context, Kwargs, State, Tera};

use crate::stack::LoadedStack;
use crate::stack::source::SourceMap;
use crate::stack::yaml;

/// The label every object carries, naming the tool that manages it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The label naming the (instance-qualified) stack an object belongs to: the apply inventory.
pub const STACK_LABEL: &str = "stacksmith.dev/stack";

/// Templates in apply order: namespaces first, then cluster-wide classes, policy, RBAC and
/// configuration, then workloads.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "00-namespaces.yaml",
        include_str!("../../templates/kubernetes/00-namespaces.yaml.tera"),
    ),
    (
        "10-priority-classes.yaml",
        include_str!("../../templates/kubernetes/10-priority-classes.yaml.tera"),
    ),
    (
        "20-quotas.yaml",
        include_str!("../../templates/kubernetes/20-quotas.yaml.tera"),
    ),
    (
        "30-network-policies.yaml",
        include_str!("../../templates/kubernetes/30-network-policies.yaml.tera"),
    ),
    (
        "40-rbac.yaml",
        include_str!("../../templates/kubernetes/40-rbac.yaml.tera"),
    ),
    (
        "50-config.yaml",
        include_str!("../../templates/kubernetes/50-config.yaml.tera"),
    ),
    (
        "51-secrets.yaml",
        include_str!("../../templates/kubernetes/51-secrets.yaml.tera"),
    ),
    (
        "60-controlplane.yaml",
        include_str!("../../templates/kubernetes/60-controlplane.yaml.tera"),
    ),
    (
        "70-workers.yaml",
        include_str!("../../templates/kubernetes/70-workers.yaml.tera"),
    ),
    (
        "80-cluster-autoscaler.yaml",
        include_str!("../../templates/kubernetes/80-cluster-autoscaler.yaml.tera"),
    ),
];

/// What the in-cluster objects need from the cloud side once `up` created it (read from state
/// by [`install::cloud_outputs`]); `Default` when it does not exist yet, and the objects then
/// hold placeholders that say so.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloudOutputs {
    /// The ARN of the Cluster Autoscaler's IAM role (`iam.role.cluster_autoscaler`), which its
    /// service account names for IRSA.
    pub cluster_autoscaler_role_arn: Option<String>,
}

/// Secret values of the control plane. Never printed: `Debug` shows only which are set.
#[derive(Clone, serde::Serialize)]
pub struct SecretValues {
    /// `postgres://...` with the generated master password.
    pub database_url: String,
    /// `rediss://...` with the generated auth token.
    pub redis_url: String,
    /// The bootstrap admin key of the API.
    pub admin_key: String,
    /// The API key the workers authenticate with.
    pub worker_key: String,
}

impl SecretValues {
    /// Stand-ins for when the real values are unknown (`render --include-secrets` of a stack
    /// that is not deployed; `plan`, which compares Secrets by their keys, never their values).
    /// Each says what belongs there, so a file written with them cannot pass for a real one.
    pub fn placeholders() -> Self {
        let placeholder = |what: &str| {
            format!("{PLACEHOLDER_PREFIX}{what}; `provisioner up` sets the real value")
        };
        Self {
            database_url: placeholder("the database URL"),
            redis_url: placeholder("the Redis URL"),
            admin_key: placeholder("the API's bootstrap admin key"),
            worker_key: placeholder("the workers' API key"),
        }
    }
}

impl SecretValues {
    /// Whether these are [`SecretValues::placeholders`] rather than a deployment's values.
    pub fn is_placeholder(&self) -> bool {
        [
            &self.database_url,
            &self.redis_url,
            &self.admin_key,
            &self.worker_key,
        ]
        .iter()
        .any(|value| value.starts_with(PLACEHOLDER_PREFIX))
    }
}

const PLACEHOLDER_PREFIX: &str = "PLACEHOLDER: ";

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValues { <redacted> }")
    }
}

/// One rendered object.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedObject {
    /// `apps/v1`, `v1`, ...
    pub api_version: String,
    /// `Deployment`, ...
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The whole object.
    pub object: Json,
}

/// Marks a Deployment whose replica count another controller owns once it exists (the pool
/// autoscaler for worker pools, the HPA for the control plane): its rendered `spec.replicas` is
/// only its size at creation.
pub const REPLICAS_ANNOTATION: &str = "stacksmith.dev/replicas";
const AUTOSCALED: &str = "autoscaled";

impl RenderedObject {
    /// `Kind/namespace/name` or `Kind/name`.
    pub fn reference(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{}/{namespace}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    /// Whether another controller owns this Deployment's replica count once it exists.
    pub fn autoscaled(&self) -> bool {
        self.object["metadata"]["annotations"][REPLICAS_ANNOTATION] == AUTOSCALED
    }

    /// The replica count `up` must set on the live object: its live count within the
    /// `stacksmith.dev/min-replicas` and `max-replicas` bounds (so a raised minimum applies at
    /// once), or `None` for objects whose count nobody else owns or that do not exist.
    pub fn replicas_for(&self, live: Option<&Json>) -> Option<u64> {
        if !self.autoscaled() {
            return None;
        }
        let replicas = live?["spec"]["replicas"].as_u64().unwrap_or(1);
        let annotations = &self.object["metadata"]["annotations"];
        let bound = |key: &str| annotations[key].as_str().and_then(|v| v.parse().ok());
        Some(
            replicas
                .max(bound("stacksmith.dev/min-replicas").unwrap_or(0))
                .min(bound("stacksmith.dev/max-replicas").unwrap_or(u64::MAX)),
        )
    }

    /// The object to compare with the `live` one: an autoscaled Deployment that exists is
    /// compared without `spec.replicas` (the HPA or the pool autoscaler owns it, so `plan` and
    /// `drift` do not report a scaling decision), unless its live count is outside the bounds,
    /// which `up` corrects. Every other object is compared as rendered. Pure.
    pub fn reconciled_with(&self, live: Option<&Json>) -> std::borrow::Cow<'_, Json> {
        match (self.replicas_for(live), live) {
            (Some(target), Some(live)) => {
                let mut object = self.object.clone();
                if live["spec"]["replicas"].as_u64() == Some(target) {
                    if let Some(spec) = object["spec"].as_object_mut() {
                        spec.remove("replicas");
                    }
                } else {
                    object["spec"]["replicas"] = target.into();
                }
                std::borrow::Cow::Owned(object)
            }
            _ => std::borrow::Cow::Borrowed(&self.object),
        }
    }

    /// What `up` applies as [`apply::FIELD_MANAGER`] once the object exists: an autoscaled
    /// Deployment without `spec.replicas`, so the field belongs to its autoscaler alone (the
    /// server-side apply ownership transfer; the count itself goes through
    /// [`apply::REPLICAS_MANAGER`]). Every other object as rendered. Pure.
    pub fn applied_with(&self, live: Option<&Json>) -> std::borrow::Cow<'_, Json> {
        if live.is_none() || !self.autoscaled() {
            return std::borrow::Cow::Borrowed(&self.object);
        }
        let mut object = self.object.clone();
        if let Some(spec) = object["spec"].as_object_mut() {
            spec.remove("replicas");
        }
        std::borrow::Cow::Owned(object)
    }
}

/// The objects of one template, and their YAML.
#[derive(Debug, Clone)]
pub struct RenderedFile {
    /// e.g. `60-controlplane.yaml`.
    pub file_name: String,
    /// The objects, in the file's order.
    pub objects: Vec<RenderedObject>,
}

impl RenderedFile {
    /// The file as block YAML, one document per object, keys in the rendered object's order
    /// (`apiVersion`, `kind`, `metadata`, then the rest, as the templates write them): what a
    /// GitOps reviewer reads and diffs. Strings YAML would take for another type (`"true"`,
    /// `"0600"`) are quoted, so the file parses back to the same objects.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for object in &self.objects {
            out.push_str("---\n");
            out.push_str(
                &serde_saphyr::to_string(&object.object).expect("a JSON object serializes as YAML"),
            );
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }
}

/// A rendering failure: a bug in a template, never a user mistake (the stack was validated).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Tera refused a template or its values.
    #[error("template {template}: {message}")]
    Template {
        /// The template.
        template: String,
        /// Tera's message with its causes.
        message: String,
    },
    /// A template produced text that is not a Kubernetes object.
    #[error("template {template} produced an invalid object: {message}\n{document}")]
    InvalidObject {
        /// The template.
        template: String,
        /// What is wrong.
        message: String,
        /// The offending document.
        document: String,
    },
}

static TERA: LazyLock<Result<Tera, String>> = LazyLock::new(|| {
    let mut tera = Tera::default();
    tera.register_filter("json", |value: tera::Value, _: Kwargs, _: &State| {
        serde_json::to_string(&value).unwrap_or_default()
    });
    tera.register_filter("json_string", |value: tera::Value, _: Kwargs, _: &State| {
        let text = match serde_json::to_value(&value) {
            Ok(Json::String(s)) => s,
            Ok(other) => other.to_string(),
            Err(_) => String::new(),
        };
        serde_json::to_string(&text).unwrap_or_default()
    });
    tera.add_raw_templates(TEMPLATES.iter().copied())
        .map_err(|e| error_chain(&e))?;
    Ok(tera)
});

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Renders every in-cluster object of a stack. Secrets are rendered only when `secrets` is given.
/// What comes from the cloud side (the Cluster Autoscaler's role ARN) holds placeholders:
/// [`render_with`] takes the deployment's [`CloudOutputs`].
pub fn render(
    loaded: &LoadedStack,
    secrets: Option<&SecretValues>,
) -> Result<Vec<RenderedFile>, RenderError> {
    render_with(loaded, secrets, &CloudOutputs::default())
}

/// [`render`] with the deployment's cloud `outputs`.
pub fn render_with(
    loaded: &LoadedStack,
    secrets: Option<&SecretValues>,
    outputs: &CloudOutputs,
) -> Result<Vec<RenderedFile>, RenderError> {
    let tera = TERA.as_ref().map_err(|message| RenderError::Template {
        template: "(all)".into(),
        message: message.clone(),
    })?;
    let values = values::RenderValues::new(loaded, secrets, outputs);
    let context = Context::from_serialize(&values).map_err(|e| RenderError::Template {
        template: "(context)".into(),
        message: error_chain(&e),
    })?;
    let mut files = Vec::new();
    for (name, _) in TEMPLATES {
        let text = tera
            .render(name, &context)
            .map_err(|e| RenderError::Template {
                template: (*name).to_owned(),
                message: error_chain(&e),
            })?;
        let objects = split_documents(&text)
            .map(|document| parse_object(name, document))
            .collect::<Result<Vec<_>, _>>()?;
        if !objects.is_empty() {
            files.push(RenderedFile {
                file_name: (*name).to_owned(),
                objects,
            });
        }
    }
    checksums::annotate(&mut files, secrets.is_some_and(|s| !s.is_placeholder()));
    Ok(files)
}

/// The non-empty documents of a multi-document YAML text.
fn split_documents(text: &str) -> impl Iterator<Item = &str> {
    text.split("\n---\n")
        .flat_map(|part| part.strip_prefix("---\n").unwrap_or(part).split("\n---\n"))
        .filter(|document| {
            document
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
}

fn parse_object(template: &str, document: &str) -> Result<RenderedObject, RenderError> {
    let invalid = |message: String| RenderError::InvalidObject {
        template: template.to_owned(),
        message,
        document: document.to_owned(),
    };
    let mut sources = SourceMap::default();
    let id = sources.add(
        template.to_owned(),
        std::path::Path::new(template),
        document.to_owned(),
    );
    let node = yaml::parse(id, sources.file(id)).map_err(|e| invalid(e.message.clone()))?;
    let object = node.to_json();
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Json::as_str)
            .map(str::to_owned)
    };
    let (Some(api_version), Some(kind), Some(name)) =
        (text("/apiVersion"), text("/kind"), text("/metadata/name"))
    else {
        return Err(invalid(
            "apiVersion, kind and metadata.name are required".to_owned(),
        ));
    };
    let namespace = text("/metadata/namespace");
    Ok(RenderedObject {
        api_version,
        kind,
        name,
        namespace,
        object,
    })
}

#[cfg(test)]
mod tests;
