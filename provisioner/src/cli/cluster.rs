//! What `up`, `plan` and `drift` share about the stack's cluster: how it is reached
//! ([`crate::kubernetes::access`]) and the in-cluster part of a plan
//! ([`crate::kubernetes::diff`]), as text and as the `cluster_objects` member of the plan JSON.

use miette::miette;
use serde::Serialize;

use super::deployment::{Deployment, PROVIDER_VAR};
use crate::engine::plan::Plan;
use crate::kubernetes::access::{self, ClusterRoute};
use crate::kubernetes::apply::Applier;
use crate::kubernetes::diff::{self, ChangeSummary, ObjectAction, ObjectChange};
use crate::kubernetes::{self, SecretValues};
use crate::state::StateDocument;

/// How to install the in-cluster objects when `up` could not: printed with the notes.
pub const HOW_TO_INSTALL: &str = "set `cluster.kubeconfig` in the stack to apply them through a \
     kubeconfig, or run `provisioner render --out DIR --include-secrets` and apply the files";

/// How to leave the cluster out when it cannot be reached (`drift`, `plan --refresh`).
pub const SKIP_HINT_DRIFT: &str = "pass --skip-cluster to compare the cloud side only";

/// Whether the stack renders any in-cluster object.
pub fn has_objects(deployment: &Deployment) -> bool {
    let stack = &deployment.loaded.stack;
    stack.baseline.is_some() || stack.controlplane.is_some() || stack.cluster.autoscaler_enabled()
}

/// How this deployment's cluster is reached, given its state.
pub fn route(deployment: &Deployment, state: Option<&StateDocument>) -> ClusterRoute {
    let fake_cloud = std::env::var(PROVIDER_VAR).is_ok_and(|v| v == "fake");
    access::resolve(&deployment.loaded, state, fake_cloud)
}

/// A connection to the cluster along `route`.
pub async fn applier(deployment: &Deployment, route: &ClusterRoute) -> miette::Result<Applier> {
    let client = access::connect(route, &deployment.aws)
        .await
        .map_err(|e| miette!("{e}"))?;
    Ok(Applier::new(client))
}

/// The in-cluster part of a plan (the plan JSON's `cluster_objects`).
#[derive(Debug, Serialize)]
pub struct ClusterPlan {
    /// How the cluster was reached (a kubeconfig path or the EKS endpoint).
    pub through: String,
    /// One entry per rendered object, then the inventory objects `up` would prune.
    pub objects: Vec<ObjectChange>,
    /// Counts per action.
    pub summary: ChangeSummary,
}

/// Reads the cluster and compares it with the rendered objects. Secrets are rendered with
/// placeholders: they are compared by their keys, never their values.
pub async fn plan(
    deployment: &Deployment,
    route: &ClusterRoute,
    state: Option<&crate::state::StateDocument>,
) -> miette::Result<ClusterPlan> {
    let files = kubernetes::render_with(
        &deployment.loaded,
        Some(&SecretValues::placeholders()),
        &kubernetes::install::cloud_outputs(state),
    )
    .map_err(|e| miette!("{e}"))?;
    let applier = applier(deployment, route).await?;
    let objects = diff::in_cluster_changes(&applier, &files, &deployment.loaded.names.qualified)
        .await
        .map_err(|e| miette!("{e}"))?;
    Ok(ClusterPlan {
        through: route.describe(),
        summary: ChangeSummary::of(&objects),
        objects,
    })
}

/// The plan JSON (`provisioner/docs/plan-json.md`) with the in-cluster part as
/// `cluster_objects` when the cluster was read. `up --plan` ignores that member: the cluster
/// converges to the stack on every `up`.
pub fn plan_json(plan: &Plan, cluster: Option<&ClusterPlan>) -> String {
    #[derive(Serialize)]
    struct Document<'a> {
        #[serde(flatten)]
        plan: &'a Plan,
        #[serde(skip_serializing_if = "Option::is_none")]
        cluster_objects: Option<&'a ClusterPlan>,
    }
    let document = Document {
        plan,
        cluster_objects: cluster,
    };
    let mut text = serde_json::to_string_pretty(&document).expect("a plan always serializes");
    text.push('\n');
    text
}

/// The in-cluster plan as text: changed objects one per line, then the counts.
pub fn render_plan(plan: &ClusterPlan) -> String {
    let mut out = format!("In-cluster objects (through {}):\n", plan.through);
    for object in &plan.objects {
        let line = match object.action {
            ObjectAction::NoChange => continue,
            ObjectAction::Create => format!("  + {} (create)", object.reference),
            ObjectAction::Update => format!(
                "  ~ {} (update: {})",
                object.reference,
                object.changed_fields.join(", ")
            ),
            ObjectAction::Delete => format!(
                "  - {} (delete: no longer rendered, `up` prunes it)",
                object.reference
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let s = &plan.summary;
    out.push_str(&format!(
        "Cluster: {} to create, {} to update, {} to delete, {} unchanged.\n",
        s.create, s.update, s.delete, s.no_change
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_lists_changes_and_counts_the_rest() {
        let change = |reference: &str, action, fields: &[&str]| ObjectChange {
            reference: reference.into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("w".into()),
            name: "n".into(),
            action,
            changed_fields: fields.iter().map(|f| f.to_string()).collect(),
        };
        let objects = vec![
            change("Deployment/w/a", ObjectAction::NoChange, &[]),
            change("Deployment/w/b", ObjectAction::Update, &["spec.replicas"]),
            change("Deployment/w/c", ObjectAction::Delete, &[]),
        ];
        let plan = ClusterPlan {
            through: "/k".into(),
            summary: ChangeSummary::of(&objects),
            objects,
        };
        assert_eq!(
            render_plan(&plan),
            "In-cluster objects (through /k):\n  \
             ~ Deployment/w/b (update: spec.replicas)\n  \
             - Deployment/w/c (delete: no longer rendered, `up` prunes it)\n\
             Cluster: 0 to create, 1 to update, 1 to delete, 1 unchanged.\n"
        );
    }
}
