//! `fault-proxy`: the fault proxy of `stacksmith_testkit::faultproxy` as a program, for benchmarks
//! and hand runs in front of moto:
//!
//! ```text
//! fault-proxy --upstream http://127.0.0.1:5000 --listen 127.0.0.1:5001 --seed 7 \
//!     --rule throttle=0.3 --rule latency=80ms@ec2:Describe* --consistency-ms 2000 \
//!     --lifecycle-scale 0.001
//! ```
//!
//! Prints `fault-proxy listening on http://ADDR` once it accepts connections, then serves until
//! killed. `GET /_faultproxy/stats` answers the calls and faults per operation.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use stacksmith_testkit::faultproxy::{FaultConfig, FaultProxy, Rule};

#[derive(Parser)]
#[command(about = "A fault-injecting proxy for AWS APIs in front of moto")]
struct Args {
    /// The emulator's base URL.
    #[arg(long)]
    upstream: String,
    /// Where to listen (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The seed every fault decision is drawn from.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A fault rule: `throttle[=P][@OPS]`, `error=500|503[:P][@OPS]`, `latency=MS[@OPS]`.
    #[arg(long = "rule")]
    rules: Vec<String>,
    /// How long a new EC2 id answers "not found" (0: off).
    #[arg(long, default_value_t = 0)]
    consistency_ms: u64,
    /// Also make new IAM roles eventually consistent (NoSuchEntity).
    #[arg(long)]
    consistency_iam: bool,
    /// Lifecycle durations times this factor (EKS CREATING, RDS creating, ...); off when unset.
    #[arg(long)]
    lifecycle_scale: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rules = args
        .rules
        .iter()
        .map(|spec| Rule::parse(spec).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut consistency_services = vec!["ec2".to_owned()];
    if args.consistency_iam {
        consistency_services.push("iam".to_owned());
    }
    let config = FaultConfig {
        seed: args.seed,
        rules,
        consistency: (args.consistency_ms > 0).then(|| Duration::from_millis(args.consistency_ms)),
        consistency_services,
        lifecycle_scale: args.lifecycle_scale,
    };
    let proxy = FaultProxy::bind(&args.listen, &args.upstream, config)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!("fault-proxy listening on {}", proxy.url());
    tokio::signal::ctrl_c().await.ok();
    Ok(())
}
