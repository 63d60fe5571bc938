# Caches (ElastiCache replication groups), everywhere: encrypted at rest, encrypted in transit, and
# protected by an auth token.
package stacksmith.cache

import rego.v1

import data.stacksmith.lib

caches := lib.resources("aws.elasticache.replication_group")

deny contains lib.finding(r.address, "cache is not encrypted at rest (set `cache.at_rest_encryption: true`)") if {
	some r in caches
	lib.after(r, "at_rest_encryption_enabled", false) != true
}

deny contains lib.finding(r.address, "cache is not encrypted in transit (set `cache.transit_encryption: true`)") if {
	some r in caches
	lib.after(r, "transit_encryption_enabled", false) != true
}

deny contains lib.finding(r.address, "cache has no auth token (it comes with `cache.transit_encryption: true`)") if {
	some r in caches
	not has_auth_token(r)
}

has_auth_token(r) if "auth_token" in r.sensitive

has_auth_token(r) if {
	token := lib.after(r, "auth_token", "")
	is_string(token)
	token != ""
}
