//! RDS: DB subnet group, DB parameter group, and the PostgreSQL instance (encrypted storage,
//! multi-AZ, backups, deletion protection, a generated master password that only ever lives in
//! the provider call and sealed in state). All are named, so a retried create adopts by name when
//! the object carries our ownership tags.

use aws_sdk_rds::types::{ApplyMethod, Parameter, Tag};
use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{
    AwsContext, Props, api, carries, failed, object_map, retry_on, tag_diff, user_tags, wait_for,
};
use crate::engine::provider::{LiveResource, OwnedObject, ProviderError};

/// Bounds sized for real AWS: an instance create or modification can take 40 minutes.
pub const INSTANCE_BOUND: std::time::Duration = std::time::Duration::from_secs(40 * 60);
const GROUP_BOUND: std::time::Duration = std::time::Duration::from_secs(5 * 60);

const NOT_FOUND: &[&str] = &[
    "DBSubnetGroupNotFoundFault",
    "DBParameterGroupNotFound",
    "DBInstanceNotFound",
    "DBInstanceNotFoundFault",
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
        .rds
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

async fn sync_tags(
    ctx: &AwsContext,
    arn: &str,
    have: &IndexMap<String, String>,
    want: &IndexMap<String, String>,
) -> Result<(), ProviderError> {
    let rds = &ctx.clients().await.rds;
    let (set, remove) = tag_diff(have, want);
    if !set.is_empty() {
        rds.add_tags_to_resource()
            .resource_name(arn)
            .set_tags(Some(to_tags(&set)))
            .send()
            .await
            .map_err(api("AddTagsToResource"))?;
    }
    if !remove.is_empty() {
        rds.remove_tags_from_resource()
            .resource_name(arn)
            .set_tag_keys(Some(remove))
            .send()
            .await
            .map_err(api("RemoveTagsFromResource"))?;
    }
    Ok(())
}

fn swallow_not_found<T>(result: Result<T, super::ApiError>) -> Result<Option<T>, ProviderError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_any(NOT_FOUND) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

// --- subnet group ---

async fn read_subnet_group(
    ctx: &AwsContext,
    name: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    let out = swallow_not_found(
        ctx.clients()
            .await
            .rds
            .describe_db_subnet_groups()
            .db_subnet_group_name(name)
            .send()
            .await
            .map_err(api("DescribeDBSubnetGroups")),
    )?;
    let Some(group) = out.as_ref().and_then(|o| o.db_subnet_groups().first()) else {
        return Ok(None);
    };
    let arn = group.db_subnet_group_arn().unwrap_or_default().to_owned();
    let tags = tags_of(ctx, &arn).await?;
    // Subnet ids are not reported: AWS lists them in its own order, state keeps the stack's.
    Ok(Some(LiveResource {
        id: name.to_owned(),
        properties: object_map(json!({ "name": name, "tags": user_tags(&tags) })),
        outputs: object_map(json!({ "name": name, "arn": arn, "vpc_id": group.vpc_id() })),
        tags,
    }))
}

// --- parameter group ---

async fn read_parameter_group(
    ctx: &AwsContext,
    name: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    let rds = &ctx.clients().await.rds;
    let out = swallow_not_found(
        rds.describe_db_parameter_groups()
            .db_parameter_group_name(name)
            .send()
            .await
            .map_err(api("DescribeDBParameterGroups")),
    )?;
    let Some(group) = out.as_ref().and_then(|o| o.db_parameter_groups().first()) else {
        return Ok(None);
    };
    let arn = group
        .db_parameter_group_arn()
        .unwrap_or_default()
        .to_owned();
    let mut parameters = serde_json::Map::new();
    let mut pages = rds
        .describe_db_parameters()
        .db_parameter_group_name(name)
        .source("user")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(api("DescribeDBParameters"))?;
        for parameter in page.parameters() {
            if let (Some(n), Some(v)) = (parameter.parameter_name(), parameter.parameter_value()) {
                parameters.insert(n.to_owned(), json!(v));
            }
        }
    }
    let tags = tags_of(ctx, &arn).await?;
    Ok(Some(LiveResource {
        id: name.to_owned(),
        properties: object_map(json!({
            "name": name,
            "family": group.db_parameter_group_family(),
            "parameters": parameters,
            "tags": user_tags(&tags),
        })),
        outputs: object_map(json!({ "name": name, "arn": arn })),
        tags,
    }))
}

fn parameters_of(properties: &IndexMap<String, Value>) -> IndexMap<String, String> {
    properties
        .get("parameters")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = v
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string());
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How each parameter of a group applies (`dynamic` or `static`), for the names asked.
async fn apply_types(
    ctx: &AwsContext,
    group: &str,
    names: &[&String],
) -> Result<IndexMap<String, String>, ProviderError> {
    let rds = &ctx.clients().await.rds;
    let mut types = IndexMap::new();
    let mut pages = rds
        .describe_db_parameters()
        .db_parameter_group_name(group)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(api("DescribeDBParameters"))?;
        for parameter in page.parameters() {
            if let (Some(name), Some(kind)) = (parameter.parameter_name(), parameter.apply_type())
                && names.iter().any(|n| n.as_str() == name)
            {
                types.insert(name.to_owned(), kind.to_owned());
            }
        }
    }
    Ok(types)
}

/// Sets the group's parameters to `want` (and resets those no longer wanted). Dynamic
/// parameters apply at once (`immediate`); RDS accepts `immediate` for dynamic parameters only,
/// and applies static ones at the next reboot. Returns whether a static parameter changed (the
/// instances using the group need a reboot to run with it).
async fn set_parameters(
    ctx: &AwsContext,
    name: &str,
    have: &IndexMap<String, String>,
    want: &IndexMap<String, String>,
) -> Result<bool, ProviderError> {
    let rds = &ctx.clients().await.rds;
    let changed: Vec<(&String, &String)> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .collect();
    let removed: Vec<&String> = have.keys().filter(|k| !want.contains_key(*k)).collect();
    if changed.is_empty() && removed.is_empty() {
        return Ok(false);
    }
    let names: Vec<&String> = changed
        .iter()
        .map(|(k, _)| *k)
        .chain(removed.iter().copied())
        .collect();
    let types = apply_types(ctx, name, &names).await?;
    // Unknown apply type: `pending-reboot` is valid for both kinds.
    let method = |parameter: &str| match types.get(parameter).map(String::as_str) {
        Some("dynamic") => ApplyMethod::Immediate,
        _ => ApplyMethod::PendingReboot,
    };
    let needs_reboot = names
        .iter()
        .any(|n| method(n) == ApplyMethod::PendingReboot);
    let changed: Vec<Parameter> = changed
        .iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_name(*k)
                .parameter_value(*v)
                .apply_method(method(k))
                .build()
        })
        .collect();
    // ModifyDBParameterGroup takes at most 20 parameters per call.
    for chunk in changed.chunks(20) {
        rds.modify_db_parameter_group()
            .db_parameter_group_name(name)
            .set_parameters(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(api("ModifyDBParameterGroup"))?;
    }
    let removed: Vec<Parameter> = removed
        .iter()
        .map(|k| {
            Parameter::builder()
                .parameter_name(*k)
                .apply_method(method(k))
                .build()
        })
        .collect();
    for chunk in removed.chunks(20) {
        rds.reset_db_parameter_group()
            .db_parameter_group_name(name)
            .set_parameters(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(api("ResetDBParameterGroup"))?;
    }
    Ok(needs_reboot)
}

/// Reboots one instance (waiting for it to be available first, then again after) so that it
/// runs with its parameter group's static parameters.
async fn reboot(ctx: &AwsContext, id: &str) -> Result<(), ProviderError> {
    wait_instance_available(ctx, id).await?;
    let rds = &ctx.clients().await.rds;
    retry_on(
        ctx,
        &format!("rebooting DB instance {id}"),
        &["InvalidDBInstanceState"],
        INSTANCE_BOUND,
        || async {
            rds.reboot_db_instance()
                .db_instance_identifier(id)
                .send()
                .await
                .map(|_| ())
                .map_err(api("RebootDBInstance"))
        },
    )
    .await?;
    // The status still reads `available` for a moment after the call: wait until the
    // parameters show as applied.
    wait_instance(ctx, id, "to restart with its parameters", |db| {
        db.db_parameter_groups()
            .iter()
            .all(|g| g.parameter_apply_status() != Some("pending-reboot"))
    })
    .await
}

/// Reboots the instances that use parameter group `group` and wait for a reboot to apply it.
async fn reboot_users_of(ctx: &AwsContext, group: &str) -> Result<(), ProviderError> {
    let rds = &ctx.clients().await.rds;
    let mut users = Vec::new();
    let mut pages = rds.describe_db_instances().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(api("DescribeDBInstances"))?;
        users.extend(
            page.db_instances()
                .iter()
                .filter(|db| {
                    db.db_parameter_groups()
                        .iter()
                        .any(|g| g.db_parameter_group_name() == Some(group))
                })
                .filter_map(|db| db.db_instance_identifier().map(str::to_owned)),
        );
    }
    for id in users {
        reboot(ctx, &id).await?;
    }
    Ok(())
}

// --- instance ---

async fn describe_instance(
    ctx: &AwsContext,
    id: &str,
) -> Result<Option<aws_sdk_rds::types::DbInstance>, ProviderError> {
    let out = swallow_not_found(
        ctx.clients()
            .await
            .rds
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(api("DescribeDBInstances")),
    )?;
    Ok(out.and_then(|o| o.db_instances().first().cloned()))
}

async fn read_instance(ctx: &AwsContext, id: &str) -> Result<Option<LiveResource>, ProviderError> {
    let Some(db) = describe_instance(ctx, id).await? else {
        return Ok(None);
    };
    if db.db_instance_status() == Some("deleting") {
        return Ok(None);
    }
    let arn = db.db_instance_arn().unwrap_or_default().to_owned();
    let tags = tags_of(ctx, &arn).await?;
    let security_groups: Vec<_> = db
        .vpc_security_groups()
        .iter()
        .filter_map(|g| g.vpc_security_group_id())
        .collect();
    let parameter_group = db
        .db_parameter_groups()
        .first()
        .and_then(|g| g.db_parameter_group_name());
    Ok(Some(LiveResource {
        id: id.to_owned(),
        properties: object_map(json!({
            "identifier": id,
            "engine": db.engine(),
            "engine_version": db.engine_version(),
            "auto_minor_version_upgrade": db.auto_minor_version_upgrade(),
            "instance_class": db.db_instance_class(),
            "allocated_storage": db.allocated_storage(),
            "multi_az": db.multi_az(),
            "deletion_protection": db.deletion_protection(),
            "backup_retention_period": db.backup_retention_period(),
            "storage_encrypted": db.storage_encrypted(),
            "db_subnet_group_name": db.db_subnet_group().and_then(|g| g.db_subnet_group_name()),
            "parameter_group_name": parameter_group,
            "vpc_security_group_ids": security_groups,
            "master_username": db.master_username(),
            "tags": user_tags(&tags),
        })),
        outputs: object_map(json!({
            "identifier": id,
            "arn": arn,
            "address": db.endpoint().and_then(|e| e.address()),
            "port": db.endpoint().and_then(|e| e.port()),
            "status": db.db_instance_status(),
            "parameter_apply_status": db
                .db_parameter_groups()
                .first()
                .and_then(|g| g.parameter_apply_status()),
        })),
        tags,
    }))
}

/// Statuses in which the instance serves and accepts changes. `storage-optimization` follows a
/// storage change and can last hours while the instance is fully usable.
const USABLE: &[&str] = &["available", "storage-optimization"];

/// Statuses that pass by themselves, during which RDS refuses deletes and modifications.
const TRANSITIONAL: &[&str] = &[
    "creating",
    "backing-up",
    "modifying",
    "rebooting",
    "upgrading",
    "renaming",
    "maintenance",
    "starting",
    "stopping",
    "resetting-master-credentials",
    "configuring-enhanced-monitoring",
    "configuring-iam-database-auth",
    "configuring-log-exports",
    "moving-to-vpc",
];

/// Statuses that will not pass by waiting.
const BROKEN: &[&str] = &[
    "failed",
    "incompatible-parameters",
    "storage-full",
    "incompatible-network",
    "inaccessible-encryption-credentials",
    "incompatible-restore",
];

/// Waits until the instance is usable and `done` holds for it.
async fn wait_instance(
    ctx: &AwsContext,
    id: &str,
    what: &str,
    done: impl Fn(&aws_sdk_rds::types::DbInstance) -> bool,
) -> Result<(), ProviderError> {
    let done = &done;
    wait_for(
        ctx,
        &format!("DB instance {id} {what}"),
        INSTANCE_BOUND,
        || async move {
            match describe_instance(ctx, id).await? {
                None => Err(ProviderError::NotFound(format!("DB instance {id}"))),
                Some(db) => match db.db_instance_status() {
                    Some(status) if BROKEN.contains(&status) => {
                        Err(failed(format!("DB instance {id} is {status}")))
                    }
                    Some(status) if USABLE.contains(&status) && done(&db) => Ok(Some(())),
                    _ => Ok(None),
                },
            }
        },
    )
    .await
}

async fn wait_instance_available(ctx: &AwsContext, id: &str) -> Result<(), ProviderError> {
    wait_instance(ctx, id, "to be available", |_| true).await
}

/// `16.6` against `16.4`: the numbers compared.
fn version_numbers(version: &str) -> Vec<u64> {
    version.split('.').filter_map(|p| p.parse().ok()).collect()
}

/// Whether an engine version must be sent to reach `want` from `have`: a newer minor version of
/// the same major one (RDS's automatic minor upgrades) already satisfies it, and sending the
/// older one back is refused ("Cannot upgrade postgres from 16.6 to 16.4").
fn engine_upgrade_needed(have: Option<&str>, want: &str) -> bool {
    match have {
        None => true,
        Some(have) => !crate::engine::types::satisfies(
            &crate::engine::ResourceType::new("aws.rds.instance"),
            "engine_version",
            &json!(want),
            &json!(have),
        ),
    }
}

fn major(version: &str) -> Option<u64> {
    version_numbers(version).first().copied()
}

pub async fn read(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    match kind {
        "aws.rds.db_subnet_group" => read_subnet_group(ctx, id).await,
        "aws.rds.db_parameter_group" => read_parameter_group(ctx, id).await,
        "aws.rds.instance" => read_instance(ctx, id).await,
        other => Err(failed(format!("the RDS provider does not serve `{other}`"))),
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
        "aws.rds.instance" => p.str("identifier")?,
        _ => p.str("name")?,
    };
    if let Some(existing) = read(ctx, kind, name).await? {
        if carries(&existing.tags, ownership) {
            // An earlier attempt's instance may still be `creating` (no address yet): `update`
            // waits for it before anything else.
            return update(ctx, kind, name, properties).await;
        }
        return Err(failed(format!(
            "{kind} {name} already exists and is not owned by this stack"
        )));
    }
    let rds = &ctx.clients().await.rds;
    let tags = to_tags(&super::all_tags(properties, ownership));
    match kind {
        "aws.rds.db_subnet_group" => {
            rds.create_db_subnet_group()
                .db_subnet_group_name(name)
                .db_subnet_group_description(format!("Stacksmith {name}"))
                .set_subnet_ids(Some(p.strs("subnet_ids")?))
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(api("CreateDBSubnetGroup"))?;
        }
        "aws.rds.db_parameter_group" => {
            rds.create_db_parameter_group()
                .db_parameter_group_name(name)
                .db_parameter_group_family(p.str("family")?)
                .description(format!("Stacksmith {name}"))
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(api("CreateDBParameterGroup"))?;
            set_parameters(ctx, name, &IndexMap::new(), &parameters_of(properties)).await?;
        }
        "aws.rds.instance" => {
            rds.create_db_instance()
                .db_instance_identifier(name)
                .engine(p.str("engine")?)
                .engine_version(p.str("engine_version")?)
                .set_auto_minor_version_upgrade(
                    p.0.get("auto_minor_version_upgrade")
                        .and_then(Value::as_bool),
                )
                .db_instance_class(p.str("instance_class")?)
                .allocated_storage(p.i32("allocated_storage")?)
                .multi_az(p.bool("multi_az")?)
                .deletion_protection(p.bool("deletion_protection")?)
                .backup_retention_period(p.i32("backup_retention_period")?)
                .storage_encrypted(p.bool("storage_encrypted")?)
                .db_subnet_group_name(p.str("db_subnet_group_name")?)
                .db_parameter_group_name(p.str("parameter_group_name")?)
                .set_vpc_security_group_ids(Some(p.strs("vpc_security_group_ids")?))
                .master_username(p.str("master_username")?)
                .master_user_password(p.str("master_password")?)
                .publicly_accessible(false)
                .copy_tags_to_snapshot(true)
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(api("CreateDBInstance"))?;
            wait_instance_available(ctx, name).await?;
        }
        other => return Err(failed(format!("the RDS provider does not serve `{other}`"))),
    }
    read(ctx, kind, name)
        .await?
        .ok_or_else(|| failed(format!("{kind} {name} vanished after its creation")))
}

/// Whether an instance shows the properties a modification asked for, with nothing of them
/// still pending.
fn modification_applied(db: &aws_sdk_rds::types::DbInstance, p: Props<'_>) -> bool {
    if let Some(pending) = db.pending_modified_values()
        && (pending.db_instance_class().is_some()
            || pending.allocated_storage().is_some()
            || pending.multi_az().is_some()
            || pending.backup_retention_period().is_some()
            || pending.engine_version().is_some())
    {
        return false;
    }
    let same_str = |name: &str, live: Option<&str>| p.opt_str(name).is_none_or(|w| live == Some(w));
    let version_ok = p
        .opt_str("engine_version")
        .is_none_or(|w| !engine_upgrade_needed(db.engine_version(), w));
    let storage_ok = p.opt_i64("allocated_storage").is_none_or(|w| {
        db.allocated_storage()
            .is_some_and(|have| i64::from(have) >= w)
    });
    let bool_ok = |name: &str, live: Option<bool>| {
        p.0.get(name)
            .and_then(Value::as_bool)
            .is_none_or(|w| live == Some(w))
    };
    same_str("instance_class", db.db_instance_class())
        && same_str(
            "parameter_group_name",
            db.db_parameter_groups()
                .first()
                .and_then(|g| g.db_parameter_group_name()),
        )
        && version_ok
        && storage_ok
        && bool_ok("multi_az", db.multi_az())
        && bool_ok("deletion_protection", db.deletion_protection())
}

pub async fn update(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let rds = &ctx.clients().await.rds;
    let current = read(ctx, kind, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("{kind} {id}")))?;
    let arn = current
        .outputs
        .get("arn")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match kind {
        "aws.rds.db_subnet_group" => {
            // Subnets are not read back (order); setting them again is harmless and idempotent
            // only when asked: compare against what AWS holds, as a set.
            let out = rds
                .describe_db_subnet_groups()
                .db_subnet_group_name(id)
                .send()
                .await
                .map_err(api("DescribeDBSubnetGroups"))?;
            let mut have: Vec<String> = out
                .db_subnet_groups()
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
                rds.modify_db_subnet_group()
                    .db_subnet_group_name(id)
                    .set_subnet_ids(Some(want))
                    .send()
                    .await
                    .map_err(api("ModifyDBSubnetGroup"))?;
            }
        }
        "aws.rds.db_parameter_group" => {
            let have = parameters_of(&current.properties);
            if set_parameters(ctx, id, &have, &parameters_of(properties)).await? {
                // A static parameter applies at the next reboot only: reboot the instances
                // that use the group now, so the stack's value is what runs.
                reboot_users_of(ctx, id).await?;
            }
        }
        "aws.rds.instance" => {
            // An adopted instance may still be `creating`; a modification is refused until the
            // instance is available ("Database instance is not in available state").
            wait_instance_available(ctx, id).await?;
            let current = read(ctx, kind, id)
                .await?
                .ok_or_else(|| ProviderError::NotFound(format!("{kind} {id}")))?;
            let differs = |name: &str| properties.get(name) != current.properties.get(name);
            let mut modify = rds
                .modify_db_instance()
                .db_instance_identifier(id)
                .apply_immediately(true);
            let mut any = false;
            if differs("instance_class") {
                modify = modify.db_instance_class(p.str("instance_class")?);
                any = true;
            }
            if differs("allocated_storage") {
                modify = modify.allocated_storage(p.i32("allocated_storage")?);
                any = true;
            }
            if differs("multi_az") {
                modify = modify.multi_az(p.bool("multi_az")?);
                any = true;
            }
            if differs("backup_retention_period") {
                modify = modify.backup_retention_period(p.i32("backup_retention_period")?);
                any = true;
            }
            if differs("deletion_protection") {
                modify = modify.deletion_protection(p.bool("deletion_protection")?);
                any = true;
            }
            if let Some(auto) =
                p.0.get("auto_minor_version_upgrade")
                    .and_then(Value::as_bool)
                && differs("auto_minor_version_upgrade")
            {
                modify = modify.auto_minor_version_upgrade(auto);
                any = true;
            }
            let have_version = current
                .properties
                .get("engine_version")
                .and_then(Value::as_str);
            let want_version = p.str("engine_version")?;
            let major_upgrade = have_version.and_then(major) != major(want_version);
            if engine_upgrade_needed(have_version, want_version) {
                modify = modify.engine_version(want_version);
                if major_upgrade {
                    // The new major version needs the parameter group of its family, in the
                    // same call (the group's name follows the family, so it differs too).
                    modify = modify.allow_major_version_upgrade(true);
                }
                any = true;
            }
            let group_changed = differs("parameter_group_name");
            if group_changed {
                modify = modify.db_parameter_group_name(p.str("parameter_group_name")?);
                any = true;
            }
            if differs("vpc_security_group_ids") {
                modify = modify.set_vpc_security_group_ids(Some(p.strs("vpc_security_group_ids")?));
                any = true;
            }
            if any {
                modify.send().await.map_err(api("ModifyDBInstance"))?;
                // Right after the call the status still reads `available` with the old values:
                // wait until what was asked shows (or the instance is usable with it).
                wait_instance(ctx, id, "to apply its modification", |db| {
                    modification_applied(db, p)
                })
                .await?;
                // Another parameter group (without a major upgrade, which restarts the
                // instance anyway) is `pending-reboot` until a reboot.
                if group_changed
                    && describe_instance(ctx, id).await?.is_some_and(|db| {
                        db.db_parameter_groups()
                            .iter()
                            .any(|g| g.parameter_apply_status() == Some("pending-reboot"))
                    })
                {
                    reboot(ctx, id).await?;
                }
            }
        }
        other => return Err(failed(format!("the RDS provider does not serve `{other}`"))),
    }
    sync_tags(ctx, &arn, &current.tags, &p.tags()).await?;
    read(ctx, kind, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("{kind} {id}")))
}

pub async fn delete(ctx: &AwsContext, kind: &str, id: &str) -> Result<(), ProviderError> {
    let rds = &ctx.clients().await.rds;
    let what = format!("deleting {kind} {id}");
    let result = match kind {
        "aws.rds.db_subnet_group" => {
            retry_on(
                ctx,
                &what,
                &["InvalidDBSubnetGroupStateFault"],
                GROUP_BOUND,
                || async {
                    rds.delete_db_subnet_group()
                        .db_subnet_group_name(id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(api("DeleteDBSubnetGroup"))
                },
            )
            .await
        }
        "aws.rds.db_parameter_group" => {
            retry_on(
                ctx,
                &what,
                &["InvalidDBParameterGroupState"],
                GROUP_BOUND,
                || async {
                    rds.delete_db_parameter_group()
                        .db_parameter_group_name(id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(api("DeleteDBParameterGroup"))
                },
            )
            .await
        }
        "aws.rds.instance" => {
            let Some(db) = describe_instance(ctx, id).await? else {
                return Ok(());
            };
            let deleting = db.db_instance_status() == Some("deleting");
            if db
                .db_instance_status()
                .is_some_and(|s| TRANSITIONAL.contains(&s))
            {
                // `creating`, `backing-up`, `modifying`...: RDS refuses the final snapshot
                // ("Instance is currently creating - a final snapshot cannot be taken") and the
                // deletion-protection change until the instance is available.
                wait_instance_available(ctx, id).await?;
            }
            if db.deletion_protection() == Some(true) && !deleting {
                if !ctx.allow_deletion_protected() {
                    return Err(failed(format!(
                        "DB instance {id} has deletion protection; `provisioner down \
                         --allow-deletion-protected` turns it off before deleting"
                    )));
                }
                retry_on(
                    ctx,
                    &format!("turning deletion protection of {id} off"),
                    &["InvalidDBInstanceState"],
                    INSTANCE_BOUND,
                    || async {
                        rds.modify_db_instance()
                            .db_instance_identifier(id)
                            .deletion_protection(false)
                            .apply_immediately(true)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(api("ModifyDBInstance"))
                    },
                )
                .await?;
            }
            if !deleting {
                // A final snapshot keeps the data unless the stack says nobody needs it
                // (`database.final_snapshot: false`); deletion protection is turned off above
                // only when the user allowed it (otherwise AWS would refuse anyway). Still
                // refused in a transitional state (a backup started meanwhile): retried.
                let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
                let result = retry_on(
                    ctx,
                    &format!("deleting DB instance {id}"),
                    &["InvalidDBInstanceState"],
                    INSTANCE_BOUND,
                    || async {
                        let delete = rds.delete_db_instance().db_instance_identifier(id);
                        let delete = if ctx.skip_final_db_snapshot() {
                            delete.skip_final_snapshot(true)
                        } else {
                            delete
                                .skip_final_snapshot(false)
                                .final_db_snapshot_identifier(format!("{id}-final-{stamp}"))
                        };
                        match delete
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(api("DeleteDBInstance"))
                        {
                            Err(e) if e.is_any(NOT_FOUND) => Ok(()),
                            // Already being deleted (an earlier attempt): wait below.
                            Err(e) if e.message.contains("already being deleted") => Ok(()),
                            other => other,
                        }
                    },
                )
                .await;
                result?;
            }
            wait_for(
                ctx,
                &format!("DB instance {id} to be deleted"),
                INSTANCE_BOUND,
                || async { Ok(describe_instance(ctx, id).await?.is_none().then_some(())) },
            )
            .await
        }
        other => return Err(failed(format!("the RDS provider does not serve `{other}`"))),
    };
    match result {
        Err(ProviderError::Failed(message)) if NOT_FOUND.iter().any(|c| message.contains(c)) => {
            Ok(())
        }
        other => other,
    }
}

/// DB instances carrying `ownership` (subnet and parameter groups are found through their
/// instance's record; listing every group's tags would cost one call per group in the account).
pub async fn list_owned(
    ctx: &AwsContext,
    ownership: &IndexMap<String, String>,
) -> Result<Vec<OwnedObject>, ProviderError> {
    let rds = &ctx.clients().await.rds;
    let mut identifiers = Vec::new();
    let mut marker = None;
    loop {
        let out = rds
            .describe_db_instances()
            .set_marker(marker)
            .send()
            .await
            .map_err(api("DescribeDBInstances"))?;
        identifiers.extend(
            out.db_instances()
                .iter()
                .filter_map(|db| db.db_instance_identifier().map(str::to_owned)),
        );
        marker = out.marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    let mut found = Vec::new();
    for identifier in identifiers {
        if let Some(instance) = read_instance(ctx, &identifier).await?
            && carries(&instance.tags, ownership)
        {
            found.push(super::owned("aws.rds.instance", instance, None));
        }
    }
    // Groups have no tag filter: only those named like the deployment's have their tags read.
    let Some(prefix) = super::deployment_prefix(ownership) else {
        return Ok(found);
    };
    let mut subnet_groups = Vec::new();
    let mut pages = rds.describe_db_subnet_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(api("DescribeDBSubnetGroups"))?;
        subnet_groups.extend(
            page.db_subnet_groups()
                .iter()
                .filter_map(|g| g.db_subnet_group_name())
                .filter(|name| name.starts_with(&prefix))
                .map(str::to_owned),
        );
    }
    for name in subnet_groups {
        if let Some(group) = read_subnet_group(ctx, &name).await?
            && carries(&group.tags, ownership)
        {
            found.push(super::owned("aws.rds.db_subnet_group", group, None));
        }
    }
    let mut parameter_groups = Vec::new();
    let mut pages = rds.describe_db_parameter_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(api("DescribeDBParameterGroups"))?;
        parameter_groups.extend(
            page.db_parameter_groups()
                .iter()
                .filter_map(|g| g.db_parameter_group_name())
                .filter(|name| name.starts_with(&prefix))
                .map(str::to_owned),
        );
    }
    for name in parameter_groups {
        if let Some(group) = read_parameter_group(ctx, &name).await?
            && carries(&group.tags, ownership)
        {
            found.push(super::owned("aws.rds.db_parameter_group", group, None));
        }
    }
    Ok(found)
}
