package stacksmith.cache_test

import rego.v1

import data.stacksmith.cache

safe := {"at_rest_encryption_enabled": true, "transit_encryption_enabled": true, "auth_token": "(sensitive)"}

plan(after, sensitive) := {
	"stack": {"name": "s", "environment": "dev"},
	"resources": [{"address": "cache.replication_group", "type": "aws.elasticache.replication_group", "action": "update", "after": after, "sensitive": sensitive}],
}

denied(after, sensitive, fragment) if {
	denies := cache.deny with input as plan(after, sensitive)
	some d in denies
	d.address == "cache.replication_group"
	contains(d.msg, fragment)
}

test_encrypted_cache_with_auth_token_passes if {
	count(cache.deny) == 0 with input as plan(safe, ["auth_token"])
}

test_cache_unencrypted_at_rest_is_denied if {
	denied(object.union(safe, {"at_rest_encryption_enabled": false}), ["auth_token"], "at rest")
}

test_cache_unencrypted_in_transit_is_denied if {
	denied(object.union(safe, {"transit_encryption_enabled": false}), ["auth_token"], "in transit")
}

test_cache_without_auth_token_is_denied if {
	denied(object.remove(safe, ["auth_token"]), [], "auth token")
}
