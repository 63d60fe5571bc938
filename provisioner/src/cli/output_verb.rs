//! `provisioner output`: what a deployment exposes (cluster endpoint and CA, database and cache
//! endpoints), read from recorded state only: no provider is called. Secrets (the database's
//! master password, the cache's auth token) are decrypted and shown only with `--show-secrets`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use miette::{IntoDiagnostic, miette};
use serde_json::{Value, json};

use super::Output;
use super::deployment::{self, Deployment, Target};
use crate::engine::secrets::{STATE_KEY_VAR, StateCipher, is_encrypted};
use crate::state::{ResourceRecord, StateDocument};

/// Arguments of `output`. Exit codes: 0 printed, 1 error (no state, unreadable secret).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Decrypt and print the database master password and the cache auth token (otherwise
    /// `(sensitive)`).
    #[arg(long)]
    pub show_secrets: bool,
}

const SENSITIVE: &str = "(sensitive)";

fn record<'a>(state: &'a StateDocument, resource_type: &str) -> Option<&'a ResourceRecord> {
    state
        .resources
        .values()
        .find(|r| r.resource_type.as_str() == resource_type)
}

/// The first of `names` the provider reported.
fn output(record: &ResourceRecord, names: &[&str]) -> Value {
    names
        .iter()
        .find_map(|n| record.outputs.get(*n).filter(|v| !v.is_null()).cloned())
        .unwrap_or(Value::Null)
}

/// Decrypts sealed secrets on demand; the key is looked up only when a secret is shown.
struct Secrets<'a> {
    deployment: &'a Deployment,
    show: bool,
    cipher: Option<StateCipher>,
}

impl Secrets<'_> {
    fn value(&mut self, record: &ResourceRecord, property: &str) -> miette::Result<Value> {
        let Some(sealed) = record.properties.get(property).filter(|v| !v.is_null()) else {
            return Ok(Value::Null);
        };
        if !self.show {
            return Ok(Value::String(SENSITIVE.to_owned()));
        }
        if !is_encrypted(sealed) {
            return Err(miette!(
                "{}.{property} is not sealed in state; refusing to print it",
                record.address
            ));
        }
        if self.cipher.is_none() {
            // Never create a key file here: a new key could not open what is in state.
            let from_environment = std::env::var(STATE_KEY_VAR).is_ok_and(|v| !v.is_empty());
            if !from_environment && !self.deployment.key_file.exists() {
                return Err(miette!(
                    help = format!("set {STATE_KEY_VAR} to the key `up` used"),
                    "cannot decrypt {}.{property}: no {STATE_KEY_VAR} and no key file at {}",
                    record.address,
                    self.deployment.key_file.display()
                ));
            }
            self.cipher = Some(self.deployment.cipher()?);
        }
        let cipher = self.cipher.as_ref().expect("set above");
        cipher.decrypt(sealed).map(Value::String).map_err(|e| {
            miette!(
                help = format!("is {STATE_KEY_VAR} the key `up` used?"),
                "cannot decrypt {}.{property}: {e}",
                record.address
            )
        })
    }
}

fn outputs(
    deployment: &Deployment,
    state: &StateDocument,
    show_secrets: bool,
) -> miette::Result<Value> {
    let mut secrets = Secrets {
        deployment,
        show: show_secrets,
        cipher: None,
    };
    let cluster = record(state, "aws.eks.cluster").map(|r| {
        json!({
            "name": output(r, &["name"]),
            "endpoint": output(r, &["endpoint"]),
            "certificate_authority": output(r, &["certificate_authority"]),
        })
    });
    let database = match record(state, "aws.rds.instance") {
        None => None,
        Some(r) => Some(json!({
            "address": output(r, &["address", "endpoint"]),
            "port": output(r, &["port"]),
            "username": r.properties.get("master_username").cloned().unwrap_or(Value::Null),
            "password": secrets.value(r, "master_password")?,
        })),
    };
    let cache = match record(state, "aws.elasticache.replication_group") {
        None => None,
        Some(r) => Some(json!({
            "address": output(r, &["primary_endpoint", "endpoint"]),
            "port": output(r, &["port"]),
            "auth_token": secrets.value(r, "auth_token")?,
        })),
    };
    Ok(json!({
        "stack": deployment.stack_name(),
        "instance": deployment.instance(),
        "cluster": cluster,
        "database": database,
        "cache": cache,
    }))
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `section.key  value` lines, sections in a fixed order, absent sections left out.
fn human(document: &Value) -> String {
    let mut out = String::new();
    for section in ["cluster", "database", "cache"] {
        let Some(fields) = document.get(section).and_then(Value::as_object) else {
            continue;
        };
        let width = fields.keys().map(String::len).max().unwrap_or(0);
        out.push_str(&format!("{section}:\n"));
        for (key, value) in fields {
            out.push_str(&format!("  {key:width$}  {}\n", text(value)));
        }
    }
    out
}

pub fn run(args: &Args, stacks_dir: &Path, output: &Output) -> miette::Result<ExitCode> {
    let runtime = deployment::runtime()?;
    runtime.block_on(async {
        let deployment = deployment::open(&args.target, stacks_dir, output).await?;
        let state = deployment.backend.load().await.into_diagnostic()?;
        let Some(state) = state.filter(|s| !s.resources.is_empty()) else {
            return Err(miette!(
                help = "run `provisioner up` first",
                "nothing is deployed: {} records no resources",
                deployment.backend.describe()
            ));
        };
        let document = outputs(&deployment, &state, args.show_secrets)?;
        let mut stdout = std::io::stdout().lock();
        let printed = if args.json {
            writeln!(stdout, "{document}")
        } else {
            if document.as_object().is_some_and(|d| {
                ["cluster", "database", "cache"]
                    .iter()
                    .all(|k| d[*k].is_null())
            }) {
                eprintln!("The deployment records no cluster, database or cache.");
            }
            write!(stdout, "{}", human(&document))
        };
        // A closed pipe (`| head`) ends the listing quietly.
        let _ = printed;
        Ok(ExitCode::SUCCESS)
    })
}
