//! EKS: the cluster (version, endpoint access, public CIDRs, control-plane logging), managed node
//! groups (instance types, capacity type, scaling, disk, labels, taints) and managed add-ons
//! (`latest` resolved through DescribeAddonVersions, the resolved version pinned in the outputs).
//! In-place updates go through UpdateClusterVersion / UpdateClusterConfig /
//! UpdateNodegroupConfig / UpdateAddon, one at a time, each waited for.

use std::collections::HashMap;

use aws_sdk_eks::types::{
    AccessScope, AccessScopeType, AmiTypes, AuthenticationMode, CapacityTypes,
    CreateAccessConfigRequest, LogSetup, LogType, Logging, NodegroupScalingConfig,
    ResolveConflicts, Taint, TaintEffect, UpdateAccessConfigRequest, UpdateLabelsPayload,
    UpdateTaintsPayload, VpcConfigRequest,
};
use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{
    ApiError, AwsContext, Props, api, bounds, carries, client_token, failed, object_map, retry_on,
    retry_while, tag_diff, user_tags, wait_for,
};
use crate::engine::provider::{LiveResource, OwnedObject, ProviderError};

/// Sized for real AWS: a cluster takes 10-20 minutes, node groups and add-ons a few.
pub const CLUSTER_BOUND: std::time::Duration = std::time::Duration::from_secs(25 * 60);
pub const NODE_GROUP_BOUND: std::time::Duration = std::time::Duration::from_secs(20 * 60);
pub const ADDON_BOUND: std::time::Duration = std::time::Duration::from_secs(20 * 60);

const NOT_FOUND: &str = "ResourceNotFoundException";

/// CreateCluster and CreateNodegroup right after CreateRole: "Role with arn: ..., could not be
/// assumed because it does not exist or the trusted entity is not correct" (or "Error in role
/// params") until IAM has propagated the role, usually seconds, rarely a minute or two.
fn role_not_yet_assumable(error: &ApiError) -> bool {
    error.is("InvalidParameterException")
        && (error.message.contains("could not be assumed")
            || error.message.contains("Error in role params"))
}

/// An update EKS answers with "nothing to change": the configuration already holds (an update
/// sent twice, or one whose effect became visible late). Not a failure.
fn already_applied(error: &ApiError) -> bool {
    error.is("InvalidParameterException")
        && (error
            .message
            .contains("already at the desired configuration")
            || error.message.contains("No changes needed"))
}
const ALL_LOG_TYPES: &[&str] = &[
    "api",
    "audit",
    "authenticator",
    "controllerManager",
    "scheduler",
];

fn tags_of(tags: Option<&HashMap<String, String>>) -> IndexMap<String, String> {
    let mut tags: Vec<(String, String)> = tags
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    tags.sort();
    tags.into_iter().collect()
}

fn effect_to_api(effect: &str) -> TaintEffect {
    match effect {
        "NoSchedule" => TaintEffect::NoSchedule,
        "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
        "NoExecute" => TaintEffect::NoExecute,
        other => TaintEffect::from(other),
    }
}

fn effect_from_api(effect: &TaintEffect) -> &str {
    match effect {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
        other => other.as_str(),
    }
}

// --- cluster ---

async fn describe_cluster(
    ctx: &AwsContext,
    name: &str,
) -> Result<Option<aws_sdk_eks::types::Cluster>, ProviderError> {
    match ctx
        .clients()
        .await
        .eks
        .describe_cluster()
        .name(name)
        .send()
        .await
        .map_err(api("DescribeCluster"))
    {
        Ok(out) => Ok(out.cluster().cloned()),
        Err(e) if e.is(NOT_FOUND) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn enabled_log_types(cluster: &aws_sdk_eks::types::Cluster) -> Vec<String> {
    let enabled: Vec<String> = cluster
        .logging()
        .map(|l| {
            l.cluster_logging()
                .iter()
                .filter(|s| s.enabled() == Some(true))
                .flat_map(|s| s.types().iter().map(|t| t.as_str().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    // Canonical order, as the stack lists them.
    ALL_LOG_TYPES
        .iter()
        .filter(|t| enabled.iter().any(|e| e == *t))
        .map(|t| (*t).to_owned())
        .collect()
}

async fn read_cluster(ctx: &AwsContext, name: &str) -> Result<Option<LiveResource>, ProviderError> {
    let Some(cluster) = describe_cluster(ctx, name).await? else {
        return Ok(None);
    };
    if cluster.status().map(|s| s.as_str()) == Some("DELETING") {
        return Ok(None);
    }
    let vpc = cluster.resources_vpc_config();
    let mut cidrs: Vec<String> = vpc
        .map(|v| v.public_access_cidrs().to_vec())
        .unwrap_or_default();
    // AWS reports its default (everyone) when no CIDRs were given; the stack says [].
    if cidrs == ["0.0.0.0/0"] {
        cidrs.clear();
    }
    let tags = tags_of(cluster.tags());
    let mut properties = object_map(json!({
            "name": name,
            "version": cluster.version(),
            "role_arn": cluster.role_arn(),
            "subnet_ids": vpc.map(|v| v.subnet_ids().to_vec()),
            "security_group_ids": vpc.map(|v| v.security_group_ids().to_vec()),
            "endpoint_public_access": vpc.map(|v| v.endpoint_public_access()),
            "endpoint_private_access": vpc.map(|v| v.endpoint_private_access()),
            "public_access_cidrs": cidrs,
            "enabled_log_types": enabled_log_types(&cluster),
            "tags": user_tags(&tags),
    }));
    if let Some(cidr) = cluster
        .kubernetes_network_config()
        .and_then(|n| n.service_ipv4_cidr())
    {
        properties.insert("service_cidr".into(), json!(cidr));
    }
    // Reported only when the answer has it (an emulator without access entries leaves it out;
    // the recorded value then stands).
    if let Some(mode) = cluster
        .access_config()
        .and_then(|a| a.authentication_mode())
    {
        properties.insert("authentication_mode".into(), json!(mode.as_str()));
    }
    Ok(Some(LiveResource {
        id: name.to_owned(),
        properties,
        outputs: object_map(json!({
            "name": name,
            "arn": cluster.arn(),
            "version": cluster.version(),
            "endpoint": cluster.endpoint(),
            "certificate_authority": cluster.certificate_authority().and_then(|c| c.data()),
            "oidc_issuer": cluster.identity().and_then(|i| i.oidc()).and_then(|o| o.issuer()),
            "cluster_security_group_id": vpc.and_then(|v| v.cluster_security_group_id()),
            "status": cluster.status().map(|s| s.as_str()),
        })),
        tags,
    }))
}

async fn wait_cluster_active(ctx: &AwsContext, name: &str) -> Result<(), ProviderError> {
    wait_for(
        ctx,
        &format!("EKS cluster {name} to be ACTIVE"),
        CLUSTER_BOUND,
        || async {
            match describe_cluster(ctx, name).await? {
                None => Err(ProviderError::NotFound(format!("EKS cluster {name}"))),
                Some(c) => match c.status().map(|s| s.as_str()) {
                    Some("ACTIVE") => Ok(Some(())),
                    Some("FAILED") => Err(failed(format!("EKS cluster {name} FAILED"))),
                    Some("DELETING") => Err(failed(format!(
                        "EKS cluster {name} is being deleted; wait until it is gone, then run \
                         `up` again"
                    ))),
                    _ => Ok(None),
                },
            }
        },
    )
    .await
}

/// Waits for one update (DescribeUpdate) to finish, then for the object to be ACTIVE again.
async fn wait_update(
    ctx: &AwsContext,
    cluster: &str,
    nodegroup: Option<&str>,
    addon: Option<&str>,
    update_id: &str,
    bound: std::time::Duration,
) -> Result<(), ProviderError> {
    let eks = &ctx.clients().await.eks;
    wait_for(
        ctx,
        &format!("update {update_id} of {cluster}"),
        bound,
        || async {
            let out = match eks
                .describe_update()
                .name(cluster)
                .update_id(update_id)
                .set_nodegroup_name(nodegroup.map(str::to_owned))
                .set_addon_name(addon.map(str::to_owned))
                .send()
                .await
                .map_err(api("DescribeUpdate"))
            {
                Ok(out) => out,
                // An answer without an error code (an endpoint that lacks DescribeUpdate, such as
                // moto's 404): the update cannot be tracked; the caller then waits for the object's
                // status, which is what remains observable.
                Err(e) if e.code.is_none() => return Ok(Some(())),
                Err(e) => return Err(e.into()),
            };
            let update = out.update();
            match update.and_then(|u| u.status()).map(|s| s.as_str()) {
                Some("Successful") => Ok(Some(())),
                Some(status @ ("Failed" | "Cancelled")) => {
                    let reasons: Vec<String> = update
                        .map(|u| {
                            u.errors()
                                .iter()
                                .filter_map(|e| e.error_message().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    Err(failed(format!(
                        "update {update_id} of {cluster}: {status}: {}",
                        reasons.join("; ")
                    )))
                }
                _ => Ok(None),
            }
        },
    )
    .await
}

fn logging(types: &[String]) -> Logging {
    let enabled: Vec<LogType> = types.iter().map(|t| LogType::from(t.as_str())).collect();
    let disabled: Vec<LogType> = ALL_LOG_TYPES
        .iter()
        .filter(|t| !types.iter().any(|e| e == *t))
        .map(|t| LogType::from(*t))
        .collect();
    let mut setups = vec![
        LogSetup::builder()
            .set_types(Some(enabled))
            .enabled(true)
            .build(),
    ];
    if !disabled.is_empty() {
        setups.push(
            LogSetup::builder()
                .set_types(Some(disabled))
                .enabled(false)
                .build(),
        );
    }
    Logging::builder().set_cluster_logging(Some(setups)).build()
}

/// The public CIDRs to send: EKS keeps the CIDRs it has when none are sent, and reports
/// `0.0.0.0/0` for "everyone"; the stack's `[]` means everyone, so it is sent explicitly (removing
/// `public_cidrs` from the stack must open the endpoint again, not change nothing).
fn public_cidrs_wanted(p: Props<'_>) -> Result<Option<Vec<String>>, ProviderError> {
    let cidrs = p.strs("public_access_cidrs")?;
    Ok(if !p.bool("endpoint_public_access")? {
        None
    } else if cidrs.is_empty() {
        Some(vec!["0.0.0.0/0".to_owned()])
    } else {
        Some(cidrs)
    })
}

fn endpoint_config(p: Props<'_>) -> Result<VpcConfigRequest, ProviderError> {
    Ok(VpcConfigRequest::builder()
        .endpoint_public_access(p.bool("endpoint_public_access")?)
        .endpoint_private_access(p.bool("endpoint_private_access")?)
        .set_public_access_cidrs(public_cidrs_wanted(p)?)
        .build())
}

/// A set of strings in a canonical order, for comparisons that ignore order.
fn as_set(values: Option<&Value>) -> Vec<String> {
    let mut values: Vec<String> = values
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    values.sort();
    values.dedup();
    values
}

/// `1.31` -> (1, 31).
fn minor_version(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.split('.').next()?.parse().ok()?))
}

async fn create_cluster(
    ctx: &AwsContext,
    properties: &IndexMap<String, Value>,
    ownership: &IndexMap<String, String>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let name = p.str("name")?;
    let cidrs = p.strs("public_access_cidrs")?;
    let vpc = VpcConfigRequest::builder()
        .set_subnet_ids(Some(p.strs("subnet_ids")?))
        .set_security_group_ids(Some(p.strs("security_group_ids")?))
        .endpoint_public_access(p.bool("endpoint_public_access")?)
        .endpoint_private_access(p.bool("endpoint_private_access")?)
        .set_public_access_cidrs((!cidrs.is_empty()).then_some(cidrs))
        .build();
    let access = p.opt_str("authentication_mode").map(|mode| {
        CreateAccessConfigRequest::builder()
            .authentication_mode(AuthenticationMode::from(mode))
            // The identity that creates the cluster administers it (as before access entries);
            // the stack's other administrators get access entries of their own.
            .bootstrap_cluster_creator_admin_permissions(true)
            .build()
    });
    let token = client_token(ownership, properties);
    let log_types = p.strs("enabled_log_types")?;
    // Fixed at creation (a change replaces the cluster); EKS picks one when none is given.
    let service_cidr = p.opt_str("service_cidr").map(|cidr| {
        aws_sdk_eks::types::KubernetesNetworkConfigRequest::builder()
            .service_ipv4_cidr(cidr)
            .build()
    });
    let eks = &ctx.clients().await.eks;
    // The cluster's service role is usually moments old: retried while IAM propagates it.
    retry_while(
        ctx,
        &format!("creating EKS cluster {name} (its role is not assumable yet)"),
        bounds::PROPAGATION,
        role_not_yet_assumable,
        || async {
            eks.create_cluster()
                .name(name)
                .version(p.str("version").unwrap_or_default())
                .role_arn(p.str("role_arn").unwrap_or_default())
                .resources_vpc_config(vpc.clone())
                .set_kubernetes_network_config(service_cidr.clone())
                .logging(logging(&log_types))
                .set_access_config(access.clone())
                .set_tags(Some(
                    super::all_tags(properties, ownership).into_iter().collect(),
                ))
                .client_request_token(&token)
                .send()
                .await
                .map_err(api("CreateCluster"))
        },
    )
    .await?;
    wait_cluster_active(ctx, name).await?;
    read_cluster(ctx, name)
        .await?
        .ok_or_else(|| failed(format!("EKS cluster {name} vanished after its creation")))
}

/// Sends one cluster update and waits for it and for the cluster to be ACTIVE again. An update
/// EKS answers with "nothing to change" counts as done.
async fn cluster_update<F, Fut>(
    ctx: &AwsContext,
    name: &str,
    bound: std::time::Duration,
    send: F,
) -> Result<(), ProviderError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<aws_sdk_eks::types::Update>, ApiError>>,
{
    match send().await {
        Ok(update) => {
            let id = update
                .as_ref()
                .and_then(|u| u.id())
                .unwrap_or_default()
                .to_owned();
            wait_update(ctx, name, None, None, &id, bound).await?;
        }
        Err(e) if already_applied(&e) => {}
        Err(e) => return Err(e.into()),
    }
    wait_cluster_active(ctx, name).await
}

/// Node groups of a cluster, by name.
async fn nodegroups_of(ctx: &AwsContext, cluster: &str) -> Result<Vec<String>, ProviderError> {
    let eks = &ctx.clients().await.eks;
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let out = eks
            .list_nodegroups()
            .cluster_name(cluster)
            .set_next_token(token)
            .send()
            .await
            .map_err(api("ListNodegroups"))?;
        names.extend(out.nodegroups().iter().cloned());
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(names);
        }
    }
}

/// Moves a node group to a Kubernetes version (UpdateNodegroupVersion: a rolling replacement of
/// its nodes) and waits for it.
async fn upgrade_nodegroup(
    ctx: &AwsContext,
    cluster: &str,
    name: &str,
    version: &str,
) -> Result<(), ProviderError> {
    let out = ctx
        .clients()
        .await
        .eks
        .update_nodegroup_version()
        .cluster_name(cluster)
        .nodegroup_name(name)
        .version(version)
        .send()
        .await
        .map_err(api("UpdateNodegroupVersion"))?;
    let update = out
        .update()
        .and_then(|u| u.id())
        .unwrap_or_default()
        .to_owned();
    wait_update(ctx, cluster, Some(name), None, &update, NODE_GROUP_BOUND).await?;
    wait_nodegroup_active(ctx, cluster, name).await
}

/// Upgrades the control plane from `current` to `wanted` the way EKS allows it: one minor
/// version per UpdateClusterVersion, and before each step every managed node group at the
/// control plane's current version ("Nodegroups ... must be updated to match cluster version
/// 1.30 before updating cluster version"). The last step's node groups are upgraded by their own
/// resources, which depend on the cluster. A downgrade is refused before any call.
async fn upgrade_cluster(
    ctx: &AwsContext,
    name: &str,
    current: &str,
    wanted: &str,
) -> Result<(), ProviderError> {
    let (Some(mut at), Some(target)) = (minor_version(current), minor_version(wanted)) else {
        return Err(failed(format!(
            "EKS cluster {name}: cannot compare Kubernetes versions {current} and {wanted}"
        )));
    };
    if target < at || target.0 != at.0 {
        return Err(failed(format!(
            "EKS cluster {name} runs Kubernetes {current}; EKS cannot downgrade it to {wanted}: \
             set `cluster.version` to {current} or later"
        )));
    }
    let eks = &ctx.clients().await.eks;
    while at < target {
        let here = format!("{}.{}", at.0, at.1);
        for group in nodegroups_of(ctx, name).await? {
            let behind = describe_nodegroup(ctx, name, &group)
                .await?
                .and_then(|g| g.version().map(str::to_owned))
                .is_some_and(|v| minor_version(&v).is_some_and(|v| v < at));
            if behind {
                upgrade_nodegroup(ctx, name, &group, &here).await?;
            }
        }
        let next = format!("{}.{}", at.0, at.1 + 1);
        cluster_update(ctx, name, CLUSTER_BOUND * 3 / 2, || async {
            eks.update_cluster_version()
                .name(name)
                .version(&next)
                .send()
                .await
                .map(|out| out.update().cloned())
                .map_err(api("UpdateClusterVersion"))
        })
        .await?;
        at = (at.0, at.1 + 1);
    }
    Ok(())
}

async fn update_cluster(
    ctx: &AwsContext,
    name: &str,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let eks = &ctx.clients().await.eks;
    // An adopted cluster may still be CREATING (a crash during its creation): wait first.
    wait_cluster_active(ctx, name).await?;
    let current = read_cluster(ctx, name)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("EKS cluster {name}")))?;
    let have = |k: &str| current.properties.get(k);
    let differs = |k: &str| properties.get(k).is_some() && properties.get(k) != have(k);
    // Only what the properties name is managed. One update at a time: EKS refuses a second
    // while one is in progress, and refuses updates that change nothing.
    if differs("version") {
        let from = have("version").and_then(Value::as_str).unwrap_or_default();
        upgrade_cluster(ctx, name, from, p.str("version")?).await?;
    }
    let endpoint_differs = differs("endpoint_public_access")
        || differs("endpoint_private_access")
        || (properties.get("public_access_cidrs").is_some()
            && as_set(properties.get("public_access_cidrs"))
                != as_set(have("public_access_cidrs")));
    if endpoint_differs {
        let config = endpoint_config(p)?;
        cluster_update(ctx, name, CLUSTER_BOUND, || async {
            eks.update_cluster_config()
                .name(name)
                .resources_vpc_config(config)
                .send()
                .await
                .map(|out| out.update().cloned())
                .map_err(api("UpdateClusterConfig"))
        })
        .await?;
    }
    // Compared as sets: EKS reports enabled types in its own order.
    if properties.get("enabled_log_types").is_some()
        && as_set(properties.get("enabled_log_types")) != as_set(have("enabled_log_types"))
    {
        let types = p.strs("enabled_log_types")?;
        cluster_update(ctx, name, CLUSTER_BOUND, || async {
            eks.update_cluster_config()
                .name(name)
                .logging(logging(&types))
                .send()
                .await
                .map(|out| out.update().cloned())
                .map_err(api("UpdateClusterConfig"))
        })
        .await?;
    }
    // CONFIG_MAP -> API_AND_CONFIG_MAP (EKS allows only that direction, then to API). A cluster
    // whose answer has no access configuration (an emulator) is left alone.
    if let (Some(want), Some(live)) = (
        p.opt_str("authentication_mode"),
        have("authentication_mode").and_then(Value::as_str),
    ) && want != live
    {
        cluster_update(ctx, name, CLUSTER_BOUND, || async {
            eks.update_cluster_config()
                .name(name)
                .access_config(
                    UpdateAccessConfigRequest::builder()
                        .authentication_mode(AuthenticationMode::from(want))
                        .build(),
                )
                .send()
                .await
                .map(|out| out.update().cloned())
                .map_err(api("UpdateClusterConfig"))
        })
        .await?;
    }
    let arn = current
        .outputs
        .get("arn")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    sync_tags(ctx, &arn, &current.tags, &p.tags()).await?;
    read_cluster(ctx, name)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("EKS cluster {name}")))
}

async fn sync_tags(
    ctx: &AwsContext,
    arn: &str,
    have: &IndexMap<String, String>,
    want: &IndexMap<String, String>,
) -> Result<(), ProviderError> {
    let eks = &ctx.clients().await.eks;
    let (set, remove) = tag_diff(have, want);
    if !set.is_empty() {
        eks.tag_resource()
            .resource_arn(arn)
            .set_tags(Some(set.into_iter().collect()))
            .send()
            .await
            .map_err(api("TagResource"))?;
    }
    if !remove.is_empty() {
        eks.untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(remove))
            .send()
            .await
            .map_err(api("UntagResource"))?;
    }
    Ok(())
}

async fn delete_cluster(ctx: &AwsContext, name: &str) -> Result<(), ProviderError> {
    let eks = &ctx.clients().await.eks;
    let Some(cluster) = describe_cluster(ctx, name).await? else {
        return Ok(());
    };
    if cluster.status().map(|s| s.as_str()) != Some("DELETING") {
        // Node groups and add-ons are deleted first; ResourceInUse while they finish going.
        let result = retry_on(
            ctx,
            &format!("deleting EKS cluster {name}"),
            &["ResourceInUseException"],
            NODE_GROUP_BOUND,
            || async {
                eks.delete_cluster()
                    .name(name)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(api("DeleteCluster"))
            },
        )
        .await;
        match result {
            Err(ProviderError::Failed(m)) if m.contains(NOT_FOUND) => return Ok(()),
            other => other?,
        }
    }
    wait_for(
        ctx,
        &format!("EKS cluster {name} to be deleted"),
        CLUSTER_BOUND,
        || async { Ok(describe_cluster(ctx, name).await?.is_none().then_some(())) },
    )
    .await
}

// --- node groups ---

fn split_pair(id: &str) -> Result<(&str, &str), ProviderError> {
    id.split_once('/')
        .ok_or_else(|| failed(format!("malformed id `{id}` (want cluster/name)")))
}

async fn describe_nodegroup(
    ctx: &AwsContext,
    cluster: &str,
    name: &str,
) -> Result<Option<aws_sdk_eks::types::Nodegroup>, ProviderError> {
    match ctx
        .clients()
        .await
        .eks
        .describe_nodegroup()
        .cluster_name(cluster)
        .nodegroup_name(name)
        .send()
        .await
        .map_err(api("DescribeNodegroup"))
    {
        Ok(out) => Ok(out.nodegroup().cloned()),
        Err(e) if e.is(NOT_FOUND) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn labels_of(group: &aws_sdk_eks::types::Nodegroup) -> serde_json::Map<String, Value> {
    let mut labels: Vec<_> = group
        .labels()
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    labels.sort();
    labels.into_iter().map(|(k, v)| (k, json!(v))).collect()
}

fn taints_of(group: &aws_sdk_eks::types::Nodegroup) -> Vec<Value> {
    group
        .taints()
        .iter()
        .map(|t| {
            json!({
                "key": t.key(),
                "value": t.value(),
                "effect": t.effect().map(effect_from_api),
            })
        })
        .collect()
}

async fn read_nodegroup(ctx: &AwsContext, id: &str) -> Result<Option<LiveResource>, ProviderError> {
    let (cluster, name) = split_pair(id)?;
    let Some(group) = describe_nodegroup(ctx, cluster, name).await? else {
        return Ok(None);
    };
    if group.status().map(|s| s.as_str()) == Some("DELETING") {
        return Ok(None);
    }
    let scaling = group.scaling_config();
    let tags = tags_of(group.tags());
    Ok(Some(LiveResource {
        id: id.to_owned(),
        properties: object_map(json!({
            "cluster_name": cluster,
            "node_group_name": name,
            "node_role_arn": group.node_role(),
            "subnet_ids": group.subnets(),
            "instance_types": group.instance_types(),
            "capacity_type": group.capacity_type().map(|c| c.as_str()),
            "disk_size": group.disk_size(),
            "scaling": {
                "min": scaling.and_then(|s| s.min_size()),
                "desired": scaling.and_then(|s| s.desired_size()),
                "max": scaling.and_then(|s| s.max_size()),
            },
            "labels": labels_of(&group),
            "taints": taints_of(&group),
            "version": group.version(),
            "ami_type": group.ami_type().map(|a| a.as_str()),
            "tags": user_tags(&tags),
        })),
        outputs: object_map(json!({
            "name": name,
            "arn": group.nodegroup_arn(),
            "status": group.status().map(|s| s.as_str()),
        })),
        tags,
    }))
}

async fn wait_nodegroup_active(
    ctx: &AwsContext,
    cluster: &str,
    name: &str,
) -> Result<(), ProviderError> {
    wait_for(
        ctx,
        &format!("node group {name} to be ACTIVE"),
        NODE_GROUP_BOUND,
        || async {
            match describe_nodegroup(ctx, cluster, name).await? {
                None => Err(ProviderError::NotFound(format!("node group {name}"))),
                Some(g) => match g.status().map(|s| s.as_str()) {
                    Some("ACTIVE") => Ok(Some(())),
                    Some(status @ ("CREATE_FAILED" | "DEGRADED")) => {
                        let issues: Vec<String> = g
                            .health()
                            .map(|h| {
                                h.issues()
                                    .iter()
                                    .filter_map(|i| i.message().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default();
                        Err(failed(format!(
                            "node group {name} is {status}: {}",
                            issues.join("; ")
                        )))
                    }
                    _ => Ok(None),
                },
            }
        },
    )
    .await
}

fn scaling_of(p: Props<'_>) -> Result<NodegroupScalingConfig, ProviderError> {
    let scaling =
        p.0.get("scaling")
            .ok_or_else(|| failed("property `scaling` must be {min, desired, max}"))?;
    let size = |key: &str| {
        scaling[key]
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| failed(format!("property `scaling.{key}` must be a whole number")))
    };
    Ok(NodegroupScalingConfig::builder()
        .min_size(size("min")?)
        .desired_size(size("desired")?)
        .max_size(size("max")?)
        .build())
}

/// The scaling sent to UpdateNodegroupConfig: the stack's, except that a group the Cluster
/// Autoscaler sizes (`scaling.autoscaled`) keeps its current size, moved into the new bounds.
fn scaling_for_update(
    p: Props<'_>,
    current: &indexmap::IndexMap<String, Value>,
) -> Result<NodegroupScalingConfig, ProviderError> {
    let wanted = scaling_of(p)?;
    let autoscaled = p.0.get("scaling").and_then(|s| s.get("autoscaled")) == Some(&json!(true));
    let live = current
        .get("scaling")
        .and_then(|s| s.get("desired"))
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok());
    match (autoscaled, live, wanted.min_size(), wanted.max_size()) {
        (true, Some(live), Some(min), Some(max)) => Ok(NodegroupScalingConfig::builder()
            .min_size(min)
            .desired_size(live.clamp(min, max.max(min)))
            .max_size(max)
            .build()),
        _ => Ok(wanted),
    }
}

fn labels_wanted(p: Props<'_>) -> HashMap<String, String> {
    p.0.get("labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn taints_wanted(p: Props<'_>) -> Vec<Taint> {
    p.0.get("taints")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|t| {
                    Taint::builder()
                        .set_key(t["key"].as_str().map(str::to_owned))
                        .set_value(t["value"].as_str().map(str::to_owned))
                        .set_effect(t["effect"].as_str().map(effect_to_api))
                        .build()
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn create_nodegroup(
    ctx: &AwsContext,
    properties: &IndexMap<String, Value>,
    ownership: &IndexMap<String, String>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let cluster = p.str("cluster_name")?;
    let name = p.str("node_group_name")?;
    let taints = taints_wanted(p);
    let (subnets, instance_types) = (p.strs("subnet_ids")?, p.strs("instance_types")?);
    let (disk, scaling) = (p.i32("disk_size")?, scaling_of(p)?);
    let token = client_token(ownership, properties);
    let eks = &ctx.clients().await.eks;
    // The node role is usually moments old: retried while IAM propagates it.
    retry_while(
        ctx,
        &format!("creating node group {name} (its role is not assumable yet)"),
        bounds::PROPAGATION,
        role_not_yet_assumable,
        || async {
            eks.create_nodegroup()
                .cluster_name(cluster)
                .nodegroup_name(name)
                .node_role(p.str("node_role_arn").unwrap_or_default())
                .set_subnets(Some(subnets.clone()))
                .set_instance_types(Some(instance_types.clone()))
                .capacity_type(CapacityTypes::from(
                    p.str("capacity_type").unwrap_or_default(),
                ))
                .disk_size(disk)
                .scaling_config(scaling.clone())
                .set_labels(Some(labels_wanted(p)))
                .set_taints((!taints.is_empty()).then(|| taints.clone()))
                // Without them EKS picks the cluster's version and an x86 AMI (Graviton
                // instance types are then refused).
                .set_version(p.opt_str("version").map(str::to_owned))
                .set_ami_type(p.opt_str("ami_type").map(AmiTypes::from))
                .set_tags(Some(
                    super::all_tags(properties, ownership).into_iter().collect(),
                ))
                .client_request_token(&token)
                .send()
                .await
                .map_err(api("CreateNodegroup"))
        },
    )
    .await?;
    wait_nodegroup_active(ctx, cluster, name).await?;
    let id = format!("{cluster}/{name}");
    read_nodegroup(ctx, &id)
        .await?
        .ok_or_else(|| failed(format!("node group {id} vanished after its creation")))
}

async fn update_nodegroup(
    ctx: &AwsContext,
    id: &str,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let (cluster, name) = split_pair(id)?;
    let eks = &ctx.clients().await.eks;
    // An adopted group may still be CREATING (a crash during its creation): wait until it
    // settles (a DEGRADED group can still be updated).
    wait_for(
        ctx,
        &format!("node group {name} to finish creating or updating"),
        NODE_GROUP_BOUND,
        || async {
            match describe_nodegroup(ctx, cluster, name).await? {
                None => Err(ProviderError::NotFound(format!("node group {id}"))),
                Some(g) => match g.status().map(|s| s.as_str()) {
                    Some("CREATING" | "UPDATING") => Ok(None),
                    Some("CREATE_FAILED") => Err(failed(format!(
                        "node group {id} is CREATE_FAILED; delete it (or `down`) and run `up` again"
                    ))),
                    _ => Ok(Some(())),
                },
            }
        },
    )
    .await?;
    let mut current = read_nodegroup(ctx, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("node group {id}")))?;
    // The Kubernetes version first (it replaces the nodes), after the control plane's upgrade
    // (this group depends on the cluster).
    if let Some(version) = p.opt_str("version")
        && current.properties.get("version").and_then(Value::as_str) != Some(version)
    {
        upgrade_nodegroup(ctx, cluster, name, version).await?;
        current = read_nodegroup(ctx, id)
            .await?
            .ok_or_else(|| ProviderError::NotFound(format!("node group {id}")))?;
    }
    let differs = |k: &str| match (properties.get(k), current.properties.get(k)) {
        (Some(wanted), Some(have)) => !crate::engine::types::satisfies(
            &crate::engine::ResourceType::new("aws.eks.node_group"),
            k,
            wanted,
            have,
        ),
        (wanted, have) => wanted != have,
    };
    if differs("scaling") || differs("labels") || differs("taints") {
        let mut request = eks
            .update_nodegroup_config()
            .cluster_name(cluster)
            .nodegroup_name(name);
        if differs("scaling") {
            request = request.scaling_config(scaling_for_update(p, &current.properties)?);
        }
        if differs("labels") {
            let want = labels_wanted(p);
            let have: Vec<String> = current
                .properties
                .get("labels")
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let remove: Vec<String> = have.into_iter().filter(|k| !want.contains_key(k)).collect();
            request = request.labels(
                UpdateLabelsPayload::builder()
                    .set_add_or_update_labels((!want.is_empty()).then_some(want))
                    .set_remove_labels((!remove.is_empty()).then_some(remove))
                    .build(),
            );
        }
        if differs("taints") {
            let want = taints_wanted(p);
            let have: Vec<Taint> = current
                .properties
                .get("taints")
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .map(|t| {
                            Taint::builder()
                                .set_key(t["key"].as_str().map(str::to_owned))
                                .set_value(t["value"].as_str().map(str::to_owned))
                                .set_effect(t["effect"].as_str().map(effect_to_api))
                                .build()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let remove: Vec<Taint> = have
                .into_iter()
                .filter(|h| !want.iter().any(|w| w.key() == h.key()))
                .collect();
            request = request.taints(
                UpdateTaintsPayload::builder()
                    .set_add_or_update_taints((!want.is_empty()).then_some(want))
                    .set_remove_taints((!remove.is_empty()).then_some(remove))
                    .build(),
            );
        }
        let out = request.send().await.map_err(api("UpdateNodegroupConfig"))?;
        let update = out
            .update()
            .and_then(|u| u.id())
            .unwrap_or_default()
            .to_owned();
        wait_update(ctx, cluster, Some(name), None, &update, NODE_GROUP_BOUND).await?;
        wait_nodegroup_active(ctx, cluster, name).await?;
    }
    if let Some(arn) = current.outputs.get("arn").and_then(Value::as_str) {
        sync_tags(ctx, arn, &current.tags, &p.tags()).await?;
    }
    read_nodegroup(ctx, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("node group {id}")))
}

async fn delete_nodegroup(ctx: &AwsContext, id: &str) -> Result<(), ProviderError> {
    let (cluster, name) = split_pair(id)?;
    let Some(group) = describe_nodegroup(ctx, cluster, name).await? else {
        return Ok(());
    };
    if group.status().map(|s| s.as_str()) != Some("DELETING") {
        match ctx
            .clients()
            .await
            .eks
            .delete_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(name)
            .send()
            .await
            .map_err(api("DeleteNodegroup"))
        {
            Err(e) if e.is(NOT_FOUND) => return Ok(()),
            other => other.map(|_| ())?,
        }
    }
    wait_for(
        ctx,
        &format!("node group {id} to be deleted"),
        NODE_GROUP_BOUND,
        || async {
            Ok(describe_nodegroup(ctx, cluster, name)
                .await?
                .is_none()
                .then_some(()))
        },
    )
    .await
}

// --- add-ons ---

/// Version strings such as `v1.19.2-eksbuild.1`, compared by their numbers.
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// `latest` -> the newest version compatible with the cluster's Kubernetes version.
pub async fn resolve_addon_version(
    ctx: &AwsContext,
    cluster: &str,
    addon: &str,
    wanted: &str,
) -> Result<String, ProviderError> {
    if wanted != "latest" {
        return Ok(wanted.to_owned());
    }
    let kubernetes = describe_cluster(ctx, cluster)
        .await?
        .and_then(|c| c.version().map(str::to_owned))
        .ok_or_else(|| ProviderError::NotFound(format!("EKS cluster {cluster}")))?;
    let out = ctx
        .clients()
        .await
        .eks
        .describe_addon_versions()
        .addon_name(addon)
        .kubernetes_version(&kubernetes)
        .send()
        .await
        .map_err(api("DescribeAddonVersions"))?;
    out.addons()
        .iter()
        .filter(|a| a.addon_name() == Some(addon))
        .flat_map(|a| a.addon_versions())
        .filter_map(|v| v.addon_version())
        .max_by_key(|v| version_key(v))
        .map(str::to_owned)
        .ok_or_else(|| {
            failed(format!(
                "no version of add-on {addon} supports Kubernetes {kubernetes}"
            ))
        })
}

async fn describe_addon(
    ctx: &AwsContext,
    cluster: &str,
    name: &str,
) -> Result<Option<aws_sdk_eks::types::Addon>, ProviderError> {
    match ctx
        .clients()
        .await
        .eks
        .describe_addon()
        .cluster_name(cluster)
        .addon_name(name)
        .send()
        .await
        .map_err(api("DescribeAddon"))
    {
        Ok(out) => Ok(out.addon().cloned()),
        Err(e) if e.is(NOT_FOUND) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn read_addon(ctx: &AwsContext, id: &str) -> Result<Option<LiveResource>, ProviderError> {
    let (cluster, name) = split_pair(id)?;
    let Some(addon) = describe_addon(ctx, cluster, name).await? else {
        return Ok(None);
    };
    if addon.status().map(|s| s.as_str()) == Some("DELETING") {
        return Ok(None);
    }
    let tags = tags_of(addon.tags());
    let mut properties = object_map(json!({
        "cluster_name": cluster,
        "addon_name": name,
        "service_account_role_arn": addon.service_account_role_arn(),
    }));
    // Configuration values as EKS holds them (the JSON we sent), compared as values.
    if let Some(values) = addon
        .configuration_values()
        .filter(|v| !v.trim().is_empty())
    {
        properties.insert(
            "configuration".into(),
            serde_json::from_str(values).unwrap_or_else(|_| json!(values)),
        );
    }
    // The stack may say `latest`: the installed version is an output (pinned in state), not a
    // property compared with the stack.
    Ok(Some(LiveResource {
        id: id.to_owned(),
        properties,
        outputs: object_map(json!({
            "name": name,
            "arn": addon.addon_arn(),
            "addon_version": addon.addon_version(),
            "status": addon.status().map(|s| s.as_str()),
        })),
        tags,
    }))
}

async fn wait_addon_active(
    ctx: &AwsContext,
    cluster: &str,
    name: &str,
) -> Result<(), ProviderError> {
    wait_for(
        ctx,
        &format!("add-on {name} to be ACTIVE"),
        ADDON_BOUND,
        || async {
            match describe_addon(ctx, cluster, name).await? {
                None => Err(ProviderError::NotFound(format!("add-on {name}"))),
                Some(a) => match a.status().map(|s| s.as_str()) {
                    Some("ACTIVE") => Ok(Some(())),
                    Some(status @ ("CREATE_FAILED" | "UPDATE_FAILED" | "DEGRADED")) => {
                        Err(failed(format!("add-on {name} is {status}")))
                    }
                    _ => Ok(None),
                },
            }
        },
    )
    .await
}

async fn create_addon(
    ctx: &AwsContext,
    properties: &IndexMap<String, Value>,
    ownership: &IndexMap<String, String>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let cluster = p.str("cluster_name")?;
    let name = p.str("addon_name")?;
    let version = resolve_addon_version(ctx, cluster, name, p.str("addon_version")?).await?;
    let result = ctx
        .clients()
        .await
        .eks
        .create_addon()
        .cluster_name(cluster)
        .addon_name(name)
        .addon_version(&version)
        .set_service_account_role_arn(p.opt_str("service_account_role_arn").map(str::to_owned))
        .set_configuration_values(configuration_values(properties))
        .resolve_conflicts(ResolveConflicts::Overwrite)
        .set_tags(Some(
            super::all_tags(properties, ownership).into_iter().collect(),
        ))
        .client_request_token(client_token(ownership, properties))
        .send()
        .await
        .map_err(api("CreateAddon"));
    match result {
        Ok(_) => {}
        // An earlier attempt created it: adopt it when it carries our tags.
        Err(e) if e.is("ResourceInUseException") => {
            let owned = describe_addon(ctx, cluster, name)
                .await?
                .is_some_and(|a| carries(&tags_of(a.tags()), ownership));
            if !owned {
                return Err(e.into());
            }
        }
        Err(e) => return Err(e.into()),
    }
    wait_addon_active(ctx, cluster, name).await?;
    read_addon(ctx, &format!("{cluster}/{name}"))
        .await?
        .ok_or_else(|| failed(format!("add-on {name} vanished after its creation")))
}

/// The add-on's `configuration` property as the JSON text EKS takes (`configurationValues`).
fn configuration_values(properties: &IndexMap<String, Value>) -> Option<String> {
    properties
        .get("configuration")
        .filter(|c| c.as_object().is_some_and(|o| !o.is_empty()))
        .map(Value::to_string)
}

async fn update_addon(
    ctx: &AwsContext,
    id: &str,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let (cluster, name) = split_pair(id)?;
    let current = describe_addon(ctx, cluster, name)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("add-on {id}")))?;
    let version = resolve_addon_version(ctx, cluster, name, p.str("addon_version")?).await?;
    let role = p.opt_str("service_account_role_arn");
    let configuration = configuration_values(properties);
    let live_configuration = current
        .configuration_values()
        .filter(|v| !v.trim().is_empty())
        .map(|v| serde_json::from_str::<Value>(v).unwrap_or_else(|_| json!(v)));
    let configuration_differs = properties.get("configuration").is_some()
        && properties.get("configuration") != live_configuration.as_ref();
    if current.addon_version() != Some(version.as_str())
        || current.service_account_role_arn() != role
        || configuration_differs
    {
        let out = ctx
            .clients()
            .await
            .eks
            .update_addon()
            .cluster_name(cluster)
            .addon_name(name)
            .addon_version(&version)
            .set_service_account_role_arn(role.map(str::to_owned))
            .set_configuration_values(configuration.filter(|_| configuration_differs))
            .resolve_conflicts(ResolveConflicts::Overwrite)
            .send()
            .await
            .map_err(api("UpdateAddon"))?;
        let update = out
            .update()
            .and_then(|u| u.id())
            .unwrap_or_default()
            .to_owned();
        wait_update(ctx, cluster, None, Some(name), &update, ADDON_BOUND).await?;
        wait_addon_active(ctx, cluster, name).await?;
    }
    if let Some(arn) = current.addon_arn() {
        sync_tags(ctx, arn, &tags_of(current.tags()), &p.tags()).await?;
    }
    read_addon(ctx, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("add-on {id}")))
}

async fn delete_addon(ctx: &AwsContext, id: &str) -> Result<(), ProviderError> {
    let (cluster, name) = split_pair(id)?;
    if describe_addon(ctx, cluster, name).await?.is_none() {
        return Ok(());
    }
    match ctx
        .clients()
        .await
        .eks
        .delete_addon()
        .cluster_name(cluster)
        .addon_name(name)
        .send()
        .await
        .map_err(api("DeleteAddon"))
    {
        Err(e) if e.is(NOT_FOUND) => return Ok(()),
        other => other.map(|_| ())?,
    }
    wait_for(
        ctx,
        &format!("add-on {id} to be deleted"),
        ADDON_BOUND,
        || async {
            Ok(describe_addon(ctx, cluster, name)
                .await?
                .is_none()
                .then_some(()))
        },
    )
    .await
}

// --- access entries ---

/// `cluster/arn:aws:iam::...:role/name` (the cluster name holds no `/`).
fn access_entry_id(cluster: &str, principal: &str) -> String {
    format!("{cluster}/{principal}")
}

async fn describe_access_entry(
    ctx: &AwsContext,
    cluster: &str,
    principal: &str,
) -> Result<Option<aws_sdk_eks::types::AccessEntry>, ProviderError> {
    match ctx
        .clients()
        .await
        .eks
        .describe_access_entry()
        .cluster_name(cluster)
        .principal_arn(principal)
        .send()
        .await
        .map_err(api("DescribeAccessEntry"))
    {
        Ok(out) => Ok(out.access_entry().cloned()),
        Err(e) if e.is(NOT_FOUND) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The access policies associated with an entry, with their scope type.
async fn associated_policies(
    ctx: &AwsContext,
    cluster: &str,
    principal: &str,
) -> Result<Vec<(String, String)>, ProviderError> {
    let eks = &ctx.clients().await.eks;
    let mut policies = Vec::new();
    let mut token = None;
    loop {
        let out = match eks
            .list_associated_access_policies()
            .cluster_name(cluster)
            .principal_arn(principal)
            .set_next_token(token)
            .send()
            .await
            .map_err(api("ListAssociatedAccessPolicies"))
        {
            Ok(out) => out,
            Err(e) if e.is(NOT_FOUND) => return Ok(policies),
            Err(e) => return Err(e.into()),
        };
        policies.extend(out.associated_access_policies().iter().filter_map(|a| {
            Some((
                a.policy_arn()?.to_owned(),
                a.access_scope()
                    .and_then(|s| s.r#type())
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default(),
            ))
        }));
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            policies.sort();
            return Ok(policies);
        }
    }
}

async fn read_access_entry(
    ctx: &AwsContext,
    id: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    let (cluster, principal) = split_pair(id)?;
    let Some(entry) = describe_access_entry(ctx, cluster, principal).await? else {
        return Ok(None);
    };
    let tags = tags_of(entry.tags());
    let policies = associated_policies(ctx, cluster, principal).await?;
    // The stack associates one policy per entry: report it (the first, when several are).
    let (policy, scope) = policies
        .first()
        .map(|(p, s)| (Some(p.clone()), Some(s.clone())))
        .unwrap_or_default();
    Ok(Some(LiveResource {
        id: id.to_owned(),
        properties: object_map(json!({
            "cluster_name": cluster,
            "principal_arn": principal,
            "policy_arn": policy,
            "access_scope": scope,
            "tags": user_tags(&tags),
        })),
        outputs: object_map(json!({
            "arn": entry.access_entry_arn(),
            "username": entry.username(),
        })),
        tags,
    }))
}

async fn associate_policy(
    ctx: &AwsContext,
    cluster: &str,
    principal: &str,
    policy: &str,
) -> Result<(), ProviderError> {
    ctx.clients()
        .await
        .eks
        .associate_access_policy()
        .cluster_name(cluster)
        .principal_arn(principal)
        .policy_arn(policy)
        .access_scope(
            AccessScope::builder()
                .r#type(AccessScopeType::Cluster)
                .build(),
        )
        .send()
        .await
        .map_err(api("AssociateAccessPolicy"))?;
    Ok(())
}

async fn create_access_entry(
    ctx: &AwsContext,
    properties: &IndexMap<String, Value>,
    ownership: &IndexMap<String, String>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let cluster = p.str("cluster_name")?;
    let principal = p.str("principal_arn")?;
    let result = ctx
        .clients()
        .await
        .eks
        .create_access_entry()
        .cluster_name(cluster)
        .principal_arn(principal)
        .r#type("STANDARD")
        .set_tags(Some(
            super::all_tags(properties, ownership).into_iter().collect(),
        ))
        .client_request_token(client_token(ownership, properties))
        .send()
        .await
        .map_err(api("CreateAccessEntry"));
    match result {
        Ok(_) => {}
        // An earlier attempt created it: adopt it when it carries our tags.
        Err(e) if e.is("ResourceInUseException") => {
            let owned = describe_access_entry(ctx, cluster, principal)
                .await?
                .is_some_and(|a| carries(&tags_of(a.tags()), ownership));
            if !owned {
                return Err(failed(format!(
                    "{principal} already has an access entry on {cluster} that this stack does not \
                     own; delete it or remove the principal from `cluster.access.admins`"
                )));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let id = access_entry_id(cluster, principal);
    update_access_entry(ctx, &id, properties).await
}

/// Associates the wanted policy on the whole cluster (idempotent: associating again replaces
/// the scope) and drops one the entry had instead.
async fn update_access_entry(
    ctx: &AwsContext,
    id: &str,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let (cluster, principal) = split_pair(id)?;
    let want = p.str("policy_arn")?;
    let current = read_access_entry(ctx, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("access entry {id}")))?;
    let policies = associated_policies(ctx, cluster, principal).await?;
    if !policies
        .iter()
        .any(|(policy, scope)| policy == want && scope == "cluster")
    {
        associate_policy(ctx, cluster, principal, want).await?;
    }
    if let Some(old) = current.properties.get("policy_arn").and_then(Value::as_str)
        && old != want
    {
        match ctx
            .clients()
            .await
            .eks
            .disassociate_access_policy()
            .cluster_name(cluster)
            .principal_arn(principal)
            .policy_arn(old)
            .send()
            .await
            .map_err(api("DisassociateAccessPolicy"))
        {
            Err(e) if !e.is(NOT_FOUND) => return Err(e.into()),
            _ => {}
        }
    }
    if let Some(arn) = current.outputs.get("arn").and_then(Value::as_str) {
        sync_tags(ctx, arn, &current.tags, &p.tags()).await?;
    }
    read_access_entry(ctx, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("access entry {id}")))
}

async fn delete_access_entry(ctx: &AwsContext, id: &str) -> Result<(), ProviderError> {
    let (cluster, principal) = split_pair(id)?;
    match ctx
        .clients()
        .await
        .eks
        .delete_access_entry()
        .cluster_name(cluster)
        .principal_arn(principal)
        .send()
        .await
        .map_err(api("DeleteAccessEntry"))
    {
        Err(e) if !e.is(NOT_FOUND) => Err(e.into()),
        _ => Ok(()),
    }
}

// --- dispatch ---

pub async fn read(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    match kind {
        "aws.eks.cluster" => read_cluster(ctx, id).await,
        "aws.eks.node_group" => read_nodegroup(ctx, id).await,
        "aws.eks.addon" => read_addon(ctx, id).await,
        "aws.eks.access_entry" => read_access_entry(ctx, id).await,
        other => Err(failed(format!("the EKS provider does not serve `{other}`"))),
    }
}

pub async fn create(
    ctx: &AwsContext,
    kind: &str,
    properties: &IndexMap<String, Value>,
    ownership: &IndexMap<String, String>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    // Named objects: an earlier attempt's object is adopted when it carries our tags.
    let existing = match kind {
        "aws.eks.cluster" => read_cluster(ctx, p.str("name")?).await?,
        "aws.eks.node_group" => {
            let id = format!("{}/{}", p.str("cluster_name")?, p.str("node_group_name")?);
            read_nodegroup(ctx, &id).await?
        }
        _ => None,
    };
    if let Some(existing) = existing {
        if carries(&existing.tags, ownership) {
            return update(ctx, kind, &existing.id, properties).await;
        }
        return Err(failed(format!(
            "{kind} {} already exists and is not owned by this stack",
            existing.id
        )));
    }
    match kind {
        "aws.eks.cluster" => create_cluster(ctx, properties, ownership).await,
        "aws.eks.node_group" => create_nodegroup(ctx, properties, ownership).await,
        "aws.eks.addon" => create_addon(ctx, properties, ownership).await,
        "aws.eks.access_entry" => create_access_entry(ctx, properties, ownership).await,
        other => Err(failed(format!("the EKS provider does not serve `{other}`"))),
    }
}

pub async fn update(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    match kind {
        "aws.eks.cluster" => update_cluster(ctx, id, properties).await,
        "aws.eks.node_group" => update_nodegroup(ctx, id, properties).await,
        "aws.eks.addon" => update_addon(ctx, id, properties).await,
        "aws.eks.access_entry" => update_access_entry(ctx, id, properties).await,
        other => Err(failed(format!("the EKS provider does not serve `{other}`"))),
    }
}

pub async fn delete(ctx: &AwsContext, kind: &str, id: &str) -> Result<(), ProviderError> {
    match kind {
        "aws.eks.cluster" => delete_cluster(ctx, id).await,
        "aws.eks.node_group" => delete_nodegroup(ctx, id).await,
        "aws.eks.addon" => delete_addon(ctx, id).await,
        "aws.eks.access_entry" => delete_access_entry(ctx, id).await,
        other => Err(failed(format!("the EKS provider does not serve `{other}`"))),
    }
}

/// Clusters carrying `ownership`, and those clusters' node groups carrying it.
pub async fn list_owned(
    ctx: &AwsContext,
    ownership: &IndexMap<String, String>,
) -> Result<Vec<OwnedObject>, ProviderError> {
    let eks = &ctx.clients().await.eks;
    let mut clusters = Vec::new();
    let mut token = None;
    loop {
        let out = eks
            .list_clusters()
            .set_next_token(token)
            .send()
            .await
            .map_err(api("ListClusters"))?;
        clusters.extend(out.clusters().iter().cloned());
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let mut found = Vec::new();
    for name in clusters {
        let Some(cluster) = read_cluster(ctx, &name).await? else {
            continue;
        };
        if !carries(&cluster.tags, ownership) {
            continue;
        }
        found.push(super::owned("aws.eks.cluster", cluster, None));
        let mut token = None;
        loop {
            let out = eks
                .list_nodegroups()
                .cluster_name(&name)
                .set_next_token(token)
                .send()
                .await
                .map_err(api("ListNodegroups"))?;
            for group in out.nodegroups() {
                if let Some(group) = read_nodegroup(ctx, &format!("{name}/{group}")).await?
                    && carries(&group.tags, ownership)
                {
                    found.push(super::owned("aws.eks.node_group", group, None));
                }
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::version_key;

    #[test]
    fn addon_versions_compare_by_their_numbers() {
        let mut versions = [
            "v1.9.3-eksbuild.1",
            "v1.19.0-eksbuild.2",
            "v1.19.0-eksbuild.10",
        ];
        versions.sort_by_key(|v| version_key(v));
        assert_eq!(versions.last(), Some(&"v1.19.0-eksbuild.10"));
        assert_eq!(versions.first(), Some(&"v1.9.3-eksbuild.1"));
    }
}
