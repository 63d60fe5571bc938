//! EC2 network resources: VPC (DNS attributes), subnets, internet gateway, elastic IPs, NAT
//! gateways, route tables, routes, associations, security groups and rules, flow logs.
//!
//! Taggable objects carry the ownership tags; a create first looks for an object already carrying
//! them (an earlier, interrupted attempt) and adopts it. Routes, associations and rules are found
//! by their natural keys instead.

use aws_sdk_ec2::types::{
    AttributeBooleanValue, ConnectivityType, DomainType, Filter, FlowLogsResourceType,
    IpPermission, IpRange, LogDestinationType, NatGatewayState, ResourceType as Ec2Type, Tag,
    TagSpecification, TrafficType, UserIdGroupPair, VpcAttributeName,
};
use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{
    AwsContext, Props, api, bounds, carries, client_token, failed, object_map, propagated,
    retry_on, tag_diff, user_tags, wait_for,
};
use crate::engine::ResourceType;
use crate::engine::provider::{LiveResource, MemberOf, OwnedObject, ProviderError};

use super::owned;

fn tags_of(tags: &[Tag]) -> IndexMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
        .collect()
}

fn to_tags(tags: &IndexMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn spec(kind: Ec2Type, tags: &IndexMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(to_tags(tags)))
        .build()
}

/// Server-side filters on the ownership tags with a value (the client checks all of them).
fn tag_filters(tags: &IndexMap<String, String>) -> Vec<Filter> {
    tags.iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
        .collect()
}

fn live(
    id: &str,
    properties: Value,
    outputs: Value,
    tags: IndexMap<String, String>,
) -> LiveResource {
    let mut properties = object_map(properties);
    if !tags.is_empty() {
        properties.insert("tags".to_owned(), user_tags(&tags));
    }
    LiveResource {
        id: id.to_owned(),
        properties,
        outputs: object_map(outputs),
        tags,
    }
}

/// Which objects to describe.
enum Select<'a> {
    Id(&'a str),
    Tags(&'a IndexMap<String, String>),
}

const NOT_FOUND: &[&str] = &[
    "InvalidVpcID.NotFound",
    "InvalidSubnetID.NotFound",
    "InvalidInternetGatewayID.NotFound",
    "InvalidAllocationID.NotFound",
    "InvalidAddress.NotFound",
    "NatGatewayNotFound",
    "InvalidNatGatewayID.NotFound",
    "InvalidRouteTableID.NotFound",
    "InvalidRoute.NotFound",
    "InvalidAssociationID.NotFound",
    "InvalidGroup.NotFound",
    "InvalidGroupId.NotFound",
    "InvalidSecurityGroupRuleId.NotFound",
    "InvalidPermission.NotFound",
    "InvalidFlowLogId.NotFound",
];

/// Describes objects of a taggable kind.
async fn describe(
    ctx: &AwsContext,
    kind: &str,
    select: Select<'_>,
) -> Result<Vec<LiveResource>, ProviderError> {
    let ec2 = &ctx.clients().await.ec2;
    let (ids, filters) = match &select {
        Select::Id(id) => (Some(vec![(*id).to_owned()]), None),
        Select::Tags(tags) => (None, Some(tag_filters(tags))),
    };
    let result: Result<Vec<LiveResource>, super::ApiError> = async {
        let mut found = Vec::new();
        match kind {
            "aws.ec2.vpc" => {
                let out = ec2
                    .describe_vpcs()
                    .set_vpc_ids(ids)
                    .set_filters(filters)
                    .send()
                    .await
                    .map_err(api("DescribeVpcs"))?;
                for vpc in out.vpcs() {
                    let id = vpc.vpc_id().unwrap_or_default();
                    let attribute = |name: VpcAttributeName| async move {
                        let out = ec2
                            .describe_vpc_attribute()
                            .vpc_id(id)
                            .attribute(name.clone())
                            .send()
                            .await
                            .map_err(api("DescribeVpcAttribute"))?;
                        Ok::<_, super::ApiError>(match name {
                            VpcAttributeName::EnableDnsHostnames => {
                                out.enable_dns_hostnames().and_then(|a| a.value())
                            }
                            _ => out.enable_dns_support().and_then(|a| a.value()),
                        })
                    };
                    let support = attribute(VpcAttributeName::EnableDnsSupport).await?;
                    let hostnames = attribute(VpcAttributeName::EnableDnsHostnames).await?;
                    found.push(live(
                        id,
                        json!({
                            "cidr_block": vpc.cidr_block(),
                            "enable_dns_support": support.unwrap_or(false),
                            "enable_dns_hostnames": hostnames.unwrap_or(false),
                        }),
                        json!({ "id": id, "cidr_block": vpc.cidr_block() }),
                        tags_of(vpc.tags()),
                    ));
                }
            }
            "aws.ec2.subnet" => {
                let out = ec2
                    .describe_subnets()
                    .set_subnet_ids(ids)
                    .set_filters(filters)
                    .send()
                    .await
                    .map_err(api("DescribeSubnets"))?;
                for subnet in out.subnets() {
                    let id = subnet.subnet_id().unwrap_or_default();
                    found.push(live(
                        id,
                        json!({
                            "vpc_id": subnet.vpc_id(),
                            "cidr_block": subnet.cidr_block(),
                            "availability_zone": subnet.availability_zone(),
                            "map_public_ip_on_launch": subnet.map_public_ip_on_launch().unwrap_or(false),
                        }),
                        json!({ "id": id, "availability_zone": subnet.availability_zone() }),
                        tags_of(subnet.tags()),
                    ));
                }
            }
            "aws.ec2.internet_gateway" => {
                let out = ec2
                    .describe_internet_gateways()
                    .set_internet_gateway_ids(ids)
                    .set_filters(filters)
                    .send()
                    .await
                    .map_err(api("DescribeInternetGateways"))?;
                for gateway in out.internet_gateways() {
                    let id = gateway.internet_gateway_id().unwrap_or_default();
                    let vpc = gateway.attachments().first().and_then(|a| a.vpc_id());
                    found.push(live(
                        id,
                        json!({ "vpc_id": vpc }),
                        json!({ "id": id }),
                        tags_of(gateway.tags()),
                    ));
                }
            }
            "aws.ec2.eip" => {
                let out = ec2
                    .describe_addresses()
                    .set_allocation_ids(ids)
                    .set_filters(filters)
                    .send()
                    .await
                    .map_err(api("DescribeAddresses"))?;
                for address in out.addresses() {
                    let id = address.allocation_id().unwrap_or_default();
                    found.push(live(
                        id,
                        json!({ "domain": address.domain().map(|d| d.as_str()) }),
                        json!({ "id": id, "public_ip": address.public_ip() }),
                        tags_of(address.tags()),
                    ));
                }
            }
            "aws.ec2.nat_gateway" => {
                // moto ignores tag filters here; the caller checks the tags.
                let out = ec2
                    .describe_nat_gateways()
                    .set_nat_gateway_ids(ids)
                    .set_filter(filters)
                    .send()
                    .await
                    .map_err(api("DescribeNatGateways"))?;
                for gateway in out.nat_gateways() {
                    if matches!(
                        gateway.state(),
                        Some(NatGatewayState::Deleted | NatGatewayState::Deleting)
                    ) {
                        continue;
                    }
                    let id = gateway.nat_gateway_id().unwrap_or_default();
                    let allocation = gateway
                        .nat_gateway_addresses()
                        .first()
                        .and_then(|a| a.allocation_id());
                    found.push(live(
                        id,
                        json!({
                            "subnet_id": gateway.subnet_id(),
                            "allocation_id": allocation,
                            "connectivity_type": gateway.connectivity_type().map(|c| c.as_str()),
                        }),
                        json!({
                            "id": id,
                            "state": gateway.state().map(|s| s.as_str()),
                        }),
                        tags_of(gateway.tags()),
                    ));
                }
            }
            "aws.ec2.route_table" => {
                let out = ec2
                    .describe_route_tables()
                    .set_route_table_ids(ids)
                    .set_filters(filters)
                    .send()
                    .await
                    .map_err(api("DescribeRouteTables"))?;
                for table in out.route_tables() {
                    let id = table.route_table_id().unwrap_or_default();
                    found.push(live(
                        id,
                        json!({ "vpc_id": table.vpc_id() }),
                        json!({ "id": id }),
                        tags_of(table.tags()),
                    ));
                }
            }
            "aws.ec2.security_group" => {
                let out = ec2
                    .describe_security_groups()
                    .set_group_ids(ids)
                    .set_filters(filters)
                    .send()
                    .await
                    .map_err(api("DescribeSecurityGroups"))?;
                for group in out.security_groups() {
                    let id = group.group_id().unwrap_or_default();
                    found.push(live(
                        id,
                        json!({
                            "vpc_id": group.vpc_id(),
                            "name": group.group_name(),
                            "description": group.description(),
                        }),
                        json!({ "id": id, "name": group.group_name() }),
                        tags_of(group.tags()),
                    ));
                }
            }
            "aws.ec2.flow_log" => {
                let out = ec2
                    .describe_flow_logs()
                    .set_flow_log_ids(ids)
                    .set_filter(filters)
                    .send()
                    .await
                    .map_err(api("DescribeFlowLogs"))?;
                for log in out.flow_logs() {
                    let id = log.flow_log_id().unwrap_or_default();
                    found.push(live(
                        id,
                        json!({
                            "vpc_id": log.resource_id(),
                            "traffic_type": log.traffic_type().map(|t| t.as_str()),
                            "log_group_name": log.log_group_name(),
                            "iam_role_arn": log.deliver_logs_permission_arn(),
                        }),
                        json!({ "id": id }),
                        tags_of(log.tags()),
                    ));
                }
            }
            other => {
                return Err(super::ApiError {
                    operation: "describe",
                    code: None,
                    message: format!("`{other}` is not a taggable EC2 type"),
                    status: None,
                    request_id: None,
                });
            }
        }
        Ok(found)
    }
    .await;
    match result {
        Ok(found) => Ok(match select {
            Select::Tags(tags) => found
                .into_iter()
                .filter(|l| carries(&l.tags, tags))
                .collect(),
            Select::Id(_) => found,
        }),
        Err(error) if error.is_any(NOT_FOUND) => Ok(Vec::new()),
        Err(error) => Err(error.into()),
    }
}

fn is_taggable(kind: &str) -> bool {
    !matches!(
        kind,
        "aws.ec2.route" | "aws.ec2.route_table_association" | "aws.ec2.security_group_rule"
    )
}

pub async fn find_by_tags(
    ctx: &AwsContext,
    kind: &str,
    tags: &IndexMap<String, String>,
) -> Result<Vec<LiveResource>, ProviderError> {
    if !is_taggable(kind) {
        return Ok(Vec::new());
    }
    describe(ctx, kind, Select::Tags(tags)).await
}

/// The object of a tag-less kind that `properties` describe, found by its natural key: a route
/// by table and destination, an association by subnet (and table), a rule by group, direction,
/// protocol, ports and peer. Settles an interrupted create (the call was sent, state did not
/// record it). Nothing for taggable kinds.
pub async fn find_by_key(
    ctx: &AwsContext,
    kind: &str,
    properties: &IndexMap<String, Value>,
) -> Result<Vec<LiveResource>, ProviderError> {
    let p = Props(properties);
    match kind {
        "aws.ec2.route" => {
            let (Some(table), Some(destination)) = (
                p.opt_str("route_table_id"),
                p.opt_str("destination_cidr_block"),
            ) else {
                return Ok(Vec::new());
            };
            Ok(read_route(ctx, &route_id(table, destination))
                .await?
                .into_iter()
                .collect())
        }
        "aws.ec2.route_table_association" => {
            let (Some(subnet), Some(table)) = (p.opt_str("subnet_id"), p.opt_str("route_table_id"))
            else {
                return Ok(Vec::new());
            };
            let out = match ctx
                .clients()
                .await
                .ec2
                .describe_route_tables()
                .filters(
                    Filter::builder()
                        .name("association.subnet-id")
                        .values(subnet)
                        .build(),
                )
                .send()
                .await
                .map_err(api("DescribeRouteTables"))
            {
                Ok(out) => out,
                Err(e) if e.is_any(NOT_FOUND) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            Ok(out
                .route_tables()
                .iter()
                .flat_map(|t| t.associations())
                .filter(|a| a.subnet_id() == Some(subnet) && a.route_table_id() == Some(table))
                .filter_map(|a| {
                    let id = a.route_table_association_id()?;
                    Some(live(
                        id,
                        json!({ "subnet_id": subnet, "route_table_id": table }),
                        json!({ "id": id }),
                        IndexMap::new(),
                    ))
                })
                .collect())
        }
        "aws.ec2.security_group_rule" => match matching_rules(ctx, properties).await {
            Err(ProviderError::NotFound(_)) => Ok(Vec::new()),
            other => other,
        },
        _ => Ok(Vec::new()),
    }
}

/// The taggable kinds `list_owned` searches by tag.
const TAGGABLE: &[&str] = &[
    "aws.ec2.vpc",
    "aws.ec2.subnet",
    "aws.ec2.internet_gateway",
    "aws.ec2.eip",
    "aws.ec2.nat_gateway",
    "aws.ec2.route_table",
    "aws.ec2.security_group",
    "aws.ec2.flow_log",
];

/// Every taggable EC2 object carrying `ownership`, then the members of those route tables and
/// security groups ([`members`]).
pub async fn list_owned(
    ctx: &AwsContext,
    ownership: &IndexMap<String, String>,
) -> Result<Vec<OwnedObject>, ProviderError> {
    let mut found = Vec::new();
    let mut tables = Vec::new();
    let mut groups = Vec::new();
    for kind in TAGGABLE {
        for object in describe(ctx, kind, Select::Tags(ownership)).await? {
            match *kind {
                "aws.ec2.route_table" => tables.push(object.id.clone()),
                "aws.ec2.security_group" => groups.push(object.id.clone()),
                _ => {}
            }
            found.push(owned(kind, object, None));
        }
    }
    found.extend(routes_of(ctx, tables).await?);
    found.extend(rules_of(ctx, groups).await?);
    Ok(found)
}

/// The members of one object: a route table's routes, a security group's rules (nothing for
/// other kinds). AWS defaults are left out: a table's `local` route and routes propagated from a
/// virtual private gateway, and a group's default "all traffic out" egress rule.
pub async fn members(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
) -> Result<Vec<OwnedObject>, ProviderError> {
    let result = match kind {
        "aws.ec2.route_table" => routes_of(ctx, vec![id.to_owned()]).await,
        "aws.ec2.security_group" => rules_of(ctx, vec![id.to_owned()]).await,
        _ => return Ok(Vec::new()),
    };
    match result {
        // The parent is gone: a refresh reports that, it has no members.
        Err(ProviderError::NotFound(_)) => Ok(Vec::new()),
        other => other,
    }
}

async fn routes_of(
    ctx: &AwsContext,
    tables: Vec<String>,
) -> Result<Vec<OwnedObject>, ProviderError> {
    let mut found = Vec::new();
    if tables.is_empty() {
        return Ok(found);
    }
    let out = match ctx
        .clients()
        .await
        .ec2
        .describe_route_tables()
        .set_route_table_ids(Some(tables))
        .send()
        .await
        .map_err(api("DescribeRouteTables"))
    {
        Ok(out) => out,
        Err(e) if e.is_any(NOT_FOUND) => return Err(ProviderError::NotFound(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    for table in out.route_tables() {
        let table_id = table.route_table_id().unwrap_or_default();
        for route in table.routes() {
            let default = route.gateway_id() == Some("local")
                || route.origin()
                    == Some(&aws_sdk_ec2::types::RouteOrigin::EnableVgwRoutePropagation);
            let Some(destination) = route.destination_cidr_block().filter(|_| !default) else {
                continue;
            };
            let id = route_id(table_id, destination);
            let mut properties = json!({
                "route_table_id": table_id,
                "destination_cidr_block": destination,
            });
            for (name, target) in [
                ("gateway_id", route.gateway_id()),
                ("nat_gateway_id", route.nat_gateway_id()),
                ("transit_gateway_id", route.transit_gateway_id()),
                (
                    "vpc_peering_connection_id",
                    route.vpc_peering_connection_id(),
                ),
                ("network_interface_id", route.network_interface_id()),
            ] {
                if let Some(target) = target {
                    properties[name] = json!(target);
                }
            }
            let object = live(&id, properties, json!({ "id": id }), IndexMap::new());
            let parent = MemberOf {
                resource_type: ResourceType::new("aws.ec2.route_table"),
                id: table_id.to_owned(),
                attribute: "routes".to_owned(),
            };
            found.push(owned("aws.ec2.route", object, Some(parent)));
        }
    }
    Ok(found)
}

async fn rules_of(
    ctx: &AwsContext,
    groups: Vec<String>,
) -> Result<Vec<OwnedObject>, ProviderError> {
    let mut found = Vec::new();
    if groups.is_empty() {
        return Ok(found);
    }
    let mut next_token = None;
    loop {
        let out = match ctx
            .clients()
            .await
            .ec2
            .describe_security_group_rules()
            .filters(
                Filter::builder()
                    .name("group-id")
                    .set_values(Some(groups.clone()))
                    .build(),
            )
            .set_next_token(next_token)
            .send()
            .await
            .map_err(api("DescribeSecurityGroupRules"))
        {
            Ok(out) => out,
            Err(e) if e.is_any(NOT_FOUND) => return Err(ProviderError::NotFound(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        for rule in out.security_group_rules() {
            let egress = rule.is_egress() == Some(true);
            let everywhere = matches!(rule.cidr_ipv4(), Some("0.0.0.0/0"))
                || matches!(rule.cidr_ipv6(), Some("::/0"));
            if egress && rule.ip_protocol() == Some("-1") && everywhere {
                continue;
            }
            let object = rule_live(rule);
            let parent = MemberOf {
                resource_type: ResourceType::new("aws.ec2.security_group"),
                id: rule.group_id().unwrap_or_default().to_owned(),
                attribute: if egress {
                    "egress_rules"
                } else {
                    "ingress_rules"
                }
                .to_owned(),
            };
            found.push(owned("aws.ec2.security_group_rule", object, Some(parent)));
        }
        next_token = out.next_token().map(str::to_owned);
        if next_token.is_none() {
            break;
        }
    }
    Ok(found)
}

pub async fn read(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    match kind {
        "aws.ec2.route" => read_route(ctx, id).await,
        "aws.ec2.route_table_association" => read_association(ctx, id).await,
        "aws.ec2.security_group_rule" => read_rule(ctx, id).await,
        _ => Ok(describe(ctx, kind, Select::Id(id))
            .await?
            .into_iter()
            .next()),
    }
}

async fn read_one(ctx: &AwsContext, kind: &str, id: &str) -> Result<LiveResource, ProviderError> {
    read(ctx, kind, id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("{kind} {id}")))
}

/// Creates one object. `taken`: ids state records for the address (see
/// [`CallContext::taken`](crate::engine::provider::CallContext)), never adopted here.
pub async fn create(
    ctx: &AwsContext,
    kind: &str,
    properties: &IndexMap<String, Value>,
    ownership: &IndexMap<String, String>,
    taken: &[String],
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let ec2 = &ctx.clients().await.ec2;
    let tags = super::all_tags(properties, ownership);
    if is_taggable(kind)
        && let Some(existing) = describe(ctx, kind, Select::Tags(ownership))
            .await?
            .into_iter()
            .find(|existing| !taken.contains(&existing.id))
    {
        // An earlier attempt made it: converge it to the properties and adopt it (it may be
        // half made: a gateway not attached yet). Found by tags, its id may still read "not
        // found" for a moment. (The object a create-before-delete replacement replaces carries
        // the same tags: it is `taken`.)
        read_created(ctx, kind, &existing.id).await?;
        return update(ctx, kind, &existing.id, properties).await;
    }
    let id = match kind {
        "aws.ec2.vpc" => {
            let out = ec2
                .create_vpc()
                .cidr_block(p.str("cidr_block")?)
                .tag_specifications(spec(Ec2Type::Vpc, &tags))
                .send()
                .await
                .map_err(api("CreateVpc"))?;
            let id = out
                .vpc()
                .and_then(|v| v.vpc_id())
                .ok_or_else(|| failed("CreateVpc returned no id"))?
                .to_owned();
            wait_for(ctx, "the VPC to be available", bounds::EC2, || async {
                Ok(describe(ctx, kind, Select::Id(&id))
                    .await?
                    .into_iter()
                    .next())
            })
            .await?;
            set_vpc_dns(
                ctx,
                &id,
                p.bool("enable_dns_support")?,
                p.bool("enable_dns_hostnames")?,
            )
            .await?;
            id
        }
        "aws.ec2.subnet" => {
            let out = propagated(ctx, "creating a subnet in a new VPC", || async {
                ec2.create_subnet()
                    .vpc_id(p.str("vpc_id").unwrap_or_default())
                    .cidr_block(p.str("cidr_block").unwrap_or_default())
                    .availability_zone(p.str("availability_zone").unwrap_or_default())
                    .tag_specifications(spec(Ec2Type::Subnet, &tags))
                    .send()
                    .await
                    .map_err(api("CreateSubnet"))
            })
            .await?;
            let id = out
                .subnet()
                .and_then(|s| s.subnet_id())
                .ok_or_else(|| failed("CreateSubnet returned no id"))?
                .to_owned();
            if p.bool("map_public_ip_on_launch")? {
                set_map_public_ip(ctx, &id, true).await?;
            }
            id
        }
        "aws.ec2.internet_gateway" => {
            let out = ec2
                .create_internet_gateway()
                .tag_specifications(spec(Ec2Type::InternetGateway, &tags))
                .send()
                .await
                .map_err(api("CreateInternetGateway"))?;
            let id = out
                .internet_gateway()
                .and_then(|g| g.internet_gateway_id())
                .ok_or_else(|| failed("CreateInternetGateway returned no id"))?
                .to_owned();
            let vpc = p.str("vpc_id")?;
            propagated(ctx, "attaching a new internet gateway", || async {
                ec2.attach_internet_gateway()
                    .internet_gateway_id(&id)
                    .vpc_id(vpc)
                    .send()
                    .await
                    .map_err(api("AttachInternetGateway"))
            })
            .await?;
            id
        }
        "aws.ec2.eip" => {
            let out = ec2
                .allocate_address()
                .domain(DomainType::from(p.opt_str("domain").unwrap_or("vpc")))
                .tag_specifications(spec(Ec2Type::ElasticIp, &tags))
                .send()
                .await
                .map_err(api("AllocateAddress"))?;
            out.allocation_id()
                .ok_or_else(|| failed("AllocateAddress returned no allocation id"))?
                .to_owned()
        }
        "aws.ec2.nat_gateway" => {
            let (subnet, allocation) = (p.str("subnet_id")?, p.str("allocation_id")?);
            let token = client_token(ownership, properties);
            let out = propagated(ctx, "creating a NAT gateway", || async {
                ec2.create_nat_gateway()
                    .subnet_id(subnet)
                    .allocation_id(allocation)
                    .connectivity_type(ConnectivityType::from(
                        p.opt_str("connectivity_type").unwrap_or("public"),
                    ))
                    .client_token(&token)
                    .tag_specifications(spec(Ec2Type::Natgateway, &tags))
                    .send()
                    .await
                    .map_err(api("CreateNatGateway"))
            })
            .await?;
            let id = out
                .nat_gateway()
                .and_then(|g| g.nat_gateway_id())
                .ok_or_else(|| failed("CreateNatGateway returned no id"))?
                .to_owned();
            wait_nat(ctx, &id, NatGatewayState::Available).await?;
            id
        }
        "aws.ec2.route_table" => {
            let vpc = p.str("vpc_id")?;
            let token = client_token(ownership, properties);
            let out = propagated(ctx, "creating a route table in a new VPC", || async {
                ec2.create_route_table()
                    .vpc_id(vpc)
                    .client_token(&token)
                    .tag_specifications(spec(Ec2Type::RouteTable, &tags))
                    .send()
                    .await
                    .map_err(api("CreateRouteTable"))
            })
            .await?;
            out.route_table()
                .and_then(|t| t.route_table_id())
                .ok_or_else(|| failed("CreateRouteTable returned no id"))?
                .to_owned()
        }
        "aws.ec2.route" => return create_route(ctx, properties).await,
        "aws.ec2.route_table_association" => return create_association(ctx, properties).await,
        "aws.ec2.security_group" => {
            let (name, description, vpc) =
                (p.str("name")?, p.str("description")?, p.str("vpc_id")?);
            let out = propagated(ctx, "creating a security group in a new VPC", || async {
                ec2.create_security_group()
                    .group_name(name)
                    .description(description)
                    .vpc_id(vpc)
                    .tag_specifications(spec(Ec2Type::SecurityGroup, &tags))
                    .send()
                    .await
                    .map_err(api("CreateSecurityGroup"))
            })
            .await?;
            out.group_id()
                .ok_or_else(|| failed("CreateSecurityGroup returned no id"))?
                .to_owned()
        }
        "aws.ec2.security_group_rule" => return create_rule(ctx, properties).await,
        "aws.ec2.flow_log" => {
            let (vpc, traffic, group, role) = (
                p.str("vpc_id")?,
                p.str("traffic_type")?,
                p.str("log_group_name")?,
                p.str("iam_role_arn")?,
            );
            let token = client_token(ownership, properties);
            let out = propagated(ctx, "creating the VPC's flow log", || async {
                ec2.create_flow_logs()
                    .resource_ids(vpc)
                    .resource_type(FlowLogsResourceType::Vpc)
                    .traffic_type(TrafficType::from(traffic))
                    .log_destination_type(LogDestinationType::CloudWatchLogs)
                    .log_group_name(group)
                    .deliver_logs_permission_arn(role)
                    .client_token(&token)
                    .tag_specifications(spec(Ec2Type::VpcFlowLog, &tags))
                    .send()
                    .await
                    .map_err(api("CreateFlowLogs"))
            })
            .await?;
            if let Some(problem) = out.unsuccessful().first() {
                return Err(failed(format!(
                    "CreateFlowLogs: {}",
                    problem
                        .error()
                        .and_then(|e| e.message())
                        .unwrap_or("refused")
                )));
            }
            out.flow_log_ids()
                .first()
                .ok_or_else(|| failed("CreateFlowLogs returned no id"))?
                .clone()
        }
        other => return Err(failed(format!("the EC2 provider does not serve `{other}`"))),
    };
    read_created(ctx, kind, &id).await
}

/// Reads an object just created: describing a new ID may answer "not found" for a while
/// (EC2's eventual consistency), so the read is retried until it shows, within
/// [`bounds::PROPAGATION`].
async fn read_created(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
) -> Result<LiveResource, ProviderError> {
    wait_for(
        ctx,
        &format!("the new {kind} {id} to be visible"),
        bounds::PROPAGATION,
        || async { read(ctx, kind, id).await },
    )
    .await
}

async fn set_vpc_dns(
    ctx: &AwsContext,
    id: &str,
    support: bool,
    hostnames: bool,
) -> Result<(), ProviderError> {
    let ec2 = &ctx.clients().await.ec2;
    // One attribute per call (an API rule). Support first: hostnames need it.
    propagated(ctx, "setting the VPC's DNS support", || async {
        ec2.modify_vpc_attribute()
            .vpc_id(id)
            .enable_dns_support(AttributeBooleanValue::builder().value(support).build())
            .send()
            .await
            .map_err(api("ModifyVpcAttribute"))
    })
    .await?;
    propagated(ctx, "setting the VPC's DNS hostnames", || async {
        ec2.modify_vpc_attribute()
            .vpc_id(id)
            .enable_dns_hostnames(AttributeBooleanValue::builder().value(hostnames).build())
            .send()
            .await
            .map_err(api("ModifyVpcAttribute"))
    })
    .await?;
    Ok(())
}

async fn set_map_public_ip(ctx: &AwsContext, id: &str, on: bool) -> Result<(), ProviderError> {
    let ec2 = &ctx.clients().await.ec2;
    propagated(
        ctx,
        &format!("setting map_public_ip_on_launch of {id}"),
        || async {
            ec2.modify_subnet_attribute()
                .subnet_id(id)
                .map_public_ip_on_launch(AttributeBooleanValue::builder().value(on).build())
                .send()
                .await
                .map_err(api("ModifySubnetAttribute"))
        },
    )
    .await?;
    Ok(())
}

async fn wait_nat(ctx: &AwsContext, id: &str, want: NatGatewayState) -> Result<(), ProviderError> {
    let ec2 = &ctx.clients().await.ec2;
    wait_for(
        ctx,
        &format!("NAT gateway {id} to be {}", want.as_str()),
        bounds::NAT_GATEWAY,
        || async {
            let out = match ec2.describe_nat_gateways().nat_gateway_ids(id).send().await {
                Ok(out) => out,
                Err(e) => {
                    let e = api("DescribeNatGateways")(e);
                    if e.is_any(NOT_FOUND) {
                        // Deleted: done. Just created: not visible yet (eventual consistency).
                        return Ok((want == NatGatewayState::Deleted).then_some(()));
                    }
                    return Err(e.into());
                }
            };
            let state = out.nat_gateways().first().and_then(|g| g.state().cloned());
            match state {
                None if want == NatGatewayState::Deleted => Ok(Some(())),
                Some(s) if s == want => Ok(Some(())),
                Some(NatGatewayState::Failed) => Err(failed(format!(
                    "NAT gateway {id} failed: {}",
                    out.nat_gateways()
                        .first()
                        .and_then(|g| g.failure_message())
                        .unwrap_or("no reason given")
                ))),
                _ => Ok(None),
            }
        },
    )
    .await
}

pub async fn update(
    ctx: &AwsContext,
    kind: &str,
    id: &str,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let ec2 = &ctx.clients().await.ec2;
    match kind {
        "aws.ec2.route" => return update_route(ctx, id, properties).await,
        "aws.ec2.route_table_association" | "aws.ec2.security_group_rule" => {
            // Every attribute of these forces a replacement; nothing changes in place.
            return read_one(ctx, kind, id).await;
        }
        _ => {}
    }
    let current = read_one(ctx, kind, id).await?;
    let mut want = p.tags();
    for (k, v) in &current.tags {
        if k.starts_with(super::OWNERSHIP_PREFIX) {
            want.insert(k.clone(), v.clone());
        }
    }
    let (set, remove) = tag_diff(&current.tags, &want);
    if !set.is_empty() {
        ec2.create_tags()
            .resources(id)
            .set_tags(Some(to_tags(&set)))
            .send()
            .await
            .map_err(api("CreateTags"))?;
    }
    if !remove.is_empty() {
        ec2.delete_tags()
            .resources(id)
            .set_tags(Some(
                remove
                    .iter()
                    .map(|k| Tag::builder().key(k).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(api("DeleteTags"))?;
    }
    let differs = |name: &str| properties.get(name) != current.properties.get(name);
    match kind {
        "aws.ec2.vpc" if differs("enable_dns_support") || differs("enable_dns_hostnames") => {
            set_vpc_dns(
                ctx,
                id,
                p.bool("enable_dns_support")?,
                p.bool("enable_dns_hostnames")?,
            )
            .await?;
        }
        "aws.ec2.subnet" if differs("map_public_ip_on_launch") => {
            set_map_public_ip(ctx, id, p.bool("map_public_ip_on_launch")?).await?;
        }
        // A gateway an interrupted create made but never attached (moving an attached one to
        // another VPC is a replacement, planned as such).
        "aws.ec2.internet_gateway"
            if current.properties.get("vpc_id").is_none_or(Value::is_null)
                && p.opt_str("vpc_id").is_some() =>
        {
            let vpc = p.str("vpc_id")?;
            propagated(ctx, "attaching an internet gateway", || async {
                ec2.attach_internet_gateway()
                    .internet_gateway_id(id)
                    .vpc_id(vpc)
                    .send()
                    .await
                    .map_err(api("AttachInternetGateway"))
            })
            .await?;
        }
        _ => {}
    }
    read_one(ctx, kind, id).await
}

pub async fn delete(ctx: &AwsContext, kind: &str, id: &str) -> Result<(), ProviderError> {
    let ec2 = &ctx.clients().await.ec2;
    let gone = |result: Result<(), super::ApiError>| match result {
        Err(e) if e.is_any(NOT_FOUND) => Ok(()),
        other => other,
    };
    let what = format!("deleting {kind} {id}");
    let dependency: &[&str] = &["DependencyViolation"];
    match kind {
        // Leftovers swept, "still in use" retried, blockers named: see `teardown`.
        "aws.ec2.vpc" => super::teardown::delete_vpc(ctx, id).await,
        "aws.ec2.subnet" => super::teardown::delete_subnet(ctx, id).await,
        "aws.ec2.internet_gateway" => {
            let Some(current) = read(ctx, kind, id).await? else {
                return Ok(());
            };
            if let Some(vpc) = current.properties.get("vpc_id").and_then(Value::as_str) {
                retry_on(ctx, &what, dependency, bounds::DEPENDENCY, || async {
                    gone(
                        ec2.detach_internet_gateway()
                            .internet_gateway_id(id)
                            .vpc_id(vpc)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(api("DetachInternetGateway")),
                    )
                })
                .await?;
            }
            gone(
                ec2.delete_internet_gateway()
                    .internet_gateway_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(api("DeleteInternetGateway")),
            )
            .map_err(Into::into)
        }
        "aws.ec2.eip" => {
            retry_on(
                ctx,
                &what,
                &["InvalidIPAddress.InUse", "DependencyViolation"],
                bounds::DEPENDENCY,
                || async {
                    gone(
                        ec2.release_address()
                            .allocation_id(id)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(api("ReleaseAddress")),
                    )
                },
            )
            .await
        }
        "aws.ec2.nat_gateway" => {
            gone(
                ec2.delete_nat_gateway()
                    .nat_gateway_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(api("DeleteNatGateway")),
            )?;
            wait_nat(ctx, id, NatGatewayState::Deleted).await
        }
        "aws.ec2.route_table" => {
            retry_on(ctx, &what, dependency, bounds::DEPENDENCY, || async {
                gone(
                    ec2.delete_route_table()
                        .route_table_id(id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(api("DeleteRouteTable")),
                )
            })
            .await
        }
        "aws.ec2.route" => {
            let (table, destination) = split_route_id(id)?;
            gone(
                ec2.delete_route()
                    .route_table_id(table)
                    .destination_cidr_block(destination)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(api("DeleteRoute")),
            )
            .map_err(Into::into)
        }
        "aws.ec2.route_table_association" => gone(
            ec2.disassociate_route_table()
                .association_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(api("DisassociateRouteTable")),
        )
        .map_err(Into::into),
        "aws.ec2.security_group" => super::teardown::delete_security_group(ctx, id).await,
        "aws.ec2.security_group_rule" => {
            let Some(rule) = read_rule(ctx, id).await? else {
                return Ok(());
            };
            // Revoked by its permission (accepted everywhere, unlike rule ids in some emulators).
            let rp = Props(&rule.properties);
            let group = rp.str("security_group_id")?.to_owned();
            let permission = permission_of(rp)?;
            let result = if rp.opt_str("direction") == Some("egress") {
                ec2.revoke_security_group_egress()
                    .group_id(&group)
                    .ip_permissions(permission)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(api("RevokeSecurityGroupEgress"))
            } else {
                ec2.revoke_security_group_ingress()
                    .group_id(&group)
                    .ip_permissions(permission)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(api("RevokeSecurityGroupIngress"))
            };
            gone(result).map_err(Into::into)
        }
        "aws.ec2.flow_log" => gone(
            ec2.delete_flow_logs()
                .flow_log_ids(id)
                .send()
                .await
                .map(|_| ())
                .map_err(api("DeleteFlowLogs")),
        )
        .map_err(Into::into),
        other => Err(failed(format!("the EC2 provider does not serve `{other}`"))),
    }
}

// --- routes ---

fn route_id(table: &str, destination: &str) -> String {
    format!("{table}_{destination}")
}

fn split_route_id(id: &str) -> Result<(&str, &str), ProviderError> {
    id.split_once('_')
        .ok_or_else(|| failed(format!("malformed route id `{id}`")))
}

async fn read_route(ctx: &AwsContext, id: &str) -> Result<Option<LiveResource>, ProviderError> {
    let (table, destination) = split_route_id(id)?;
    let out = match ctx
        .clients()
        .await
        .ec2
        .describe_route_tables()
        .route_table_ids(table)
        .send()
        .await
        .map_err(api("DescribeRouteTables"))
    {
        Ok(out) => out,
        Err(e) if e.is_any(NOT_FOUND) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let route = out
        .route_tables()
        .iter()
        .flat_map(|t| t.routes())
        .find(|r| r.destination_cidr_block() == Some(destination));
    Ok(route.map(|route| {
        let mut properties = json!({
            "route_table_id": table,
            "destination_cidr_block": destination,
        });
        if let Some(gateway) = route.gateway_id() {
            properties["gateway_id"] = json!(gateway);
        }
        if let Some(nat) = route.nat_gateway_id() {
            properties["nat_gateway_id"] = json!(nat);
        }
        live(id, properties, json!({ "id": id }), IndexMap::new())
    }))
}

async fn create_route(
    ctx: &AwsContext,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let table = p.str("route_table_id")?;
    let destination = p.str("destination_cidr_block")?;
    let id = route_id(table, destination);
    let ec2 = &ctx.clients().await.ec2;
    let result = propagated(ctx, "creating a route", || async {
        match ec2
            .create_route()
            .route_table_id(table)
            .destination_cidr_block(destination)
            .set_gateway_id(p.opt_str("gateway_id").map(str::to_owned))
            .set_nat_gateway_id(p.opt_str("nat_gateway_id").map(str::to_owned))
            .send()
            .await
            .map_err(api("CreateRoute"))
        {
            // Answered inside the retry so that it is not retried as "not found".
            Err(e) if e.is("RouteAlreadyExists") => Ok(false),
            Err(e) => Err(e),
            Ok(_) => Ok(true),
        }
    })
    .await;
    match result {
        Ok(true) => read_created(ctx, "aws.ec2.route", &id).await,
        // The route is keyed by table and destination: an earlier attempt made it; converge it.
        Ok(false) => update_route(ctx, &id, properties).await,
        Err(e) => Err(e),
    }
}

async fn update_route(
    ctx: &AwsContext,
    id: &str,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let current = read_one(ctx, "aws.ec2.route", id).await?;
    let same = ["gateway_id", "nat_gateway_id"]
        .iter()
        .all(|k| current.properties.get(*k) == properties.get(*k));
    if !same {
        let (table, destination) = split_route_id(id)?;
        ctx.clients()
            .await
            .ec2
            .replace_route()
            .route_table_id(table)
            .destination_cidr_block(destination)
            .set_gateway_id(p.opt_str("gateway_id").map(str::to_owned))
            .set_nat_gateway_id(p.opt_str("nat_gateway_id").map(str::to_owned))
            .send()
            .await
            .map_err(api("ReplaceRoute"))?;
    }
    read_one(ctx, "aws.ec2.route", id).await
}

// --- route table associations ---

async fn read_association(
    ctx: &AwsContext,
    id: &str,
) -> Result<Option<LiveResource>, ProviderError> {
    let out = ctx
        .clients()
        .await
        .ec2
        .describe_route_tables()
        .filters(
            Filter::builder()
                .name("association.route-table-association-id")
                .values(id)
                .build(),
        )
        .send()
        .await
        .map_err(api("DescribeRouteTables"))?;
    let association = out
        .route_tables()
        .iter()
        .flat_map(|t| t.associations())
        .find(|a| a.route_table_association_id() == Some(id));
    Ok(association.map(|a| {
        live(
            id,
            json!({ "subnet_id": a.subnet_id(), "route_table_id": a.route_table_id() }),
            json!({ "id": id }),
            IndexMap::new(),
        )
    }))
}

async fn create_association(
    ctx: &AwsContext,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let ec2 = &ctx.clients().await.ec2;
    let subnet = p.str("subnet_id")?;
    let table = p.str("route_table_id")?;
    // A subnet has one explicit association: an earlier attempt's is adopted.
    let out = ec2
        .describe_route_tables()
        .filters(
            Filter::builder()
                .name("association.subnet-id")
                .values(subnet)
                .build(),
        )
        .send()
        .await
        .map_err(api("DescribeRouteTables"))?;
    let existing = out
        .route_tables()
        .iter()
        .flat_map(|t| t.associations())
        .find(|a| a.subnet_id() == Some(subnet));
    let id = match existing {
        Some(a) if a.route_table_id() == Some(table) => a
            .route_table_association_id()
            .unwrap_or_default()
            .to_owned(),
        Some(a) => propagated(ctx, "moving a subnet to a new route table", || async {
            ec2.replace_route_table_association()
                .association_id(a.route_table_association_id().unwrap_or_default())
                .route_table_id(table)
                .send()
                .await
                .map_err(api("ReplaceRouteTableAssociation"))
        })
        .await?
        .new_association_id()
        .unwrap_or_default()
        .to_owned(),
        None => propagated(ctx, "associating a subnet with a route table", || async {
            ec2.associate_route_table()
                .subnet_id(subnet)
                .route_table_id(table)
                .send()
                .await
                .map_err(api("AssociateRouteTable"))
        })
        .await?
        .association_id()
        .ok_or_else(|| failed("AssociateRouteTable returned no id"))?
        .to_owned(),
    };
    read_created(ctx, "aws.ec2.route_table_association", &id).await
}

// --- security group rules ---

fn rule_live(rule: &aws_sdk_ec2::types::SecurityGroupRule) -> LiveResource {
    let id = rule.security_group_rule_id().unwrap_or_default();
    let mut properties = json!({
        "security_group_id": rule.group_id(),
        "direction": if rule.is_egress() == Some(true) { "egress" } else { "ingress" },
        "protocol": rule.ip_protocol(),
        "from_port": rule.from_port(),
        "to_port": rule.to_port(),
    });
    if let Some(source) = rule.referenced_group_info().and_then(|g| g.group_id()) {
        properties["source_security_group_id"] = json!(source);
    }
    if let Some(cidr) = rule.cidr_ipv4() {
        properties["cidr_blocks"] = json!([cidr]);
    }
    live(id, properties, json!({ "id": id }), IndexMap::new())
}

async fn read_rule(ctx: &AwsContext, id: &str) -> Result<Option<LiveResource>, ProviderError> {
    let result = ctx
        .clients()
        .await
        .ec2
        .describe_security_group_rules()
        .security_group_rule_ids(id)
        .send()
        .await
        .map_err(api("DescribeSecurityGroupRules"));
    match result {
        Ok(out) => Ok(out.security_group_rules().first().map(rule_live)),
        Err(e) if e.is_any(NOT_FOUND) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The rules of a group that match the desired rule exactly.
async fn matching_rules(
    ctx: &AwsContext,
    properties: &IndexMap<String, Value>,
) -> Result<Vec<LiveResource>, ProviderError> {
    let p = Props(properties);
    let out = ctx
        .clients()
        .await
        .ec2
        .describe_security_group_rules()
        .filters(
            Filter::builder()
                .name("group-id")
                .values(p.str("security_group_id")?)
                .build(),
        )
        .send()
        .await
        .map_err(api("DescribeSecurityGroupRules"))?;
    let keys = [
        "security_group_id",
        "direction",
        "protocol",
        "from_port",
        "to_port",
        "source_security_group_id",
        "cidr_blocks",
    ];
    Ok(out
        .security_group_rules()
        .iter()
        .map(rule_live)
        .filter(|rule| {
            keys.iter()
                .all(|k| rule.properties.get(*k) == properties.get(*k))
        })
        .collect())
}

/// The IP permission a rule's properties describe.
fn permission_of(p: Props<'_>) -> Result<IpPermission, ProviderError> {
    let mut permission = IpPermission::builder()
        .ip_protocol(p.str("protocol")?)
        .from_port(p.i32("from_port")?)
        .to_port(p.i32("to_port")?);
    if let Some(source) = p.opt_str("source_security_group_id") {
        permission =
            permission.user_id_group_pairs(UserIdGroupPair::builder().group_id(source).build());
    }
    for cidr in p.strs("cidr_blocks")? {
        permission = permission.ip_ranges(IpRange::builder().cidr_ip(cidr).build());
    }
    Ok(permission.build())
}

async fn create_rule(
    ctx: &AwsContext,
    properties: &IndexMap<String, Value>,
) -> Result<LiveResource, ProviderError> {
    let p = Props(properties);
    let ec2 = &ctx.clients().await.ec2;
    if let Some(existing) = matching_rules(ctx, properties).await?.into_iter().next() {
        return Ok(existing);
    }
    let permission = permission_of(p)?;
    let group = p.str("security_group_id")?;
    let egress = p.opt_str("direction") == Some("egress");
    // Both the group and the source group may be moments old: "not found" is retried.
    let result = propagated(ctx, "authorizing a security group rule", || async {
        let answer = if egress {
            ec2.authorize_security_group_egress()
                .group_id(group)
                .ip_permissions(permission.clone())
                .send()
                .await
                .map(|out| out.security_group_rules().to_vec())
                .map_err(api("AuthorizeSecurityGroupEgress"))
        } else {
            ec2.authorize_security_group_ingress()
                .group_id(group)
                .ip_permissions(permission.clone())
                .send()
                .await
                .map(|out| out.security_group_rules().to_vec())
                .map_err(api("AuthorizeSecurityGroupIngress"))
        };
        // Answered inside the retry: a duplicate is not "not found".
        match answer {
            Err(e) if e.is("InvalidPermission.Duplicate") => Ok(None),
            other => other.map(Some),
        }
    })
    .await;
    match result {
        Ok(Some(rules)) if !rules.is_empty() => Ok(rule_live(&rules[0])),
        // Authorized without the rule in the answer, or already there: find it by its key
        // (visible after a moment at most).
        Ok(_) => {
            wait_for(
                ctx,
                "the authorized rule to be visible",
                bounds::PROPAGATION,
                || async { Ok(matching_rules(ctx, properties).await?.into_iter().next()) },
            )
            .await
        }
        Err(e) => Err(e),
    }
}

/// The region's availability zones that take subnets: `available` zones of type
/// `availability-zone` (not Local or Wavelength Zones), as DescribeAvailabilityZones lists them
/// for this account (names are mapped per account; IDs are stable).
pub async fn availability_zones(
    ctx: &AwsContext,
) -> Result<Vec<crate::engine::zones::Zone>, ProviderError> {
    let out = ctx
        .clients()
        .await
        .ec2
        .describe_availability_zones()
        .filters(
            Filter::builder()
                .name("zone-type")
                .values("availability-zone")
                .build(),
        )
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .map_err(api("DescribeAvailabilityZones"))?;
    Ok(out
        .availability_zones()
        .iter()
        .filter_map(|z| {
            Some(crate::engine::zones::Zone {
                name: z.zone_name()?.to_owned(),
                id: z.zone_id().unwrap_or_default().to_owned(),
            })
        })
        .collect())
}
