//! Teams (quota and fair-share weight) and their API keys as the admin API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Invalid;

/// Checks a human-readable name (teams, keys): 1-100 characters, no control characters.
pub fn validate_name(name: &str) -> Result<(), Invalid> {
    let length = name.chars().count();
    if !(1..=100).contains(&length) || name.chars().any(char::is_control) || name.trim() != name {
        return Err(Invalid(
            "name must have 1-100 characters, no control characters and no surrounding spaces"
                .to_owned(),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeamRequest {
    #[schema(min_length = 1, max_length = 100, example = "payments")]
    pub name: String,
    /// At most this many of the team's tasks are leased at once (all pools); none: no cap.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100000)]
    pub max_concurrent_tasks: Option<u32>,
    /// Fair-share weight: a team with share 2 gets twice the leased tasks of a team with 1 when
    /// both have a backlog.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000, default = 1)]
    pub share: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Team {
    pub id: Uuid,
    pub name: String,
    pub max_concurrent_tasks: Option<i32>,
    pub share: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    #[schema(min_length = 1, max_length = 100, example = "ci")]
    pub name: String,
}

/// A new API key. `key` is shown only in this response; the server keeps only its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: Uuid,
    pub team_id: Uuid,
    pub name: String,
    /// The first characters of the key, to recognise it later.
    pub prefix: String,
    /// The secret key: send it as `Authorization: Bearer <key>`.
    pub key: String,
    pub created_at: DateTime<Utc>,
}
