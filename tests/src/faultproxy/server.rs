//! The proxy's HTTP server: decides, forwards to the upstream (moto), rewrites.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::answers::{self, Answer};
use super::operation::{self, Operation, form_value};
use super::{Fault, FaultConfig, OperationStats, Stats, draw, durations};

const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (a free port) in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str, config: FaultConfig) -> std::io::Result<Self> {
        Self::bind("127.0.0.1:0", upstream, config).await
    }

    /// Starts a proxy listening on `listen`.
    pub async fn bind(listen: &str, upstream: &str, config: FaultConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(std::io::Error::other)?,
            config: Mutex::new(config),
            counters: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            fresh: Mutex::new(HashMap::new()),
            lifecycle: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls and faults per operation so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().unwrap().clone()
    }

    /// Replaces the configuration (rules apply from the next request; counters keep counting).
    pub fn configure(&self, config: FaultConfig) {
        *self.shared.config.lock().unwrap() = config;
    }

    /// Forgets statistics, per-operation counters, fresh ids and lifecycles.
    pub fn reset(&self) {
        self.shared.stats.lock().unwrap().clear();
        self.shared.counters.lock().unwrap().clear();
        self.shared.fresh.lock().unwrap().clear();
        self.shared.lifecycle.lock().unwrap().clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One object's scripted states: `(state, until)` in order, then the upstream's own.
#[derive(Debug, Clone)]
struct Lifecycle {
    states: Vec<(String, Instant)>,
    /// For deletes: the object as the delete answered it, served until the last state ends.
    tombstone: Option<String>,
}

impl Lifecycle {
    fn new(scale: f64, steps: &[(&str, Duration)]) -> Self {
        let mut at = Instant::now();
        let states = steps
            .iter()
            .map(|(state, duration)| {
                at += duration.mul_f64(scale);
                ((*state).to_owned(), at)
            })
            .collect();
        Self {
            states,
            tombstone: None,
        }
    }

    fn current(&self) -> Option<&str> {
        let now = Instant::now();
        self.states
            .iter()
            .find(|(_, until)| now < *until)
            .map(|(state, _)| state.as_str())
    }
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    config: Mutex<FaultConfig>,
    counters: Mutex<HashMap<String, u64>>,
    stats: Mutex<Stats>,
    /// Ids made moments ago (eventual consistency): id -> (service, made at).
    fresh: Mutex<HashMap<String, (String, Instant)>>,
    /// `kind/id` -> scripted states.
    lifecycle: Mutex<HashMap<String, Lifecycle>>,
    next_request: AtomicU64,
}

impl Shared {
    fn count(&self, key: &str, update: impl FnOnce(&mut OperationStats)) {
        let mut stats = self.stats.lock().unwrap();
        update(stats.entry(key.to_owned()).or_default());
    }

    fn request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("f4a17000-0000-4000-8000-{n:012x}")
    }
}

fn respond(answer: Answer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(e) => {
            return respond(Answer {
                status: 400,
                headers: Vec::new(),
                body: format!("fault proxy: cannot read the body: {e}"),
            });
        }
    };
    let path = parts.uri.path().to_owned();
    if path == "/_faultproxy/stats" {
        let stats = shared.stats.lock().unwrap().clone();
        return respond(Answer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_string(&stats).unwrap_or_default(),
        });
    }
    let query = parts.uri.query().map(str::to_owned);
    let operation = operation::parse(
        parts.method.as_str(),
        &path,
        query.as_deref(),
        header(&parts.headers, "authorization"),
        header(&parts.headers, "x-amz-target"),
        &body,
    );
    let config = shared.config.lock().unwrap().clone();
    if let Some(op) = &operation {
        let key = op.key();
        let n = {
            let mut counters = shared.counters.lock().unwrap();
            let counter = counters.entry(key.clone()).or_default();
            *counter += 1;
            *counter - 1
        };
        shared.count(&key, |s| s.calls += 1);
        let mut delay = Duration::ZERO;
        for (index, rule) in config.rules.iter().enumerate() {
            if !rule.matches(op) || draw(config.seed, &key, n, index) >= rule.probability {
                continue;
            }
            match rule.fault {
                Fault::Latency(d) => delay += d,
                Fault::Throttle => {
                    tokio::time::sleep(delay).await;
                    shared.count(&key, |s| s.throttled += 1);
                    return respond(answers::throttled(&op.service, &shared.request_id()));
                }
                Fault::ServerError(status) => {
                    tokio::time::sleep(delay).await;
                    shared.count(&key, |s| s.server_errors += 1);
                    return respond(answers::server_error(
                        &op.service,
                        status,
                        &shared.request_id(),
                    ));
                }
            }
        }
        if !delay.is_zero() {
            shared.count(&key, |s| s.delayed += 1);
            tokio::time::sleep(delay).await;
        }
        if let Some(answer) = not_yet_visible(&shared, &config, op, &body) {
            shared.count(&key, |s| s.not_found += 1);
            return respond(answer);
        }
        if let Some(answer) = refused_while_transitional(&shared, op, &body) {
            shared.count(&key, |s| s.lifecycle += 1);
            return respond(answer);
        }
        if let Some(answer) = tombstone(&shared, op, &path) {
            shared.count(&key, |s| s.lifecycle += 1);
            return respond(answer);
        }
    }

    // Forward.
    let url = match &query {
        Some(q) => format!("{}{}?{}", shared.upstream, path, q),
        None => format!("{}{}", shared.upstream, path),
    };
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut forward = shared.client.request(method, url);
    for (name, value) in &parts.headers {
        if matches!(name.as_str(), "host" | "content-length" | "connection") {
            continue;
        }
        forward = forward.header(name.as_str(), value.as_bytes());
    }
    let upstream = match forward.body(body.clone()).send().await {
        Ok(response) => response,
        Err(e) => {
            return respond(Answer {
                status: 502,
                headers: Vec::new(),
                body: format!("fault proxy: upstream unreachable: {e}"),
            });
        }
    };
    let status = upstream.status().as_u16();
    let headers: Vec<(String, String)> = upstream
        .headers()
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection"
            )
        })
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let text = upstream.text().await.unwrap_or_default();
    let mut answer = Answer {
        status,
        headers,
        body: text,
    };
    if let Some(op) = &operation
        && (200..300).contains(&status)
    {
        remember_fresh(&shared, &config, op, &body, &answer.body);
        if let Some(scale) = config.lifecycle_scale {
            start_lifecycle(&shared, scale, op, &path, &body, &answer.body);
            if rewrite_state(&shared, op, &path, &body, &mut answer.body) {
                shared.count(&op.key(), |s| s.lifecycle += 1);
            }
        }
    }
    respond(answer)
}

// --- eventual consistency ---

/// The element naming the id each EC2 create answers with.
fn created_id_element(op: &Operation) -> Option<&'static str> {
    Some(match (op.service.as_str(), op.name.as_str()) {
        ("ec2", "CreateVpc") => "vpcId",
        ("ec2", "CreateSubnet") => "subnetId",
        ("ec2", "CreateSecurityGroup") => "groupId",
        ("ec2", "CreateRouteTable") => "routeTableId",
        ("ec2", "CreateInternetGateway") => "internetGatewayId",
        ("ec2", "CreateNatGateway") => "natGatewayId",
        ("ec2", "AllocateAddress") => "allocationId",
        _ => return None,
    })
}

/// The text of the first `<element>` in an XML body.
fn xml_text(body: &str, element: &str) -> Option<String> {
    let open = format!("<{element}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{element}>"))? + start;
    Some(body[start..end].to_owned())
}

fn remember_fresh(
    shared: &Shared,
    config: &FaultConfig,
    op: &Operation,
    request: &[u8],
    answer: &str,
) {
    if config.consistency.is_none() || !config.consistency_services.contains(&op.service) {
        return;
    }
    let id = match (op.service.as_str(), op.name.as_str()) {
        ("iam", "CreateRole") => form_value(request, "RoleName"),
        _ => created_id_element(op).and_then(|element| xml_text(answer, element)),
    };
    if let Some(id) = id {
        shared
            .fresh
            .lock()
            .unwrap()
            .insert(id, (op.service.clone(), Instant::now()));
    }
}

/// A "not found" answer for a call naming an id made less than `consistency` ago (filters
/// excepted: a filter on a new id finds nothing rather than failing).
fn not_yet_visible(
    shared: &Shared,
    config: &FaultConfig,
    op: &Operation,
    request: &[u8],
) -> Option<Answer> {
    let window = config.consistency?;
    if !config.consistency_services.contains(&op.service) {
        return None;
    }
    let fresh = shared.fresh.lock().unwrap();
    let now = Instant::now();
    for (name, value) in form_urlencoded::parse(request) {
        if name.contains("Filter") || name == "Action" || name == "Version" {
            continue;
        }
        let Some((service, made)) = fresh.get(value.as_ref()) else {
            continue;
        };
        if *service != op.service || now.duration_since(*made) >= window {
            continue;
        }
        let request_id = shared.request_id();
        return Some(match op.service.as_str() {
            "iam" => answers::error(
                "iam",
                404,
                "NoSuchEntity",
                &format!("The role with name {value} cannot be found."),
                &request_id,
            ),
            _ => {
                let code = answers::ec2_not_found_code(&value)?;
                answers::error(
                    "ec2",
                    400,
                    code,
                    &format!("The ID '{value}' does not exist"),
                    &request_id,
                )
            }
        });
    }
    None
}

// --- lifecycle ---

fn eks_path(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .map(|p| {
            form_urlencoded::parse(format!("x={p}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| p.to_owned())
        })
        .collect()
}

fn json_field(body: &str, object: &str, field: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    value.get(object)?.get(field)?.as_str().map(str::to_owned)
}

fn start_lifecycle(
    shared: &Shared,
    scale: f64,
    op: &Operation,
    path: &str,
    request: &[u8],
    answer: &str,
) {
    use durations::*;
    let parts = eks_path(path);
    let (key, lifecycle) = match (op.service.as_str(), op.name.as_str()) {
        ("eks", "CreateCluster") => {
            let Some(name) = json_field(answer, "cluster", "name") else {
                return;
            };
            (
                format!("cluster/{name}"),
                Lifecycle::new(scale, &[("CREATING", EKS_CLUSTER_CREATING)]),
            )
        }
        ("eks", "DeleteCluster") => {
            let mut lifecycle = Lifecycle::new(scale, &[("DELETING", EKS_CLUSTER_DELETING)]);
            lifecycle.tombstone = Some(answer.to_owned());
            (format!("cluster/{}", parts[1]), lifecycle)
        }
        ("eks", "CreateNodegroup") => {
            let Some(name) = json_field(answer, "nodegroup", "nodegroupName") else {
                return;
            };
            (
                format!("nodegroup/{}/{name}", parts[1]),
                Lifecycle::new(scale, &[("CREATING", EKS_NODEGROUP_CREATING)]),
            )
        }
        ("eks", "DeleteNodegroup") => {
            let mut lifecycle = Lifecycle::new(scale, &[("DELETING", EKS_NODEGROUP_DELETING)]);
            lifecycle.tombstone = Some(answer.to_owned());
            (format!("nodegroup/{}/{}", parts[1], parts[3]), lifecycle)
        }
        ("rds", "CreateDBInstance") => {
            let Some(id) = form_value(request, "DBInstanceIdentifier") else {
                return;
            };
            (
                format!("db/{id}"),
                Lifecycle::new(
                    scale,
                    &[("creating", RDS_CREATING), ("backing-up", RDS_BACKING_UP)],
                ),
            )
        }
        ("rds", "ModifyDBInstance") => {
            let Some(id) = form_value(request, "DBInstanceIdentifier") else {
                return;
            };
            (
                format!("db/{id}"),
                Lifecycle::new(scale, &[("modifying", RDS_MODIFYING)]),
            )
        }
        ("elasticache", "CreateReplicationGroup") => {
            let Some(id) = form_value(request, "ReplicationGroupId") else {
                return;
            };
            (
                format!("cache/{id}"),
                Lifecycle::new(scale, &[("creating", CACHE_CREATING)]),
            )
        }
        ("elasticache", "ModifyReplicationGroup") => {
            let Some(id) = form_value(request, "ReplicationGroupId") else {
                return;
            };
            (
                format!("cache/{id}"),
                Lifecycle::new(scale, &[("modifying", CACHE_MODIFYING)]),
            )
        }
        _ => return,
    };
    shared.lifecycle.lock().unwrap().insert(key, lifecycle);
}

fn current_state(shared: &Shared, key: &str) -> Option<(String, Option<String>)> {
    let lifecycles = shared.lifecycle.lock().unwrap();
    let lifecycle = lifecycles.get(key)?;
    Some((lifecycle.current()?.to_owned(), lifecycle.tombstone.clone()))
}

/// Describe answers of objects inside a scripted state show that state.
fn rewrite_state(
    shared: &Shared,
    op: &Operation,
    path: &str,
    request: &[u8],
    body: &mut String,
) -> bool {
    let parts = eks_path(path);
    match (op.service.as_str(), op.name.as_str()) {
        ("eks", "DescribeCluster" | "DescribeNodegroup") => {
            let (key, object) = if op.name == "DescribeCluster" {
                (format!("cluster/{}", parts[1]), "cluster")
            } else {
                (format!("nodegroup/{}/{}", parts[1], parts[3]), "nodegroup")
            };
            let Some((state, _)) = current_state(shared, &key) else {
                return false;
            };
            let Ok(mut value) = serde_json::from_str::<Value>(body) else {
                return false;
            };
            let Some(inner) = value.get_mut(object).and_then(Value::as_object_mut) else {
                return false;
            };
            inner.insert("status".into(), Value::String(state.clone()));
            if object == "cluster" && state == "CREATING" {
                inner.remove("endpoint");
                inner.remove("certificateAuthority");
            }
            *body = value.to_string();
            true
        }
        ("rds", "DescribeDBInstances") => {
            let Some(id) = form_value(request, "DBInstanceIdentifier") else {
                return false;
            };
            let Some((state, _)) = current_state(shared, &format!("db/{id}")) else {
                return false;
            };
            replace_element(body, "DBInstanceStatus", &state)
        }
        ("elasticache", "DescribeReplicationGroups") => {
            let Some(id) = form_value(request, "ReplicationGroupId") else {
                return false;
            };
            let Some((state, _)) = current_state(shared, &format!("cache/{id}")) else {
                return false;
            };
            replace_element(body, "Status", &state)
        }
        _ => false,
    }
}

/// Replaces the text of every `<element>` in an XML body.
fn replace_element(body: &mut String, element: &str, text: &str) -> bool {
    let open = format!("<{element}>");
    let close = format!("</{element}>");
    let mut out = String::with_capacity(body.len());
    let mut rest = body.as_str();
    let mut changed = false;
    while let Some(start) = rest.find(&open) {
        let after = start + open.len();
        let Some(end) = rest[after..].find(&close) else {
            break;
        };
        out.push_str(&rest[..after]);
        out.push_str(text);
        rest = &rest[after + end..];
        changed = true;
    }
    out.push_str(rest);
    *body = out;
    changed
}

/// While a replication group is creating or modifying, AWS refuses tag calls and changes.
fn refused_while_transitional(shared: &Shared, op: &Operation, request: &[u8]) -> Option<Answer> {
    if op.service != "elasticache" {
        return None;
    }
    let id = match op.name.as_str() {
        "ListTagsForResource" | "AddTagsToResource" | "RemoveTagsFromResource" => {
            let arn = form_value(request, "ResourceName")?;
            arn.split(":replicationgroup:").nth(1)?.to_owned()
        }
        "ModifyReplicationGroup" | "IncreaseReplicaCount" | "DecreaseReplicaCount" => {
            form_value(request, "ReplicationGroupId")?
        }
        _ => return None,
    };
    current_state(shared, &format!("cache/{id}"))?;
    let message = if op.name.contains("Tags") {
        "Cluster not in available state to perform tagging operations.".to_owned()
    } else {
        format!("Replication group {id} must be in available state to modify.")
    };
    Some(answers::error(
        "elasticache",
        400,
        "InvalidReplicationGroupState",
        &message,
        &shared.request_id(),
    ))
}

/// An EKS object being deleted is still described (status `DELETING`) until its time is up.
fn tombstone(shared: &Shared, op: &Operation, path: &str) -> Option<Answer> {
    if op.service != "eks" || !matches!(op.name.as_str(), "DescribeCluster" | "DescribeNodegroup") {
        return None;
    }
    let parts = eks_path(path);
    let (key, object) = if op.name == "DescribeCluster" {
        (format!("cluster/{}", parts.get(1)?), "cluster")
    } else {
        (
            format!("nodegroup/{}/{}", parts.get(1)?, parts.get(3)?),
            "nodegroup",
        )
    };
    let (state, tombstone) = current_state(shared, &key)?;
    let mut value: Value = serde_json::from_str(&tombstone?).ok()?;
    value
        .get_mut(object)?
        .as_object_mut()?
        .insert("status".into(), Value::String(state));
    Some(Answer {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: value.to_string(),
    })
}
