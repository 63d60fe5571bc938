//! Configuration checksums on pod templates, so a change of configuration rolls the pods.
//!
//! A pod reads its ConfigMaps and Secrets (`envFrom`, `env[].valueFrom`, volumes) once, when its
//! containers start: a rotated password, a new endpoint or a new rate limit applied to the
//! ConfigMap or Secret alone reaches no running pod. So every pod template of a workload
//! (Deployment, StatefulSet, DaemonSet, Job) carries the SHA-256 of the data of the ConfigMaps
//! ([`CONFIGMAP_CHECKSUM`]) and of the Secrets ([`SECRET_CHECKSUM`]) it uses, among the rendered
//! objects: the data changes, the template changes, the Deployment rolls its pods.
//!
//! Secrets rendered with placeholders (`plan`, `drift`, `render` before anything is deployed)
//! give no checksum: the placeholder's would never match the one `up` applied, and Secrets are
//! compared by their keys only. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use super::RenderedFile;

/// The pod template annotation with the checksum of the ConfigMaps the pod uses.
pub const CONFIGMAP_CHECKSUM: &str = "stacksmith.dev/configmap-checksum";
/// The pod template annotation with the checksum of the Secrets the pod uses.
pub const SECRET_CHECKSUM: &str = "stacksmith.dev/secret-checksum";

const WORKLOADS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet", "Job"];

/// Adds the checksum annotations to every workload's pod template in `files`. Secrets count
/// only when `secrets_are_real`.
pub(super) fn annotate(files: &mut [RenderedFile], secrets_are_real: bool) {
    // (kind, namespace, name) -> the object's data, as canonical JSON text.
    let mut data: BTreeMap<(&'static str, String, String), String> = BTreeMap::new();
    for object in files.iter().flat_map(|f| &f.objects) {
        let kind: &'static str = match object.kind.as_str() {
            "ConfigMap" => "ConfigMap",
            "Secret" if secrets_are_real => "Secret",
            _ => continue,
        };
        let mut content = BTreeMap::new();
        for field in ["data", "stringData", "binaryData"] {
            if let Some(map) = object.object[field].as_object() {
                for (key, value) in map {
                    content.insert(format!("{field}/{key}"), value.clone());
                }
            }
        }
        data.insert(
            (
                kind,
                object.namespace.clone().unwrap_or_default(),
                object.name.clone(),
            ),
            serde_json::to_string(&content).expect("JSON serializes"),
        );
    }
    for file in files.iter_mut() {
        for object in &mut file.objects {
            if !WORKLOADS.contains(&object.kind.as_str()) {
                continue;
            }
            let namespace = object.namespace.clone().unwrap_or_default();
            let (config_maps, secrets) = references(&object.object["spec"]["template"]["spec"]);
            let template = &mut object.object["spec"]["template"];
            for (kind, names, annotation) in [
                ("ConfigMap", config_maps, CONFIGMAP_CHECKSUM),
                ("Secret", secrets, SECRET_CHECKSUM),
            ] {
                let mut hasher = Sha256::new();
                let mut any = false;
                for name in names {
                    if let Some(content) = data.get(&(kind, namespace.clone(), name.clone())) {
                        any = true;
                        hasher.update(name.as_bytes());
                        hasher.update([0]);
                        hasher.update(content.as_bytes());
                        hasher.update([0]);
                    }
                }
                if any {
                    if !template["metadata"].is_object() {
                        template["metadata"] = Json::Object(Default::default());
                    }
                    if !template["metadata"]["annotations"].is_object() {
                        template["metadata"]["annotations"] = Json::Object(Default::default());
                    }
                    template["metadata"]["annotations"][annotation] =
                        hex::encode(hasher.finalize()).into();
                }
            }
        }
    }
}

/// The names of the ConfigMaps and Secrets a pod spec uses, each sorted.
fn references(pod: &Json) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let add = |set: &mut BTreeSet<String>, name: &Json| {
        if let Some(name) = name.as_str() {
            set.insert(name.to_owned());
        }
    };
    let containers = ["initContainers", "containers"]
        .iter()
        .filter_map(|field| pod[field].as_array())
        .flatten();
    for container in containers {
        for source in container["envFrom"].as_array().into_iter().flatten() {
            add(&mut config_maps, &source["configMapRef"]["name"]);
            add(&mut secrets, &source["secretRef"]["name"]);
        }
        for variable in container["env"].as_array().into_iter().flatten() {
            add(
                &mut config_maps,
                &variable["valueFrom"]["configMapKeyRef"]["name"],
            );
            add(&mut secrets, &variable["valueFrom"]["secretKeyRef"]["name"]);
        }
    }
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        add(&mut config_maps, &volume["configMap"]["name"]);
        add(&mut secrets, &volume["secret"]["secretName"]);
        for source in volume["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            add(&mut config_maps, &source["configMap"]["name"]);
            add(&mut secrets, &source["secret"]["name"]);
        }
    }
    (config_maps, secrets)
}
