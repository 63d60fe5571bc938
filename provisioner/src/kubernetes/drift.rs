//! The in-cluster objects in `provisioner drift`: the rendered objects (baseline and control
//! plane) against the live ones and the stack's inventory, as [`DriftEntry`]s to append to the
//! AWS report (`provisioner/docs/drift-report.md`). [`entries`] is pure; `cli/drift.rs` reads the
//! cluster.
//!
//! * A rendered object the cluster lacks is `deleted` (`up` applies it again).
//! * A rendered object whose fields differ is `modified`, one attribute per field path
//!   ([`super::diff::field_differences`]: a subset comparison, so fields only the server sets are
//!   never drift; an autoscaled Deployment keeps its live replica count, so a scaled worker pool is
//!   not drift; a Secret compares by its keys, never its values).
//! * An inventory object (label [`super::STACK_LABEL`]) the stack no longer renders is
//!   `unmanaged` (`up` prunes it).
//!
//! Entries have the kind `kubernetes:<apiVersion>/<Kind>` and the address
//! `kubernetes/<namespace>/<name>` (`kubernetes/<name>` for cluster-scoped objects); the kind and
//! the address together name one object.

use serde_json::Value as Json;

use super::apply::{InventoryObject, identity_of};
use super::diff::field_differences;
use super::{RenderedFile, STACK_LABEL};
use crate::engine::drift::{AttributeDrift, DriftEntry, DriftStatus};

/// The prefix of every in-cluster entry's kind and address.
pub const PREFIX: &str = "kubernetes";

/// `kubernetes:apps/v1/Deployment`.
pub fn kind(api_version: &str, kind: &str) -> String {
    format!("{PREFIX}:{api_version}/{kind}")
}

/// `kubernetes/<namespace>/<Kind>/<name>`, or `kubernetes/<Kind>/<name>` for a cluster-scoped
/// object: unique per object (a ConfigMap and a Deployment may share a name), so CI reports keyed
/// on the address (JUnit test case names) never merge two objects.
pub fn address(namespace: Option<&str>, kind: &str, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{PREFIX}/{namespace}/{kind}/{name}"),
        None => format!("{PREFIX}/{kind}/{name}"),
    }
}

/// The entries of the in-cluster objects: one per rendered object (in apply order), given its
/// live object (`live[i]` for the i-th object of `files`; `None` when the cluster lacks it), then
/// one per object of the inventory of `stack` that is no longer rendered (in `inventory`'s order).
/// Pure.
pub fn entries(
    files: &[RenderedFile],
    live: &[Option<Json>],
    inventory: &[InventoryObject],
    stack: &str,
) -> Vec<DriftEntry> {
    let rendered: Vec<_> = files.iter().flat_map(|f| &f.objects).collect();
    let mut out: Vec<DriftEntry> = rendered
        .iter()
        .enumerate()
        .map(|(i, object)| {
            let mut entry = DriftEntry {
                address: address(object.namespace.as_deref(), &object.kind, &object.name),
                kind: kind(&object.api_version, &object.kind),
                id: None,
                status: DriftStatus::InSync,
                attributes: Vec::new(),
                note: None,
            };
            match live.get(i).and_then(Option::as_ref) {
                None => {
                    entry.status = DriftStatus::Deleted;
                    entry.note = Some(
                        "deleted outside Stacksmith (or never applied); `up` applies it again"
                            .to_owned(),
                    );
                }
                Some(live) => {
                    entry.attributes = field_differences(object, live)
                        .into_iter()
                        .map(|difference| AttributeDrift {
                            name: difference.path,
                            expected: difference.expected,
                            actual: difference.actual,
                        })
                        .collect();
                    if !entry.attributes.is_empty() {
                        entry.status = DriftStatus::Modified;
                    }
                }
            }
            entry
        })
        .collect();
    let identities: std::collections::BTreeSet<String> =
        rendered.iter().map(|o| identity_of(o)).collect();
    out.extend(
        inventory
            .iter()
            .filter(|object| !identities.contains(&object.identity()))
            .map(|object| DriftEntry {
                address: address(object.namespace.as_deref(), &object.kind, &object.name),
                kind: kind(&object.api_version, &object.kind),
                id: None,
                status: DriftStatus::Unmanaged,
                attributes: Vec::new(),
                note: Some(format!(
                    "carries the stack's inventory label {STACK_LABEL}={stack} but the stack \
                     does not render it; `up` prunes it"
                )),
            }),
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kubernetes::RenderedObject;
    use crate::kubernetes::diff::SENSITIVE;

    fn object(
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> RenderedObject {
        RenderedObject {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.map(str::to_owned),
            object: json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": { "name": name, "labels": { STACK_LABEL: "s" } },
            }),
        }
    }

    fn with(mut object: RenderedObject, fields: Json) -> RenderedObject {
        for (key, value) in fields.as_object().unwrap() {
            object.object[key] = value.clone();
        }
        object
    }

    fn inventory(
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> InventoryObject {
        InventoryObject {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_owned),
            name: name.into(),
        }
    }

    /// A worker pool the autoscaler owns the size of, rendered with 1 replica (at least 1).
    fn worker_pool() -> RenderedObject {
        let mut pool = with(
            object(
                "apps/v1",
                "Deployment",
                Some("work"),
                "stacksmith-worker-default",
            ),
            json!({ "spec": { "replicas": 1, "template": { "spec": { "containers": [
                { "name": "worker", "image": "w:1" } ] } } } }),
        );
        pool.object["metadata"]["annotations"] = json!({
            "stacksmith.dev/replicas": "autoscaled",
            "stacksmith.dev/min-replicas": "1",
            "stacksmith.dev/max-replicas": "3",
        });
        pool
    }

    fn files(objects: Vec<RenderedObject>) -> Vec<RenderedFile> {
        vec![RenderedFile {
            file_name: "all.yaml".into(),
            objects,
        }]
    }

    fn live(object: &RenderedObject, edit: impl FnOnce(&mut Json)) -> Option<Json> {
        let mut live = object.object.clone();
        live["metadata"]["uid"] = json!("u-1");
        live["metadata"]["resourceVersion"] = json!("7");
        live["status"] = json!({ "observedGeneration": 1 });
        edit(&mut live);
        Some(live)
    }

    #[test]
    fn each_out_of_band_change_is_one_entry_and_a_scaled_pool_is_not_drift() {
        let namespace = object("v1", "Namespace", None, "work");
        let config = with(
            object("v1", "ConfigMap", Some("sys"), "stacksmith-controlplane"),
            json!({ "data": { "LOG_LEVEL": "info", "PORT": "8080" } }),
        );
        let policy = with(
            object(
                "networking.k8s.io/v1",
                "NetworkPolicy",
                Some("work"),
                "default-deny",
            ),
            json!({ "spec": { "podSelector": {}, "policyTypes": ["Ingress", "Egress"] } }),
        );
        let pool = worker_pool();
        let rendered = files(vec![
            namespace.clone(),
            config.clone(),
            policy.clone(),
            pool.clone(),
        ]);
        let live = vec![
            live(&namespace, |_| {}),
            live(&config, |l| l["data"]["LOG_LEVEL"] = json!("debug")),
            None,
            // Scaled by the autoscaler through the scale subresource.
            live(&pool, |l| l["spec"]["replicas"] = json!(3)),
        ];
        let inventory = vec![
            inventory(
                "apps/v1",
                "Deployment",
                Some("work"),
                "stacksmith-worker-default",
            ),
            inventory("v1", "ConfigMap", Some("work"), "left-over"),
            inventory("v1", "Namespace", None, "work"),
        ];
        let entries = entries(&rendered, &live, &inventory, "s");
        let summary: Vec<(&str, &str, DriftStatus)> = entries
            .iter()
            .map(|e| (e.kind.as_str(), e.address.as_str(), e.status))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "kubernetes:v1/Namespace",
                    "kubernetes/Namespace/work",
                    DriftStatus::InSync
                ),
                (
                    "kubernetes:v1/ConfigMap",
                    "kubernetes/sys/ConfigMap/stacksmith-controlplane",
                    DriftStatus::Modified
                ),
                (
                    "kubernetes:networking.k8s.io/v1/NetworkPolicy",
                    "kubernetes/work/NetworkPolicy/default-deny",
                    DriftStatus::Deleted
                ),
                (
                    "kubernetes:apps/v1/Deployment",
                    "kubernetes/work/Deployment/stacksmith-worker-default",
                    DriftStatus::InSync
                ),
                (
                    "kubernetes:v1/ConfigMap",
                    "kubernetes/work/ConfigMap/left-over",
                    DriftStatus::Unmanaged
                ),
            ]
        );
        assert_eq!(
            entries[1].attributes,
            vec![AttributeDrift {
                name: "data.LOG_LEVEL".into(),
                expected: json!("info"),
                actual: json!("debug"),
            }]
        );
        assert!(entries[2].attributes.is_empty() && entries[2].note.is_some());
        assert!(entries[4].attributes.is_empty());
        assert!(
            entries[4]
                .note
                .as_deref()
                .unwrap()
                .contains("stacksmith.dev/stack=s"),
            "{:?}",
            entries[4].note
        );
    }

    #[test]
    fn a_pool_outside_its_bounds_or_a_changed_image_is_drift() {
        let pool = worker_pool();
        let rendered = files(vec![pool.clone()]);
        // Above its maximum: the autoscaler never does that, `up` scales it back to 3.
        let too_big = vec![live(&pool, |l| l["spec"]["replicas"] = json!(5))];
        let entry = &entries(&rendered, &too_big, &[], "s")[0];
        assert_eq!(entry.status, DriftStatus::Modified);
        assert_eq!(
            entry.attributes,
            vec![AttributeDrift {
                name: "spec.replicas".into(),
                expected: json!(3),
                actual: json!(5),
            }]
        );
        let image = vec![live(&pool, |l| {
            l["spec"]["replicas"] = json!(2);
            l["spec"]["template"]["spec"]["containers"][0]["image"] = json!("w:evil");
        })];
        let entry = &entries(&rendered, &image, &[], "s")[0];
        assert_eq!(
            entry.attributes,
            vec![AttributeDrift {
                name: "spec.template.spec.containers[0].image".into(),
                expected: json!("w:1"),
                actual: json!("w:evil"),
            }]
        );
    }

    #[test]
    fn secrets_are_compared_by_keys_and_their_values_never_appear() {
        let secret = with(
            object("v1", "Secret", Some("sys"), "stacksmith-controlplane"),
            json!({ "type": "Opaque", "stringData": {
                "DATABASE_URL": "PLACEHOLDER: the database URL",
                "REDIS_URL": "PLACEHOLDER: the Redis URL" } }),
        );
        let rendered = files(vec![secret.clone()]);
        let same_keys = vec![live(&secret, |l| {
            l.as_object_mut().unwrap().remove("stringData");
            l["data"] = json!({ "DATABASE_URL": "aHVudGVyMg==", "REDIS_URL": "aHVudGVyMw==" });
        })];
        assert_eq!(
            entries(&rendered, &same_keys, &[], "s")[0].status,
            DriftStatus::InSync
        );
        let missing_key = vec![live(&secret, |l| {
            l.as_object_mut().unwrap().remove("stringData");
            l["data"] = json!({ "DATABASE_URL": "aHVudGVyMg==" });
        })];
        let found = entries(&rendered, &missing_key, &[], "s");
        assert_eq!(
            found[0].attributes,
            vec![AttributeDrift {
                name: "stringData.REDIS_URL".into(),
                expected: json!(SENSITIVE),
                actual: Json::Null,
            }]
        );
        let text = serde_json::to_string(&found).unwrap();
        assert!(
            !text.contains("aHVudGVy") && !text.contains("PLACEHOLDER"),
            "{text}"
        );
    }

    #[test]
    fn a_live_list_shorter_than_the_rendered_objects_means_missing_objects() {
        let rendered = files(vec![object("v1", "Namespace", None, "a")]);
        let found = entries(&rendered, &[], &[], "s");
        assert_eq!(found[0].status, DriftStatus::Deleted);
        assert_eq!(found[0].address, "kubernetes/Namespace/a");
    }
}
