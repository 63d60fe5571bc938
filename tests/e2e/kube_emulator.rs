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
    /// `Warning` response headers.
    warnings: Vec<String>,
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
        let mut warnings = Vec::new();
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
                } else if name == "warning" {
                    warnings.push(value.trim().to_owned());
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
        Reply {
            status,
            body,
            raw,
            warnings,
        }
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

    /// A server-side apply without `force`: conflicts are reported, not overridden.
    fn apply_unforced(&mut self, path: &str, manager: &str, body: &str) -> Reply {
        let separator = if path.contains('?') { '&' } else { '?' };
        self.request(
            "PATCH",
            &format!("{path}{separator}fieldManager={manager}"),
            APPLY,
            body,
        )
    }

    /// A namespace with labels (Pod Security levels).
    fn labelled_namespace(&mut self, prefix: &str, labels: &str) -> String {
        let name = k8s_name(prefix);
        let reply = self.post(
            "/api/v1/namespaces",
            &format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}","labels":{{{labels}}}}}}}"#),
        );
        assert_eq!(reply.status, 201, "{reply:?}");
        name
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

    // PUT replaces; a stale resourceVersion conflicts. The Deployment controller writes status
    // concurrently (as on a real cluster), so the PUT carries the version just read and is
    // retried, as a client does, when the controller got in between (bounded).
    let mut attempts = 0;
    let (body, replaced) = loop {
        attempts += 1;
        let current = rv(&client.get(&path).body);
        let body = deployment("app", 2, "nginx:2").replacen(
            r#""name":"app","#,
            &format!(r#""name":"app","resourceVersion":"{current}","#),
            1,
        );
        let replaced = client.request("PUT", &path, JSON, &body);
        if replaced.status != 409 || attempts == 10 {
            break (body, replaced);
        }
    };
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

// --- server behaviours the provisioner depends on, as the Kubernetes documentation states them --

/// The condition of `kind` in a Deployment's status.
fn condition(object: &Json, kind: &str) -> Option<Json> {
    object
        .items("status/conditions")
        .iter()
        .find(|c| c.str("type") == Some(kind))
        .cloned()
}

/// The managedFields entry of `manager` (and `subresource`, when given).
fn managed_entry(object: &Json, manager: &str, subresource: Option<&str>) -> Option<Json> {
    object
        .items("metadata/managedFields")
        .iter()
        .find(|e| e.str("manager") == Some(manager) && e.str("subresource") == subresource)
        .cloned()
}

fn owns_replicas(object: &Json, manager: &str, subresource: Option<&str>) -> bool {
    managed_entry(object, manager, subresource)
        .is_some_and(|e| matches!(e.at("fieldsV1/f:spec/f:replicas"), Json::Object(_)))
}

/// "Transferring ownership" (server-side apply): a scaler that changes `spec.replicas` through
/// the `scale` subresource becomes the field's owner; an apply that still sets another value
/// conflicts unless forced; once the applier stops applying the field it keeps the scaler's
/// value instead of being reset, and the applier no longer owns it. A field nobody else owns is
/// removed when its applier stops applying it (replicas then default to 1).
/// https://kubernetes.io/docs/reference/using-api/server-side-apply/#transferring-ownership
#[test]
fn a_scaler_takes_replicas_over_and_an_applier_hands_them_over() {
    let mut client = Client::new();
    let ns = client.namespace("handover");
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/web");
    let created = client.apply(&path, "stacksmith", &deployment("web", 2, "nginx:1.27"));
    assert_eq!(created.status, 201, "{created:?}");
    assert!(
        owns_replicas(&created.body, "stacksmith", None),
        "{created:?}"
    );

    let scaled = client.request(
        "PATCH",
        &format!("{path}/scale?fieldManager=autoscaler"),
        MERGE,
        r#"{"spec":{"replicas":5}}"#,
    );
    assert_eq!(scaled.status, 200, "{scaled:?}");
    let got = client.get(&path).body;
    assert!(owns_replicas(&got, "autoscaler", Some("scale")), "{got:?}");
    assert!(!owns_replicas(&got, "stacksmith", None), "{got:?}");

    // Applying another value without force is a conflict naming the owner and the field.
    let conflict = client.apply_unforced(&path, "stacksmith", &deployment("web", 2, "nginx:1.27"));
    assert_eq!(conflict.status, 409, "{conflict:?}");
    assert_eq!(conflict.body.str("reason"), Some("Conflict"));
    let message = conflict.body.str("message").unwrap_or_default();
    assert!(
        message.contains(r#"conflict with "autoscaler""#) && message.contains(".spec.replicas"),
        "{message}"
    );
    // The same value is not a conflict: ownership is shared.
    let same = client.apply_unforced(&path, "stacksmith", &deployment("web", 5, "nginx:1.27"));
    assert_eq!(same.status, 200, "{same:?}");
    assert!(owns_replicas(&same.body, "stacksmith", None), "{same:?}");
    assert!(
        owns_replicas(&same.body, "autoscaler", Some("scale")),
        "{same:?}"
    );

    // Dropping the field from the applied configuration keeps the scaler's value.
    let without = deployment("web", 5, "nginx:1.27").replace(r#""replicas":5,"#, "");
    let handed = client.apply_unforced(&path, "stacksmith", &without);
    assert_eq!(handed.status, 200, "{handed:?}");
    assert_eq!(handed.body.num("spec/replicas"), Some(5.0), "{handed:?}");
    assert!(
        !owns_replicas(&handed.body, "stacksmith", None),
        "{handed:?}"
    );
    // Forcing takes the field back.
    let forced = client.apply(&path, "stacksmith", &deployment("web", 3, "nginx:1.27"));
    assert_eq!(forced.status, 200, "{forced:?}");
    assert_eq!(forced.body.num("spec/replicas"), Some(3.0));
    assert!(
        owns_replicas(&forced.body, "stacksmith", None),
        "{forced:?}"
    );
    assert!(
        managed_entry(&forced.body, "autoscaler", Some("scale")).is_none(),
        "a manager without fields is dropped: {forced:?}"
    );
    // Sole owner dropping the field: it is removed and defaulted.
    let reset = client.apply(&path, "stacksmith", &without);
    assert_eq!(reset.status, 200, "{reset:?}");
    assert_eq!(reset.body.num("spec/replicas"), Some(1.0), "{reset:?}");
}

/// Fields the API server refuses to change in an update: a PriorityClass `value` ("may not be
/// changed in an update"), a Deployment's `spec.selector`, a Service's `clusterIP` and a Job's
/// `spec.template` ("field is immutable"), each a 422 `Invalid` naming the field.
#[test]
fn immutable_fields_are_refused_in_updates() {
    let mut client = Client::new();
    let class = k8s_name("pc");
    let class_path = format!("/apis/scheduling.k8s.io/v1/priorityclasses/{class}");
    let body = |value: u32| {
        format!(
            r#"{{"apiVersion":"scheduling.k8s.io/v1","kind":"PriorityClass","metadata":{{"name":"{class}"}},"value":{value}}}"#
        )
    };
    assert_eq!(
        client.apply(&class_path, "stacksmith", &body(100)).status,
        201
    );
    let refused = client.apply(&class_path, "stacksmith", &body(200));
    assert_eq!(refused.status, 422, "{refused:?}");
    assert_eq!(refused.body.str("reason"), Some("Invalid"));
    assert!(
        refused
            .body
            .str("message")
            .is_some_and(|m| m.contains("value: Forbidden: may not be changed in an update")),
        "{refused:?}"
    );
    assert_eq!(
        refused.body.str("details/causes/0/field"),
        Some("value"),
        "{refused:?}"
    );
    assert_eq!(client.get(&class_path).body.num("value"), Some(100.0));
    let deleted = client.request("DELETE", &class_path, JSON, "");
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(
        client.apply(&class_path, "stacksmith", &body(200)).status,
        201
    );

    let ns = client.namespace("immutable");
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/web");
    assert_eq!(
        client
            .apply(&path, "stacksmith", &deployment("web", 1, "nginx:1.27"))
            .status,
        201
    );
    let relabelled = deployment("web", 1, "nginx:1.27").replace(
        r#""selector":{"matchLabels":{"app":"web"}}"#,
        r#""selector":{"matchLabels":{"app":"web","tier":"x"}}"#,
    );
    let refused = client.apply(&path, "stacksmith", &relabelled);
    assert_eq!(refused.status, 422, "{refused:?}");
    assert!(
        refused
            .body
            .str("message")
            .is_some_and(|m| m.contains("spec.selector") && m.contains("field is immutable")),
        "{refused:?}"
    );

    let service_path = format!("/api/v1/namespaces/{ns}/services/api");
    let service = |ip: &str| {
        let ip = if ip.is_empty() {
            String::new()
        } else {
            format!(r#""clusterIP":"{ip}","#)
        };
        format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"api"}},"spec":{{{ip}"selector":{{"app":"web"}},"ports":[{{"port":80}}]}}}}"#
        )
    };
    let created = client.apply(&service_path, "stacksmith", &service(""));
    assert_eq!(created.status, 201, "{created:?}");
    let ip = created
        .body
        .str("spec/clusterIP")
        .unwrap_or_default()
        .to_owned();
    assert!(!ip.is_empty(), "a ClusterIP is allocated: {created:?}");
    let again = client.apply(&service_path, "stacksmith", &service(""));
    assert_eq!(again.body.str("spec/clusterIP"), Some(ip.as_str()));
    let other = if ip.ends_with(".250") {
        "10.100.0.251"
    } else {
        "10.100.0.250"
    };
    let refused = client.apply(&service_path, "stacksmith", &service(other));
    assert_eq!(refused.status, 422, "{refused:?}");
    assert!(
        refused
            .body
            .str("message")
            .is_some_and(|m| m.contains("may not change once set")),
        "{refused:?}"
    );

    let job_path = format!("/apis/batch/v1/namespaces/{ns}/jobs/migrate");
    let job = |image: &str| {
        format!(
            r#"{{"apiVersion":"batch/v1","kind":"Job","metadata":{{"name":"migrate"}},"spec":{{"template":{{"spec":{{"restartPolicy":"Never","containers":[{{"name":"m","image":"{image}"}}]}}}}}}}}"#
        )
    };
    assert_eq!(
        client.apply(&job_path, "stacksmith", &job("a:1")).status,
        201
    );
    let refused = client.apply(&job_path, "stacksmith", &job("a:2"));
    assert_eq!(refused.status, 422, "{refused:?}");
    assert!(
        refused
            .body
            .str("message")
            .is_some_and(|m| m.contains("spec.template") && m.contains("field is immutable")),
        "{refused:?}"
    );
}

/// Services get a ClusterIP from the service CIDR; the first address is the `kubernetes`
/// Service in `default` (port 443), which in-cluster clients reach the API server through.
#[test]
fn the_kubernetes_service_holds_the_first_address_of_the_service_cidr() {
    let mut client = Client::new();
    let got = client.get("/api/v1/namespaces/default/services/kubernetes");
    assert_eq!(got.status, 200, "{got:?}");
    let ip = got.body.str("spec/clusterIP").unwrap_or_default();
    assert!(ip.ends_with(".1"), "{got:?}");
    assert_eq!(got.body.num("spec/ports/0/port"), Some(443.0));
}

fn pod(name: &str, spec: &str) -> String {
    format!(r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{spec}}}"#)
}

/// A node-exporter-like pod: host network and PID namespaces, a hostPath and a hostPort.
const NODE_EXPORTER: &str = r#"{"hostNetwork":true,"hostPID":true,"containers":[{"name":"node-exporter","image":"quay.io/prometheus/node-exporter:v1.8.2","ports":[{"containerPort":9100,"hostPort":9100}]}],"volumes":[{"name":"root","hostPath":{"path":"/"}}]}"#;

/// A pod that satisfies `restricted`.
const RESTRICTED_OK: &str = r#"{"securityContext":{"runAsNonRoot":true,"runAsUser":10001,"seccompProfile":{"type":"RuntimeDefault"}},"containers":[{"name":"app","image":"app:1","securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}},"resources":{"requests":{"cpu":"500m","memory":"256Mi"},"limits":{"cpu":"1","memory":"512Mi"}}}]}"#;

/// Pod Security admission: the namespace's `enforce` level refuses pods that violate it (403
/// Forbidden, `violates PodSecurity "<level>:<version>"` and each failed check); `baseline`
/// refuses host namespaces, hostPath volumes and host ports (what node-exporter needs), which
/// `privileged` allows; `restricted` wants no privilege escalation, dropped capabilities, a
/// non-root user and a seccomp profile. Workload writes are admitted with a `Warning` for the
/// `warn` level, and their controller cannot create the refused pods (`ReplicaFailure`,
/// `FailedCreate`). https://kubernetes.io/docs/concepts/security/pod-security-admission/
#[test]
fn pod_security_admission_enforces_and_warns_per_namespace_level() {
    let mut client = Client::new();
    let baseline = client.labelled_namespace(
        "psa-baseline",
        r#""pod-security.kubernetes.io/enforce":"baseline","pod-security.kubernetes.io/warn":"restricted""#,
    );
    let refused = client.post(
        &format!("/api/v1/namespaces/{baseline}/pods"),
        &pod("node-exporter", NODE_EXPORTER),
    );
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.body.str("reason"), Some("Forbidden"));
    let message = refused.body.str("message").unwrap_or_default();
    for fragment in [
        r#"violates PodSecurity "baseline:latest""#,
        "host namespaces (hostNetwork=true, hostPID=true)",
        r#"hostPath volumes (volume "root")"#,
        "hostPort",
    ] {
        assert!(message.contains(fragment), "{fragment} missing: {message}");
    }
    let privileged = client.labelled_namespace(
        "psa-priv",
        r#""pod-security.kubernetes.io/enforce":"privileged""#,
    );
    let admitted = client.post(
        &format!("/api/v1/namespaces/{privileged}/pods"),
        &pod("node-exporter", NODE_EXPORTER),
    );
    assert_eq!(admitted.status, 201, "{admitted:?}");

    let restricted = client.labelled_namespace(
        "psa-restricted",
        r#""pod-security.kubernetes.io/enforce":"restricted""#,
    );
    let plain = r#"{"containers":[{"name":"app","image":"app:1"}]}"#;
    let refused = client.post(
        &format!("/api/v1/namespaces/{restricted}/pods"),
        &pod("plain", plain),
    );
    assert_eq!(refused.status, 403, "{refused:?}");
    let message = refused.body.str("message").unwrap_or_default();
    for fragment in [
        "allowPrivilegeEscalation != false",
        "unrestricted capabilities",
        "runAsNonRoot != true",
        "seccompProfile",
    ] {
        assert!(message.contains(fragment), "{fragment} missing: {message}");
    }
    let ok = client.post(
        &format!("/api/v1/namespaces/{restricted}/pods"),
        &pod("hardened", RESTRICTED_OK),
    );
    assert_eq!(ok.status, 201, "{ok:?}");

    // A workload is admitted with a warning; its pods are refused by the controller.
    let path = format!("/apis/apps/v1/namespaces/{baseline}/deployments/web");
    let body = deployment("web", 1, "nginx:1.27");
    let created = client.apply(&path, "stacksmith", &body);
    assert_eq!(created.status, 201, "{created:?}");
    assert!(
        created
            .warnings
            .iter()
            .any(|w| w.contains(r#"would violate PodSecurity \"restricted:latest\""#)),
        "{:?}",
        created.warnings
    );
    let exporter_path = format!("/apis/apps/v1/namespaces/{baseline}/deployments/exporter");
    let exporter = format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"exporter"}},"spec":{{"replicas":1,"selector":{{"matchLabels":{{"app":"x"}}}},"template":{{"metadata":{{"labels":{{"app":"x"}}}},"spec":{NODE_EXPORTER}}}}}}}"#
    );
    assert_eq!(
        client.apply(&exporter_path, "stacksmith", &exporter).status,
        201
    );
    let failed = poll("the refused pods showing", Duration::from_secs(10), || {
        let got = client.get(&exporter_path).body;
        condition(&got, "ReplicaFailure").map(|_| got)
    });
    let failure = condition(&failed, "ReplicaFailure").expect("ReplicaFailure");
    assert_eq!(failure.str("status"), Some("True"));
    assert_eq!(failure.str("reason"), Some("FailedCreate"));
    assert!(
        failure
            .str("message")
            .is_some_and(|m| m.contains(r#"violates PodSecurity "baseline:latest""#)),
        "{failure:?}"
    );
    assert_eq!(failed.num("status/availableReplicas"), Some(0.0));
}

/// ResourceQuota admission: with a quota on compute resources, a pod that does not declare them
/// is refused (`failed quota: <name>: must specify ...`), and a pod beyond the `hard` limits is
/// refused (`exceeded quota: <name>, requested: ..., used: ..., limited: ...`); a Deployment
/// gets only the pods that fit, with `ReplicaFailure`.
/// https://kubernetes.io/docs/concepts/policy/resource-quotas/
#[test]
fn resource_quotas_refuse_undeclared_and_excess_pods() {
    let mut client = Client::new();
    let ns = client.namespace("quota");
    let quota = client.apply(
        &format!("/api/v1/namespaces/{ns}/resourcequotas/compute"),
        "stacksmith",
        r#"{"apiVersion":"v1","kind":"ResourceQuota","metadata":{"name":"compute"},"spec":{"hard":{"requests.cpu":"1","requests.memory":"1Gi","pods":"3"}}}"#,
    );
    assert_eq!(quota.status, 201, "{quota:?}");
    let refused = client.post(
        &format!("/api/v1/namespaces/{ns}/pods"),
        &pod("bare", r#"{"containers":[{"name":"app","image":"app:1"}]}"#),
    );
    assert_eq!(refused.status, 403, "{refused:?}");
    let message = refused.body.str("message").unwrap_or_default();
    assert!(
        message.contains("failed quota: compute: must specify requests.cpu for: app")
            && message.contains("requests.memory for: app"),
        "{message}"
    );
    for name in ["one", "two"] {
        let ok = client.post(
            &format!("/api/v1/namespaces/{ns}/pods"),
            &pod(name, RESTRICTED_OK),
        );
        assert_eq!(ok.status, 201, "{ok:?}");
    }
    let over = client.post(
        &format!("/api/v1/namespaces/{ns}/pods"),
        &pod("three", RESTRICTED_OK),
    );
    assert_eq!(over.status, 403, "{over:?}");
    let message = over.body.str("message").unwrap_or_default();
    assert!(
        message.contains("exceeded quota: compute, requested: requests.cpu=500m")
            && message.contains("used: requests.cpu=1")
            && message.contains("limited: requests.cpu=1"),
        "{message}"
    );

    // A Deployment in a namespace whose quota has room for one more pod.
    let other = client.namespace("quota-deploy");
    client.apply(
        &format!("/api/v1/namespaces/{other}/resourcequotas/compute"),
        "stacksmith",
        r#"{"apiVersion":"v1","kind":"ResourceQuota","metadata":{"name":"compute"},"spec":{"hard":{"pods":"2"}}}"#,
    );
    let path = format!("/apis/apps/v1/namespaces/{other}/deployments/web");
    assert_eq!(
        client
            .apply(&path, "stacksmith", &deployment("web", 3, "nginx:1.27"))
            .status,
        201
    );
    let got = poll("the quota showing", Duration::from_secs(10), || {
        let got = client.get(&path).body;
        condition(&got, "ReplicaFailure").map(|_| got)
    });
    assert_eq!(got.num("status/availableReplicas"), Some(2.0), "{got:?}");
    let failure = condition(&got, "ReplicaFailure").expect("ReplicaFailure");
    assert!(
        failure
            .str("message")
            .is_some_and(|m| m.contains("exceeded quota: compute")),
        "{failure:?}"
    );
}
