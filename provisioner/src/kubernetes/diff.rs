//! What applying the rendered objects would change in the cluster: per object create, update
//! (with the changed field paths), delete (inventory objects no longer rendered: `apply` prunes
//! them) or no change. `plan` shows it.
//!
//! The comparison is a subset comparison: every field the rendered object sets must be present in
//! the live object with the same value; fields only the live object has (status, defaults,
//! metadata the server fills in, other managers' fields) are ignored. Quantities compare by
//! value (`1000m` equals `1`). Secret values are never compared or shown: a Secret changes when
//! it is missing, when its labels differ, or when it lacks a key we set. A field removed from a
//! template is not reported (the rendered object no longer names it).
//!
//! [`compare`], [`plan_changes`] and [`field_differences`] (the values too, for reports such as
//! `drift`, which [`super::drift`] turns into report entries; never a Secret's) are pure;
//! [`in_cluster_changes`] reads the cluster.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value as Json;

use super::apply::{Applier, ApplyError, InventoryObject, identity_of};
use super::{RenderedFile, RenderedObject};

/// What applying would do to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectAction {
    /// The cluster does not have it.
    Create,
    /// Fields we set differ.
    Update,
    /// The inventory holds it but the stack no longer renders it: `up` prunes it.
    Delete,
    /// Every field we set has our value.
    NoChange,
}

/// One object's planned change. Never carries a value, only field paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectChange {
    /// `Kind/namespace/name` or `Kind/name`.
    pub reference: String,
    /// `apps/v1`, `v1`, ...
    pub api_version: String,
    /// `Deployment`, ...
    pub kind: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
    /// What applying would do.
    pub action: ObjectAction,
    /// For `update`: the paths of the fields that differ, e.g. `spec.replicas`,
    /// `metadata.labels["app.kubernetes.io/version"]`, `spec.template.spec.containers[0].image`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed_fields: Vec<String>,
}

/// Counts per action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ChangeSummary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub no_change: usize,
}

impl ChangeSummary {
    /// Counts `changes`.
    pub fn of(changes: &[ObjectChange]) -> Self {
        let mut summary = Self::default();
        for change in changes {
            match change.action {
                ObjectAction::Create => summary.create += 1,
                ObjectAction::Update => summary.update += 1,
                ObjectAction::Delete => summary.delete += 1,
                ObjectAction::NoChange => summary.no_change += 1,
            }
        }
        summary
    }

    /// Whether applying would change anything.
    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.delete > 0
    }
}

/// Reads the cluster and compares: one entry per rendered object (in apply order), then one per
/// inventory object of `stack` that is no longer rendered (in prune order).
pub async fn in_cluster_changes(
    applier: &Applier,
    files: &[RenderedFile],
    stack: &str,
) -> Result<Vec<ObjectChange>, ApplyError> {
    let mut live = Vec::new();
    for object in files.iter().flat_map(|f| &f.objects) {
        live.push(applier.get(object).await?);
    }
    let inventory = applier.inventory(stack).await?;
    Ok(plan_changes(files, &live, &inventory))
}

/// The changes, given the live object of each rendered object (`live[i]` for the i-th object of
/// `files`, in order; `None` when missing) and the stack's inventory. Pure.
pub fn plan_changes(
    files: &[RenderedFile],
    live: &[Option<Json>],
    inventory: &[InventoryObject],
) -> Vec<ObjectChange> {
    let rendered: Vec<&RenderedObject> = files.iter().flat_map(|f| &f.objects).collect();
    let identities: BTreeSet<String> = rendered.iter().map(|o| identity_of(o)).collect();
    let mut changes: Vec<ObjectChange> = rendered
        .iter()
        .enumerate()
        .map(|(i, object)| compare(object, live.get(i).and_then(Option::as_ref)))
        .collect();
    changes.extend(
        inventory
            .iter()
            .filter(|object| !identities.contains(&object.identity()))
            .map(|object| ObjectChange {
                reference: object.reference(),
                api_version: object.api_version.clone(),
                kind: object.kind.clone(),
                namespace: object.namespace.clone(),
                name: object.name.clone(),
                action: ObjectAction::Delete,
                changed_fields: Vec::new(),
            }),
    );
    changes
}

/// What applying `rendered` would do given the `live` object (or its absence). Pure.
pub fn compare(rendered: &RenderedObject, live: Option<&Json>) -> ObjectChange {
    let (action, changed_fields) = match live {
        None => (ObjectAction::Create, Vec::new()),
        Some(live) => {
            let fields = if rendered.kind == "Secret" {
                secret_changes(&rendered.object, live)
            } else {
                changed_fields(&rendered.reconciled_with(Some(live)), live)
            };
            if fields.is_empty() {
                (ObjectAction::NoChange, fields)
            } else {
                (ObjectAction::Update, fields)
            }
        }
    };
    ObjectChange {
        reference: rendered.reference(),
        api_version: rendered.api_version.clone(),
        kind: rendered.kind.clone(),
        namespace: rendered.namespace.clone(),
        name: rendered.name.clone(),
        action,
        changed_fields,
    }
}

/// One field that differs, with both values (for reports that show them, like `drift`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDifference {
    /// The path, as in [`ObjectChange::changed_fields`].
    pub path: String,
    /// What the rendered object sets.
    pub expected: Json,
    /// What the cluster holds; `null` when absent.
    pub actual: Json,
}

/// The paths of the fields `desired` sets that `live` lacks or holds with another value.
pub fn changed_fields(desired: &Json, live: &Json) -> Vec<String> {
    differences(desired, live)
        .into_iter()
        .map(|difference| difference.path)
        .collect()
}

/// The differing fields of `rendered` against its `live` object, with their values. A Secret's
/// values are never carried: a key it lacks shows as expected [`SENSITIVE`], actual `null`; its
/// other fields (labels, type) carry their values. Pure.
pub fn field_differences(rendered: &RenderedObject, live: &Json) -> Vec<FieldDifference> {
    if rendered.kind == "Secret" {
        return secret_differences(&rendered.object, live);
    }
    differences(&rendered.reconciled_with(Some(live)), live)
}

fn differences(desired: &Json, live: &Json) -> Vec<FieldDifference> {
    let mut found = Vec::new();
    walk(desired, Some(live), "", &mut found);
    found
}

/// What stands for a Secret's value in [`field_differences`].
pub const SENSITIVE: &str = "(sensitive)";

/// A Secret: every field but the values, then the presence of each key we set (in `data` or
/// `stringData`: servers turn `stringData` into `data`). The live values are never walked: the
/// desired object compared has no `data` nor `stringData`.
fn secret_differences(desired: &Json, live: &Json) -> Vec<FieldDifference> {
    let mut without_values = desired.clone();
    let mut keys = Vec::new();
    if let Some(object) = without_values.as_object_mut() {
        for field in ["stringData", "data"] {
            if let Some(Json::Object(values)) = object.remove(field) {
                keys.extend(values.keys().map(|k| (field, k.clone())));
            }
        }
    }
    let mut found = differences(&without_values, live);
    for (field, key) in keys {
        let present = ["data", "stringData"]
            .iter()
            .any(|f| live.get(*f).and_then(|d| d.get(&key)).is_some());
        if !present {
            found.push(FieldDifference {
                path: join(field, &key),
                expected: Json::String(SENSITIVE.to_owned()),
                actual: Json::Null,
            });
        }
    }
    found
}

fn secret_changes(desired: &Json, live: &Json) -> Vec<String> {
    secret_differences(desired, live)
        .into_iter()
        .map(|difference| difference.path)
        .collect()
}

fn walk(desired: &Json, live: Option<&Json>, path: &str, found: &mut Vec<FieldDifference>) {
    let mut differ = || {
        found.push(FieldDifference {
            path: root(path),
            expected: desired.clone(),
            actual: live.cloned().unwrap_or(Json::Null),
        })
    };
    match desired {
        Json::Object(fields) => match live {
            Some(Json::Object(_)) | None if fields.is_empty() => {}
            Some(Json::Object(live_fields)) => {
                for (key, value) in fields {
                    walk(value, live_fields.get(key), &join(path, key), found);
                }
            }
            _ => differ(),
        },
        Json::Array(items) => match live {
            Some(Json::Array(live_items)) if live_items.len() == items.len() => {
                for (index, (item, live_item)) in items.iter().zip(live_items).enumerate() {
                    walk(item, Some(live_item), &format!("{path}[{index}]"), found);
                }
            }
            None if items.is_empty() => {}
            _ => differ(),
        },
        Json::Null => {
            if !matches!(live, None | Some(Json::Null)) {
                differ();
            }
        }
        scalar => {
            if !live.is_some_and(|live| same_scalar(scalar, live)) {
                differ();
            }
        }
    }
}

fn root(path: &str) -> String {
    if path.is_empty() {
        "(the object)".to_owned()
    } else {
        path.to_owned()
    }
}

/// `path.key`, or `path["key"]` when the key has characters a dotted path would hide.
fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", Json::String(key.to_owned())),
    }
}

fn same_scalar(desired: &Json, live: &Json) -> bool {
    if desired == live {
        return true;
    }
    match (desired, live) {
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        _ => match (quantity(desired), quantity(live)) {
            (Some(a), Some(b)) => (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()).max(1.0),
            _ => false,
        },
    }
}

/// A Kubernetes quantity's value (`500m`, `1`, `128Mi`, `1G`, `1e3`); `None` for other text.
fn quantity(value: &Json) -> Option<f64> {
    let text = match value {
        Json::Number(n) => return n.as_f64(),
        Json::String(s) => s.as_str(),
        _ => return None,
    };
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        exponent => 10f64.powi(exponent.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(kind: &str, body: Json) -> RenderedObject {
        RenderedObject {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: "api".into(),
            namespace: Some("sys".into()),
            object: body,
        }
    }

    #[test]
    fn fields_only_the_server_has_are_ignored() {
        let desired = json!({
            "metadata": { "name": "api", "labels": { "app.kubernetes.io/name": "api" } },
            "spec": { "replicas": 2, "template": { "spec": { "containers": [
                { "name": "api", "image": "api:1", "resources": { "limits": { "cpu": "1000m", "memory": "512Mi" } } }
            ] } } }
        });
        let live = json!({
            "metadata": { "name": "api", "uid": "u-1", "resourceVersion": "7",
                          "labels": { "app.kubernetes.io/name": "api", "extra": "x" },
                          "managedFields": [] },
            "spec": { "replicas": 2, "revisionHistoryLimit": 10, "template": { "spec": { "containers": [
                { "name": "api", "image": "api:1", "terminationMessagePath": "/dev/termination-log",
                  "resources": { "limits": { "cpu": "1", "memory": "536870912" } } }
            ] } } },
            "status": { "replicas": 2 }
        });
        assert_eq!(changed_fields(&desired, &live), Vec::<String>::new());
        let change = compare(&object("Deployment", desired), Some(&live));
        assert_eq!(change.action, ObjectAction::NoChange);
    }

    #[test]
    fn changed_and_missing_fields_are_named_by_path() {
        let desired = json!({
            "metadata": { "labels": { "app.kubernetes.io/version": "2" } },
            "spec": { "replicas": 3, "template": { "spec": { "containers": [
                { "name": "api", "image": "api:2" }
            ] } } }
        });
        let live = json!({
            "metadata": { "labels": { "app.kubernetes.io/version": "1" } },
            "spec": { "replicas": 2, "template": { "spec": { "containers": [
                { "name": "api", "image": "api:1" }
            ] } } }
        });
        assert_eq!(
            changed_fields(&desired, &live),
            vec![
                r#"metadata.labels["app.kubernetes.io/version"]"#,
                "spec.replicas",
                "spec.template.spec.containers[0].image",
            ]
        );
        let fewer = json!({ "spec": { "template": { "spec": { "containers": [] } } } });
        assert_eq!(
            changed_fields(&desired, &fewer),
            vec!["metadata", "spec.replicas", "spec.template.spec.containers",]
        );
        let change = compare(&object("Deployment", desired), Some(&live));
        assert_eq!(change.action, ObjectAction::Update);
        assert_eq!(change.changed_fields.len(), 3);
    }

    #[test]
    fn differences_carry_both_values_but_never_a_secret_value() {
        let deployment = object(
            "Deployment",
            json!({ "spec": { "replicas": 3, "paused": false } }),
        );
        let live = json!({ "spec": { "replicas": 2 } });
        assert_eq!(
            field_differences(&deployment, &live),
            vec![
                FieldDifference {
                    path: "spec.replicas".into(),
                    expected: json!(3),
                    actual: json!(2),
                },
                FieldDifference {
                    path: "spec.paused".into(),
                    expected: json!(false),
                    actual: Json::Null,
                },
            ]
        );
        let secret = RenderedObject {
            api_version: "v1".into(),
            ..object(
                "Secret",
                json!({ "stringData": { "DATABASE_URL": "postgres://u:hunter2@h/db" } }),
            )
        };
        let differences = field_differences(&secret, &json!({ "data": {} }));
        assert_eq!(differences.len(), 1);
        assert_eq!(differences[0].path, "stringData.DATABASE_URL");
        assert_eq!(
            (&differences[0].expected, &differences[0].actual),
            (&json!(SENSITIVE), &Json::Null)
        );
        // Fields other than the values carry theirs; the live values are never read.
        let labelled = RenderedObject {
            api_version: "v1".into(),
            ..object(
                "Secret",
                json!({ "metadata": { "labels": { "team": "a" } },
                        "stringData": { "DATABASE_URL": "postgres://u:hunter2@h/db" } }),
            )
        };
        let live = json!({ "metadata": { "labels": { "team": "b" } },
                           "data": { "DATABASE_URL": "aHVudGVyMg==" } });
        assert_eq!(
            field_differences(&labelled, &live),
            vec![FieldDifference {
                path: "metadata.labels.team".into(),
                expected: json!("a"),
                actual: json!("b"),
            }]
        );
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(same_scalar(&json!("500m"), &json!("0.5")));
        assert!(same_scalar(&json!("1Gi"), &json!("1024Mi")));
        assert!(same_scalar(&json!(2), &json!("2")));
        assert!(same_scalar(&json!(1.0), &json!(1)));
        assert!(!same_scalar(&json!("500m"), &json!("1")));
        assert!(!same_scalar(&json!("restricted"), &json!("baseline")));
        assert!(!same_scalar(&json!(true), &json!("true")));
    }

    #[test]
    fn secrets_compare_keys_and_never_values() {
        let desired = json!({
            "metadata": { "labels": { "stacksmith.dev/stack": "s" } },
            "type": "Opaque",
            "stringData": { "DATABASE_URL": "postgres://u:secret@h/db", "REDIS_URL": "rediss://x" }
        });
        let same_keys = json!({
            "metadata": { "labels": { "stacksmith.dev/stack": "s" } },
            "type": "Opaque",
            "data": { "DATABASE_URL": "b3RoZXI=", "REDIS_URL": "eA==" }
        });
        let secret = RenderedObject {
            api_version: "v1".into(),
            kind: "Secret".into(),
            ..object("Secret", desired.clone())
        };
        assert_eq!(
            compare(&secret, Some(&same_keys)).action,
            ObjectAction::NoChange
        );
        let missing_key = json!({
            "metadata": { "labels": { "stacksmith.dev/stack": "s" } },
            "type": "Opaque",
            "stringData": { "DATABASE_URL": "other" }
        });
        let change = compare(&secret, Some(&missing_key));
        assert_eq!(change.action, ObjectAction::Update);
        assert_eq!(change.changed_fields, vec!["stringData.REDIS_URL"]);
        let text = serde_json::to_string(&change).unwrap();
        assert!(
            !text.contains("secret@"),
            "no value is ever carried: {text}"
        );
    }

    #[test]
    fn missing_objects_are_created_and_unrendered_inventory_is_deleted() {
        let files = vec![RenderedFile {
            file_name: "70-workers.yaml".into(),
            objects: vec![
                object("Deployment", json!({ "spec": { "replicas": 1 } })),
                RenderedObject {
                    name: "worker-gpu".into(),
                    ..object("Deployment", json!({ "spec": { "replicas": 1 } }))
                },
            ],
        }];
        let live = vec![Some(json!({ "spec": { "replicas": 1 } })), None];
        let inventory = vec![
            InventoryObject {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: Some("sys".into()),
                name: "api".into(),
            },
            InventoryObject {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: Some("sys".into()),
                name: "worker-old".into(),
            },
        ];
        let changes = plan_changes(&files, &live, &inventory);
        let actions: Vec<(&str, ObjectAction)> = changes
            .iter()
            .map(|c| (c.reference.as_str(), c.action))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("Deployment/sys/api", ObjectAction::NoChange),
                ("Deployment/sys/worker-gpu", ObjectAction::Create),
                ("Deployment/sys/worker-old", ObjectAction::Delete),
            ]
        );
        assert_eq!(
            ChangeSummary::of(&changes),
            ChangeSummary {
                create: 1,
                update: 0,
                delete: 1,
                no_change: 1
            }
        );
    }
}
