//! Deletes that real VPC teardowns get stuck on (terraform-aws-eks#2004, eksctl#616): the VPC,
//! its subnets and security groups.
//!
//! * "Still in use" errors (`DependencyViolation` and kin) are retried with exponential backoff
//!   (the context's [`super::PollSettings`]: initial delay, x1.5, capped) up to a bound.
//! * Before the VPC is deleted, what the cluster and its load balancers left in it is swept:
//!   detached ENIs (the CNI's and load balancers' interfaces outlive them for a while) and
//!   security groups that Kubernetes or the load balancer controller made
//!   (`kubernetes.io/cluster/<name>`, `elbv2.k8s.aws/cluster`) or that carry this deployment's
//!   ownership tags. The VPC is the stack's own, so these are the stack's leftovers.
//! * When a delete gives up, the error lists exactly what still uses the object, found with
//!   describe calls: ENIs (with what they are attached to), instances, NAT gateways, subnets,
//!   security groups and the rules that reference a group.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, IpPermission, NetworkInterfaceStatus, Tag};

use super::{ApiError, AwsContext, api, bounds, failed};
use crate::engine::provider::ProviderError;

/// Error codes that mean "something still uses it; try again once it is gone".
pub const IN_USE_CODES: &[&str] = &[
    "DependencyViolation",
    "InvalidGroup.InUse",
    "InvalidNetworkInterface.InUse",
    "ResourceInUse",
];

/// Error codes that mean the object is already gone.
const GONE_CODES: &[&str] = &[
    "InvalidVpcID.NotFound",
    "InvalidSubnetID.NotFound",
    "InvalidGroup.NotFound",
    "InvalidGroupId.NotFound",
    "InvalidNetworkInterfaceID.NotFound",
];

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .map(|t| t.value().unwrap_or(""))
}

/// How a bounded "still in use" retry ended.
enum Retried {
    Done,
    /// Still in use when the bound was reached: the last error and how many attempts were made.
    GaveUp {
        last: ApiError,
        attempts: u32,
        waited: Duration,
    },
}

/// Runs `call` until it succeeds, treating "already gone" as success and retrying "still in use"
/// (and throttling) with backoff for at most `bound` (scaled by the context's pacing).
async fn retry_while_in_use<F, Fut>(
    ctx: &AwsContext,
    bound: Duration,
    mut call: F,
) -> Result<Retried, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ApiError>>,
{
    let poll = ctx.poll();
    let bound = bound.mul_f64(poll.bound_scale);
    let started = Instant::now();
    let mut delay = poll.initial;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match call().await {
            Ok(()) => return Ok(Retried::Done),
            Err(error) if error.is_any(GONE_CODES) => return Ok(Retried::Done),
            Err(error) if error.is_any(IN_USE_CODES) || error.throttled() => {
                if started.elapsed() + delay > bound {
                    return Ok(Retried::GaveUp {
                        last: error,
                        attempts,
                        waited: started.elapsed(),
                    });
                }
            }
            Err(error) => return Err(error.into()),
        }
        tokio::time::sleep(delay).await;
        delay = delay.mul_f64(1.5).min(poll.max);
    }
}

/// The failure of a delete that gave up, naming what blocks it (or why that could not be found).
fn blocked(
    what: &str,
    last: &ApiError,
    attempts: u32,
    waited: Duration,
    blockers: Result<Vec<String>, ApiError>,
) -> ProviderError {
    let listing = match blockers {
        Ok(found) if found.is_empty() => {
            "no blocking object was found with describe calls; it may be a dependency that is \
             still being deleted"
                .to_owned()
        }
        Ok(found) => format!("blocked by: {}", found.join("; ")),
        Err(error) => format!("could not list what blocks it: {error}"),
    };
    failed(format!(
        "{what}: still in use after {attempts} attempts over {}s ({last}); {listing}",
        waited.as_secs()
    ))
}

async fn retry_then_explain<F, Fut, B, BFut>(
    ctx: &AwsContext,
    what: &str,
    call: F,
    blockers: B,
) -> Result<(), ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ApiError>>,
    B: FnOnce() -> BFut,
    BFut: Future<Output = Result<Vec<String>, ApiError>>,
{
    match retry_while_in_use(ctx, bounds::DEPENDENCY, call).await? {
        Retried::Done => Ok(()),
        Retried::GaveUp {
            last,
            attempts,
            waited,
        } => Err(blocked(what, &last, attempts, waited, blockers().await)),
    }
}

// --- what blocks a delete ---

/// ENIs matching `filters`, described: `eni-1 (in-use, attached to i-1, "ELB app/k8s-...")`.
async fn interfaces(ctx: &AwsContext, filters: Vec<Filter>) -> Result<Vec<String>, ApiError> {
    let ec2 = &ctx.clients().await.ec2;
    let out = ec2
        .describe_network_interfaces()
        .set_filters(Some(filters))
        .send()
        .await
        .map_err(api("DescribeNetworkInterfaces"))?;
    Ok(out
        .network_interfaces()
        .iter()
        .map(|eni| {
            let mut facts = vec![
                eni.status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|| "unknown status".to_owned()),
            ];
            if let Some(kind) = eni.interface_type() {
                facts.push(format!("type {}", kind.as_str()));
            }
            if let Some(instance) = eni.attachment().and_then(|a| a.instance_id()) {
                facts.push(format!("attached to {instance}"));
            }
            if let Some(description) = eni.description().filter(|d| !d.is_empty()) {
                facts.push(format!("\"{description}\""));
            }
            format!(
                "network interface {} ({})",
                eni.network_interface_id().unwrap_or("?"),
                facts.join(", ")
            )
        })
        .collect())
}

/// Instances that are not terminated, matching `filters`.
async fn instances(ctx: &AwsContext, filters: Vec<Filter>) -> Result<Vec<String>, ApiError> {
    let ec2 = &ctx.clients().await.ec2;
    let out = ec2
        .describe_instances()
        .set_filters(Some(filters))
        .send()
        .await
        .map_err(api("DescribeInstances"))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
        .map(|i| {
            let state = i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default();
            let name = tag_value(i.tags(), "Name")
                .map(|n| format!(", \"{n}\""))
                .unwrap_or_default();
            format!(
                "instance {} ({state}{name})",
                i.instance_id().unwrap_or("?")
            )
        })
        .collect())
}

/// NAT gateways not deleted, matching `filters`.
async fn nat_gateways(ctx: &AwsContext, filters: Vec<Filter>) -> Result<Vec<String>, ApiError> {
    let ec2 = &ctx.clients().await.ec2;
    let out = ec2
        .describe_nat_gateways()
        .set_filter(Some(filters))
        .send()
        .await
        .map_err(api("DescribeNatGateways"))?;
    Ok(out
        .nat_gateways()
        .iter()
        .filter(|n| n.state().map(|s| s.as_str()) != Some("deleted"))
        .map(|n| {
            format!(
                "NAT gateway {} ({})",
                n.nat_gateway_id().unwrap_or("?"),
                n.state().map(|s| s.as_str()).unwrap_or("?")
            )
        })
        .collect())
}

async fn subnets_of(ctx: &AwsContext, vpc: &str) -> Result<Vec<String>, ApiError> {
    let ec2 = &ctx.clients().await.ec2;
    let out = ec2
        .describe_subnets()
        .filters(filter("vpc-id", vpc))
        .send()
        .await
        .map_err(api("DescribeSubnets"))?;
    Ok(out
        .subnets()
        .iter()
        .map(|s| {
            format!(
                "subnet {} ({})",
                s.subnet_id().unwrap_or("?"),
                s.cidr_block().unwrap_or("?")
            )
        })
        .collect())
}

/// Non-default security groups matching `filters`, described.
async fn security_groups(
    ctx: &AwsContext,
    filters: Vec<Filter>,
) -> Result<Vec<aws_sdk_ec2::types::SecurityGroup>, ApiError> {
    let ec2 = &ctx.clients().await.ec2;
    let out = ec2
        .describe_security_groups()
        .set_filters(Some(filters))
        .send()
        .await
        .map_err(api("DescribeSecurityGroups"))?;
    Ok(out
        .security_groups()
        .iter()
        .filter(|g| g.group_name() != Some("default"))
        .cloned()
        .collect())
}

fn describe_group(group: &aws_sdk_ec2::types::SecurityGroup) -> String {
    format!(
        "security group {} (\"{}\")",
        group.group_id().unwrap_or("?"),
        group.group_name().unwrap_or("?")
    )
}

/// What still lives in a VPC.
async fn vpc_blockers(ctx: &AwsContext, vpc: &str) -> Result<Vec<String>, ApiError> {
    let mut found = interfaces(ctx, vec![filter("vpc-id", vpc)]).await?;
    found.extend(instances(ctx, vec![filter("vpc-id", vpc)]).await?);
    found.extend(nat_gateways(ctx, vec![filter("vpc-id", vpc)]).await?);
    found.extend(subnets_of(ctx, vpc).await?);
    found.extend(
        security_groups(ctx, vec![filter("vpc-id", vpc)])
            .await?
            .iter()
            .map(describe_group),
    );
    let ec2 = &ctx.clients().await.ec2;
    let gateways = ec2
        .describe_internet_gateways()
        .filters(filter("attachment.vpc-id", vpc))
        .send()
        .await
        .map_err(api("DescribeInternetGateways"))?;
    found.extend(gateways.internet_gateways().iter().map(|g| {
        format!(
            "internet gateway {} (attached)",
            g.internet_gateway_id().unwrap_or("?")
        )
    }));
    Ok(found)
}

/// What still lives in a subnet.
async fn subnet_blockers(ctx: &AwsContext, subnet: &str) -> Result<Vec<String>, ApiError> {
    let mut found = interfaces(ctx, vec![filter("subnet-id", subnet)]).await?;
    found.extend(instances(ctx, vec![filter("subnet-id", subnet)]).await?);
    found.extend(nat_gateways(ctx, vec![filter("subnet-id", subnet)]).await?);
    Ok(found)
}

/// What still uses a security group: ENIs in it and groups whose rules reference it.
async fn security_group_blockers(ctx: &AwsContext, group: &str) -> Result<Vec<String>, ApiError> {
    let mut found = interfaces(ctx, vec![filter("group-id", group)]).await?;
    for filter_name in ["ip-permission.group-id", "egress.ip-permission.group-id"] {
        for referencing in security_groups(ctx, vec![filter(filter_name, group)]).await? {
            if referencing.group_id() != Some(group) {
                let line = format!("{} (a rule references it)", describe_group(&referencing));
                if !found.contains(&line) {
                    found.push(line);
                }
            }
        }
    }
    Ok(found)
}

// --- the sweep ---

/// Whether a security group in the stack's VPC is a leftover the stack owns: made by Kubernetes
/// or the load balancer controller for the cluster, or carrying this deployment's ownership tags.
fn owned_leftover(group: &aws_sdk_ec2::types::SecurityGroup, vpc_tags: &[Tag]) -> bool {
    let tags = group.tags();
    let by_kubernetes = tags.iter().any(|t| {
        t.key().is_some_and(|k| {
            k.starts_with("kubernetes.io/cluster/") || k == "elbv2.k8s.aws/cluster"
        })
    });
    let ours = tag_value(vpc_tags, "stacksmith:stack").is_some_and(|stack| {
        tag_value(tags, "stacksmith:stack") == Some(stack)
            && tag_value(tags, "stacksmith:instance") == tag_value(vpc_tags, "stacksmith:instance")
    });
    by_kubernetes || ours
}

/// Deletes what the cluster and its load balancers left in the VPC: detached ENIs, then the
/// security groups the stack owns (their rules referencing other groups revoked first).
/// Returns what was deleted.
pub async fn sweep_vpc(ctx: &AwsContext, vpc: &str) -> Result<Vec<String>, ProviderError> {
    let ec2 = &ctx.clients().await.ec2;
    let mut swept = Vec::new();
    let vpcs = ec2
        .describe_vpcs()
        .vpc_ids(vpc)
        .send()
        .await
        .map_err(api("DescribeVpcs"));
    let vpc_tags: Vec<Tag> = match vpcs {
        Ok(out) => out
            .vpcs()
            .first()
            .map(|v| v.tags().to_vec())
            .unwrap_or_default(),
        Err(error) if error.is_any(GONE_CODES) => return Ok(swept),
        Err(error) => return Err(error.into()),
    };

    let enis = ec2
        .describe_network_interfaces()
        .filters(filter("vpc-id", vpc))
        .send()
        .await
        .map_err(api("DescribeNetworkInterfaces"))?;
    // Only detached interfaces (checked here: not every emulator filters on `status`).
    for eni in enis.network_interfaces() {
        if eni.status() != Some(&NetworkInterfaceStatus::Available) {
            continue;
        }
        let Some(id) = eni.network_interface_id() else {
            continue;
        };
        let what = format!("deleting leftover network interface {id}");
        retry_then_explain(
            ctx,
            &what,
            || async {
                ec2.delete_network_interface()
                    .network_interface_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(api("DeleteNetworkInterface"))
            },
            || interfaces(ctx, vec![filter("network-interface-id", id)]),
        )
        .await?;
        swept.push(format!("network interface {id}"));
    }

    let leftovers: Vec<_> = security_groups(ctx, vec![filter("vpc-id", vpc)])
        .await?
        .into_iter()
        .filter(|g| owned_leftover(g, &vpc_tags))
        .collect();
    // Rules naming another group keep that group in use: revoke them all first.
    for group in &leftovers {
        let Some(id) = group.group_id() else { continue };
        let referencing = |permissions: &[IpPermission]| -> Vec<IpPermission> {
            permissions
                .iter()
                .filter(|p| !p.user_id_group_pairs().is_empty())
                .cloned()
                .collect()
        };
        let ingress = referencing(group.ip_permissions());
        if !ingress.is_empty() {
            ec2.revoke_security_group_ingress()
                .group_id(id)
                .set_ip_permissions(Some(ingress))
                .send()
                .await
                .map_err(api("RevokeSecurityGroupIngress"))?;
        }
        let egress = referencing(group.ip_permissions_egress());
        if !egress.is_empty() {
            ec2.revoke_security_group_egress()
                .group_id(id)
                .set_ip_permissions(Some(egress))
                .send()
                .await
                .map_err(api("RevokeSecurityGroupEgress"))?;
        }
    }
    for group in &leftovers {
        let Some(id) = group.group_id() else { continue };
        delete_security_group(ctx, id).await?;
        swept.push(describe_group(group));
    }
    Ok(swept)
}

// --- the deletes ---

/// Sweeps the VPC's leftovers, then deletes it, retrying while something still uses it.
pub async fn delete_vpc(ctx: &AwsContext, vpc: &str) -> Result<(), ProviderError> {
    sweep_vpc(ctx, vpc).await?;
    let ec2 = &ctx.clients().await.ec2;
    retry_then_explain(
        ctx,
        &format!("deleting VPC {vpc}"),
        || async {
            ec2.delete_vpc()
                .vpc_id(vpc)
                .send()
                .await
                .map(|_| ())
                .map_err(api("DeleteVpc"))
        },
        || vpc_blockers(ctx, vpc),
    )
    .await
}

/// Deletes the detached (`available`) network interfaces in a subnet: what the VPC CNI and
/// load balancers leave behind for a while after their nodes and load balancers are gone, and
/// what makes DeleteSubnet answer DependencyViolation. Interfaces still attached are left to
/// their owners; one that vanished or got attached meanwhile is skipped. Returns what was
/// deleted.
async fn sweep_subnet_interfaces(ctx: &AwsContext, subnet: &str) -> Result<Vec<String>, ApiError> {
    let ec2 = &ctx.clients().await.ec2;
    let out = ec2
        .describe_network_interfaces()
        .filters(filter("subnet-id", subnet))
        .send()
        .await
        .map_err(api("DescribeNetworkInterfaces"))?;
    let mut deleted = Vec::new();
    for eni in out.network_interfaces() {
        // Checked here: not every emulator filters on `status`.
        if eni.status() != Some(&NetworkInterfaceStatus::Available) {
            continue;
        }
        let Some(id) = eni.network_interface_id() else {
            continue;
        };
        match ec2
            .delete_network_interface()
            .network_interface_id(id)
            .send()
            .await
            .map_err(api("DeleteNetworkInterface"))
        {
            Ok(_) => deleted.push(id.to_owned()),
            Err(e) if e.is_any(GONE_CODES) || e.is_any(IN_USE_CODES) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Deletes a subnet, retrying while something still uses it. The subnet's detached network
/// interfaces are swept first and again after every "still in use": subnets are deleted before
/// the VPC, so the VPC's own sweep comes too late for them.
pub async fn delete_subnet(ctx: &AwsContext, subnet: &str) -> Result<(), ProviderError> {
    let ec2 = &ctx.clients().await.ec2;
    match sweep_subnet_interfaces(ctx, subnet).await {
        Ok(_) => {}
        Err(e) if e.is_any(GONE_CODES) => return Ok(()),
        Err(e) if e.throttled() => {}
        Err(e) => return Err(e.into()),
    }
    retry_then_explain(
        ctx,
        &format!("deleting subnet {subnet}"),
        || async {
            let result = ec2
                .delete_subnet()
                .subnet_id(subnet)
                .send()
                .await
                .map(|_| ())
                .map_err(api("DeleteSubnet"));
            if let Err(error) = &result
                && error.is_any(IN_USE_CODES)
            {
                // Interfaces detach over time: sweep what became detached, then try again.
                if let Err(sweep) = sweep_subnet_interfaces(ctx, subnet).await
                    && !sweep.throttled()
                {
                    return Err(sweep);
                }
            }
            result
        },
        || subnet_blockers(ctx, subnet),
    )
    .await
}

/// Deletes a security group, retrying while something still uses it.
pub async fn delete_security_group(ctx: &AwsContext, group: &str) -> Result<(), ProviderError> {
    let ec2 = &ctx.clients().await.ec2;
    retry_then_explain(
        ctx,
        &format!("deleting security group {group}"),
        || async {
            ec2.delete_security_group()
                .group_id(group)
                .send()
                .await
                .map(|_| ())
                .map_err(api("DeleteSecurityGroup"))
        },
        || security_group_blockers(ctx, group),
    )
    .await
}
