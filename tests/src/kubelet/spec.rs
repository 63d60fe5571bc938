//! Reading a pod template as the kubelet does: the environment of a container (`env`, `envFrom`,
//! `valueFrom` of ConfigMaps, Secrets and the pod's fields, `$(VAR)` references), its user,
//! ports and probes. Pure functions over the JSON read back from the API.

use std::collections::HashMap;

use serde_json::Value;

/// ConfigMaps and Secrets of the stack's namespaces: (namespace, name) -> key -> value.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub config_maps: HashMap<(String, String), HashMap<String, String>>,
    pub secrets: HashMap<(String, String), HashMap<String, String>>,
}

impl Sources {
    /// Adds a ConfigMap or Secret object as the API returned it (`data` base64-decoded for
    /// Secrets; `stringData` as written).
    pub fn add(&mut self, object: &Value) {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let key = (namespace.to_owned(), name.to_owned());
        let mut values = HashMap::new();
        let secret = object["kind"] == "Secret";
        if let Some(data) = object["data"].as_object() {
            for (k, v) in data {
                let text = v.as_str().unwrap_or_default();
                let text = if secret {
                    String::from_utf8(decode_base64(text)).unwrap_or_default()
                } else {
                    text.to_owned()
                };
                values.insert(k.clone(), text);
            }
        }
        if let Some(data) = object["stringData"].as_object() {
            for (k, v) in data {
                values.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
            }
        }
        if secret {
            self.secrets.insert(key, values);
        } else {
            self.config_maps.insert(key, values);
        }
    }

    /// Every value (for finding the endpoints the stack names).
    pub fn values(&self) -> impl Iterator<Item = &String> {
        self.config_maps
            .values()
            .chain(self.secrets.values())
            .flat_map(HashMap::values)
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let Some(value) = ALPHABET.iter().position(|b| *b == byte) else {
            continue;
        };
        buffer = (buffer << 6) | value as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

/// What the downward API can say about a pod.
#[derive(Debug, Clone)]
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    pub service_account: String,
    pub node: String,
}

impl PodFacts {
    fn field(&self, path: &str) -> Option<String> {
        Some(match path {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.namespace.clone(),
            "status.podIP" | "status.podIPs" | "status.hostIP" => self.ip.clone(),
            "spec.serviceAccountName" => self.service_account.clone(),
            "spec.nodeName" => self.node.clone(),
            _ => return None,
        })
    }
}

/// Expands `$(VAR)` references to variables in `defined` (`$$(VAR)` stays `$(VAR)`; unknown
/// references stay as written), as Kubernetes does in `env` values, `command` and `args`.
pub fn expand(text: &str, defined: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(escaped) = after.strip_prefix("$$") {
            out.push('$');
            rest = escaped;
        } else if let Some(inner) = after.strip_prefix("$(") {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match defined.iter().rev().find(|(k, _)| k == name) {
                        Some((_, value)) => out.push_str(value),
                        None => out.push_str(&after[..end + 3]),
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(after);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    out
}

fn set(env: &mut Vec<(String, String)>, key: String, value: String) {
    env.retain(|(k, _)| *k != key);
    env.push((key, value));
}

/// The environment of `container`: `base` (the image's and the kubelet's variables), then
/// `envFrom` in order, then `env` in order (later ones win). An error names what is missing
/// (`CreateContainerConfigError`).
pub fn environment(
    container: &Value,
    pod: &PodFacts,
    sources: &Sources,
    base: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, String> {
    let namespace = &pod.namespace;
    let mut env = base;
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        let (kind, reference, map) = if from["configMapRef"].is_object() {
            ("ConfigMap", &from["configMapRef"], &sources.config_maps)
        } else {
            ("Secret", &from["secretRef"], &sources.secrets)
        };
        let name = reference["name"].as_str().unwrap_or_default();
        match map.get(&(namespace.clone(), name.to_owned())) {
            Some(values) => {
                let mut keys: Vec<_> = values.iter().collect();
                keys.sort();
                for (k, v) in keys {
                    set(&mut env, format!("{prefix}{k}"), v.clone());
                }
            }
            None if reference["optional"] == true => {}
            None => return Err(format!("{kind} \"{name}\" not found")),
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(value) = variable.get("value") {
            expand(value.as_str().unwrap_or_default(), &env)
        } else {
            let from = &variable["valueFrom"];
            let keyed =
                |kind: &str,
                 reference: &Value,
                 map: &HashMap<(String, String), HashMap<String, String>>| {
                    let source = reference["name"].as_str().unwrap_or_default();
                    let key = reference["key"].as_str().unwrap_or_default();
                    match map
                        .get(&(namespace.clone(), source.to_owned()))
                        .and_then(|values| values.get(key))
                    {
                        Some(value) => Ok(Some(value.clone())),
                        None if reference["optional"] == true => Ok(None),
                        None => Err(format!(
                            "{kind} \"{source}\" has no key \"{key}\" (or is missing)"
                        )),
                    }
                };
            let found = if from["configMapKeyRef"].is_object() {
                keyed("ConfigMap", &from["configMapKeyRef"], &sources.config_maps)?
            } else if from["secretKeyRef"].is_object() {
                keyed("Secret", &from["secretKeyRef"], &sources.secrets)?
            } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                Some(
                    pod.field(path)
                        .ok_or_else(|| format!("unsupported fieldRef {path}"))?,
                )
            } else {
                return Err(format!("unsupported valueFrom of {name}: {from}"));
            };
            match found {
                Some(value) => value,
                None => continue,
            }
        };
        set(&mut env, name, value);
    }
    Ok(env)
}

/// `command` + `args` with `$(VAR)` references expanded; the image's entrypoint is not known
/// here, so a container must name its command.
pub fn argv(container: &Value, env: &[(String, String)]) -> Result<Vec<String>, String> {
    let strings = |field: &str| -> Vec<String> {
        container[field]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| expand(v.as_str().unwrap_or_default(), env))
            .collect()
    };
    let mut argv = strings("command");
    if argv.is_empty() {
        return Err(
            "the container has no command (the kubelet of the tests knows no image entrypoints)"
                .to_owned(),
        );
    }
    argv.extend(strings("args"));
    Ok(argv)
}

/// `runAsUser`/`runAsGroup` of the container, else of the pod, else root (the image's user).
pub fn user(container: &Value, pod_spec: &Value) -> (u32, u32) {
    let pick = |field: &str| {
        container["securityContext"][field]
            .as_u64()
            .or_else(|| pod_spec["securityContext"][field].as_u64())
    };
    let uid = pick("runAsUser").unwrap_or(0) as u32;
    let gid = pick("runAsGroup").map_or(uid, |g| g as u32);
    (uid, gid)
}

/// A container port by name or number.
pub fn port(container: &Value, port: &Value) -> Option<u16> {
    if let Some(number) = port.as_u64() {
        return u16::try_from(number).ok();
    }
    let name = port.as_str()?;
    if let Ok(number) = name.parse() {
        return Some(number);
    }
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
}

/// How a probe checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Http { path: String, port: u16 },
    Tcp { port: u16 },
}

/// A liveness, readiness or startup probe.
#[derive(Debug, Clone)]
pub struct Probe {
    pub check: Check,
    pub initial_delay: std::time::Duration,
    pub period: std::time::Duration,
    pub timeout: std::time::Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// The probe `field` of `container`; an error for a kind this kubelet does not run.
pub fn probe(container: &Value, field: &str) -> Result<Option<Probe>, String> {
    let spec = &container[field];
    if !spec.is_object() {
        return Ok(None);
    }
    let seconds = |key: &str, default: u64| {
        std::time::Duration::from_secs(spec[key].as_u64().unwrap_or(default))
    };
    let check = if spec["httpGet"].is_object() {
        let get = &spec["httpGet"];
        if get["scheme"].as_str().is_some_and(|s| s != "HTTP") {
            return Err(format!("{field}: only HTTP probes run here"));
        }
        Check::Http {
            path: get["path"].as_str().unwrap_or("/").to_owned(),
            port: port(container, &get["port"]).ok_or(format!("{field}: unknown port"))?,
        }
    } else if spec["tcpSocket"].is_object() {
        Check::Tcp {
            port: port(container, &spec["tcpSocket"]["port"])
                .ok_or(format!("{field}: unknown port"))?,
        }
    } else {
        return Err(format!(
            "{field}: only httpGet and tcpSocket probes run here"
        ));
    };
    Ok(Some(Probe {
        check,
        initial_delay: seconds("initialDelaySeconds", 0),
        period: seconds("periodSeconds", 10).max(std::time::Duration::from_secs(1)),
        timeout: seconds("timeoutSeconds", 1).max(std::time::Duration::from_secs(1)),
        success_threshold: spec["successThreshold"].as_u64().unwrap_or(1) as u32,
        failure_threshold: spec["failureThreshold"].as_u64().unwrap_or(3) as u32,
    }))
}

/// Whether `labels` match a Service's (or a Deployment's `matchLabels`) selector.
pub fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|wanted| !wanted.is_empty() && wanted.iter().all(|(k, v)| labels[k] == *v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> PodFacts {
        PodFacts {
            name: "api-1".into(),
            namespace: "system".into(),
            ip: "127.9.1.1".into(),
            service_account: "api".into(),
            node: "kubelet".into(),
        }
    }

    #[test]
    fn variables_are_expanded_as_kubernetes_does() {
        let defined = vec![("POD_IP".to_owned(), "127.9.1.1".to_owned())];
        assert_eq!(expand("$(POD_IP):8080", &defined), "127.9.1.1:8080");
        assert_eq!(
            expand("$$(POD_IP) $(NOPE) $x", &defined),
            "$(POD_IP) $(NOPE) $x"
        );
    }

    #[test]
    fn env_from_then_env_with_value_from() {
        let mut sources = Sources::default();
        sources.add(
            &json!({"kind": "ConfigMap", "metadata": {"namespace": "system", "name": "c"},
            "data": {"A": "1", "LISTEN": "0.0.0.0:1"}}),
        );
        sources.add(
            &json!({"kind": "Secret", "metadata": {"namespace": "system", "name": "s"},
            "data": {"B": "aGVsbG8="}, "stringData": {"C": "plain"}}),
        );
        let container = json!({
            "envFrom": [{"configMapRef": {"name": "c"}}, {"secretRef": {"name": "s"}}],
            "env": [
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "LISTEN", "value": "$(POD_IP):8080"},
                {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "C"}}},
                {"name": "O", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y", "optional": true}}}
            ]
        });
        let env = environment(
            &container,
            &pod(),
            &sources,
            vec![("PATH".into(), "/bin".into())],
        )
        .unwrap();
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("B"), Some("hello"));
        assert_eq!(get("LISTEN"), Some("127.9.1.1:8080"));
        assert_eq!(get("K"), Some("plain"));
        assert_eq!(get("O"), None);
        assert_eq!(get("PATH"), Some("/bin"));
        let missing = json!({"envFrom": [{"secretRef": {"name": "absent"}}]});
        assert!(
            environment(&missing, &pod(), &sources, vec![])
                .unwrap_err()
                .contains("absent")
        );
    }

    #[test]
    fn probes_and_named_ports() {
        let container = json!({
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5}
        });
        let probe = probe(&container, "readinessProbe").unwrap().unwrap();
        assert_eq!(
            probe.check,
            Check::Http {
                path: "/readyz".into(),
                port: 8080
            }
        );
        assert_eq!(probe.failure_threshold, 3);
        assert!(super::probe(&container, "livenessProbe").unwrap().is_none());
    }
}
