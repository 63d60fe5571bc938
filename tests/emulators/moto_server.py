"""moto's server with EC2 filter values matched the way AWS matches them.

Run with the `emulators` venv's python, with moto_server's arguments:

    python tests/emulators/moto_server.py -H 127.0.0.1 -p PORT

moto 5.2.5 matches EC2 filter values (`tag:KEY`, `tag-value`, `vpc-id`, ...) with Python's
`fnmatch`, where `[` and `]` make a character class: a lookup of
`tag:stacksmith:address=network.subnet.private[0]` finds nothing. AWS treats only `*` (any
sequence) and `?` (one character) as wildcards and `\\` as the escape of the next character
("a value of `\\*amazon\\?\\\\` searches for the literal string `*amazon?\\`", EC2 API reference,
Filter). This launcher replaces the two matching functions of `moto.ec2.utils` (and the copy
`moto.ec2.models.tags` imported) before the server starts.

It also gives EKS clusters the cluster security group AWS makes for them (see
`patch_eks_cluster_security_group`) and keeps ElastiCache groups the way AWS does
(`patch_elasticache`); everything else is plain moto.
"""

import re
import sys
import types


def aws_filter_to_re(pattern: str) -> str:
    """An EC2 filter value as an anchored regular expression: `*`, `?` wildcards, `\\` escapes."""
    out = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "\\")
            out.append(re.escape(escaped))
        elif char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return "(?s:" + "".join(out) + r")\Z"


def aws_match(value: str, pattern: str) -> bool:
    """Whether `value` matches the EC2 filter value `pattern` (case-sensitive, like AWS)."""
    return re.match(aws_filter_to_re(pattern), value) is not None


def patch_moto() -> None:
    import moto.ec2.utils as utils

    # `is_filter_matching` calls `fnmatch.fnmatch(value, pattern)` through the module it imported.
    utils.fnmatch = types.SimpleNamespace(fnmatch=aws_match, translate=aws_filter_to_re)
    utils.simple_aws_filter_to_re = aws_filter_to_re
    import moto.ec2.models.tags as tags

    tags.simple_aws_filter_to_re = aws_filter_to_re


def patch_eks_cluster_security_group() -> None:
    """EKS's cluster security group, which moto does not make, and a per-cluster OIDC issuer.

    AWS creates `eks-cluster-sg-<cluster>-<id>` in the cluster's VPC at CreateCluster, reports it
    as `resourcesVpcConfig.clusterSecurityGroupId`, puts it on managed nodes without a launch
    template (so pods reach the database and cache through it), tags it
    `kubernetes.io/cluster/<cluster>: owned` and `aws:eks:cluster-name`, and deletes it with the
    cluster (leaving it when something still references it). UpdateClusterConfig changes only
    the fields it is given (moto replaced `resourcesVpcConfig` wholesale, losing the group).
    """
    from moto.ec2.models import ec2_backends
    from moto.eks import models as eks
    from moto.moto_api._internal import mock_random as random

    original_create = eks.EKSBackend.create_cluster
    original_delete = eks.EKSBackend.delete_cluster
    original_update = eks.EKSBackend.update_cluster_config

    def create_cluster(self, name, role_arn, resources_vpc_config, *args, **kwargs):
        cluster = original_create(self, name, role_arn, resources_vpc_config, *args, **kwargs)
        # Every cluster has its own OIDC issuer (moto drew one per process, so two clusters
        # in one server could not each have an IAM OIDC provider).
        issuer_id = random.get_random_hex(32).upper()
        cluster.identity = {
            "oidc": {"issuer": f"https://oidc.eks.{self.region_name}.amazonaws.com/id/{issuer_id}"}
        }
        ec2 = ec2_backends[self.account_id][self.region_name]
        subnets = (resources_vpc_config or {}).get("subnetIds") or []
        if subnets:
            vpc_id = ec2.get_subnet(subnets[0]).vpc_id
            group_name = f"eks-cluster-sg-{name}-{random.get_random_string(10, lower_case=True)}"
            group = ec2.create_security_group(
                name=group_name,
                description=(
                    "EKS created security group applied to ENI that is attached to EKS Control "
                    "Plane master nodes, as well as any managed workloads."
                ),
                vpc_id=vpc_id,
                tags={
                    "Name": group_name,
                    "aws:eks:cluster-name": name,
                    f"kubernetes.io/cluster/{name}": "owned",
                },
            )
            cluster.resources_vpc_config = {
                **resources_vpc_config,
                "clusterSecurityGroupId": group.id,
                "vpcId": vpc_id,
            }
        return cluster

    def delete_cluster(self, name):
        cluster = original_delete(self, name)
        group_id = (cluster.resources_vpc_config or {}).get("clusterSecurityGroupId")
        if group_id:
            try:
                ec2_backends[self.account_id][self.region_name].delete_security_group(
                    group_id=group_id
                )
            except Exception:  # noqa: BLE001 - AWS leaves a group still in use behind too
                pass
        return cluster

    def update_cluster_config(self, name, resources_vpc_config, *args, **kwargs):
        cluster = self.clusters.get(name)
        if cluster is not None and resources_vpc_config:
            resources_vpc_config = {**(cluster.resources_vpc_config or {}), **resources_vpc_config}
        return original_update(self, name, resources_vpc_config, *args, **kwargs)

    eks.EKSBackend.create_cluster = create_cluster
    eks.EKSBackend.delete_cluster = delete_cluster
    eks.EKSBackend.update_cluster_config = update_cluster_config


def patch_elasticache() -> None:
    """ElastiCache replication groups the way AWS keeps them.

    moto 5.2 ignores `NumCacheClusters` when `ReplicasPerNodeGroup` is not given (a group created
    with two clusters reports one member, so every later read looked like drift), keeps a deleted
    group `deleting` forever, and answers HTTP 500 to DeleteCacheSubnetGroup (not implemented).
    AWS reports one member per requested cluster, removes a deleted group after a while (the
    fault proxy can show `deleting` for a scaled duration), and deletes an unused cache subnet
    group (`CacheSubnetGroupInUse` while a group uses it).
    """
    from moto.elasticache import models, responses
    from moto.elasticache.exceptions import CacheSubnetGroupNotFound, ElastiCacheException
    from moto.core.responses import EmptyResult

    class CacheSubnetGroupInUse(ElastiCacheException):
        code = "CacheSubnetGroupInUse"

        def __init__(self, name: str):
            super().__init__(f"Cache subnet group {name} is currently in use by a cache cluster.")

    original_members = models.ReplicationGroup._set_node_members_clusters_disabled

    def members_disabled(
        self,
        member_clusters,
        replication_group_id,
        replication_group_domain,
        node_group,
        preferred_cache_cluster_azs,
        num_cache_clusters,
        replicas_per_node_group,
    ):
        if not replicas_per_node_group and num_cache_clusters and int(num_cache_clusters) > 1:
            replicas_per_node_group = int(num_cache_clusters) - 1
        return original_members(
            self,
            member_clusters,
            replication_group_id,
            replication_group_domain,
            node_group,
            preferred_cache_cluster_azs,
            num_cache_clusters,
            replicas_per_node_group,
        )

    models.ReplicationGroup._set_node_members_clusters_disabled = members_disabled

    original_delete = models.ElastiCacheBackend.delete_replication_group

    def delete_replication_group(self, replication_group_id, retain_primary_cluster):
        group = original_delete(self, replication_group_id, retain_primary_cluster)
        self.replication_groups.pop(replication_group_id, None)
        return group

    models.ElastiCacheBackend.delete_replication_group = delete_replication_group

    def delete_cache_subnet_group(self, cache_subnet_group_name):
        if cache_subnet_group_name not in self.cache_subnet_groups:
            raise CacheSubnetGroupNotFound(cache_subnet_group_name)
        for group in self.replication_groups.values():
            if getattr(group, "cache_subnet_group_name", None) == cache_subnet_group_name:
                raise CacheSubnetGroupInUse(cache_subnet_group_name)
        return self.cache_subnet_groups.pop(cache_subnet_group_name)

    models.ElastiCacheBackend.delete_cache_subnet_group = delete_cache_subnet_group

    def delete_cache_subnet_group_response(self):
        self.elasticache_backend.delete_cache_subnet_group(self._get_param("CacheSubnetGroupName"))
        return EmptyResult()

    responses.ElastiCacheResponse.delete_cache_subnet_group = delete_cache_subnet_group_response


def main() -> int:
    patch_moto()
    patch_eks_cluster_security_group()
    patch_elasticache()
    from moto.server import main as moto_main

    sys.argv[0] = "moto_server"
    return moto_main()


if __name__ == "__main__":
    sys.exit(main())
