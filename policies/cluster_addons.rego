# What the stack declares in the cluster must work on EKS, which installs neither of these:
# - the baseline's default-deny NetworkPolicies are enforced only by the `vpc-cni` add-on running
#   with `enableNetworkPolicy: "true"` (the provisioner sets it; a stack may not turn it off);
#   without it they are decorative;
# - the API's HorizontalPodAutoscaler (`controlplane.autoscaling`) reads pod CPU from the
#   `metrics-server` add-on; without it the API never scales.
# Denied in production, warnings elsewhere (the `local` stack runs against an emulator).
package stacksmith.cluster_addons

import rego.v1

import data.stacksmith.lib

addon(name) := r if {
	some r in lib.resources("aws.eks.addon")
	r.after.addon_name == name
}

default_deny if input.platform.baseline.network_policies.mode == "default-deny"

network_policy_enforced if {
	r := addon("vpc-cni")
	value := object.get(r.after, ["configuration", "enableNetworkPolicy"], null)
	lower(sprintf("%v", [value])) == "true"
}

violations contains lib.finding("baseline.network_policy.default_deny", "the baseline's network policies would not be enforced: EKS enforces NetworkPolicies only through the `vpc-cni` add-on with `enableNetworkPolicy: \"true\"` (add `vpc-cni` to `cluster.addons`, and do not set `enableNetworkPolicy` to false)") if {
	default_deny
	not network_policy_enforced
}

violations contains lib.finding("controlplane.deployment", "the API's HorizontalPodAutoscaler has no metrics: EKS does not install metrics-server (add `metrics-server: latest` to `cluster.addons`)") if {
	is_object(input.platform.controlplane)
	is_object(object.get(input.platform.controlplane, "autoscaling", null))
	not addon("metrics-server")
}

deny contains v if {
	lib.production
	some v in violations
}

warn contains v if {
	not lib.production
	some v in violations
}
