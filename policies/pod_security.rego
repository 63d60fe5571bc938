# The system namespace (where the control plane runs: `controlplane.namespace`, `system` by
# default) enforces the `restricted` Pod Security Standard, everywhere.
package stacksmith.pod_security

import rego.v1

import data.stacksmith.lib

baseline := input.platform.baseline

default system_name := "system"

system_name := name if {
	name := input.platform.controlplane.namespace
	is_string(name)
}

deny contains lib.finding("baseline", "the stack has no `baseline`: the system namespace would get no Pod Security level") if {
	not is_object(baseline)
}

deny contains lib.finding(sprintf("baseline.namespace.%v", [system_name]), sprintf("the baseline creates no `%v` namespace for the control plane (`baseline.namespaces`)", [system_name])) if {
	is_object(baseline)
	not system_namespace
}

system_namespace := ns if {
	some ns in baseline.namespaces
	ns.name == system_name
}

deny contains lib.finding(ns.address, sprintf("namespace `%v` enforces Pod Security `%v`, it must be `restricted` (`baseline.pod_security.%v`)", [system_name, level, system_name])) if {
	ns := system_namespace
	level := object.get(ns, "pod_security", null)
	level != "restricted"
}
