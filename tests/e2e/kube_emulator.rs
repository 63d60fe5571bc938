//! The Kubernetes API emulator `cargo xtask test` starts (`tests/emulators/kube_emulator.py`)
//! gives a client the semantics the provisioner relies on: namespaces, server-side apply with
//! managedFields and pruning, Status reasons, selectors, resourceVersion/generation, dryRun, a
//! Deployment status controller, `/scale`, and a steady request rate.
//!
//! Raw HTTP/1.1 over `TcpStream` and a tiny JSON reader: std only.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

// --- a minimal JSON value ----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value();
        parser.space();
        assert_eq!(parser.at, parser.bytes.len(), "trailing data in {text}");
        value
    }

    /// The value at a `/`-separated path (`metadata/labels/app`; array indexes as numbers).
    fn at(&self, path: &str) -> &Json {
        let mut node = self;
        for key in path.split('/').filter(|k| !k.is_empty()) {
            node = match node {
                Json::Object(map) => map.get(key).unwrap_or(&Json::Null),
                Json::Array(items) => key
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i))
                    .unwrap_or(&Json::Null),
                _ => &Json::Null,
            };
        }
        node
    }

    fn str(&self, path: &str) -> Option<&str> {
        match self.at(path) {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    fn num(&self, path: &str) -> Option<f64> {
        match self.at(path) {
            Json::Number(n) => Some(*n),
            _ => None,
        }
    }

    fn items(&self, path: &str) -> &[Json] {
        match self.at(path) {
            Json::Array(items) => items,
            _ => &[],
        }
    }

    fn is_null(&self, path: &str) -> bool {
        matches!(self.at(path), Json::Null)
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self.at < self.bytes.len() && self.bytes[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) {
        self.space();
        assert_eq!(
            self.bytes.get(self.at),
            Some(&byte),
            "JSON: expected {:?} at {}",
            byte as char,
            self.at
        );
        self.at += 1;
    }

    fn value(&mut self) -> Json {
        self.space();
        match self.bytes.get(self.at) {
            Some(b'{') => {
                self.at += 1;
                let mut map = BTreeMap::new();
                self.space();
                if self.bytes.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Json::Object(map);
                }
                loop {
                    self.space();
                    let key = self.string();
                    self.eat(b':');
                    let value = self.value();
                    map.insert(key, value);
                    self.space();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        _ => {
                            self.eat(b'}');
                            return Json::Object(map);
                        }
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.space();
                if self.bytes.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Json::Array(items);
                }
                loop {
                    items.push(self.value());
                    self.space();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        _ => {
                            self.eat(b']');
                            return Json::Array(items);
                        }
                    }
                }
            }
            Some(b'"') => Json::String(self.string()),
            Some(b't') => self.word("true", Json::Bool(true)),
            Some(b'f') => self.word("false", Json::Bool(false)),
            Some(b'n') => self.word("null", Json::Null),
            _ => {
                let start = self.at;
                while self.at < self.bytes.len()
                    && matches!(
                        self.bytes[self.at],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.bytes[start..self.at]).expect("utf-8");
                Json::Number(
                    text.parse()
                        .unwrap_or_else(|_| panic!("JSON: bad number {text:?} at {start}")),
                )
            }
        }
    }

    fn word(&mut self, word: &str, value: Json) -> Json {
        assert!(
            self.bytes[self.at..].starts_with(word.as_bytes()),
            "JSON: bad literal at {}",
            self.at
        );
        self.at += word.len();
        value
    }

    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = String::new();
        loop {
            let byte = self.bytes[self.at];
            self.at += 1;
            match byte {
                b'"' => return out,
                b'\\' => {
                    let escape = self.bytes[self.at];
                    self.at += 1;
                    match escape {
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'u' => {
                            let hex = std::str::from_utf8(&self.bytes[self.at..self.at + 4])
                                .expect("utf-8");
                            self.at += 4;
                            let code = u32::from_str_radix(hex, 16).expect("hex escape");
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        other => out.push(other as char),
                    }
                }
                _ => {
                    // Copy a whole UTF-8 sequence.
                    let start = self.at - 1;
                    let mut end = self.at;
                    while end < self.bytes.len() && (self.bytes[end] & 0xC0) == 0x80 {
                        end += 1;
                    }
                    out.push_str(std::str::from_utf8(&self.bytes[start..end]).expect("utf-8"));
                    self.at = end;
                }
            }
        }
    }
}

// --- a minimal keep-alive HTTP/1.1 client ------------------------------------------------------

struct Client {
    address: String,
    reader: BufReader<TcpStream>,
}

struct Reply {
    status: u16,
    body: Json,
    raw: String,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.raw)
    }
}

const JSON: &str = "application/json";
const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";

impl Client {
    fn new() -> Client {
        let url = stacksmith_testkit::kube_url();
        let address = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("the emulator serves plain HTTP, not {url}"))
            .trim_end_matches('/')
            .to_owned();
        assert!(
            address.starts_with("127.0.0.1:"),
            "the emulator must listen on loopback, not {address}"
        );
        let stream =
            TcpStream::connect(&address).unwrap_or_else(|e| panic!("connect {address}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a timeout");
        Client {
            address,
            reader: BufReader::new(stream),
        }
    }

    fn request(&mut self, method: &str, path: &str, content_type: &str, body: &str) -> Reply {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.address,
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).expect("send the head");
        stream.write_all(body.as_bytes()).expect("send the body");
        let mut status_line = String::new();
        self.reader
            .read_line(&mut status_line)
            .expect("read the status line");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?} for {method} {path}"));
        let mut length = None;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read a header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim().to_ascii_lowercase();
                if name == "content-length" {
                    length = value.trim().parse::<usize>().ok();
                } else if name == "transfer-encoding" && value.contains("chunked") {
                    chunked = true;
                }
            }
        }
        let mut bytes = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).expect("read a chunk size");
                let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).expect("read a chunk");
                if size == 0 {
                    break;
                }
                bytes.extend_from_slice(&chunk[..size]);
            }
        } else {
            let length = length.expect("a Content-Length");
            bytes.resize(length, 0);
            self.reader.read_exact(&mut bytes).expect("read the body");
        }
        let raw = String::from_utf8(bytes).expect("a UTF-8 body");
        let body = if raw.trim().is_empty() {
            Json::Null
        } else {
            Json::parse(&raw)
        };
        Reply { status, body, raw }
    }

    fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, JSON, "")
    }

    fn post(&mut self, path: &str, body: &str) -> Reply {
        self.request("POST", path, JSON, body)
    }

    fn apply(&mut self, path: &str, manager: &str, body: &str) -> Reply {
        let separator = if path.contains('?') { '&' } else { '?' };
        self.request(
            "PATCH",
            &format!("{path}{separator}fieldManager={manager}&force=true"),
            APPLY,
            body,
        )
    }

    /// A namespace for one test; removed by the caller at the end when it matters.
    fn namespace(&mut self, prefix: &str) -> String {
        let name = k8s_name(prefix);
        let reply = self.post(
            "/api/v1/namespaces",
            &format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}"}}}}"#),
        );
        assert_eq!(reply.status, 201, "{reply:?}");
        name
    }
}

/// A unique DNS-1123 label.
fn k8s_name(prefix: &str) -> String {
    let name = stacksmith_testkit::unique_name(prefix)
        .replace('_', "-")
        .to_ascii_lowercase();
    name.chars().take(63).collect()
}

fn rv(object: &Json) -> u64 {
    object
        .str("metadata/resourceVersion")
        .unwrap_or_else(|| panic!("no resourceVersion in {object:?}"))
        .parse()
        .expect("a numeric resourceVersion")
}

fn managers(object: &Json) -> Vec<String> {
    object
        .items("metadata/managedFields")
        .iter()
        .filter_map(|entry| entry.str("manager").map(str::to_owned))
        .collect()
}

fn names(list: &Json) -> Vec<String> {
    let mut names: Vec<String> = list
        .items("items")
        .iter()
        .filter_map(|item| item.str("metadata/name").map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn poll(what: &str, limit: Duration, mut check: impl FnMut() -> Option<Json>) -> Json {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"{name}","labels":{{"app":"{name}"}}}},
"spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"{name}"}}}},
"template":{{"metadata":{{"labels":{{"app":"{name}"}}}},"spec":{{"containers":[{{"name":"app","image":"{image}"}}]}}}}}}}}"#
    )
}

// --- the tests ---------------------------------------------------------------------------------

#[test]
fn namespaces_can_be_created_read_listed_applied_and_deleted() {
    let mut client = Client::new();
    let name = client.namespace("ns");
    let path = format!("/api/v1/namespaces/{name}");

    let got = client.get(&path);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body.str("kind"), Some("Namespace"));
    assert!(
        got.body.str("metadata/uid").is_some_and(|u| !u.is_empty()),
        "{got:?}"
    );
    assert!(
        got.body.str("metadata/creationTimestamp").is_some(),
        "{got:?}"
    );
    assert_eq!(got.body.str("status/phase"), Some("Active"));

    let list = client.get("/api/v1/namespaces");
    assert_eq!(list.status, 200, "{list:?}");
    assert!(names(&list.body).contains(&name), "{list:?}");
    assert!(
        names(&list.body).contains(&"default".to_owned()),
        "{list:?}"
    );

    let again = client.post(
        "/api/v1/namespaces",
        &format!(r#"{{"metadata":{{"name":"{name}"}}}}"#),
    );
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.body.str("reason"), Some("AlreadyExists"));

    // Server-side apply on a cluster-scoped kind: update, then create.
    let applied = client.apply(
        &path,
        "stacksmith",
        &format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}","labels":{{"team":"a"}}}}}}"#),
    );
    assert_eq!(applied.status, 200, "{applied:?}");
    assert_eq!(applied.body.str("metadata/labels/team"), Some("a"));
    let fresh = k8s_name("ssa-ns");
    let created = client.apply(
        &format!("/api/v1/namespaces/{fresh}"),
        "stacksmith",
        &format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{fresh}"}}}}"#),
    );
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(managers(&created.body), ["stacksmith"]);

    for ns in [&name, &fresh] {
        let deleted = client.request("DELETE", &format!("/api/v1/namespaces/{ns}"), JSON, "");
        assert_eq!(deleted.status, 200, "{deleted:?}");
        let gone = client.get(&format!("/api/v1/namespaces/{ns}"));
        assert_eq!(gone.status, 404, "{gone:?}");
    }
}

#[test]
fn server_side_apply_creates_then_owns_and_prunes_fields() {
    let mut client = Client::new();
    let ns = client.namespace("ssa");
    let path = format!("/api/v1/namespaces/{ns}/configmaps/settings");

    let created = client.apply(
        &path,
        "stacksmith",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","labels":{"keep":"yes","drop":"yes"}},"data":{"a":"1","b":"2"}}"#,
    );
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body.str("data/b"), Some("2"));
    assert_eq!(created.body.str("metadata/namespace"), Some(ns.as_str()));
    assert_eq!(managers(&created.body), ["stacksmith"]);
    assert_eq!(
        created.body.str("metadata/managedFields/0/operation"),
        Some("Apply")
    );

    // Another manager's field survives the first manager's pruning.
    let other = client.request(
        "PATCH",
        &format!("{path}?fieldManager=someone-else"),
        MERGE,
        r#"{"data":{"theirs":"x"}}"#,
    );
    assert_eq!(other.status, 200, "{other:?}");

    let updated = client.apply(
        &path,
        "stacksmith",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","labels":{"keep":"yes"}},"data":{"a":"10"}}"#,
    );
    assert_eq!(updated.status, 200, "{updated:?}");
    let got = client.get(&path);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body.str("data/a"), Some("10"), "{got:?}");
    assert!(
        got.body.is_null("data/b"),
        "field b was not pruned: {got:?}"
    );
    assert!(got.body.is_null("metadata/labels/drop"), "{got:?}");
    assert_eq!(got.body.str("metadata/labels/keep"), Some("yes"));
    assert_eq!(got.body.str("data/theirs"), Some("x"), "{got:?}");
    assert!(
        managers(&got.body).contains(&"stacksmith".to_owned()),
        "{got:?}"
    );
    assert_eq!(
        got.body.str("metadata/uid"),
        created.body.str("metadata/uid"),
        "apply must update in place"
    );
}

#[test]
fn a_missing_object_is_not_found() {
    let mut client = Client::new();
    let ns = client.namespace("missing");
    let reply = client.get(&format!(
        "/apis/apps/v1/namespaces/{ns}/deployments/nothing-here"
    ));
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(reply.body.str("kind"), Some("Status"));
    assert_eq!(reply.body.str("reason"), Some("NotFound"));
    assert_eq!(reply.body.num("code"), Some(404.0));

    let delete = client.request(
        "DELETE",
        &format!("/api/v1/namespaces/{ns}/configmaps/nothing-here"),
        JSON,
        "",
    );
    assert_eq!(delete.status, 404, "{delete:?}");
    assert_eq!(delete.body.str("reason"), Some("NotFound"));

    let bad = client.request(
        "PATCH",
        &format!("/api/v1/namespaces/{ns}/configmaps/x?fieldManager=t"),
        APPLY,
        "{not json",
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(bad.body.str("reason"), Some("BadRequest"));
}

#[test]
fn lists_honour_label_and_field_selectors() {
    let mut client = Client::new();
    let ns = client.namespace("select");
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    for (name, labels) in [
        ("web", r#"{"tier":"web"}"#),
        ("db", r#"{"tier":"db"}"#),
        ("plain", "{}"),
    ] {
        let reply = client.post(
            &base,
            &format!(r#"{{"metadata":{{"name":"{name}","labels":{labels}}}}}"#),
        );
        assert_eq!(reply.status, 201, "{reply:?}");
    }
    let list = |client: &mut Client, query: &str| {
        let reply = client.get(&format!("{base}?{query}"));
        assert_eq!(reply.status, 200, "{reply:?}");
        names(&reply.body)
    };
    assert_eq!(list(&mut client, ""), ["db", "plain", "web"]);
    assert_eq!(list(&mut client, "labelSelector=tier%3Dweb"), ["web"]);
    assert_eq!(
        list(&mut client, "labelSelector=tier!%3Dweb"),
        ["db", "plain"]
    );
    assert_eq!(
        list(&mut client, "labelSelector=tier%20in%20(web,db)"),
        ["db", "web"]
    );
    assert_eq!(list(&mut client, "labelSelector=!tier"), ["plain"]);
    assert_eq!(list(&mut client, "labelSelector=tier"), ["db", "web"]);
    assert_eq!(
        list(&mut client, "fieldSelector=metadata.name%3Dplain"),
        ["plain"]
    );
    // Pagination: limit and continue.
    let first = client.get(&format!("{base}?limit=2"));
    assert_eq!(names(&first.body).len(), 2, "{first:?}");
    let token = first
        .body
        .str("metadata/continue")
        .expect("a continue token")
        .to_owned();
    let rest = client.get(&format!("{base}?limit=2&continue={token}"));
    assert_eq!(names(&rest.body).len(), 1, "{rest:?}");
}

#[test]
fn resource_version_increases_and_generation_follows_spec() {
    let mut client = Client::new();
    let ns = client.namespace("rv");
    let base = format!("/apis/apps/v1/namespaces/{ns}/deployments");
    let path = format!("{base}/app");
    let created = client.post(&base, &deployment("app", 1, "nginx:1"));
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body.num("metadata/generation"), Some(1.0));
    let mut last = rv(&created.body);

    let labelled = client.request(
        "PATCH",
        &path,
        MERGE,
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    );
    assert_eq!(labelled.status, 200, "{labelled:?}");
    assert!(rv(&labelled.body) > last, "{labelled:?}");
    assert_eq!(
        labelled.body.num("metadata/generation"),
        Some(1.0),
        "metadata is not spec"
    );
    last = rv(&labelled.body);

    let scaled = client.request("PATCH", &path, MERGE, r#"{"spec":{"replicas":3}}"#);
    assert!(rv(&scaled.body) > last, "{scaled:?}");
    assert_eq!(scaled.body.num("metadata/generation"), Some(2.0));
    last = rv(&scaled.body);

    // PUT replaces; a stale resourceVersion conflicts.
    let mut body = deployment("app", 2, "nginx:2");
    body = body.replacen(
        r#""name":"app","#,
        &format!(r#""name":"app","resourceVersion":"{last}","#),
        1,
    );
    let replaced = client.request("PUT", &path, JSON, &body);
    assert_eq!(replaced.status, 200, "{replaced:?}");
    assert!(rv(&replaced.body) > last, "{replaced:?}");
    assert_eq!(replaced.body.num("spec/replicas"), Some(2.0));
    assert!(
        replaced.body.is_null("metadata/labels/x"),
        "PUT replaces: {replaced:?}"
    );
    let stale = client.request("PUT", &path, JSON, &body);
    assert_eq!(stale.status, 409, "{stale:?}");
    assert_eq!(stale.body.str("reason"), Some("Conflict"));
}

#[test]
fn deployments_become_ready_and_scale() {
    let mut client = Client::new();
    let ns = client.namespace("ready");
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/web");
    let created = client.apply(&path, "stacksmith", &deployment("web", 2, "nginx:1.27"));
    assert_eq!(created.status, 201, "{created:?}");
    let ready = poll(
        "the Deployment becoming ready",
        Duration::from_secs(10),
        || {
            let got = client.get(&path).body;
            (got.num("status/observedGeneration") == Some(1.0)
                && got.num("status/readyReplicas") == Some(2.0))
            .then_some(got)
        },
    );
    assert_eq!(ready.num("status/availableReplicas"), Some(2.0));
    assert_eq!(ready.num("status/updatedReplicas"), Some(2.0));
    let available = ready
        .items("status/conditions")
        .iter()
        .find(|c| c.str("type") == Some("Available"))
        .cloned()
        .expect("an Available condition");
    assert_eq!(available.str("status"), Some("True"));

    // The autoscaler's path: the scale subresource.
    let scale = client.get(&format!("{path}/scale"));
    assert_eq!(scale.status, 200, "{scale:?}");
    assert_eq!(scale.body.str("kind"), Some("Scale"));
    assert_eq!(scale.body.num("spec/replicas"), Some(2.0));
    let patched = client.request(
        "PATCH",
        &format!("{path}/scale"),
        MERGE,
        r#"{"spec":{"replicas":4}}"#,
    );
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.body.num("spec/replicas"), Some(4.0));
    poll(
        "the scaled Deployment becoming ready",
        Duration::from_secs(10),
        || {
            let got = client.get(&path).body;
            (got.num("spec/replicas") == Some(4.0)
                && got.num("status/observedGeneration") == Some(2.0)
                && got.num("status/readyReplicas") == Some(4.0))
            .then_some(got)
        },
    );
}

#[test]
fn a_never_ready_image_stays_not_ready() {
    let mut client = Client::new();
    let ns = client.namespace("stuck");
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/stuck");
    let created = client.apply(
        &path,
        "stacksmith",
        &deployment("stuck", 2, "registry.example/app:never-ready"),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let observed = poll(
        "the Deployment being observed",
        Duration::from_secs(10),
        || {
            let got = client.get(&path).body;
            (got.num("status/observedGeneration") == Some(1.0)).then_some(got)
        },
    );
    assert_eq!(observed.num("status/replicas"), Some(2.0));
    assert_eq!(observed.num("status/updatedReplicas"), Some(2.0));
    assert_eq!(observed.num("status/readyReplicas").unwrap_or(0.0), 0.0);
    assert_eq!(observed.num("status/availableReplicas").unwrap_or(0.0), 0.0);
    let progressing = observed
        .items("status/conditions")
        .iter()
        .find(|c| c.str("type") == Some("Progressing"))
        .cloned()
        .expect("a Progressing condition");
    assert_eq!(progressing.str("status"), Some("False"));
    assert_eq!(progressing.str("reason"), Some("ProgressDeadlineExceeded"));
    assert!(progressing.str("message").is_some_and(|m| !m.is_empty()));
    // And it stays so (the controller reacts within ~0.5 s; give it twice that).
    std::thread::sleep(Duration::from_secs(1));
    let later = client.get(&path).body;
    assert_eq!(
        later.num("status/readyReplicas").unwrap_or(0.0),
        0.0,
        "{later:?}"
    );
}

#[test]
fn dry_run_does_not_write() {
    let mut client = Client::new();
    let ns = client.namespace("dry");
    let base = format!("/api/v1/namespaces/{ns}/configmaps");

    let dry = client.post(
        &format!("{base}?dryRun=All"),
        r#"{"metadata":{"name":"dry"},"data":{"a":"1"}}"#,
    );
    assert_eq!(dry.status, 201, "{dry:?}");
    assert_eq!(dry.body.str("data/a"), Some("1"));
    assert_eq!(client.get(&format!("{base}/dry")).status, 404);

    let dry_apply = client.apply(
        &format!("{base}/dry?dryRun=All"),
        "stacksmith",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dry"},"data":{"a":"1"}}"#,
    );
    assert!(dry_apply.status < 300, "{dry_apply:?}");
    assert_eq!(client.get(&format!("{base}/dry")).status, 404);

    let real = client.post(&base, r#"{"metadata":{"name":"real"},"data":{"a":"1"}}"#);
    assert_eq!(real.status, 201, "{real:?}");
    let dry_update = client.apply(
        &format!("{base}/real?dryRun=All"),
        "stacksmith",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"real"},"data":{"a":"2"}}"#,
    );
    assert_eq!(dry_update.status, 200, "{dry_update:?}");
    assert_eq!(dry_update.body.str("data/a"), Some("2"));
    let dry_delete = client.request("DELETE", &format!("{base}/real?dryRun=All"), JSON, "");
    assert_eq!(dry_delete.status, 200, "{dry_delete:?}");
    let after = client.get(&format!("{base}/real"));
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(after.body.str("data/a"), Some("1"));
    assert_eq!(rv(&after.body), rv(&real.body), "a dry run must not write");
}

#[test]
fn three_thousand_gets_do_not_slow_down() {
    let mut client = Client::new();
    let ns = client.namespace("load");
    let path = format!("/api/v1/namespaces/{ns}/configmaps/hot");
    let created = client.post(
        &format!("/api/v1/namespaces/{ns}/configmaps"),
        r#"{"metadata":{"name":"hot"},"data":{"a":"1"}}"#,
    );
    assert_eq!(created.status, 201, "{created:?}");
    let mut durations = Vec::with_capacity(3000);
    for i in 0..3000 {
        let started = Instant::now();
        // Mostly objects, some discovery (served by kmock itself).
        let reply = if i % 10 == 0 {
            client.get("/apis/apps/v1")
        } else {
            client.get(&path)
        };
        durations.push(started.elapsed());
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
    }
    let first: Duration = durations[..500].iter().sum();
    let last: Duration = durations[2500..].iter().sum();
    assert!(
        last <= first * 3,
        "the last 500 GETs took {last:?}, the first 500 {first:?}: the emulator slows down"
    );
}
