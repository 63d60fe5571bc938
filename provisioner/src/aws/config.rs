//! Where and as whom the AWS providers talk: region, endpoint and credentials from the stack and
//! the standard AWS chain, loaded once per process (lazily, so `plan` without `--refresh` never
//! touches credentials).

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};

use crate::stack::model::Stack;

/// The connection settings of one stack.
#[derive(Clone, Default)]
pub struct AwsTarget {
    pub region: String,
    /// `aws.endpoint_url` from the stack; when unset, the standard `AWS_ENDPOINT_URL` /
    /// `AWS_ENDPOINT_URL_<SERVICE>` variables apply (read by aws-config).
    pub endpoint_url: Option<String>,
    /// A named profile; otherwise the standard credential chain.
    pub profile: Option<String>,
    /// Static credentials (tests against emulators); otherwise the standard credential chain.
    pub static_credentials: Option<(String, String)>,
    /// How waiters poll (real AWS: seconds; tests: milliseconds).
    pub poll: PollSettings,
    /// Whether a delete may turn deletion protection off first (`down --allow-deletion-protected`);
    /// otherwise deleting a protected object fails and names it.
    pub allow_deletion_protected: bool,
    /// Whether deleting the RDS instance skips its final snapshot (`database.final_snapshot:
    /// false` in the stack); by default a final snapshot keeps the data.
    pub skip_final_db_snapshot: bool,
}

impl std::fmt::Debug for AwsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsTarget")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("profile", &self.profile)
            .field(
                "static_credentials",
                &self.static_credentials.as_ref().map(|_| ".."),
            )
            .field("poll", &self.poll)
            .field("allow_deletion_protected", &self.allow_deletion_protected)
            .field("skip_final_db_snapshot", &self.skip_final_db_snapshot)
            .finish()
    }
}

impl AwsTarget {
    pub fn from_stack(stack: &Stack) -> Self {
        Self {
            region: stack.region.clone(),
            endpoint_url: stack.aws.endpoint_url.clone(),
            profile: stack.aws.profile.clone(),
            static_credentials: None,
            poll: PollSettings::default(),
            allow_deletion_protected: false,
            skip_final_db_snapshot: stack.database.as_ref().is_some_and(|d| !d.final_snapshot),
        }
    }

    /// The shared SDK configuration: region, endpoint, credentials, standard retries.
    pub async fn load(&self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()));
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        if let Some((key, secret)) = &self.static_credentials {
            loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
                key.clone(),
                secret.clone(),
                None,
                None,
                "stacksmith-static",
            ));
        }
        loader.load().await
    }
}

/// Waiter pacing: the first delay, the growth factor's cap, and the per-type bounds come from
/// [`super::wait::Bound`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollSettings {
    pub initial: Duration,
    pub max: Duration,
    /// Scales every per-type bound (1.0 for real AWS; tests shrink it).
    pub bound_scale: f64,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(30),
            bound_scale: 1.0,
        }
    }
}
