package stacksmith.pod_security_test

import rego.v1

import data.stacksmith.pod_security

plan(baseline) := {"stack": {"name": "s", "environment": "production"}, "resources": [], "platform": {"baseline": baseline}}

baseline(level) := {
	"namespaces": [
		{"address": "baseline.namespace.system", "name": "system", "pod_security": level},
		{"address": "baseline.namespace.workload", "name": "workload", "pod_security": "baseline"},
	],
	"network_policies": {"address": "baseline.network_policy.default_deny", "mode": "default-deny"},
}

test_restricted_system_namespace_passes if {
	count(pod_security.deny) == 0 with input as plan(baseline("restricted"))
}

test_baseline_level_on_system_is_denied if {
	denies := pod_security.deny with input as plan(baseline("baseline"))
	some d in denies
	d.address == "baseline.namespace.system"
	contains(d.msg, "`baseline`")
}

test_system_namespace_without_level_is_denied if {
	denies := pod_security.deny with input as plan(baseline(null))
	some d in denies
	d.address == "baseline.namespace.system"
}

test_missing_system_namespace_is_denied if {
	no_system := object.union(baseline("restricted"), {"namespaces": [{"address": "baseline.namespace.workload", "name": "workload", "pod_security": "restricted"}]})
	denies := pod_security.deny with input as plan(no_system)
	some d in denies
	d.address == "baseline.namespace.system"
}

test_missing_baseline_is_denied if {
	denies := pod_security.deny with input as plan(null)
	some d in denies
	d.address == "baseline"
}

test_the_control_planes_namespace_is_the_system_namespace if {
	ops := object.union(baseline("restricted"), {"namespaces": [{"address": "baseline.namespace.ops", "name": "ops", "pod_security": "baseline"}]})
	input_doc := object.union(plan(ops), {"platform": {"controlplane": {"namespace": "ops"}}})
	denies := pod_security.deny with input as input_doc
	some d in denies
	d.address == "baseline.namespace.ops"
	contains(d.msg, "`ops` enforces Pod Security `baseline`")
}
