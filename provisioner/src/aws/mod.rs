//! The AWS providers: one module per service, all behind one [`AwsProvider`] that the registry
//! maps every `aws.*` type to. Shared here: the clients (built once per process), error
//! classification (throttling, not-found), property access, tags, bounded waiters with backoff,
//! and an optional log of every API call (`STACKSMITH_AWS_CALL_LOG`, operation names only).

pub mod config;
pub mod ec2;
pub mod eks;
pub mod elasticache;
pub mod iam;
pub mod logs;
pub mod rds;
pub mod teardown;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use indexmap::IndexMap;
use serde_json::Value;

use crate::engine::ResourceType;
use crate::engine::provider::{
    BoxFuture, CallContext, LiveResource, OwnedObject, Provider, ProviderError, ProviderRegistry,
};
use crate::engine::types::{TypeCatalog, TypeSpec};

pub use config::{AwsTarget, PollSettings};

/// Appends one line per API operation (`service:Operation`) to this file when set.
pub const CALL_LOG_VAR: &str = "STACKSMITH_AWS_CALL_LOG";

/// The resource types the AWS providers serve.
pub const TYPES: &[&str] = &[
    "aws.ec2.vpc",
    "aws.ec2.subnet",
    "aws.ec2.internet_gateway",
    "aws.ec2.eip",
    "aws.ec2.nat_gateway",
    "aws.ec2.route_table",
    "aws.ec2.route",
    "aws.ec2.route_table_association",
    "aws.ec2.security_group",
    "aws.ec2.security_group_rule",
    "aws.ec2.flow_log",
    "aws.logs.log_group",
    "aws.iam.role",
    "aws.iam.oidc_provider",
    "aws.iam.role_policy_attachment",
    "aws.iam.role_policy",
    "aws.eks.cluster",
    "aws.eks.node_group",
    "aws.eks.addon",
    "aws.eks.access_entry",
    "aws.rds.db_subnet_group",
    "aws.rds.db_parameter_group",
    "aws.rds.instance",
    "aws.elasticache.subnet_group",
    "aws.elasticache.replication_group",
];

/// Registers the AWS providers for every type in [`TYPES`].
pub fn register(registry: &mut ProviderRegistry, target: &AwsTarget) {
    let provider = Arc::new(AwsProvider::new(AwsContext::new(target.clone())));
    for name in TYPES {
        registry.register(ResourceType::new(name), provider.clone());
    }
}

/// Every API call made through the clients, by name, in order.
#[derive(Debug, Default)]
pub struct CallLog {
    calls: Mutex<Vec<String>>,
    file: Option<PathBuf>,
}

impl CallLog {
    pub fn from_environment() -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            file: std::env::var_os(CALL_LOG_VAR)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Whether an operation name changes something (everything but Describe/List/Get).
    pub fn is_mutating(call: &str) -> bool {
        let operation = call.rsplit(':').next().unwrap_or(call);
        !["Describe", "List", "Get"]
            .iter()
            .any(|prefix| operation.starts_with(prefix))
    }

    fn record(&self, call: String) {
        if let Some(path) = &self.file {
            use std::io::Write;
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                // One write per line: calls made at once append whole lines, never interleaved
                // pieces (`writeln!` writes the text and the newline separately).
                let _ = file.write_all(format!("{call}\n").as_bytes());
            }
        }
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

#[derive(Debug, Clone)]
struct CallLogInterceptor(Arc<CallLog>);

impl Intercept for CallLogInterceptor {
    fn name(&self) -> &'static str {
        "StacksmithCallLog"
    }

    // Not `read_before_execution`: a client interceptor runs that hook before the operation's
    // configuration (which holds its `Metadata`) is applied.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            self.0
                .record(format!("{}:{}", metadata.service(), metadata.name()));
        }
        Ok(())
    }
}

/// One client per service.
#[derive(Clone, Debug)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub iam: aws_sdk_iam::Client,
    pub eks: aws_sdk_eks::Client,
    pub rds: aws_sdk_rds::Client,
    pub elasticache: aws_sdk_elasticache::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

impl Clients {
    pub fn new(sdk: &aws_config::SdkConfig, log: &Arc<CallLog>) -> Self {
        let interceptor = CallLogInterceptor(log.clone());
        Self {
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            eks: aws_sdk_eks::Client::from_conf(
                aws_sdk_eks::config::Builder::from(sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            rds: aws_sdk_rds::Client::from_conf(
                aws_sdk_rds::config::Builder::from(sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            elasticache: aws_sdk_elasticache::Client::from_conf(
                aws_sdk_elasticache::config::Builder::from(sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            logs: aws_sdk_cloudwatchlogs::Client::from_conf(
                aws_sdk_cloudwatchlogs::config::Builder::from(sdk)
                    .interceptor(interceptor)
                    .build(),
            ),
        }
    }
}

/// What every provider call shares: the clients (loaded on first use), pacing and the call log.
pub struct AwsContext {
    target: AwsTarget,
    clients: tokio::sync::OnceCell<Clients>,
    pub log: Arc<CallLog>,
}

impl AwsContext {
    pub fn new(target: AwsTarget) -> Self {
        Self {
            target,
            clients: tokio::sync::OnceCell::new(),
            log: Arc::new(CallLog::from_environment()),
        }
    }

    /// A context over clients built elsewhere (aws-smithy-mocks tests).
    pub fn with_clients(clients: Clients, poll: PollSettings) -> Self {
        Self {
            target: AwsTarget {
                poll,
                ..AwsTarget::default()
            },
            clients: tokio::sync::OnceCell::new_with(Some(clients)),
            log: Arc::new(CallLog::default()),
        }
    }

    pub async fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| async {
                let sdk = self.target.load().await;
                Clients::new(&sdk, &self.log)
            })
            .await
    }

    pub fn poll(&self) -> PollSettings {
        self.target.poll
    }

    /// Whether deletes may turn deletion protection off (`down --allow-deletion-protected`).
    pub fn allow_deletion_protected(&self) -> bool {
        self.target.allow_deletion_protected
    }

    /// Whether deleting the RDS instance skips its final snapshot (the stack's
    /// `database.final_snapshot: false`).
    pub fn skip_final_db_snapshot(&self) -> bool {
        self.target.skip_final_db_snapshot
    }

    /// The same context, deleting RDS instances without a final snapshot (tests).
    pub fn skipping_final_db_snapshot(mut self, skip: bool) -> Self {
        self.target.skip_final_db_snapshot = skip;
        self
    }

    /// The same context, allowing deletes to turn deletion protection off (tests).
    pub fn allowing_deletion_protected(mut self, allow: bool) -> Self {
        self.target.allow_deletion_protected = allow;
        self
    }
}

// --- errors ---

/// Error codes AWS uses for "slow down".
const THROTTLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// An API error reduced to what the providers decide on, shown as one line: the operation, the
/// HTTP status, AWS's error code and message, and the request id (what AWS support asks for).
/// The raw answer (an emulator's HTML error page, say) is logged at `RUST_LOG=debug` only.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {message}{}", context(*.status, .request_id.as_deref()))]
pub struct ApiError {
    pub operation: &'static str,
    pub code: Option<String>,
    /// `CODE: message` (or what went wrong when the answer carried no code), on one line.
    pub message: String,
    pub status: Option<u16>,
    pub request_id: Option<String>,
}

fn context(status: Option<u16>, request_id: Option<&str>) -> String {
    match (status, request_id) {
        (Some(status), Some(id)) => format!(" (HTTP {status}, request id {id})"),
        (Some(status), None) => format!(" (HTTP {status})"),
        (None, Some(id)) => format!(" (request id {id})"),
        (None, None) => String::new(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl ApiError {
    pub fn new<E>(operation: &'static str, error: aws_sdk_ec2::error::SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        use aws_sdk_ec2::error::SdkError;
        let raw = error.raw_response();
        let status = raw.map(|r| r.status().as_u16());
        let request_id = error
            .meta()
            .extra("aws_request_id")
            .map(str::to_owned)
            .or_else(|| {
                let headers = raw?.headers();
                headers
                    .get("x-amzn-requestid")
                    .or_else(|| headers.get("x-amz-request-id"))
                    .map(str::to_owned)
            });
        if let Some(raw) = raw {
            let body = raw.body().bytes().map(String::from_utf8_lossy);
            tracing::debug!(
                operation,
                status = raw.status().as_u16(),
                body = body.as_deref().unwrap_or("<streaming>"),
                "AWS answered an error"
            );
        }
        let code = error.code().map(str::to_owned);
        let message = match (&code, error.message()) {
            (Some(code), Some(message)) => format!("{code}: {}", one_line(message)),
            (Some(code), None) => code.clone(),
            (None, _) => match &error {
                SdkError::ServiceError(_) => {
                    "the answer carried no AWS error code (RUST_LOG=debug shows its body)"
                        .to_owned()
                }
                SdkError::TimeoutError(_) => "the request timed out".to_owned(),
                SdkError::DispatchFailure(failure) => {
                    let mut reason = "the request could not be sent".to_owned();
                    if failure.is_io() {
                        reason.push_str(" (connection failed)");
                    } else if failure.is_timeout() {
                        reason.push_str(" (connect timeout)");
                    }
                    let mut source = std::error::Error::source(&error);
                    let mut last = None;
                    while let Some(inner) = source {
                        last = Some(inner.to_string());
                        source = inner.source();
                    }
                    match last {
                        Some(last) => format!("{reason}: {}", one_line(&last)),
                        None => reason,
                    }
                }
                SdkError::ResponseError(_) => {
                    "the answer could not be read (RUST_LOG=debug shows it)".to_owned()
                }
                _ => one_line(&error.to_string()),
            },
        };
        Self {
            operation,
            code,
            message,
            status,
            request_id,
        }
    }

    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    pub fn is_any(&self, codes: &[&str]) -> bool {
        codes.iter().any(|c| self.is(c))
    }

    pub fn throttled(&self) -> bool {
        self.is_any(THROTTLE_CODES)
    }
}

impl From<ApiError> for ProviderError {
    fn from(error: ApiError) -> Self {
        if error.throttled() {
            ProviderError::Throttled { retry_after: None }
        } else {
            ProviderError::Failed(error.to_string())
        }
    }
}

/// `.map_err(api("CreateVpc"))`.
pub fn api<E>(operation: &'static str) -> impl FnOnce(aws_sdk_ec2::error::SdkError<E>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |error| ApiError::new(operation, error)
}

pub fn failed(message: impl Into<String>) -> ProviderError {
    ProviderError::Failed(message.into())
}

// --- properties ---

/// Typed access to resolved properties.
#[derive(Clone, Copy)]
pub struct Props<'a>(pub &'a IndexMap<String, Value>);

impl<'a> Props<'a> {
    pub fn opt_str(&self, name: &str) -> Option<&'a str> {
        self.0.get(name).and_then(Value::as_str)
    }

    pub fn str(&self, name: &str) -> Result<&'a str, ProviderError> {
        self.opt_str(name)
            .ok_or_else(|| failed(format!("property `{name}` must be a string")))
    }

    pub fn bool(&self, name: &str) -> Result<bool, ProviderError> {
        self.0
            .get(name)
            .and_then(Value::as_bool)
            .ok_or_else(|| failed(format!("property `{name}` must be true or false")))
    }

    pub fn opt_i64(&self, name: &str) -> Option<i64> {
        self.0.get(name).and_then(Value::as_i64)
    }

    pub fn i64(&self, name: &str) -> Result<i64, ProviderError> {
        self.opt_i64(name)
            .ok_or_else(|| failed(format!("property `{name}` must be a whole number")))
    }

    pub fn i32(&self, name: &str) -> Result<i32, ProviderError> {
        i32::try_from(self.i64(name)?)
            .map_err(|_| failed(format!("property `{name}` is out of range")))
    }

    pub fn strs(&self, name: &str) -> Result<Vec<String>, ProviderError> {
        match self.0.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| failed(format!("property `{name}` must list strings")))
                })
                .collect(),
            Some(_) => Err(failed(format!("property `{name}` must be a list"))),
        }
    }

    /// The `tags` property (the stack's tags and `Name`).
    pub fn tags(&self) -> IndexMap<String, String> {
        self.0
            .get("tags")
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Ownership tags start with this prefix; updates never remove them.
pub const OWNERSHIP_PREFIX: &str = "stacksmith:";

/// The desired tags and the ownership tags together.
pub fn all_tags(
    properties: &IndexMap<String, Value>,
    ownership: &IndexMap<String, String>,
) -> IndexMap<String, String> {
    let mut tags = Props(properties).tags();
    for (k, v) in ownership {
        tags.insert(k.clone(), v.clone());
    }
    tags
}

/// Whether `have` carries every one of `want`.
pub fn carries(have: &IndexMap<String, String>, want: &IndexMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// A JSON object as a property or output map (anything else is empty): how providers turn a
/// `json!({...})` describing a live object into `LiveResource` fields.
pub fn object_map(value: Value) -> IndexMap<String, Value> {
    match value {
        Value::Object(map) => map.into_iter().collect(),
        _ => IndexMap::new(),
    }
}

/// A live object as `list_owned` reports it.
pub fn owned(
    kind: &str,
    live: LiveResource,
    member_of: Option<crate::engine::provider::MemberOf>,
) -> OwnedObject {
    OwnedObject {
        resource_type: ResourceType::new(kind),
        id: live.id,
        tags: live.tags,
        properties: live.properties,
        member_of,
    }
}

/// The name prefix of every named object a deployment makes (`<stack>-` or
/// `<stack>-<instance>-`), from its ownership tags; `None` without a stack tag. Listings of kinds
/// without tag filters read the tags of these candidates only.
pub fn deployment_prefix(ownership: &IndexMap<String, String>) -> Option<String> {
    let stack = ownership.get("stacksmith:stack")?;
    Some(
        match ownership
            .get("stacksmith:instance")
            .filter(|i| !i.is_empty())
        {
            Some(instance) => format!("{stack}-{instance}-"),
            None => format!("{stack}-"),
        },
    )
}

/// The tags the executor adds to every object it creates (never part of a `tags` property).
pub const OWNERSHIP_KEYS: &[&str] = &[
    "stacksmith:stack",
    "stacksmith:instance",
    "stacksmith:address",
];

/// The `tags` property as recorded: the object's tags without the ownership tags (other
/// `stacksmith:` tags, such as an instance's `stacksmith:expires-at`, come from the property and
/// are read back with it, so a refresh does not see them as drift).
pub fn user_tags(tags: &IndexMap<String, String>) -> Value {
    Value::Object(
        tags.iter()
            .filter(|(k, _)| !OWNERSHIP_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// What to add or change, and which keys to remove, to go from `have` to `want` (ownership tags
/// are never removed).
pub fn tag_diff(
    have: &IndexMap<String, String>,
    want: &IndexMap<String, String>,
) -> (IndexMap<String, String>, Vec<String>) {
    let set = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let remove = have
        .keys()
        .filter(|k| !k.starts_with(OWNERSHIP_PREFIX) && !want.contains_key(*k))
        .cloned()
        .collect();
    (set, remove)
}

/// A deterministic idempotency token for one create: the same call retried reuses it, a
/// create with other properties (a replacement) gets another.
pub fn client_token(
    ownership: &IndexMap<String, String>,
    properties: &IndexMap<String, Value>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(ownership).unwrap_or_default());
    hasher.update(serde_json::to_vec(properties).unwrap_or_default());
    hex::encode(&hasher.finalize()[..16])
}

// --- waiting ---

/// How long to wait for one kind of transition, sized for real AWS.
pub mod bounds {
    use std::time::Duration;
    pub const EC2: Duration = Duration::from_secs(5 * 60);
    pub const NAT_GATEWAY: Duration = Duration::from_secs(15 * 60);
    pub const DEPENDENCY: Duration = Duration::from_secs(10 * 60);
    pub const IAM: Duration = Duration::from_secs(2 * 60);
    /// How long an ID just created may be unknown to other calls (EC2's eventual consistency,
    /// a new IAM role not yet assumable by a service): AWS documents retrying with backoff.
    pub const PROPAGATION: Duration = Duration::from_secs(2 * 60);
}

/// Polls `check` with exponential backoff until it yields `Some`, for at most `bound` (scaled by
/// the context's pacing). Throttled polls count as "not yet".
pub async fn wait_for<T, F, Fut>(
    ctx: &AwsContext,
    what: &str,
    bound: Duration,
    mut check: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, ProviderError>>,
{
    let poll = ctx.poll();
    let bound = bound.mul_f64(poll.bound_scale);
    let started = Instant::now();
    let mut delay = poll.initial;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) | Err(ProviderError::Throttled { .. }) => {}
            Err(other) => return Err(other),
        }
        if started.elapsed() + delay > bound {
            return Err(failed(format!(
                "timed out after {}s waiting for {what}",
                started.elapsed().as_secs()
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay.mul_f64(1.5)).min(poll.max);
    }
}

/// Runs `call` again while it fails with one of `codes` (DependencyViolation while dependents
/// are still going away), with backoff, for at most `bound`.
pub async fn retry_on<T, F, Fut>(
    ctx: &AwsContext,
    what: &str,
    codes: &[&str],
    bound: Duration,
    call: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    retry_while(ctx, what, bound, |e| e.is_any(codes), call).await
}

/// Whether an EC2 error says an ID is unknown (`InvalidSubnetID.NotFound`, `InvalidGroup.NotFound`,
/// `NatGatewayNotFound`, ...): right after the object's create, EC2's eventual consistency.
pub fn ec2_not_found(error: &ApiError) -> bool {
    error
        .code
        .as_deref()
        .is_some_and(|c| c.ends_with(".NotFound") || c.ends_with("NotFound"))
}

/// Runs a call that names objects created moments ago, again while EC2 answers that an ID does
/// not exist (eventual consistency: "run the command again with backoff, up to a few minutes"),
/// for at most [`bounds::PROPAGATION`]; throttling is retried too.
pub async fn propagated<T, F, Fut>(
    ctx: &AwsContext,
    what: &str,
    call: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    retry_while(ctx, what, bounds::PROPAGATION, ec2_not_found, call).await
}

/// Runs `call` again while `retry(error)` holds (or it is throttled), with backoff, for at most
/// `bound` (scaled by the context's pacing); then fails with the last error.
pub async fn retry_while<T, F, Fut>(
    ctx: &AwsContext,
    what: &str,
    bound: Duration,
    retry: impl Fn(&ApiError) -> bool,
    mut call: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let poll = ctx.poll();
    let bound = bound.mul_f64(poll.bound_scale);
    let started = Instant::now();
    let mut delay = poll.initial;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if retry(&error) || error.throttled() => {
                if started.elapsed() + delay > bound {
                    return Err(failed(format!(
                        "{what}: still failing after {}s: {error}",
                        started.elapsed().as_secs()
                    )));
                }
            }
            Err(error) => return Err(error.into()),
        }
        tokio::time::sleep(delay).await;
        delay = (delay.mul_f64(1.5)).min(poll.max);
    }
}

// --- the provider ---

/// Serves every `aws.*` type; dispatches on the type name.
pub struct AwsProvider {
    ctx: Arc<AwsContext>,
    catalog: TypeCatalog,
}

impl AwsProvider {
    pub fn new(ctx: AwsContext) -> Self {
        Self {
            ctx: Arc::new(ctx),
            catalog: TypeCatalog::builtin(),
        }
    }

    pub fn context(&self) -> &Arc<AwsContext> {
        &self.ctx
    }
}

fn unknown(resource_type: &ResourceType) -> ProviderError {
    failed(format!("the AWS provider does not serve `{resource_type}`"))
}

impl Provider for AwsProvider {
    fn type_spec(&self, resource_type: &ResourceType) -> TypeSpec {
        let mut spec = self.catalog.spec(resource_type);
        if resource_type.as_str() == "aws.ec2.route_table_association" {
            // ReplaceRouteTableAssociation issues a new association id: treat as a replacement.
            spec.forces_replacement.push((
                "route_table_id",
                "moving a subnet to another route table issues a new association",
            ));
        }
        spec
    }

    fn create<'a>(
        &'a self,
        context: &'a CallContext,
        properties: &'a IndexMap<String, Value>,
        tags: &'a IndexMap<String, String>,
    ) -> BoxFuture<'a, Result<LiveResource, ProviderError>> {
        Box::pin(async move {
            let ctx = &self.ctx;
            let t = context.resource_type.as_str();
            match service(t) {
                Some("ec2") => ec2::create(ctx, t, properties, tags, &context.taken).await,
                Some("iam") => iam::create(ctx, t, properties, tags).await,
                Some("eks") => eks::create(ctx, t, properties, tags).await,
                Some("rds") => rds::create(ctx, t, properties, tags).await,
                Some("elasticache") => elasticache::create(ctx, t, properties, tags).await,
                Some("logs") => logs::create(ctx, t, properties, tags).await,
                _ => Err(unknown(&context.resource_type)),
            }
        })
    }

    fn read<'a>(
        &'a self,
        context: &'a CallContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<LiveResource>, ProviderError>> {
        Box::pin(async move {
            let ctx = &self.ctx;
            let t = context.resource_type.as_str();
            match service(t) {
                Some("ec2") => ec2::read(ctx, t, id).await,
                Some("iam") => iam::read(ctx, t, id).await,
                Some("eks") => eks::read(ctx, t, id).await,
                Some("rds") => rds::read(ctx, t, id).await,
                Some("elasticache") => elasticache::read(ctx, t, id).await,
                Some("logs") => logs::read(ctx, t, id).await,
                _ => Err(unknown(&context.resource_type)),
            }
        })
    }

    fn find_by_tags<'a>(
        &'a self,
        context: &'a CallContext,
        tags: &'a IndexMap<String, String>,
    ) -> BoxFuture<'a, Result<Vec<LiveResource>, ProviderError>> {
        Box::pin(async move {
            let ctx = &self.ctx;
            let t = context.resource_type.as_str();
            match service(t) {
                Some("ec2") => ec2::find_by_tags(ctx, t, tags).await,
                // Named objects (IAM, EKS, RDS, ElastiCache and log groups) are found by name
                // when a retried create meets them, and adopted when they carry the ownership
                // tags.
                Some("iam" | "rds" | "elasticache" | "eks" | "logs") => Ok(Vec::new()),
                _ => Err(unknown(&context.resource_type)),
            }
        })
    }

    fn find_by_key<'a>(
        &'a self,
        context: &'a CallContext,
        properties: &'a IndexMap<String, Value>,
    ) -> BoxFuture<'a, Result<Vec<LiveResource>, ProviderError>> {
        Box::pin(async move {
            let t = context.resource_type.as_str();
            match service(t) {
                Some("ec2") => ec2::find_by_key(&self.ctx, t, properties).await,
                _ => Ok(Vec::new()),
            }
        })
    }

    fn list_members<'a>(
        &'a self,
        context: &'a CallContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<OwnedObject>, ProviderError>> {
        Box::pin(async move {
            let t = context.resource_type.as_str();
            match service(t) {
                Some("ec2") => ec2::members(&self.ctx, t, id).await,
                _ => Ok(Vec::new()),
            }
        })
    }

    fn list_owned<'a>(
        &'a self,
        ownership: &'a IndexMap<String, String>,
    ) -> BoxFuture<'a, Result<Vec<OwnedObject>, ProviderError>> {
        Box::pin(async move {
            let ctx = &self.ctx;
            let (ec2, eks, rds, elasticache, logs, iam) = tokio::join!(
                ec2::list_owned(ctx, ownership),
                eks::list_owned(ctx, ownership),
                rds::list_owned(ctx, ownership),
                elasticache::list_owned(ctx, ownership),
                logs::list_owned(ctx, ownership),
                iam::list_owned(ctx, ownership),
            );
            let mut owned = ec2?;
            owned.extend(iam?);
            owned.extend(eks?);
            owned.extend(rds?);
            owned.extend(elasticache?);
            owned.extend(logs?);
            Ok(owned)
        })
    }

    fn availability_zones(
        &self,
    ) -> BoxFuture<'_, Result<Option<Vec<crate::engine::zones::Zone>>, ProviderError>> {
        Box::pin(async move { ec2::availability_zones(&self.ctx).await.map(Some) })
    }

    fn update<'a>(
        &'a self,
        context: &'a CallContext,
        id: &'a str,
        properties: &'a IndexMap<String, Value>,
    ) -> BoxFuture<'a, Result<LiveResource, ProviderError>> {
        Box::pin(async move {
            let ctx = &self.ctx;
            let t = context.resource_type.as_str();
            match service(t) {
                Some("ec2") => ec2::update(ctx, t, id, properties).await,
                Some("iam") => iam::update(ctx, t, id, properties).await,
                Some("eks") => eks::update(ctx, t, id, properties).await,
                Some("rds") => rds::update(ctx, t, id, properties).await,
                Some("elasticache") => elasticache::update(ctx, t, id, properties).await,
                Some("logs") => logs::update(ctx, t, id, properties).await,
                _ => Err(unknown(&context.resource_type)),
            }
        })
    }

    fn delete<'a>(
        &'a self,
        context: &'a CallContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let ctx = &self.ctx;
            let t = context.resource_type.as_str();
            match service(t) {
                Some("ec2") => ec2::delete(ctx, t, id).await,
                Some("iam") => iam::delete(ctx, t, id).await,
                Some("eks") => eks::delete(ctx, t, id).await,
                Some("rds") => rds::delete(ctx, t, id).await,
                Some("elasticache") => elasticache::delete(ctx, t, id).await,
                Some("logs") => logs::delete(ctx, t, id).await,
                _ => Err(unknown(&context.resource_type)),
            }
        })
    }
}

/// `aws.ec2.vpc` -> `ec2`.
fn service(resource_type: &str) -> Option<&str> {
    resource_type.strip_prefix("aws.")?.split('.').next()
}
