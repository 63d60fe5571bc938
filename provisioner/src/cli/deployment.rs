//! What the engine verbs (`plan`, `up`, `graph`, `state`) share: loading the stack, deriving its
//! resources, opening its state backend, and choosing providers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use miette::{IntoDiagnostic, miette};

use super::Output;
use crate::engine::DesiredSet;
use crate::engine::desired;
use crate::engine::fake::FakeProvider;
use crate::engine::lifetime;
use crate::engine::provider::ProviderRegistry;
use crate::engine::secrets::StateCipher;
use crate::engine::zones::{self, ResolvedZones};
use crate::stack::error::render;
use crate::stack::model::StateBackend as BackendKind;
use crate::stack::{self, LoadRequest, LoadedStack, StackSource};
use crate::state::local::LocalBackend;
use crate::state::postgres::PostgresBackend;
use crate::state::{StateBackend, deployment_name};

/// Selects the provider set. `fake` is for tests only (see `provisioner/docs/testing.md`);
/// otherwise the AWS providers (`crate::aws`) register here; the Kubernetes ones come later.
pub const PROVIDER_VAR: &str = "STACKSMITH_PROVIDER";

/// Test clock: an RFC 3339 time used as "now" for instance lifetimes (`up` stamping
/// `stacksmith:expires-at`, `instances`, `gc`). Read only here, at the binary's edge; see
/// provisioner/docs/testing.md.
pub const NOW_VAR: &str = "STACKSMITH_NOW";

/// The current time, or `STACKSMITH_NOW` when set (tests).
pub fn now() -> miette::Result<chrono::DateTime<chrono::Utc>> {
    match std::env::var(NOW_VAR) {
        Ok(text) if !text.is_empty() => chrono::DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&chrono::Utc))
            .map_err(|e| miette!("{NOW_VAR}={text} is not an RFC 3339 time: {e}")),
        _ => Ok(chrono::Utc::now()),
    }
}

/// Where local state lives, relative to the working directory.
pub const LOCAL_STATE_DIR: &str = ".stacksmith/state";

/// Which deployment a verb acts on.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The stack: `<stacks-dir>/<NAME>.yaml`.
    #[arg(long, value_name = "NAME")]
    pub stack: String,
    /// An instance of a template stack (resources named `<stack>-<instance>`).
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
}

/// A loaded deployment: the stack, its desired resources and its state backend.
pub struct Deployment {
    /// The validated stack the resources were derived from (policies judge it too).
    pub loaded: LoadedStack,
    pub desired: DesiredSet,
    pub backend: Arc<dyn StateBackend>,
    pub key_file: PathBuf,
    pub lock_timeout: Duration,
    /// Region, endpoint and credentials for the AWS providers.
    pub aws: crate::aws::AwsTarget,
}

impl Deployment {
    pub fn stack_name(&self) -> &str {
        &self.desired.stack
    }

    pub fn instance(&self) -> Option<&str> {
        self.desired.instance.as_deref()
    }

    /// The stack's `instances.ttl`, if any.
    pub fn instance_ttl(&self) -> Option<Duration> {
        self.loaded
            .stack
            .instances
            .as_ref()
            .and_then(|settings| settings.ttl.as_ref())
            .map(|ttl| ttl.0)
    }

    /// The availability zones of the deployment's subnets ([`zones::resolve`]): what state
    /// records stays; zones for new subnets come from the region (DescribeAvailabilityZones,
    /// through the providers), read only when some subnet has none recorded. When they cannot
    /// be read, `strict` (`up`) fails; otherwise (`plan`) the zones are assumed from letters and
    /// the result says so.
    pub async fn zones(
        &self,
        state: Option<&crate::state::StateDocument>,
        registry: &ProviderRegistry,
        strict: bool,
    ) -> miette::Result<(ResolvedZones, Option<String>)> {
        let stack = &self.loaded.stack;
        let azs = &stack.network.azs;
        let mut note = None;
        let offered = if zones::needs_offered(azs, state) {
            let provider = registry
                .get(&crate::engine::ResourceType::new("aws.ec2.subnet"))
                .map_err(|e| miette!("{e}"))?;
            match provider.availability_zones().await {
                Ok(offered) => offered,
                Err(e) if strict => {
                    return Err(miette!(
                        "reading the availability zones of {}: {e}",
                        stack.region
                    ));
                }
                Err(e) => {
                    note = Some(format!(
                        "the availability zones of {} could not be read ({e}); this plan assumes \
                         the zones' letters, and `up` reads them from DescribeAvailabilityZones",
                        stack.region
                    ));
                    None
                }
            }
        } else {
            None
        };
        let resolved = zones::resolve(azs, &stack.region, state, offered.as_deref())
            .map_err(|e| miette!("{e}"))?;
        Ok((resolved, note))
    }

    /// The desired resources with their subnets in `zones` (see [`Self::zones`]) and the
    /// instance's `stacksmith:expires-at` stamped on every taggable one (the lifetime `state`
    /// records, or one starting now), and that lifetime. Verbs that compare desired with
    /// recorded or live values use this, not `desired`.
    pub fn desired_with_lifetime(
        &self,
        state: Option<&crate::state::StateDocument>,
        now: chrono::DateTime<chrono::Utc>,
        zones: &[String],
    ) -> (DesiredSet, Option<crate::state::InstanceLifetime>) {
        let mut desired = desired::derive_in(&self.loaded, zones);
        let lifetime = lifetime::lifetime_for(&desired, self.instance_ttl(), state, now);
        if let Some(lifetime) = &lifetime {
            lifetime::stamp(&mut desired, lifetime);
        }
        (desired, lifetime)
    }

    /// `STACKSMITH_STATE_KEY` or the deployment's key file (created on first use, mode 0600).
    pub fn cipher(&self) -> miette::Result<StateCipher> {
        StateCipher::from_environment_or_file(&self.key_file).into_diagnostic()
    }
}

/// Loads the stack, reporting its errors with file positions.
pub fn load_stack(
    target: &Target,
    stacks_dir: &Path,
    output: &Output,
) -> miette::Result<LoadedStack> {
    let request = LoadRequest {
        source: StackSource::Named {
            dir: stacks_dir.to_path_buf(),
            name: target.stack.clone(),
        },
        instance: target.instance.clone(),
    };
    match stack::load(&request).and_then(|loaded| loaded.into_deployable()) {
        Ok(loaded) => Ok(loaded),
        Err(errors) => {
            eprint!("{}", render(&errors, output.color, output.width));
            Err(miette!("stack `{}` is not valid", target.stack))
        }
    }
}

/// Loads the stack, derives its resources and connects its state backend.
pub async fn open(
    target: &Target,
    stacks_dir: &Path,
    output: &Output,
) -> miette::Result<Deployment> {
    connect(load_stack(target, stacks_dir, output)?).await
}

/// Derives the resources of an already loaded stack and connects its state backend.
pub async fn connect(loaded: LoadedStack) -> miette::Result<Deployment> {
    let desired = desired::derive(&loaded);
    let deployment = deployment_name(&desired.stack, desired.instance.as_deref());
    let local = LocalBackend::new(Path::new(LOCAL_STATE_DIR), &deployment);
    let key_file = local.key_file();
    let settings = &loaded.stack.state;
    let backend: Arc<dyn StateBackend> = match settings.backend {
        BackendKind::Local => Arc::new(local),
        BackendKind::Postgres => {
            let url = settings
                .url
                .as_deref()
                .ok_or_else(|| miette!("state.backend is postgres but state.url is not set"))?;
            Arc::new(
                PostgresBackend::connect(url, &deployment)
                    .await
                    .into_diagnostic()?,
            )
        }
    };
    let lock_timeout = settings.lock_timeout.0;
    let aws = crate::aws::AwsTarget::from_stack(&loaded.stack);
    Ok(Deployment {
        loaded,
        desired,
        backend,
        key_file,
        lock_timeout,
        aws,
    })
}

/// The providers: the fake one when `STACKSMITH_PROVIDER=fake` (tests only), otherwise the real
/// ones (the AWS providers of `crate::aws`).
pub fn providers(deployment: &Deployment) -> miette::Result<ProviderRegistry> {
    let mut registry = ProviderRegistry::new();
    match std::env::var(PROVIDER_VAR).as_deref() {
        Ok("fake") => {
            let fake =
                FakeProvider::from_environment().map_err(|e| miette!("fake provider: {e}"))?;
            registry.register_fallback(Arc::new(fake));
        }
        Ok("") | Err(_) => crate::aws::register(&mut registry, &deployment.aws),
        Ok(other) => {
            return Err(miette!(
                "{PROVIDER_VAR}={other} is not a provider set (only `fake`, for tests)"
            ));
        }
    }
    Ok(registry)
}

/// A multi-threaded runtime for one verb.
pub fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()
}
