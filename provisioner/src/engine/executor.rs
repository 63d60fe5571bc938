//! The executor: walks a [`Plan`] concurrently. Each step waits for the steps it depends on; at
//! most `parallelism` provider calls run at once (a [`Semaphore`] whose capacity shrinks when a
//! provider reports throttling and grows back on success). Every provider call is journalled: a
//! pending entry is saved before the call and settled (with its outcome) after it. On a failure or
//! an interrupt nothing new starts, in-flight calls finish and are recorded, and the report lists
//! what happened.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use indexmap::IndexMap;
use rand::Rng;
use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::Address;
use super::events::{EventSender, ExecutionEvent, Operation, emit, millis};
use super::plan::{ActionKind, Plan, ResourceAction};
use super::provider::{BoxFuture, CallContext, Provider, ProviderError, ProviderRegistry};
use super::resource::ownership_tags;
use super::secrets::{StateCipher, generate_secret};
use super::types::ReplacementOrder;
use super::value::{self, OutputRef};
use crate::state::journal::Journal;
use crate::state::{PendingKind, PendingOperation, ResourceRecord, StateDocument};

pub const DEFAULT_PARALLELISM: usize = 10;

/// A Ctrl-C (or test) signal: once triggered, the executor starts nothing new.
#[derive(Debug, Default)]
pub struct Interrupt {
    triggered: AtomicBool,
    notify: Notify,
}

impl Interrupt {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}

pub struct ExecutorOptions {
    pub parallelism: usize,
    pub events: Option<EventSender>,
    pub interrupt: Arc<Interrupt>,
    /// Needed when the plan creates secrets or updates resources holding them.
    pub cipher: Option<StateCipher>,
    /// How long one call may keep being throttled before it counts as failed.
    pub max_throttle_wait: Duration,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            parallelism: DEFAULT_PARALLELISM,
            events: None,
            interrupt: Interrupt::new(),
            cipher: None,
            max_throttle_wait: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Create,
    Update,
    Delete,
    /// The "create" half of a replacement.
    ReplaceCreate(ReplacementOrder),
    /// The "delete the old object" half of a replacement.
    ReplaceDelete(ReplacementOrder),
}

impl StepKind {
    fn operation(self) -> Operation {
        match self {
            Self::Create | Self::ReplaceCreate(_) => Operation::Create,
            Self::Update => Operation::Update,
            Self::Delete | Self::ReplaceDelete(_) => Operation::Delete,
        }
    }

    fn is_delete(self) -> bool {
        matches!(
            self,
            Self::Delete | Self::ReplaceDelete(ReplacementOrder::DeleteBeforeCreate)
        )
    }
}

#[derive(Debug, Clone)]
struct Step {
    action: usize,
    kind: StepKind,
    waits_for: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    pub address: Address,
    pub operation: Operation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub address: Address,
    pub operation: Operation,
    pub error: String,
}

/// What an apply did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    pub completed: Vec<StepOutcome>,
    pub failed: Vec<StepFailure>,
    /// Steps never started because of a failure or an interrupt.
    pub not_started: Vec<StepOutcome>,
    pub interrupted: bool,
    /// The most steps that ran at the same time.
    pub max_in_flight: usize,
    pub elapsed: Duration,
}

impl ApplyReport {
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && !self.interrupted && self.not_started.is_empty()
    }

    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} succeeded, {} failed, {} not started in {:.1}s",
            self.completed.len(),
            self.failed.len(),
            self.not_started.len(),
            self.elapsed.as_secs_f64()
        );
        if self.interrupted {
            text.push_str(" (interrupted)");
        }
        for failure in &self.failed {
            text.push_str(&format!(
                "\n  failed: {} {}: {}",
                failure.operation.progressive(),
                failure.address,
                failure.error
            ));
        }
        text
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    MissingProvider(#[from] super::provider::MissingProvider),
    #[error("the plan was made for stack `{plan}`, but the state is stack `{state}`")]
    WrongStack { plan: String, state: String },
}

/// Adaptive concurrency: the semaphore starts with `max` permits; throttling halves the limit
/// (permits are retired as they come back), each success past the limit's worth adds one back.
struct Limiter {
    semaphore: Arc<Semaphore>,
    max: usize,
    limit: AtomicUsize,
    debt: AtomicUsize,
    successes: AtomicUsize,
}

impl Limiter {
    fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
            limit: AtomicUsize::new(max),
            debt: AtomicUsize::new(0),
            successes: AtomicUsize::new(0),
        }
    }

    fn current(&self) -> usize {
        self.limit.load(Ordering::SeqCst)
    }

    fn on_throttled(&self) {
        let previous = self
            .limit
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |limit| {
                (limit > 1).then_some((limit / 2).max(1))
            });
        if let Ok(previous) = previous {
            let reduction = previous - (previous / 2).max(1);
            let forgotten = self.semaphore.forget_permits(reduction);
            self.debt.fetch_add(reduction - forgotten, Ordering::SeqCst);
        }
        self.successes.store(0, Ordering::SeqCst);
    }

    fn on_success(&self) {
        let limit = self.current();
        if limit >= self.max {
            return;
        }
        let successes = self.successes.fetch_add(1, Ordering::SeqCst) + 1;
        if successes >= limit
            && self
                .limit
                .compare_exchange(limit, limit + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.successes.store(0, Ordering::SeqCst);
            let paid = self
                .debt
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
                .is_ok();
            if !paid {
                self.semaphore.add_permits(1);
            }
        }
    }

    fn release(&self, permit: OwnedSemaphorePermit) {
        let owed = self
            .debt
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
            .is_ok();
        if owed {
            permit.forget();
        }
    }
}

/// Everything a running step needs.
struct RunContext {
    journal: Arc<Journal>,
    registry: ProviderRegistry,
    cipher: Option<StateCipher>,
    events: Option<EventSender>,
    limiter: Limiter,
    stack: String,
    instance: Option<String>,
    max_throttle_wait: Duration,
    /// Steps holding a permit right now, and the most at once.
    active: AtomicUsize,
    max_active: AtomicUsize,
}

/// Orders the plan's provider calls: see the module docs of [`crate::engine`] for the rules.
fn build_steps(actions: &[ResourceAction]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut output_step: HashMap<&Address, usize> = HashMap::new();
    let push = |steps: &mut Vec<Step>, action: usize, kind: StepKind, waits_for: Vec<usize>| {
        steps.push(Step {
            action,
            kind,
            waits_for,
        });
        steps.len() - 1
    };
    for (index, action) in actions.iter().enumerate() {
        let inputs: Vec<usize> = action
            .depends_on
            .iter()
            .filter_map(|d| output_step.get(d).copied())
            .collect();
        match (action.action, action.replacement_order) {
            (ActionKind::NoOp, _) => {}
            (ActionKind::Create, _) => {
                let step = push(&mut steps, index, StepKind::Create, inputs);
                output_step.insert(&action.address, step);
            }
            (ActionKind::Update, _) => {
                let step = push(&mut steps, index, StepKind::Update, inputs);
                output_step.insert(&action.address, step);
            }
            (ActionKind::Replace, Some(ReplacementOrder::CreateBeforeDelete)) => {
                let order = ReplacementOrder::CreateBeforeDelete;
                let create = push(&mut steps, index, StepKind::ReplaceCreate(order), inputs);
                push(
                    &mut steps,
                    index,
                    StepKind::ReplaceDelete(order),
                    vec![create],
                );
                output_step.insert(&action.address, create);
            }
            (ActionKind::Replace, _) => {
                let order = ReplacementOrder::DeleteBeforeCreate;
                let delete = push(
                    &mut steps,
                    index,
                    StepKind::ReplaceDelete(order),
                    Vec::new(),
                );
                let mut waits = inputs;
                waits.push(delete);
                let create = push(&mut steps, index, StepKind::ReplaceCreate(order), waits);
                output_step.insert(&action.address, create);
            }
            (ActionKind::Delete, _) => {
                push(&mut steps, index, StepKind::Delete, Vec::new());
            }
        }
    }
    // Deletions run dependents first: a delete of X waits for the deletes of everything that
    // depends on X. The old half of a create-before-delete replacement of X waits until every
    // step of X's dependents has repointed them at the new object.
    let extra: Vec<(usize, usize)> = (0..steps.len())
        .flat_map(|i| {
            let target = &actions[steps[i].action];
            let kind = steps[i].kind;
            steps
                .iter()
                .enumerate()
                .filter(move |(j, other)| {
                    *j != i && {
                        let dependent = &actions[other.action];
                        dependent.depends_on.contains(&target.address)
                            && dependent.address != target.address
                            && ((kind.is_delete() && other.kind.is_delete())
                                || kind
                                    == StepKind::ReplaceDelete(
                                        ReplacementOrder::CreateBeforeDelete,
                                    ))
                    }
                })
                .map(move |(j, _)| (i, j))
        })
        .collect();
    for (step, waits_for) in extra {
        if !steps[step].waits_for.contains(&waits_for) {
            steps[step].waits_for.push(waits_for);
        }
    }
    steps
}

/// Applies `plan`, journalling every provider call through `journal`.
pub async fn apply(
    plan: &Plan,
    journal: Arc<Journal>,
    registry: &ProviderRegistry,
    options: ExecutorOptions,
) -> Result<ApplyReport, ExecutorError> {
    let started = Instant::now();
    let snapshot = journal.snapshot().await;
    if snapshot.stack != plan.stack {
        return Err(ExecutorError::WrongStack {
            plan: plan.stack.clone(),
            state: snapshot.stack,
        });
    }
    for action in &plan.actions {
        registry.get(&action.resource_type)?;
        if let Some(previous) = &action.previous_type {
            registry.get(previous)?;
        }
    }
    let actions: Arc<Vec<ResourceAction>> = Arc::new(plan.actions.clone());
    let steps = build_steps(&actions);
    let context = Arc::new(RunContext {
        journal,
        registry: registry.clone(),
        cipher: options.cipher,
        events: options.events,
        limiter: Limiter::new(options.parallelism),
        stack: plan.stack.clone(),
        instance: plan.instance.clone(),
        max_throttle_wait: options.max_throttle_wait,
        active: AtomicUsize::new(0),
        max_active: AtomicUsize::new(0),
    });

    let mut waiting: Vec<usize> = steps.iter().map(|s| s.waits_for.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (index, step) in steps.iter().enumerate() {
        for &dependency in &step.waits_for {
            dependents[dependency].push(index);
        }
    }
    let mut ready: VecDeque<usize> = (0..steps.len()).filter(|&i| waiting[i] == 0).collect();
    let mut started_steps = vec![false; steps.len()];
    let mut join: JoinSet<(usize, Result<(), String>)> = JoinSet::new();
    let mut report = ApplyReport::default();
    let mut stopping = false;
    let interrupt = options.interrupt;

    loop {
        if !stopping && interrupt.is_triggered() {
            stopping = true;
            report.interrupted = true;
            emit(
                context.events.as_ref(),
                ExecutionEvent::Interrupted {
                    in_flight: join.len(),
                },
            );
        }
        while !stopping && let Some(&next) = ready.front() {
            let Ok(permit) = context.limiter.semaphore.clone().try_acquire_owned() else {
                break;
            };
            ready.pop_front();
            started_steps[next] = true;
            let step = steps[next].clone();
            let action = actions[step.action].clone();
            let context = context.clone();
            join.spawn(async move {
                let now = context.active.fetch_add(1, Ordering::SeqCst) + 1;
                context.max_active.fetch_max(now, Ordering::SeqCst);
                let result = run_step(&context, &action, step.kind).await;
                context.active.fetch_sub(1, Ordering::SeqCst);
                context.limiter.release(permit);
                (next, result)
            });
        }
        if join.is_empty() {
            break;
        }
        tokio::select! {
            Some(joined) = join.join_next() => {
                let (index, result) = match joined {
                    Ok(done) => done,
                    Err(panic) => {
                        // A panicking step is a bug; stop like on any failure.
                        stopping = true;
                        report.failed.push(StepFailure {
                            address: Address::new("executor"),
                            operation: Operation::Create,
                            error: format!("a step panicked: {panic}"),
                        });
                        continue;
                    }
                };
                let step = &steps[index];
                let outcome = StepOutcome {
                    address: actions[step.action].address.clone(),
                    operation: step.kind.operation(),
                };
                match result {
                    Ok(()) => {
                        report.completed.push(outcome);
                        for &dependent in &dependents[index] {
                            waiting[dependent] -= 1;
                            if waiting[dependent] == 0 {
                                ready.push_back(dependent);
                            }
                        }
                    }
                    Err(error) => {
                        stopping = true;
                        report.failed.push(StepFailure {
                            address: outcome.address,
                            operation: outcome.operation,
                            error,
                        });
                    }
                }
            }
            () = interrupt.wait(), if !stopping => {}
        }
    }
    for (index, step) in steps.iter().enumerate() {
        if !started_steps[index] {
            report.not_started.push(StepOutcome {
                address: actions[step.action].address.clone(),
                operation: step.kind.operation(),
            });
        }
    }
    report.max_in_flight = context.max_active.load(Ordering::SeqCst);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Calls `call` until it stops answering "throttled", backing off exponentially with jitter (or
/// as the provider asks) and shrinking the concurrency limit, within `max_throttle_wait`.
async fn with_backoff<'a, T>(
    context: &RunContext,
    address: &Address,
    operation: Operation,
    call: impl Fn() -> BoxFuture<'a, Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    let started = Instant::now();
    let mut attempt: u32 = 0;
    loop {
        match call().await {
            Err(ProviderError::Throttled { retry_after })
                if started.elapsed() < context.max_throttle_wait =>
            {
                context.limiter.on_throttled();
                let base = Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(7));
                let delay = retry_after.unwrap_or(base).min(Duration::from_secs(10));
                let jitter = rand::rng().random_range(0..=delay.as_millis() as u64 / 2);
                let delay = delay + Duration::from_millis(jitter);
                emit(
                    context.events.as_ref(),
                    ExecutionEvent::Throttled {
                        address: address.clone(),
                        operation,
                        retry_in_ms: millis(delay),
                        concurrency_limit: context.limiter.current(),
                    },
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => {
                if other.is_ok() {
                    context.limiter.on_success();
                }
                return other;
            }
        }
    }
}

/// Resolved properties: what the provider gets (secrets in plain text) and what state records
/// (secrets as ciphertext).
struct Resolved {
    for_provider: IndexMap<String, Value>,
    for_state: IndexMap<String, Value>,
    /// (plain text, ciphertext) of every secret property.
    secrets: Vec<(String, Value)>,
}

impl Resolved {
    /// Outputs as state may hold them: any output echoing a secret becomes its ciphertext.
    fn seal_outputs(&self, outputs: &IndexMap<String, Value>) -> IndexMap<String, Value> {
        outputs
            .iter()
            .map(|(name, value)| {
                let sealed = self
                    .secrets
                    .iter()
                    .find(|(plain, _)| value.as_str() == Some(plain.as_str()))
                    .map(|(_, sealed)| sealed.clone());
                (name.clone(), sealed.unwrap_or_else(|| value.clone()))
            })
            .collect()
    }
}

fn resolve_properties(
    context: &RunContext,
    action: &ResourceAction,
    document: &StateDocument,
    existing: Option<&ResourceRecord>,
) -> Result<Resolved, String> {
    let desired = action
        .desired
        .as_ref()
        .ok_or_else(|| format!("the plan has no desired properties for {}", action.address))?;
    let lookup = |reference: &OutputRef| -> Option<Value> {
        document
            .resources
            .get(&reference.address)
            .and_then(|r| r.outputs.get(&reference.output))
            .cloned()
    };
    let mut resolved = Resolved {
        for_provider: IndexMap::new(),
        for_state: IndexMap::new(),
        secrets: Vec::new(),
    };
    for (name, desired_value) in desired {
        if let Some(length) = value::as_secret_request(desired_value) {
            let cipher = context.cipher.as_ref().ok_or_else(|| {
                format!(
                    "{}.{name} is a secret but no state key is configured",
                    action.address
                )
            })?;
            let (plain, sealed) = match existing.and_then(|r| r.properties.get(name)) {
                Some(sealed) => (
                    cipher.decrypt(sealed).map_err(|e| e.to_string())?,
                    sealed.clone(),
                ),
                None => {
                    let plain = generate_secret(length);
                    let sealed = cipher.encrypt(&plain);
                    (plain, sealed)
                }
            };
            resolved
                .for_provider
                .insert(name.clone(), Value::String(plain.clone()));
            resolved.for_state.insert(name.clone(), sealed.clone());
            resolved.secrets.push((plain, sealed));
            continue;
        }
        let value = value::resolve(desired_value, &lookup).map_err(|missing| {
            let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
            format!(
                "{}.{name} references outputs not in state: {}",
                action.address,
                names.join(", ")
            )
        })?;
        resolved.for_provider.insert(name.clone(), value.clone());
        resolved.for_state.insert(name.clone(), value);
    }
    Ok(resolved)
}

async fn run_step(
    context: &RunContext,
    action: &ResourceAction,
    kind: StepKind,
) -> Result<(), String> {
    // The old half of a replacement caused by a type change is deleted by the old type's provider.
    let resource_type = match (kind, &action.previous_type) {
        (StepKind::ReplaceDelete(_), Some(previous)) => previous,
        _ => &action.resource_type,
    };
    let provider = context
        .registry
        .get(resource_type)
        .map_err(|e| e.to_string())?;
    // What this plan deletes at this address: deposed objects, and the object a
    // create-before-delete replacement replaces (a plain create may adopt the recorded object:
    // a read may have missed it moments after it was made).
    let taken = {
        let document = context.journal.snapshot().await;
        let replaced = (kind == StepKind::ReplaceCreate(ReplacementOrder::CreateBeforeDelete))
            .then(|| document.resources.get(&action.address))
            .flatten();
        replaced
            .into_iter()
            .chain(document.deposed.iter())
            .filter(|r| r.address == action.address)
            .map(|r| r.id.clone())
            .collect()
    };
    let call = CallContext {
        address: action.address.clone(),
        resource_type: resource_type.clone(),
        taken,
    };
    let operation = kind.operation();
    let started = Instant::now();
    emit(
        context.events.as_ref(),
        ExecutionEvent::Started {
            address: action.address.clone(),
            operation,
        },
    );
    let result = match kind {
        StepKind::Create | StepKind::ReplaceCreate(_) => {
            create(context, provider.as_ref(), &call, action, kind).await
        }
        StepKind::Update => update(context, provider.as_ref(), &call, action).await,
        StepKind::Delete | StepKind::ReplaceDelete(_) => {
            delete(context, provider.as_ref(), &call, action, kind).await
        }
    };
    let elapsed_ms = millis(started.elapsed());
    let event = match &result {
        Ok(()) => ExecutionEvent::Finished {
            address: action.address.clone(),
            operation,
            elapsed_ms,
        },
        Err(error) => ExecutionEvent::Failed {
            address: action.address.clone(),
            operation,
            elapsed_ms,
            error: error.clone(),
        },
    };
    emit(context.events.as_ref(), event);
    result
}

fn pending(
    kind: PendingKind,
    action: &ResourceAction,
    resource_id: Option<String>,
) -> PendingOperation {
    PendingOperation {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        address: action.address.clone(),
        resource_type: action.resource_type.clone(),
        resource_id,
        ownership_tags: IndexMap::new(),
        properties: IndexMap::new(),
        depends_on: action.depends_on.clone(),
        started_at: Utc::now(),
    }
}

fn settle(document: &mut StateDocument, pending_id: &str) {
    document.pending.retain(|p| p.id != pending_id);
}

async fn create(
    context: &RunContext,
    provider: &dyn Provider,
    call: &CallContext,
    action: &ResourceAction,
    kind: StepKind,
) -> Result<(), String> {
    let document = context.journal.snapshot().await;
    let resolved = resolve_properties(context, action, &document, None)?;
    let tags = ownership_tags(&context.stack, context.instance.as_deref(), &action.address);
    let mut entry = pending(PendingKind::Create, action, None);
    entry.ownership_tags = tags.clone();
    entry.properties = resolved.for_state.clone();
    let pending_id = entry.id.clone();
    context
        .journal
        .record(|doc| doc.pending.push(entry))
        .await
        .map_err(|e| e.to_string())?;
    let outcome = with_backoff(context, &action.address, Operation::Create, || {
        provider.create(call, &resolved.for_provider, &tags)
    })
    .await
    .and_then(|live| {
        // The object being replaced carries the same ownership tags; recording it as the new
        // one would have this plan delete what it just "created".
        if call.taken.contains(&live.id) {
            Err(ProviderError::Failed(format!(
                "the create answered with {}, the object state already records for {} (a \
                 provider must not adopt the object a replacement replaces)",
                live.id, action.address
            )))
        } else {
            Ok(live)
        }
    });
    let replacing = matches!(
        kind,
        StepKind::ReplaceCreate(ReplacementOrder::CreateBeforeDelete)
    );
    let settled = context
        .journal
        .record(|doc| {
            settle(doc, &pending_id);
            if let Ok(live) = &outcome {
                let record = ResourceRecord {
                    address: action.address.clone(),
                    resource_type: action.resource_type.clone(),
                    id: live.id.clone(),
                    properties: resolved.for_state.clone(),
                    outputs: resolved.seal_outputs(&live.outputs),
                    depends_on: action.depends_on.clone(),
                    updated_at: Utc::now(),
                };
                if let Some(old) = doc.resources.insert(action.address.clone(), record)
                    && replacing
                {
                    doc.deposed.push(old);
                }
            }
        })
        .await;
    settled.map_err(|e| e.to_string())?;
    outcome.map(|_| ()).map_err(|e| e.to_string())
}

async fn update(
    context: &RunContext,
    provider: &dyn Provider,
    call: &CallContext,
    action: &ResourceAction,
) -> Result<(), String> {
    let document = context.journal.snapshot().await;
    let existing = document
        .resources
        .get(&action.address)
        .ok_or_else(|| format!("{} is not in state; cannot update it", action.address))?;
    let id = existing.id.clone();
    let resolved = resolve_properties(context, action, &document, Some(existing))?;
    let mut entry = pending(PendingKind::Update, action, Some(id.clone()));
    entry.properties = resolved.for_state.clone();
    let pending_id = entry.id.clone();
    context
        .journal
        .record(|doc| doc.pending.push(entry))
        .await
        .map_err(|e| e.to_string())?;
    let outcome = with_backoff(context, &action.address, Operation::Update, || {
        provider.update(call, &id, &resolved.for_provider)
    })
    .await;
    context
        .journal
        .record(|doc| {
            settle(doc, &pending_id);
            if let Ok(live) = &outcome
                && let Some(record) = doc.resources.get_mut(&action.address)
            {
                record.properties = resolved.for_state.clone();
                record.outputs = resolved.seal_outputs(&live.outputs);
                record.depends_on = action.depends_on.clone();
                record.updated_at = Utc::now();
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    outcome.map(|_| ()).map_err(|e| e.to_string())
}

async fn delete(
    context: &RunContext,
    provider: &dyn Provider,
    call: &CallContext,
    action: &ResourceAction,
    kind: StepKind,
) -> Result<(), String> {
    let id = action
        .resource_id
        .clone()
        .ok_or_else(|| format!("the plan has no id to delete for {}", action.address))?;
    let entry = pending(PendingKind::Delete, action, Some(id.clone()));
    let pending_id = entry.id.clone();
    context
        .journal
        .record(|doc| doc.pending.push(entry))
        .await
        .map_err(|e| e.to_string())?;
    let outcome = match with_backoff(context, &action.address, Operation::Delete, || {
        provider.delete(call, &id)
    })
    .await
    {
        Err(ProviderError::NotFound(_)) => Ok(()),
        other => other,
    };
    let from_deposed =
        action.deposed || kind == StepKind::ReplaceDelete(ReplacementOrder::CreateBeforeDelete);
    context
        .journal
        .record(|doc| {
            settle(doc, &pending_id);
            if outcome.is_ok() {
                if from_deposed {
                    doc.deposed.retain(|r| r.id != id);
                } else if doc
                    .resources
                    .get(&action.address)
                    .is_some_and(|r| r.id == id)
                {
                    doc.resources.shift_remove(&action.address);
                }
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    outcome.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_halves_on_throttling_and_recovers() {
        let limiter = Limiter::new(8);
        limiter.on_throttled();
        assert_eq!(limiter.current(), 4);
        assert_eq!(limiter.semaphore.available_permits(), 4);
        limiter.on_throttled();
        limiter.on_throttled();
        limiter.on_throttled();
        assert_eq!(limiter.current(), 1);
        for _ in 0..100 {
            limiter.on_success();
        }
        assert_eq!(limiter.current(), 8);
        assert_eq!(limiter.semaphore.available_permits(), 8);
    }
}
