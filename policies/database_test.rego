package stacksmith.database_test

import rego.v1

import data.stacksmith.database

safe := {"storage_encrypted": true, "deletion_protection": true, "multi_az": true, "backup_retention_period": 30}

plan(environment, after) := {
	"stack": {"name": "s", "environment": environment},
	"resources": [{"address": "database.instance", "type": "aws.rds.instance", "action": "create", "after": after}],
}

denied(environment, after, fragment) if {
	denies := database.deny with input as plan(environment, after)
	some d in denies
	d.address == "database.instance"
	contains(d.msg, fragment)
}

test_safe_production_database_passes if {
	count(database.deny) == 0 with input as plan("production", safe)
	count(database.warn) == 0 with input as plan("production", safe)
}

test_unencrypted_database_is_denied_everywhere if {
	denied("production", object.union(safe, {"storage_encrypted": false}), "not encrypted")
	denied("dev", object.union(safe, {"storage_encrypted": false}), "not encrypted")
}

test_production_database_without_deletion_protection_is_denied if {
	denied("production", object.union(safe, {"deletion_protection": false}), "deletion protection")
}

test_single_az_production_database_is_denied if {
	denied("production", object.union(safe, {"multi_az": false}), "multi-AZ")
}

test_short_backups_are_denied_in_production if {
	denied("production", object.union(safe, {"backup_retention_period": 6}), "backups for 6 days")
	count(database.deny) == 0 with input as plan("production", object.union(safe, {"backup_retention_period": 7}))
}

test_the_stack_named_production_counts_as_production if {
	input_doc := {"stack": {"name": "production", "environment": null}, "resources": plan("x", object.union(safe, {"multi_az": false})).resources}
	denies := database.deny with input as input_doc
	count(denies) == 1
}

test_non_production_database_is_only_warned_about if {
	relaxed := object.union(safe, {"deletion_protection": false, "multi_az": false, "backup_retention_period": 1})
	count(database.deny) == 0 with input as plan("dev", relaxed)
	warnings := database.warn with input as plan("dev", relaxed)
	some w in warnings
	w.address == "database.instance"
}
