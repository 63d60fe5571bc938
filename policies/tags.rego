# Required tags on every taggable resource: `managed-by`, `team` and `environment` everywhere,
# `cost-center` too in production. Empty values count as missing.
package stacksmith.tags

import rego.v1

import data.stacksmith.lib

required_everywhere := {"managed-by", "team", "environment"}

required_in_production := {"cost-center"}

missing(r, tag) if {
	tags := lib.after(r, "tags", null)
	is_object(tags)
	not has_value(tags, tag)
}

has_value(tags, tag) if trim_space(tags[tag]) != ""

taggable contains r if {
	some r in input.resources
	r.action != "delete"
	is_object(lib.after(r, "tags", null))
}

deny contains lib.finding(r.address, sprintf("missing required tag `%s`", [tag])) if {
	some r in taggable
	some tag in required_everywhere
	missing(r, tag)
}

deny contains lib.finding(r.address, sprintf("missing required tag `%s` (required in production)", [tag])) if {
	lib.production
	some r in taggable
	some tag in required_in_production
	missing(r, tag)
}
