# Helpers shared by the guardrails. Not a policy itself: it declares no `deny` or `warn`.
package stacksmith.lib

import rego.v1

# The stack is production: its `environment` tag says so, or it is the `production` stack.
production if input.stack.environment == "production"

production if input.stack.name == "production"

# The resources of a type that exist after the plan (every action but `delete`).
resources(type) := [r |
	some r in input.resources
	r.type == type
	r.action != "delete"
]

# The value of a property after the plan, or `fallback` when it is absent.
after(r, name, fallback) := object.get(r.after, name, fallback)

# A finding naming the address it is about.
finding(address, msg) := {"address": address, "msg": msg}
