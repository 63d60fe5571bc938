//! ElastiCache: the cache subnet group and the Redis replication group (generated auth token,
//! at-rest and in-transit encryption, replicas with automatic failover). Named, so a retried
//! create adopts by name when the object carries our ownership tags.

use aws_sdk_elasticache::types::Tag;
use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{
    ApiError, AwsContext, Props, api, carries, failed, object_map, retry_on, retry_while, tag_diff,
    user_tags, wait_for,
};
use crate::engine::provider::{LiveResource, OwnedObject, ProviderError};

/// Sized for real AWS: a replication group create or resize can take an hour.
pub const GROUP_BOUND: std::time::Duration = std::time::Duration::from_secs(60 * 60);
const SUBNET_GROUP_BOUND: std::time::Duration = std::time::Duration::from_secs(10 * 60);

const NOT_FOUND: &[&str] = &[
    "CacheSubnetGroupNotFoundFault",
    "ReplicationGroupNotFoundFault",
];

/// A replication group that is not `available` refuses tagging, listing its tags, modifications
/// and deletes: "Cluster not in available state to perform tagging operations.", "Replication
/// group must be in available state to modify.", "Replication group X has status snapshotting
/// which is not valid for deletion." Tagging itself makes a group `modifying` for a while.
const INVALID_STATE: &str = "InvalidReplicationGroupState";

fn to_tags(tags: &IndexMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

async fn tags_of(ctx: &AwsContext, arn: &str) -> Result<IndexMap<String, String>, ProviderError> {
    let out = ctx
        .clients()
        .await
        .elasticache
        .list_tags_for_resource()
        .resource_name(arn)
        .send()
        .await
        .map_err(api("ListTagsForResource"))?;
    Ok(out
        .tag_list()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
        .collect())
}

async fn read_subnet_group(
    ctx: &AwsContext,
    name: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    let out = match ctx
        .clients()
        .await
        .elasticache
        .describe_cache_subnet_groups()
        .cache_subnet_group_name(name)
        .send()
        .await
        .map_err(api("DescribeCacheSubnetGroups"))
    {
        Ok(out) => out,
        Err(e) if e.is_any(NOT_FOUND) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(group) = out.cache_subnet_groups().first() else {
        return Ok(None);
    };
    let arn = group.arn().unwrap_or_default().to_owned();
    let tags = tags_of(ctx, &arn).await?;
    Ok(Some(LiveResource {
        id: name.to_owned(),
        properties: object_map(json!({ "name": name, "tags": user_tags(&tags) })),
        outputs: object_map(json!({ "name": name, "arn": arn })),
        tags,
    }))
}

async fn describe_group(
    ctx: &AwsContext,
    id: &str,
) -> Result<Option<aws_sdk_elasticache::types::ReplicationGroup>, ProviderError> {
    match ctx
        .clients()
        .await
        .elasticache
        .describe_replication_groups()
        .replication_group_id(id)
        .send()
        .await
        .map_err(api("DescribeReplicationGroups"))
    {
        Ok(out) => Ok(out.replication_groups().first().cloned()),
        Err(e) if e.is_any(NOT_FOUND) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn read_group(ctx: &AwsContext, id: &str) -> Result<Option<LiveResource>, ProviderError> {
    let Some(group) = describe_group(ctx, id).await? else {
        return Ok(None);
    };
    if group.status() == Some("deleting") {
        return Ok(None);
    }
    let arn = group.arn().unwrap_or_default().to_owned();
    // While the group is not `available` its tags cannot be listed: they are then unknown, and
    // the `tags` property is left out (the recorded value stands) rather than failing a refresh
    // or `drift`.
    let tags = match tags_of(ctx, &arn).await {
        Ok(tags) => Some(tags),
        Err(ProviderError::Failed(message)) if message.contains(INVALID_STATE) => None,
        Err(e) => return Err(e),
    };
    let failover = group
        .automatic_failover()
        .map(|s| matches!(s.as_str(), "enabled" | "enabling"));
    let endpoint = group
        .node_groups()
        .first()
        .and_then(|n| n.primary_endpoint());
    let mut properties = object_map(json!({
        "replication_group_id": id,
        "node_type": group.cache_node_type(),
        "num_cache_clusters": group.member_clusters().len(),
        "automatic_failover_enabled": failover,
        "transit_encryption_enabled": group.transit_encryption_enabled(),
        "at_rest_encryption_enabled": group.at_rest_encryption_enabled(),
    }));
    if let Some(tags) = &tags {
        properties.insert("tags".into(), user_tags(tags));
    }
    Ok(Some(LiveResource {
        id: id.to_owned(),
        properties,
        outputs: object_map(json!({
            "replication_group_id": id,
            "arn": arn,
            "primary_endpoint": endpoint.and_then(|e| e.address()),
            "port": endpoint.and_then(|e| e.port()),
            "status": group.status(),
        })),
        tags: tags.unwrap_or_default(),
    }))
}

/// Waits until the group is `available` and `done` holds for it.
async fn wait_group(
    ctx: &AwsContext,
    id: &str,
    what: &str,
    done: impl Fn(&aws_sdk_elasticache::types::ReplicationGroup) -> bool,
) -> Result<(), ProviderError> {
    let done = &done;
    wait_for(
        ctx,
        &format!("replication group {id} {what}"),
        GROUP_BOUND,
        || async move {
            match describe_group(ctx, id).await? {
                None => Err(ProviderError::NotFound(format!("replication group {id}"))),
                Some(g) => match g.status() {
                    Some("available") if done(&g) => Ok(Some(())),
                    Some("create-failed") => {
                        Err(failed(format!("replication group {id}: create failed")))
                    }
                    Some("deleting") => Err(failed(format!(
                        "replication group {id} is being deleted; wait until it is gone, then \
                         run `up` again"
                    ))),
                    _ => Ok(None),
                },
            }
        },
    )
    .await
}

async fn wait_available(ctx: &AwsContext, id: &str) -> Result<(), ProviderError> {
    wait_group(ctx, id, "to be available", |_| true).await
}

/// Runs a call on a group that may be briefly not `available` (tagging right after another
/// change): `InvalidReplicationGroupState` is retried with backoff up to [`GROUP_BOUND`].
async fn when_available<T, F, Fut>(
    ctx: &AwsContext,
    id: &str,
    what: &str,
    call: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    retry_while(
        ctx,
        &format!("{what} of replication group {id}"),
        GROUP_BOUND,
        |e| e.is(INVALID_STATE),
        call,
    )
    .await
}

pub async fn read(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    match kind {
        "aws.elasticache.subnet_group" => read_subnet_group(ctx, id).await,
        "aws.elasticache.replication_group" => read_group(ctx, id).await,
        other => Err(failed(format!(
            "the ElastiCache provider does not serve `{other}`"
        ))),
    }
}

pub async fn create(
    ctx: &AwsContext,
    kind: &str,
    properties: &IndexMap<String, Value>,
    ownership: &IndexMap<String, String>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let name = match kind {
        "aws.elasticache.replication_group" => p.str("replication_group_id")?,
        _ => p.str("name")?,
    };
    if kind == "aws.elasticache.replication_group" && describe_group(ctx, name).await?.is_some() {
        // An earlier attempt's group may still be `creating` (its tags unreadable, no
        // endpoint yet): wait for it before deciding whether it is ours.
        wait_available(ctx, name).await?;
    }
    if let Some(existing) = read(ctx, kind, name).await? {
        if carries(&existing.tags, ownership) {
            return update(ctx, kind, name, properties).await;
        }
        return Err(failed(format!(
            "{kind} {name} already exists and is not owned by this stack"
        )));
    }
    let cache = &ctx.clients().await.elasticache;
    let tags = to_tags(&super::all_tags(properties, ownership));
    match kind {
        "aws.elasticache.subnet_group" => {
            cache
                .create_cache_subnet_group()
                .cache_subnet_group_name(name)
                .cache_subnet_group_description(format!("Stacksmith {name}"))
                .set_subnet_ids(Some(p.strs("subnet_ids")?))
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(api("CreateCacheSubnetGroup"))?;
        }
        "aws.elasticache.replication_group" => {
            let failover = p.bool("automatic_failover_enabled")?;
            cache
                .create_replication_group()
                .replication_group_id(name)
                .replication_group_description(format!("Stacksmith {name}"))
                .engine(p.str("engine")?)
                .engine_version(p.str("engine_version")?)
                .cache_node_type(p.str("node_type")?)
                .num_cache_clusters(p.i32("num_cache_clusters")?)
                .automatic_failover_enabled(failover)
                .multi_az_enabled(failover)
                .transit_encryption_enabled(p.bool("transit_encryption_enabled")?)
                .at_rest_encryption_enabled(p.bool("at_rest_encryption_enabled")?)
                .cache_subnet_group_name(p.str("subnet_group_name")?)
                .set_security_group_ids(Some(p.strs("security_group_ids")?))
                .set_auth_token(p.opt_str("auth_token").map(str::to_owned))
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(api("CreateReplicationGroup"))?;
            wait_available(ctx, name).await?;
        }
        other => {
            return Err(failed(format!(
                "the ElastiCache provider does not serve `{other}`"
            )));
        }
    }
    read(ctx, kind, name)
        .await?
        .ok_or_else(|| failed(format!("{kind} {name} vanished after its creation")))
}

pub async fn update(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let cache = &ctx.clients().await.elasticache;
    if kind == "aws.elasticache.replication_group" {
        // Modifications and tags are refused until the group is `available`.
        wait_available(ctx, id).await?;
    }
    let current = read(ctx, kind, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("{kind} {id}")))?;
    let differs = |name: &str| properties.get(name) != current.properties.get(name);
    match kind {
        "aws.elasticache.subnet_group" => {
            let out = cache
                .describe_cache_subnet_groups()
                .cache_subnet_group_name(id)
                .send()
                .await
                .map_err(api("DescribeCacheSubnetGroups"))?;
            let mut have: Vec<String> = out
                .cache_subnet_groups()
                .first()
                .map(|g| {
                    g.subnets()
                        .iter()
                        .filter_map(|s| s.subnet_identifier().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let mut want = p.strs("subnet_ids")?;
            have.sort();
            want.sort();
            if have != want {
                cache
                    .modify_cache_subnet_group()
                    .cache_subnet_group_name(id)
                    .set_subnet_ids(Some(want))
                    .send()
                    .await
                    .map_err(api("ModifyCacheSubnetGroup"))?;
            }
        }
        "aws.elasticache.replication_group" => {
            if differs("node_type") || differs("automatic_failover_enabled") {
                let failover = p.bool("automatic_failover_enabled")?;
                let node_type = p.str("node_type")?;
                when_available(ctx, id, "modifying", || async {
                    cache
                        .modify_replication_group()
                        .replication_group_id(id)
                        .cache_node_type(node_type)
                        .automatic_failover_enabled(failover)
                        .multi_az_enabled(failover)
                        .apply_immediately(true)
                        .send()
                        .await
                        .map_err(api("ModifyReplicationGroup"))
                })
                .await?;
                // The status reads `available` for a moment after the call: wait until the new
                // node type and failover setting show.
                wait_group(ctx, id, "to apply its modification", |g| {
                    g.cache_node_type() == Some(node_type)
                        && g.automatic_failover().map(|f| f.as_str())
                            == Some(if failover { "enabled" } else { "disabled" })
                })
                .await?;
            }
            if differs("num_cache_clusters") {
                let want = p.i32("num_cache_clusters")?;
                let have = current
                    .properties
                    .get("num_cache_clusters")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if i64::from(want) > have {
                    when_available(ctx, id, "adding replicas", || async {
                        cache
                            .increase_replica_count()
                            .replication_group_id(id)
                            .new_replica_count(want - 1)
                            .apply_immediately(true)
                            .send()
                            .await
                            .map_err(api("IncreaseReplicaCount"))
                    })
                    .await?;
                } else {
                    when_available(ctx, id, "removing replicas", || async {
                        cache
                            .decrease_replica_count()
                            .replication_group_id(id)
                            .new_replica_count(want - 1)
                            .apply_immediately(true)
                            .send()
                            .await
                            .map_err(api("DecreaseReplicaCount"))
                    })
                    .await?;
                }
                wait_group(ctx, id, "to reach its member count", |g| {
                    g.member_clusters().len() == usize::try_from(want).unwrap_or(0)
                })
                .await?;
            }
        }
        other => {
            return Err(failed(format!(
                "the ElastiCache provider does not serve `{other}`"
            )));
        }
    }
    let arn = current
        .outputs
        .get("arn")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // Tags as read after the changes above (unknown tags were read as empty: read again now
    // that the group is available).
    let have_tags = match read(ctx, kind, id).await? {
        Some(live) => live.tags,
        None => current.tags.clone(),
    };
    let (set, remove) = tag_diff(&have_tags, &p.tags());
    if !set.is_empty() {
        when_available(ctx, id, "tagging", || async {
            cache
                .add_tags_to_resource()
                .resource_name(&arn)
                .set_tags(Some(to_tags(&set)))
                .send()
                .await
                .map_err(api("AddTagsToResource"))
        })
        .await?;
    }
    if !remove.is_empty() {
        when_available(ctx, id, "untagging", || async {
            cache
                .remove_tags_from_resource()
                .resource_name(&arn)
                .set_tag_keys(Some(remove.clone()))
                .send()
                .await
                .map_err(api("RemoveTagsFromResource"))
        })
        .await?;
    }
    if kind == "aws.elasticache.replication_group" && !(set.is_empty() && remove.is_empty()) {
        // Tagging makes the group `modifying` for a while: leave it available.
        wait_available(ctx, id).await?;
    }
    read(ctx, kind, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("{kind} {id}")))
}

pub async fn delete(ctx: &AwsContext, kind: &str, id: &str) -> Result<(), ProviderError> {
    let cache = &ctx.clients().await.elasticache;
    let result = match kind {
        "aws.elasticache.subnet_group" => {
            retry_on(
                ctx,
                &format!("deleting cache subnet group {id}"),
                &["CacheSubnetGroupInUse"],
                SUBNET_GROUP_BOUND,
                || async {
                    cache
                        .delete_cache_subnet_group()
                        .cache_subnet_group_name(id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(api("DeleteCacheSubnetGroup"))
                },
            )
            .await
        }
        "aws.elasticache.replication_group" => {
            let Some(group) = describe_group(ctx, id).await? else {
                return Ok(());
            };
            if group.status() != Some("deleting") {
                // Refused while `creating`, `modifying` or `snapshotting` ("... has status
                // snapshotting which is not valid for deletion"): retried until it passes.
                when_available(ctx, id, "deleting", || async {
                    match cache
                        .delete_replication_group()
                        .replication_group_id(id)
                        .retain_primary_cluster(false)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(api("DeleteReplicationGroup"))
                    {
                        Err(e) if e.is_any(NOT_FOUND) => Ok(()),
                        // Being deleted already (an earlier attempt): wait below.
                        Err(e) if e.is(INVALID_STATE) && e.message.contains("status deleting") => {
                            Ok(())
                        }
                        other => other,
                    }
                })
                .await?;
            }
            wait_for(
                ctx,
                &format!("replication group {id} to be deleted"),
                GROUP_BOUND,
                || async { Ok(describe_group(ctx, id).await?.is_none().then_some(())) },
            )
            .await
        }
        other => {
            return Err(failed(format!(
                "the ElastiCache provider does not serve `{other}`"
            )));
        }
    };
    match result {
        Err(ProviderError::Failed(message)) if NOT_FOUND.iter().any(|c| message.contains(c)) => {
            Ok(())
        }
        other => other,
    }
}

/// Replication groups carrying `ownership`.
pub async fn list_owned(
    ctx: &AwsContext,
    ownership: &IndexMap<String, String>,
) -> Result<Vec<OwnedObject>, ProviderError> {
    let cache = &ctx.clients().await.elasticache;
    let mut ids = Vec::new();
    let mut marker = None;
    loop {
        let out = cache
            .describe_replication_groups()
            .set_marker(marker)
            .send()
            .await
            .map_err(api("DescribeReplicationGroups"))?;
        ids.extend(
            out.replication_groups()
                .iter()
                .filter_map(|g| g.replication_group_id().map(str::to_owned)),
        );
        marker = out.marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    // Only groups named like the deployment's have their tags read: other teams' groups are
    // none of this stack's business, and listing the tags of one that is `modifying` fails.
    // One of ours whose tags cannot be read right now is left out.
    let mut found = Vec::new();
    let prefix = super::deployment_prefix(ownership);
    for id in ids
        .into_iter()
        .filter(|id| prefix.as_ref().is_none_or(|p| id.starts_with(p.as_str())))
    {
        if let Some(group) = read_group(ctx, &id).await?
            && carries(&group.tags, ownership)
        {
            found.push(super::owned(
                "aws.elasticache.replication_group",
                group,
                None,
            ));
        }
    }
    // Subnet groups have no tag filter: only those named like the deployment's have their tags
    // read.
    let Some(prefix) = super::deployment_prefix(ownership) else {
        return Ok(found);
    };
    let mut names = Vec::new();
    let mut marker = None;
    loop {
        let out = cache
            .describe_cache_subnet_groups()
            .set_marker(marker)
            .send()
            .await
            .map_err(api("DescribeCacheSubnetGroups"))?;
        names.extend(
            out.cache_subnet_groups()
                .iter()
                .filter_map(|g| g.cache_subnet_group_name())
                .filter(|name| name.starts_with(&prefix))
                .map(str::to_owned),
        );
        marker = out.marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    for name in names {
        if let Some(group) = read_subnet_group(ctx, &name).await?
            && carries(&group.tags, ownership)
        {
            found.push(super::owned("aws.elasticache.subnet_group", group, None));
        }
    }
    Ok(found)
}
