//! Which AWS operation a request is: the service from the SigV4 credential scope, the operation
//! from the query protocol's `Action=` (EC2, IAM, RDS, ElastiCache, STS), the JSON protocol's
//! `X-Amz-Target` (CloudWatch Logs), or the REST path (EKS).

/// One AWS request as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The signing name: `ec2`, `iam`, `eks`, `rds`, `elasticache`, `logs`, `sts`, ...
    pub service: String,
    /// The API operation, e.g. `CreateVpc`, `DescribeCluster`.
    pub name: String,
}

impl Operation {
    /// `service:Name`, as the rules and the statistics name it.
    pub fn key(&self) -> String {
        format!("{}:{}", self.service, self.name)
    }
}

/// The service of a signed request: `Credential=AKID/DATE/REGION/SERVICE/aws4_request`.
pub fn service_of(authorization: Option<&str>) -> Option<String> {
    let credential = authorization?.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    scope.split('/').nth(3).map(str::to_owned)
}

/// The value of `name` in a `application/x-www-form-urlencoded` body or query string.
pub fn form_value(form: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(form)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The operation of one request; `None` when it cannot be told (then no rule applies to it).
pub fn parse(
    method: &str,
    path: &str,
    query: Option<&str>,
    authorization: Option<&str>,
    target: Option<&str>,
    body: &[u8],
) -> Option<Operation> {
    let service = service_of(authorization)?;
    let name = if let Some(target) = target {
        target.rsplit('.').next()?.to_owned()
    } else if let Some(action) = query
        .and_then(|q| form_value(q.as_bytes(), "Action"))
        .or_else(|| form_value(body, "Action"))
    {
        action
    } else if service == "eks" {
        eks_operation(method, path)?
    } else {
        return None;
    };
    Some(Operation { service, name })
}

/// EKS's REST operations by method and path (the ones Stacksmith calls and their neighbours).
pub fn eks_operation(method: &str, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let name = match (method, parts.as_slice()) {
        ("POST", ["clusters"]) => "CreateCluster",
        ("GET", ["clusters"]) => "ListClusters",
        ("GET", ["clusters", _]) => "DescribeCluster",
        ("DELETE", ["clusters", _]) => "DeleteCluster",
        ("POST", ["clusters", _, "update-config"]) => "UpdateClusterConfig",
        ("POST", ["clusters", _, "updates"]) => "UpdateClusterVersion",
        ("GET", ["clusters", _, "updates"]) => "ListUpdates",
        ("GET", ["clusters", _, "updates", _]) => "DescribeUpdate",
        ("POST", ["clusters", _, "node-groups"]) => "CreateNodegroup",
        ("GET", ["clusters", _, "node-groups"]) => "ListNodegroups",
        ("GET", ["clusters", _, "node-groups", _]) => "DescribeNodegroup",
        ("DELETE", ["clusters", _, "node-groups", _]) => "DeleteNodegroup",
        ("POST", ["clusters", _, "node-groups", _, "update-config"]) => "UpdateNodegroupConfig",
        ("POST", ["clusters", _, "node-groups", _, "update-version"]) => "UpdateNodegroupVersion",
        ("POST", ["clusters", _, "addons"]) => "CreateAddon",
        ("GET", ["clusters", _, "addons"]) => "ListAddons",
        ("GET", ["clusters", _, "addons", _]) => "DescribeAddon",
        ("DELETE", ["clusters", _, "addons", _]) => "DeleteAddon",
        ("POST", ["clusters", _, "addons", _, "update"]) => "UpdateAddon",
        ("GET", ["addons", "supported-versions"]) => "DescribeAddonVersions",
        ("POST", ["clusters", _, "access-entries"]) => "CreateAccessEntry",
        ("GET", ["clusters", _, "access-entries"]) => "ListAccessEntries",
        ("GET", ["clusters", _, "access-entries", _]) => "DescribeAccessEntry",
        ("DELETE", ["clusters", _, "access-entries", _]) => "DeleteAccessEntry",
        ("POST", ["clusters", _, "access-entries", _, "access-policies"]) => {
            "AssociateAccessPolicy"
        }
        ("GET", ["clusters", _, "access-entries", _, "access-policies"]) => {
            "ListAssociatedAccessPolicies"
        }
        ("DELETE", ["clusters", _, "access-entries", _, "access-policies", _]) => {
            "DisassociateAccessPolicy"
        }
        ("POST", ["tags", ..]) => "TagResource",
        ("GET", ["tags", ..]) => "ListTagsForResource",
        ("DELETE", ["tags", ..]) => "UntagResource",
        _ => return None,
    };
    Some(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: &str = "AWS4-HMAC-SHA256 Credential=testing/20261206/us-east-1/ec2/aws4_request, \
                          SignedHeaders=host;x-amz-date, Signature=abc";

    #[test]
    fn the_query_protocol_names_its_action_in_the_body() {
        let op = parse(
            "POST",
            "/",
            None,
            Some(SIGNED),
            None,
            b"Action=CreateVpc&Version=2016-11-15&CidrBlock=10.0.0.0%2F16",
        )
        .unwrap();
        assert_eq!(op.key(), "ec2:CreateVpc");
    }

    #[test]
    fn the_json_protocol_names_it_in_x_amz_target() {
        let auth = SIGNED.replace("/ec2/", "/logs/");
        let op = parse(
            "POST",
            "/",
            None,
            Some(&auth),
            Some("Logs_20140328.CreateLogGroup"),
            b"{}",
        )
        .unwrap();
        assert_eq!(op.key(), "logs:CreateLogGroup");
    }

    #[test]
    fn eks_is_told_by_method_and_path() {
        let auth = SIGNED.replace("/ec2/", "/eks/");
        let cases = [
            ("POST", "/clusters", "CreateCluster"),
            ("GET", "/clusters/c1", "DescribeCluster"),
            ("DELETE", "/clusters/c1", "DeleteCluster"),
            ("GET", "/clusters/c1/node-groups/w", "DescribeNodegroup"),
            (
                "POST",
                "/clusters/c1/node-groups/w/update-config",
                "UpdateNodegroupConfig",
            ),
            (
                "GET",
                "/tags/arn%3Aaws%3Aeks%3Aus-east-1%3A1%3Acluster%2Fc1",
                "ListTagsForResource",
            ),
        ];
        for (method, path, name) in cases {
            let op = parse(method, path, None, Some(&auth), None, b"").unwrap();
            assert_eq!(op.name, name, "{method} {path}");
            assert_eq!(op.service, "eks");
        }
        assert_eq!(parse("GET", "/", None, None, None, b""), None);
    }
}
