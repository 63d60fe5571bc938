# The baseline's `system` namespace (where the control plane runs) enforces the `restricted` Pod
# Security Standard, everywhere.
package stacksmith.pod_security

import rego.v1

import data.stacksmith.lib

baseline := input.platform.baseline

deny contains lib.finding("baseline", "the stack has no `baseline`: the system namespace would get no Pod Security level") if {
	not is_object(baseline)
}

deny contains lib.finding("baseline.namespace.system", "the baseline creates no `system` namespace (`baseline.namespaces`)") if {
	is_object(baseline)
	not system_namespace
}

system_namespace := ns if {
	some ns in baseline.namespaces
	ns.name == "system"
}

deny contains lib.finding(ns.address, sprintf("namespace `system` enforces Pod Security `%v`, it must be `restricted` (`baseline.pod_security.system`)", [level])) if {
	ns := system_namespace
	level := object.get(ns, "pod_security", null)
	level != "restricted"
}
