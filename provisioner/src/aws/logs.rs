//! CloudWatch Logs: the log group VPC flow logs are delivered to (retention, tags). Named, so a
//! retried create adopts by name when the group carries our ownership tags.

use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{AwsContext, Props, api, carries, failed, object_map, tag_diff, user_tags};
use crate::engine::provider::{LiveResource, OwnedObject, ProviderError};

const NOT_FOUND: &[&str] = &["ResourceNotFoundException"];

fn unserved(kind: &str) -> ProviderError {
    failed(format!(
        "the CloudWatch Logs provider does not serve `{kind}`"
    ))
}

/// The group named exactly `name` (DescribeLogGroups matches by prefix), paging through.
async fn describe_group(
    ctx: &AwsContext,
    name: &str,
) -> Result<Option<aws_sdk_cloudwatchlogs::types::LogGroup>, ProviderError> {
    let logs = &ctx.clients().await.logs;
    let mut token: Option<String> = None;
    // Bounded: a prefix shared by more than 50 pages of groups is not one of ours.
    for _ in 0..50 {
        let out = match logs
            .describe_log_groups()
            .log_group_name_prefix(name)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(api("DescribeLogGroups"))
        {
            Ok(out) => out,
            Err(e) if e.is_any(NOT_FOUND) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if let Some(group) = out
            .log_groups()
            .iter()
            .find(|g| g.log_group_name() == Some(name))
        {
            return Ok(Some(group.clone()));
        }
        match out.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// The ARN tagging calls take: without the `:*` DescribeLogGroups appends to `arn`.
fn tagging_arn(group: &aws_sdk_cloudwatchlogs::types::LogGroup) -> String {
    group
        .log_group_arn()
        .map(str::to_owned)
        .or_else(|| {
            group
                .arn()
                .map(|a| a.strip_suffix(":*").unwrap_or(a).to_owned())
        })
        .unwrap_or_default()
}

async fn tags_of(ctx: &AwsContext, arn: &str) -> Result<IndexMap<String, String>, ProviderError> {
    let out = ctx
        .clients()
        .await
        .logs
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(api("ListTagsForResource"))?;
    Ok(out
        .tags()
        .map(|tags| {
            let mut tags: Vec<(String, String)> =
                tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            tags.sort();
            tags.into_iter().collect()
        })
        .unwrap_or_default())
}

async fn read_group(ctx: &AwsContext, name: &str) -> Result<Option<LiveResource>, ProviderError> {
    let Some(group) = describe_group(ctx, name).await? else {
        return Ok(None);
    };
    let arn = tagging_arn(&group);
    let tags = tags_of(ctx, &arn).await?;
    Ok(Some(LiveResource {
        id: name.to_owned(),
        properties: object_map(json!({
            "name": name,
            "retention_in_days": group.retention_in_days(),
            "tags": user_tags(&tags),
        })),
        outputs: object_map(json!({ "name": name, "arn": arn })),
        tags,
    }))
}

/// Where Stacksmith's log groups live (`/stacksmith/<deployment>/...`).
const OWNED_PREFIX: &str = "/stacksmith/";

/// Log groups under `/stacksmith/` carrying `ownership` (one tag read per group).
pub async fn list_owned(
    ctx: &AwsContext,
    ownership: &IndexMap<String, String>,
) -> Result<Vec<OwnedObject>, ProviderError> {
    let logs = &ctx.clients().await.logs;
    let mut groups = Vec::new();
    let mut token: Option<String> = None;
    // Bounded like `describe_group`: 50 pages of 50 groups.
    for _ in 0..50 {
        let out = logs
            .describe_log_groups()
            .log_group_name_prefix(OWNED_PREFIX)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(api("DescribeLogGroups"))?;
        groups.extend(out.log_groups().iter().cloned());
        match out.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }
    let mut found = Vec::new();
    for group in groups {
        let name = group.log_group_name().unwrap_or_default().to_owned();
        let arn = tagging_arn(&group);
        let tags = tags_of(ctx, &arn).await?;
        if !carries(&tags, ownership) {
            continue;
        }
        let live = LiveResource {
            id: name.clone(),
            properties: object_map(json!({
                "name": name,
                "retention_in_days": group.retention_in_days(),
                "tags": user_tags(&tags),
            })),
            outputs: object_map(json!({ "name": name, "arn": arn })),
            tags,
        };
        found.push(super::owned("aws.logs.log_group", live, None));
    }
    Ok(found)
}

pub async fn read(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    match kind {
        "aws.logs.log_group" => read_group(ctx, id).await,
        other => Err(unserved(other)),
    }
}

async fn set_retention(
    ctx: &AwsContext,
    name: &str,
    days: Option<i64>,
) -> Result<(), ProviderError> {
    let logs = &ctx.clients().await.logs;
    match days {
        Some(days) => {
            let days = i32::try_from(days)
                .map_err(|_| failed("property `retention_in_days` is out of range"))?;
            logs.put_retention_policy()
                .log_group_name(name)
                .retention_in_days(days)
                .send()
                .await
                .map_err(api("PutRetentionPolicy"))?;
        }
        None => {
            logs.delete_retention_policy()
                .log_group_name(name)
                .send()
                .await
                .map_err(api("DeleteRetentionPolicy"))?;
        }
    }
    Ok(())
}

pub async fn create(
    ctx: &AwsContext,
    kind: &str,
    properties: &IndexMap<String, Value>,
    ownership: &IndexMap<String, String>,
) -> Result<LiveResource, ProviderError> {
    if kind != "aws.logs.log_group" {
        return Err(unserved(kind));
    }
    let p = Props(properties);
    let name = p.str("name")?;
    if let Some(existing) = read_group(ctx, name).await? {
        if carries(&existing.tags, ownership) {
            return update(ctx, kind, name, properties).await;
        }
        return Err(failed(format!(
            "{kind} {name} already exists and is not owned by this stack"
        )));
    }
    let tags: std::collections::HashMap<String, String> =
        super::all_tags(properties, ownership).into_iter().collect();
    let created = ctx
        .clients()
        .await
        .logs
        .create_log_group()
        .log_group_name(name)
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(api("CreateLogGroup"));
    match created {
        Ok(_) => {}
        // A retry of a create whose answer was lost: adopt it if it is ours.
        Err(e) if e.is("ResourceAlreadyExistsException") => {
            return match read_group(ctx, name).await? {
                Some(existing) if carries(&existing.tags, ownership) => {
                    update(ctx, kind, name, properties).await
                }
                _ => Err(failed(format!(
                    "{kind} {name} already exists and is not owned by this stack"
                ))),
            };
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(days) = p.opt_i64("retention_in_days") {
        set_retention(ctx, name, Some(days)).await?;
    }
    read_group(ctx, name)
        .await?
        .ok_or_else(|| failed(format!("{kind} {name} vanished after its creation")))
}

pub async fn update(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    if kind != "aws.logs.log_group" {
        return Err(unserved(kind));
    }
    let p = Props(properties);
    let current = read_group(ctx, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("{kind} {id}")))?;
    let want_days = p.opt_i64("retention_in_days");
    let have_days = current
        .properties
        .get("retention_in_days")
        .and_then(Value::as_i64);
    if want_days != have_days {
        set_retention(ctx, id, want_days).await?;
    }
    let arn = current
        .outputs
        .get("arn")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let logs = &ctx.clients().await.logs;
    let (set, remove) = tag_diff(&current.tags, &p.tags());
    if !set.is_empty() {
        logs.tag_resource()
            .resource_arn(&arn)
            .set_tags(Some(set.into_iter().collect()))
            .send()
            .await
            .map_err(api("TagResource"))?;
    }
    if !remove.is_empty() {
        logs.untag_resource()
            .resource_arn(&arn)
            .set_tag_keys(Some(remove))
            .send()
            .await
            .map_err(api("UntagResource"))?;
    }
    read_group(ctx, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("{kind} {id}")))
}

pub async fn delete(ctx: &AwsContext, kind: &str, id: &str) -> Result<(), ProviderError> {
    if kind != "aws.logs.log_group" {
        return Err(unserved(kind));
    }
    match ctx
        .clients()
        .await
        .logs
        .delete_log_group()
        .log_group_name(id)
        .send()
        .await
        .map_err(api("DeleteLogGroup"))
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_any(NOT_FOUND) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
