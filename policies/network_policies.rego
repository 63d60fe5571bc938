# The baseline installs default-deny network policies, everywhere.
package stacksmith.network_policies

import rego.v1

import data.stacksmith.lib

baseline := input.platform.baseline

deny contains lib.finding("baseline", "the stack has no `baseline`: no default-deny network policies would be installed") if {
	not is_object(baseline)
}

deny contains lib.finding(baseline.network_policies.address, sprintf("network policies are `%v`, they must be `default-deny` (`baseline.network_policies`)", [baseline.network_policies.mode])) if {
	is_object(baseline)
	baseline.network_policies.mode != "default-deny"
}
