//! IAM: service roles (trust policy for one AWS service), managed-policy attachments and inline
//! role policies (permissions no managed policy grants narrowly enough, e.g. flow-log delivery to
//! one log group).
//! Roles are named, so a retried create finds its role by name and adopts it when it carries our
//! ownership tags (and refuses a same-named role that does not).

use aws_sdk_iam::types::Tag;
use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{AwsContext, Props, api, bounds, carries, failed, retry_on, tag_diff, user_tags};
use crate::engine::provider::{LiveResource, OwnedObject, ProviderError};

/// The trust policy letting `service` assume a role.
pub fn trust_policy(service: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": service },
            "Action": "sts:AssumeRole",
        }],
    })
    .to_string()
}

/// The trust policy letting pods of one Kubernetes service account assume a role (IRSA): the
/// cluster's OIDC provider federates, the token's subject and audience are pinned.
pub fn web_identity_policy(
    provider_arn: &str,
    issuer: &str,
    subject: &str,
    audience: &str,
) -> String {
    let host_path = issuer.trim_start_matches("https://");
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Federated": provider_arn },
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    format!("{host_path}:sub"): subject,
                    format!("{host_path}:aud"): audience,
                },
            },
        }],
    })
    .to_string()
}

/// The trust policy the role's properties ask for.
fn trust_document(p: Props<'_>) -> Result<String, ProviderError> {
    if let Some(service) = p.opt_str("assume_role_service") {
        return Ok(trust_policy(service));
    }
    let web = p.0.get("assume_role_web_identity").ok_or_else(|| {
        failed("a role needs `assume_role_service` or `assume_role_web_identity`")
    })?;
    let field = |name: &str| {
        web[name]
            .as_str()
            .ok_or_else(|| failed(format!("assume_role_web_identity.{name} must be a string")))
    };
    Ok(web_identity_policy(
        field("provider_arn")?,
        field("issuer")?,
        field("subject")?,
        field("audience")?,
    ))
}

/// A policy document as JSON, whether IAM returned it plain or URL-encoded (RFC 3986, as
/// `GetRole` and `GetRolePolicy` answer; `+` read as a space, as the form encoding has it).
pub fn parse_document(document: &str) -> Option<Value> {
    serde_json::from_str(document)
        .or_else(|_| {
            let spaced = document.replace('+', " ");
            serde_json::from_str(&percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy())
        })
        .ok()
}

/// The single service a trust policy names, when it names exactly one.
fn trusted_service(document: &str) -> Option<String> {
    let parsed = parse_document(document)?;
    let statements = match &parsed["Statement"] {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    match statements.as_slice() {
        [only] => match &only["Principal"]["Service"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) if items.len() == 1 => items[0].as_str().map(str::to_owned),
            _ => None,
        },
        _ => None,
    }
}

fn to_tags(tags: &IndexMap<String, String>) -> Result<Vec<Tag>, ProviderError> {
    tags.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| failed(format!("tag {k}: {e}")))
        })
        .collect()
}

/// What IAM just made, read back: IAM is eventually consistent ("changes take time to become
/// visible"), so a read right after a create may answer NoSuchEntity; it is read again with
/// backoff for at most [`bounds::PROPAGATION`].
async fn visible<F, Fut>(
    ctx: &AwsContext,
    what: &str,
    read: F,
) -> Result<LiveResource, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<LiveResource>, ProviderError>>,
{
    super::wait_for(ctx, what, bounds::PROPAGATION, read).await
}

async fn read_role(ctx: &AwsContext, name: &str) -> Result<Option<LiveResource>, ProviderError> {
    let iam = &ctx.clients().await.iam;
    let out = match iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .map_err(api("GetRole"))
    {
        Ok(out) => out,
        Err(e) if e.is("NoSuchEntity") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(role) = out.role() else {
        return Ok(None);
    };
    // GetRole may omit tags; ListRoleTags is authoritative.
    let listed = match iam
        .list_role_tags()
        .role_name(name)
        .send()
        .await
        .map_err(api("ListRoleTags"))
    {
        Ok(listed) => listed,
        Err(e) if e.is("NoSuchEntity") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let tags: IndexMap<String, String> = listed
        .tags()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    let mut properties: IndexMap<String, Value> = IndexMap::new();
    properties.insert("name".into(), json!(role.role_name()));
    if let Some(service) = role.assume_role_policy_document().and_then(trusted_service) {
        properties.insert("assume_role_service".into(), json!(service));
    }
    properties.insert("tags".into(), user_tags(&tags));
    let mut outputs = IndexMap::new();
    outputs.insert("name".into(), json!(role.role_name()));
    outputs.insert("arn".into(), json!(role.arn()));
    Ok(Some(LiveResource {
        id: name.to_owned(),
        properties,
        outputs,
        tags,
    }))
}

fn attachment_id(role: &str, policy: &str) -> String {
    format!("{role}|{policy}")
}

async fn read_attachment(
    ctx: &AwsContext,
    id: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    let (role, policy) = split_pair(id, "attachment")?;
    let iam = &ctx.clients().await.iam;
    let mut pages = iam
        .list_attached_role_policies()
        .role_name(role)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page.map_err(api("ListAttachedRolePolicies")) {
            Ok(page) => page,
            Err(e) if e.is("NoSuchEntity") => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if page
            .attached_policies()
            .iter()
            .any(|p| p.policy_arn() == Some(policy))
        {
            let mut properties = IndexMap::new();
            properties.insert("role".into(), json!(role));
            properties.insert("policy_arn".into(), json!(policy));
            let mut outputs = IndexMap::new();
            outputs.insert("id".into(), json!(id));
            return Ok(Some(LiveResource {
                id: id.to_owned(),
                properties,
                outputs,
                tags: IndexMap::new(),
            }));
        }
    }
    Ok(None)
}

// --- inline role policies ---

fn inline_policy_id(role: &str, name: &str) -> String {
    format!("{role}|{name}")
}

fn split_pair<'a>(id: &'a str, what: &str) -> Result<(&'a str, &'a str), ProviderError> {
    id.split_once('|')
        .ok_or_else(|| failed(format!("malformed {what} id `{id}`")))
}

async fn read_inline_policy(
    ctx: &AwsContext,
    id: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    let (role, name) = split_pair(id, "inline policy")?;
    let iam = &ctx.clients().await.iam;
    let out = match iam
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
        .map_err(api("GetRolePolicy"))
    {
        Ok(out) => out,
        Err(e) if e.is("NoSuchEntity") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let document = parse_document(out.policy_document()).ok_or_else(|| {
        failed(format!(
            "the document of inline policy {name} on role {role} is not JSON"
        ))
    })?;
    let mut properties = IndexMap::new();
    properties.insert("role".into(), json!(role));
    properties.insert("name".into(), json!(name));
    properties.insert("document".into(), document);
    let mut outputs = IndexMap::new();
    outputs.insert("id".into(), json!(id));
    Ok(Some(LiveResource {
        id: id.to_owned(),
        properties,
        outputs,
        tags: IndexMap::new(),
    }))
}

/// PutRolePolicy creates or replaces the document, so create, a retried create and update are
/// the same call.
async fn put_inline_policy(
    ctx: &AwsContext,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let role = p.str("role")?;
    let name = p.str("name")?;
    let document = properties
        .get("document")
        .filter(|d| d.is_object())
        .ok_or_else(|| failed("an inline policy needs a `document` object"))?
        .to_string();
    let iam = &ctx.clients().await.iam;
    retry_on(
        ctx,
        "putting an inline role policy",
        &["NoSuchEntity"],
        bounds::IAM,
        || async {
            iam.put_role_policy()
                .role_name(role)
                .policy_name(name)
                .policy_document(&document)
                .send()
                .await
                .map(|_| ())
                .map_err(api("PutRolePolicy"))
        },
    )
    .await?;
    let id = inline_policy_id(role, name);
    visible(
        ctx,
        &format!("inline policy {id} to be visible after putting it"),
        || read_inline_policy(ctx, &id),
    )
    .await
}

// --- OIDC provider (IRSA) ---

fn with_scheme(url: &str) -> String {
    if url.starts_with("https://") {
        url.to_owned()
    } else {
        format!("https://{url}")
    }
}

async fn read_oidc(ctx: &AwsContext, arn: &str) -> Result<Option<LiveResource>, ProviderError> {
    let out = match ctx
        .clients()
        .await
        .iam
        .get_open_id_connect_provider()
        .open_id_connect_provider_arn(arn)
        .send()
        .await
        .map_err(api("GetOpenIDConnectProvider"))
    {
        Ok(out) => out,
        Err(e) if e.is("NoSuchEntity") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let tags: IndexMap<String, String> = out
        .tags()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    let url = with_scheme(out.url().unwrap_or_default());
    let mut properties = IndexMap::new();
    properties.insert("url".into(), json!(url));
    properties.insert("client_ids".into(), json!(out.client_id_list()));
    properties.insert("tags".into(), user_tags(&tags));
    let mut outputs = IndexMap::new();
    outputs.insert("arn".into(), json!(arn));
    outputs.insert("url".into(), json!(url));
    Ok(Some(LiveResource {
        id: arn.to_owned(),
        properties,
        outputs,
        tags,
    }))
}

async fn create_oidc(
    ctx: &AwsContext,
    properties: &IndexMap<String, Value>,
    ownership: &IndexMap<String, String>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let iam = &ctx.clients().await.iam;
    let issuer = p.str("url").map_err(|_| {
        failed(
            "the cluster has no OIDC issuer yet (it was read while still creating); run `up` \
             again once it is ACTIVE",
        )
    })?;
    let url = with_scheme(issuer);
    // One provider per issuer URL: an earlier attempt's is adopted when it carries our tags.
    let listed = iam
        .list_open_id_connect_providers()
        .send()
        .await
        .map_err(api("ListOpenIDConnectProviders"))?;
    for entry in listed.open_id_connect_provider_list() {
        let Some(arn) = entry.arn() else { continue };
        if let Some(existing) = read_oidc(ctx, arn).await?
            && existing.outputs.get("url") == Some(&json!(url))
        {
            if carries(&existing.tags, ownership) {
                return update(ctx, "aws.iam.oidc_provider", arn, properties).await;
            }
            return Err(failed(format!(
                "an OIDC provider for {url} already exists and is not owned by this stack"
            )));
        }
    }
    let out = iam
        .create_open_id_connect_provider()
        .url(&url)
        .set_client_id_list(Some(p.strs("client_ids")?))
        .set_tags(Some(to_tags(&super::all_tags(properties, ownership))?))
        .send()
        .await
        .map_err(api("CreateOpenIDConnectProvider"))?;
    let arn = out
        .open_id_connect_provider_arn()
        .ok_or_else(|| failed("CreateOpenIDConnectProvider returned no ARN"))?;
    visible(
        ctx,
        &format!("OIDC provider {arn} to be readable after its creation"),
        || read_oidc(ctx, arn),
    )
    .await
}

async fn update_oidc(
    ctx: &AwsContext,
    arn: &str,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let iam = &ctx.clients().await.iam;
    let current = read_oidc(ctx, arn)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("OIDC provider {arn}")))?;
    let have = Props(&current.properties).strs("client_ids")?;
    let want = p.strs("client_ids")?;
    for id in want.iter().filter(|w| !have.contains(w)) {
        iam.add_client_id_to_open_id_connect_provider()
            .open_id_connect_provider_arn(arn)
            .client_id(id)
            .send()
            .await
            .map_err(api("AddClientIDToOpenIDConnectProvider"))?;
    }
    for id in have.iter().filter(|h| !want.contains(h)) {
        iam.remove_client_id_from_open_id_connect_provider()
            .open_id_connect_provider_arn(arn)
            .client_id(id)
            .send()
            .await
            .map_err(api("RemoveClientIDFromOpenIDConnectProvider"))?;
    }
    let (set, remove) = tag_diff(&current.tags, &p.tags());
    if !set.is_empty() {
        iam.tag_open_id_connect_provider()
            .open_id_connect_provider_arn(arn)
            .set_tags(Some(to_tags(&set)?))
            .send()
            .await
            .map_err(api("TagOpenIDConnectProvider"))?;
    }
    if !remove.is_empty() {
        iam.untag_open_id_connect_provider()
            .open_id_connect_provider_arn(arn)
            .set_tag_keys(Some(remove))
            .send()
            .await
            .map_err(api("UntagOpenIDConnectProvider"))?;
    }
    read_oidc(ctx, arn)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("OIDC provider {arn}")))
}

/// The roles and OIDC providers that carry `ownership`, for `drift`'s unmanaged objects. Every
/// role a stack makes is named `<stack>[-<instance>]-...`, so only roles with that prefix have their
/// tags read: an account with many roles costs one ListRoles page per 100 roles plus one
/// ListRoleTags per candidate. OIDC providers are few (one per cluster) and all are read.
pub async fn list_owned(
    ctx: &AwsContext,
    ownership: &IndexMap<String, String>,
) -> Result<Vec<OwnedObject>, ProviderError> {
    let iam = &ctx.clients().await.iam;
    let Some(prefix) = super::deployment_prefix(ownership) else {
        return Ok(Vec::new());
    };
    let mut candidates = Vec::new();
    let mut pages = iam.list_roles().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(api("ListRoles"))?;
        candidates.extend(
            page.roles()
                .iter()
                .map(|role| role.role_name().to_owned())
                .filter(|name| name.starts_with(&prefix)),
        );
    }
    let mut owned = Vec::new();
    for name in candidates {
        if let Some(role) = read_role(ctx, &name).await?
            && carries(&role.tags, ownership)
        {
            owned.push(super::owned("aws.iam.role", role, None));
        }
    }
    let providers = iam
        .list_open_id_connect_providers()
        .send()
        .await
        .map_err(api("ListOpenIDConnectProviders"))?;
    for arn in providers
        .open_id_connect_provider_list()
        .iter()
        .filter_map(|p| p.arn())
    {
        if let Some(provider) = read_oidc(ctx, arn).await?
            && carries(&provider.tags, ownership)
        {
            owned.push(super::owned("aws.iam.oidc_provider", provider, None));
        }
    }
    Ok(owned)
}

pub async fn read(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    match kind {
        "aws.iam.oidc_provider" => read_oidc(ctx, id).await,
        "aws.iam.role" => read_role(ctx, id).await,
        "aws.iam.role_policy_attachment" => read_attachment(ctx, id).await,
        "aws.iam.role_policy" => read_inline_policy(ctx, id).await,
        other => Err(failed(format!("the IAM provider does not serve `{other}`"))),
    }
}

pub async fn create(
    ctx: &AwsContext,
    kind: &str,
    properties: &IndexMap<String, Value>,
    ownership: &IndexMap<String, String>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let iam = &ctx.clients().await.iam;
    match kind {
        "aws.iam.oidc_provider" => create_oidc(ctx, properties, ownership).await,
        "aws.iam.role" => {
            let name = p.str("name")?;
            if let Some(existing) = read_role(ctx, name).await? {
                if carries(&existing.tags, ownership) {
                    return update(ctx, kind, name, properties).await;
                }
                return Err(failed(format!(
                    "IAM role {name} already exists and is not owned by this stack (its stacksmith:* tags differ)"
                )));
            }
            iam.create_role()
                .role_name(name)
                .assume_role_policy_document(trust_document(p)?)
                .set_tags(Some(to_tags(&super::all_tags(properties, ownership))?))
                .send()
                .await
                .map_err(api("CreateRole"))?;
            // IAM is eventually consistent: GetRole may answer NoSuchEntity for a moment.
            visible(
                ctx,
                &format!("IAM role {name} to be readable after its creation"),
                || read_role(ctx, name),
            )
            .await
        }
        "aws.iam.role_policy_attachment" => {
            let role = p.str("role")?;
            let policy = p.str("policy_arn")?;
            // Attaching is idempotent: a retried create converges on the same attachment.
            retry_on(
                ctx,
                "attaching a policy",
                &["NoSuchEntity"],
                bounds::IAM,
                || async {
                    iam.attach_role_policy()
                        .role_name(role)
                        .policy_arn(policy)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(api("AttachRolePolicy"))
                },
            )
            .await?;
            let id = attachment_id(role, policy);
            visible(
                ctx,
                &format!("attachment {id} to be visible after attaching"),
                || read_attachment(ctx, &id),
            )
            .await
        }
        "aws.iam.role_policy" => put_inline_policy(ctx, properties).await,
        other => Err(failed(format!("the IAM provider does not serve `{other}`"))),
    }
}

pub async fn update(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    if kind == "aws.iam.oidc_provider" {
        return update_oidc(ctx, id, properties).await;
    }
    if kind == "aws.iam.role_policy" {
        return put_inline_policy(ctx, properties).await;
    }
    if kind != "aws.iam.role" {
        // Every attribute of an attachment forces a replacement.
        return read(ctx, kind, id)
            .await?
            .ok_or_else(|| ProviderError::NotFound(format!("{kind} {id}")));
    }
    let p = Props(properties);
    let iam = &ctx.clients().await.iam;
    let current = read_role(ctx, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("IAM role {id}")))?;
    let wanted = trust_document(p)?;
    let have = iam
        .get_role()
        .role_name(id)
        .send()
        .await
        .map_err(api("GetRole"))?
        .role()
        .and_then(|r| r.assume_role_policy_document())
        .and_then(parse_document);
    if have != parse_document(&wanted) {
        iam.update_assume_role_policy()
            .role_name(id)
            .policy_document(wanted)
            .send()
            .await
            .map_err(api("UpdateAssumeRolePolicy"))?;
    }
    let (set, remove) = tag_diff(&current.tags, &p.tags());
    if !set.is_empty() {
        iam.tag_role()
            .role_name(id)
            .set_tags(Some(to_tags(&set)?))
            .send()
            .await
            .map_err(api("TagRole"))?;
    }
    if !remove.is_empty() {
        iam.untag_role()
            .role_name(id)
            .set_tag_keys(Some(remove))
            .send()
            .await
            .map_err(api("UntagRole"))?;
    }
    read_role(ctx, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("IAM role {id}")))
}

pub async fn delete(ctx: &AwsContext, kind: &str, id: &str) -> Result<(), ProviderError> {
    let iam = &ctx.clients().await.iam;
    let result = match kind {
        "aws.iam.oidc_provider" => iam
            .delete_open_id_connect_provider()
            .open_id_connect_provider_arn(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| api("DeleteOpenIDConnectProvider")(e).into()),
        "aws.iam.role" => {
            retry_on(
                ctx,
                &format!("deleting IAM role {id}"),
                &["DeleteConflict"],
                bounds::IAM,
                || async {
                    iam.delete_role()
                        .role_name(id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(api("DeleteRole"))
                },
            )
            .await
        }
        "aws.iam.role_policy" => {
            let (role, name) = split_pair(id, "inline policy")?;
            iam.delete_role_policy()
                .role_name(role)
                .policy_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| api("DeleteRolePolicy")(e).into())
        }
        "aws.iam.role_policy_attachment" => {
            let (role, policy) = split_pair(id, "attachment")?;
            iam.detach_role_policy()
                .role_name(role)
                .policy_arn(policy)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| api("DetachRolePolicy")(e).into())
        }
        other => Err(failed(format!("the IAM provider does not serve `{other}`"))),
    };
    match result {
        Err(ProviderError::Failed(message)) if message.contains("NoSuchEntity") => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_service_reads_plain_and_url_encoded_documents() {
        let plain = trust_policy("eks.amazonaws.com");
        assert_eq!(
            trusted_service(&plain).as_deref(),
            Some("eks.amazonaws.com")
        );
        let encoded = plain
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace(':', "%3A");
        assert_eq!(
            trusted_service(&encoded).as_deref(),
            Some("eks.amazonaws.com")
        );
        assert_eq!(trusted_service("not json"), None);
        let irsa = web_identity_policy(
            "arn:aws:iam::1:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/X",
            "https://oidc.eks.us-east-1.amazonaws.com/id/X",
            "system:serviceaccount:kube-system:ebs-csi-controller-sa",
            "sts.amazonaws.com",
        );
        let parsed = parse_document(&irsa).unwrap();
        assert_eq!(
            parsed["Statement"][0]["Condition"]["StringEquals"]["oidc.eks.us-east-1.amazonaws.com/id/X:sub"],
            "system:serviceaccount:kube-system:ebs-csi-controller-sa"
        );
        assert_eq!(trusted_service(&irsa), None);
    }
}
