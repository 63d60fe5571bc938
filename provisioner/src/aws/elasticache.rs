//! ElastiCache: the cache subnet group and the Redis replication group (generated auth token,
//! at-rest and in-transit encryption, replicas with automatic failover). Named, so a retried
//! create adopts by name when the object carries our ownership tags.

use aws_sdk_elasticache::types::Tag;
use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{
    AwsContext, Props, api, carries, failed, object_map, retry_on, tag_diff, user_tags, wait_for,
};
use crate::engine::provider::{LiveResource, OwnedObject, ProviderError};

/// Sized for real AWS: a replication group create or resize can take an hour.
pub const GROUP_BOUND: std::time::Duration = std::time::Duration::from_secs(60 * 60);
const SUBNET_GROUP_BOUND: std::time::Duration = std::time::Duration::from_secs(10 * 60);

const NOT_FOUND: &[&str] = &[
    "CacheSubnetGroupNotFoundFault",
    "ReplicationGroupNotFoundFault",
];

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
    let tags = tags_of(ctx, &arn).await?;
    let failover = group
        .automatic_failover()
        .map(|s| matches!(s.as_str(), "enabled" | "enabling"));
    let endpoint = group
        .node_groups()
        .first()
        .and_then(|n| n.primary_endpoint());
    Ok(Some(LiveResource {
        id: id.to_owned(),
        properties: object_map(json!({
            "replication_group_id": id,
            "node_type": group.cache_node_type(),
            "num_cache_clusters": group.member_clusters().len(),
            "automatic_failover_enabled": failover,
            "transit_encryption_enabled": group.transit_encryption_enabled(),
            "at_rest_encryption_enabled": group.at_rest_encryption_enabled(),
            "tags": user_tags(&tags),
        })),
        outputs: object_map(json!({
            "replication_group_id": id,
            "arn": arn,
            "primary_endpoint": endpoint.and_then(|e| e.address()),
            "port": endpoint.and_then(|e| e.port()),
            "status": group.status(),
        })),
        tags,
    }))
}

async fn wait_available(ctx: &AwsContext, id: &str) -> Result<(), ProviderError> {
    wait_for(
        ctx,
        &format!("replication group {id} to be available"),
        GROUP_BOUND,
        || async {
            match describe_group(ctx, id).await? {
                None => Err(ProviderError::NotFound(format!("replication group {id}"))),
                Some(g) => match g.status() {
                    Some("available") => Ok(Some(())),
                    Some("create-failed") => {
                        Err(failed(format!("replication group {id}: create failed")))
                    }
                    _ => Ok(None),
                },
            }
        },
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
                cache
                    .modify_replication_group()
                    .replication_group_id(id)
                    .cache_node_type(p.str("node_type")?)
                    .automatic_failover_enabled(failover)
                    .multi_az_enabled(failover)
                    .apply_immediately(true)
                    .send()
                    .await
                    .map_err(api("ModifyReplicationGroup"))?;
                wait_available(ctx, id).await?;
            }
            if differs("num_cache_clusters") {
                let want = p.i32("num_cache_clusters")?;
                let have = current
                    .properties
                    .get("num_cache_clusters")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if i64::from(want) > have {
                    cache
                        .increase_replica_count()
                        .replication_group_id(id)
                        .new_replica_count(want - 1)
                        .apply_immediately(true)
                        .send()
                        .await
                        .map_err(api("IncreaseReplicaCount"))?;
                } else {
                    cache
                        .decrease_replica_count()
                        .replication_group_id(id)
                        .new_replica_count(want - 1)
                        .apply_immediately(true)
                        .send()
                        .await
                        .map_err(api("DecreaseReplicaCount"))?;
                }
                wait_available(ctx, id).await?;
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
    let (set, remove) = tag_diff(&current.tags, &p.tags());
    if !set.is_empty() {
        cache
            .add_tags_to_resource()
            .resource_name(&arn)
            .set_tags(Some(to_tags(&set)))
            .send()
            .await
            .map_err(api("AddTagsToResource"))?;
    }
    if !remove.is_empty() {
        cache
            .remove_tags_from_resource()
            .resource_name(&arn)
            .set_tag_keys(Some(remove))
            .send()
            .await
            .map_err(api("RemoveTagsFromResource"))?;
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
                let result = cache
                    .delete_replication_group()
                    .replication_group_id(id)
                    .retain_primary_cluster(false)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(api("DeleteReplicationGroup"));
                if let Err(e) = result
                    && !e.is_any(NOT_FOUND)
                {
                    return Err(e.into());
                }
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
    let mut found = Vec::new();
    for id in ids {
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
