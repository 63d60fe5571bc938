package stacksmith.worker_pools_test

import rego.v1

import data.stacksmith.worker_pools

pool(image) := {"tier": "standard", "concurrency": 4, "replicas": {"min": 1, "max": 10}, "tasks_per_replica": 10, "image": image}

controlplane(image) := {"address": "controlplane.deployment", "worker_namespace": "workload", "worker_pools": {"default": pool(image)}}

baseline(level) := {
	"namespaces": [
		{"address": "baseline.namespace.system", "name": "system", "pod_security": "restricted"},
		{"address": "baseline.namespace.workload", "name": "workload", "pod_security": level},
	],
	"network_policies": {"address": "baseline.network_policy.default_deny", "mode": "default-deny"},
}

plan(environment, cp, level) := {"stack": {"name": "s", "environment": environment}, "resources": [], "platform": {"controlplane": cp, "baseline": baseline(level)}}

test_pinned_pool_in_a_restricted_namespace_passes if {
	count(worker_pools.deny) == 0 with input as plan("production", controlplane("docker.io/library/debian:12-slim"), "restricted")
	count(worker_pools.warn) == 0 with input as plan("production", controlplane("docker.io/library/debian:12-slim"), "restricted")
}

test_digest_is_pinned if {
	image := "registry.local:5000/ci@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	count(worker_pools.deny) == 0 with input as plan("production", controlplane(image), "restricted")
}

test_latest_pool_image_is_denied if {
	denies := worker_pools.deny with input as plan("dev", controlplane("ghcr.io/acme/ci:latest"), "restricted")
	some d in denies
	d.address == "controlplane.worker_pool.default"
	contains(d.msg, "not pinned")
}

test_untagged_pool_image_is_denied if {
	denies := worker_pools.deny with input as plan("production", controlplane("registry.local:5000/ci"), "restricted")
	some d in denies
	d.address == "controlplane.worker_pool.default"
}

test_baseline_worker_namespace_is_denied_in_production if {
	denies := worker_pools.deny with input as plan("production", controlplane("debian:12-slim"), "baseline")
	some d in denies
	d.address == "baseline.namespace.workload"
	contains(d.msg, "must be `restricted`")
}

test_baseline_worker_namespace_is_a_warning_elsewhere if {
	count(worker_pools.deny) == 0 with input as plan("dev", controlplane("debian:12-slim"), "baseline")
	warnings := worker_pools.warn with input as plan("dev", controlplane("debian:12-slim"), "baseline")
	some w in warnings
	w.address == "baseline.namespace.workload"
}

test_no_control_plane_passes if {
	count(worker_pools.deny) == 0 with input as {"stack": {"name": "s", "environment": "production"}, "resources": [], "platform": {"controlplane": null, "baseline": baseline("baseline")}}
}
