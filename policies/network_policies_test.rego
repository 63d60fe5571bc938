package stacksmith.network_policies_test

import rego.v1

import data.stacksmith.network_policies

plan(mode) := {"stack": {"name": "s", "environment": "dev"}, "resources": [], "platform": {"baseline": {
	"namespaces": [],
	"network_policies": {"address": "baseline.network_policy.default_deny", "mode": mode},
}}}

test_default_deny_passes if {
	count(network_policies.deny) == 0 with input as plan("default-deny")
}

test_no_network_policies_are_denied if {
	denies := network_policies.deny with input as plan("none")
	some d in denies
	d.address == "baseline.network_policy.default_deny"
}

test_missing_baseline_is_denied if {
	denies := network_policies.deny with input as {"stack": {"name": "s"}, "resources": [], "platform": {"baseline": null}}
	some d in denies
	d.address == "baseline"
}
