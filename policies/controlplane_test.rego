package stacksmith.controlplane_test

import rego.v1

import data.stacksmith.controlplane

safe := {
	"address": "controlplane.deployment",
	"image": "ghcr.io/acme/stacksmith-controlplane:1.0.0",
	"replicas": 3,
	"resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
	"autoscaling": {"min": 3, "max": 10, "cpu_percent": 70},
	"rate_limit": {"per_key_rps": 100, "burst": 200, "global_rps": 1000},
}

plan(environment, cp) := {"stack": {"name": "s", "environment": environment}, "resources": [], "platform": {"controlplane": cp}}

denied(cp, fragment) if {
	denies := controlplane.deny with input as plan("production", cp)
	some d in denies
	d.address == "controlplane.deployment"
	contains(d.msg, fragment)
}

test_safe_control_plane_passes if {
	count(controlplane.deny) == 0 with input as plan("production", safe)
	count(controlplane.warn) == 0 with input as plan("production", safe)
}

test_no_control_plane_passes if {
	count(controlplane.deny) == 0 with input as plan("production", null)
}

test_image_pinned_by_digest_passes if {
	digest := "ghcr.io/acme/stacksmith-controlplane@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	count(controlplane.deny) == 0 with input as plan("production", object.union(safe, {"image": digest}))
}

test_registry_port_is_not_a_tag if {
	denied(object.union(safe, {"image": "registry.local:5000/stacksmith-controlplane"}), "not pinned")
	count(controlplane.deny) == 0 with input as plan("production", object.union(safe, {"image": "registry.local:5000/stacksmith-controlplane:1.2.3"}))
}

test_latest_image_is_denied if {
	denied(object.union(safe, {"image": "ghcr.io/acme/stacksmith-controlplane:latest"}), "not pinned")
}

test_untagged_image_is_denied if {
	denied(object.union(safe, {"image": "ghcr.io/acme/stacksmith-controlplane"}), "not pinned")
}

test_single_replica_is_denied_in_production if {
	denied(object.union(safe, {"replicas": 1}), "runs 1 replica")
}

test_autoscaling_to_one_replica_is_denied_in_production if {
	denied(object.union(safe, {"autoscaling": {"min": 1, "max": 3, "cpu_percent": 70}}), "scale down to 1")
}

test_single_replica_is_a_warning_elsewhere if {
	count(controlplane.deny) == 0 with input as plan("dev", object.union(safe, {"replicas": 1}))
	count(controlplane.warn) == 1 with input as plan("dev", object.union(safe, {"replicas": 1}))
}

test_null_limits_are_denied if {
	denied(object.union(safe, {"resources": {"requests": {"cpu": "1"}, "limits": null}}), "limit for cpu")
}

test_missing_memory_limit_is_denied if {
	# object.union merges objects recursively: replace `resources` as a whole.
	denied(object.union(object.remove(safe, ["resources"]), {"resources": {"limits": {"cpu": "1"}}}), "limit for memory")
}

test_missing_resources_are_denied if {
	denied(object.remove(safe, ["resources"]), "limit for memory")
}

test_missing_rate_limit_is_denied if {
	denied(object.union(safe, {"rate_limit": null}), "rate limit")
}

with_tiers(tiers) := object.union(plan("production", safe), {"stack": {"name": "s", "environment": "production", "config": {"baseline": {"priority_classes": tiers}}}})

test_tiers_below_the_api_pass if {
	count(controlplane.deny) == 0 with input as with_tiers({"standard": 500, "premium": 999999})
}

test_a_tier_at_the_api_priority_is_denied if {
	denies := controlplane.deny with input as with_tiers({"standard": 500, "urgent": 1000000})
	some d in denies
	d.address == "baseline.priority_class.urgent"
	contains(d.msg, "could preempt the API")
}
