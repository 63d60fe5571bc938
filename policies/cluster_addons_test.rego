package stacksmith.cluster_addons_test

import rego.v1

import data.stacksmith.cluster_addons

addon(name, configuration) := {"address": sprintf("cluster.addon.%v", [name]), "type": "aws.eks.addon", "action": "create", "after": {"addon_name": name, "configuration": configuration}}

plan(environment, addons) := {
	"stack": {"name": "s", "environment": environment},
	"resources": addons,
	"platform": {
		"baseline": {"namespaces": [], "network_policies": {"address": "baseline.network_policy.default_deny", "mode": "default-deny"}},
		"controlplane": {"address": "controlplane.deployment", "autoscaling": {"min": 2, "max": 4}},
	},
}

enforcing := addon("vpc-cni", {"enableNetworkPolicy": "true"})

metrics := addon("metrics-server", {})

test_enforced_policies_and_metrics_server_passes if {
	count(cluster_addons.deny) == 0 with input as plan("production", [enforcing, metrics])
	count(cluster_addons.warn) == 0 with input as plan("production", [enforcing, metrics])
}

test_no_vpc_cni_is_denied_in_production if {
	denies := cluster_addons.deny with input as plan("production", [metrics])
	some d in denies
	d.address == "baseline.network_policy.default_deny"
	contains(d.msg, "would not be enforced")
}

test_network_policy_turned_off_is_denied if {
	off := addon("vpc-cni", {"enableNetworkPolicy": "false"})
	denies := cluster_addons.deny with input as plan("production", [off, metrics])
	some d in denies
	contains(d.msg, "enableNetworkPolicy")
}

test_autoscaling_without_metrics_server_is_denied if {
	denies := cluster_addons.deny with input as plan("production", [enforcing])
	some d in denies
	d.address == "controlplane.deployment"
	contains(d.msg, "metrics-server")
}

test_elsewhere_it_is_a_warning if {
	count(cluster_addons.deny) == 0 with input as plan("dev", [])
	count(cluster_addons.warn) == 2 with input as plan("dev", [])
}
