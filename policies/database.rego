# Databases: storage always encrypted; in production also deletion-protected, multi-AZ and with
# at least 7 days of automated backups (short backups are a warning elsewhere).
package stacksmith.database

import rego.v1

import data.stacksmith.lib

minimum_backup_days := 7

databases := lib.resources("aws.rds.instance")

deny contains lib.finding(r.address, "storage is not encrypted (`storage_encrypted` must be true)") if {
	some r in databases
	lib.after(r, "storage_encrypted", false) != true
}

deny contains lib.finding(r.address, "production database without deletion protection (set `database.deletion_protection: true`)") if {
	lib.production
	some r in databases
	lib.after(r, "deletion_protection", false) != true
}

deny contains lib.finding(r.address, "production database is not multi-AZ (set `database.multi_az: true`)") if {
	lib.production
	some r in databases
	lib.after(r, "multi_az", false) != true
}

deny contains lib.finding(r.address, msg) if {
	lib.production
	some r in databases
	days := lib.after(r, "backup_retention_period", 0)
	not days >= minimum_backup_days
	msg := sprintf("production database keeps backups for %v days, at least %v are required (`database.backup_retention_days`)", [days, minimum_backup_days])
}

warn contains lib.finding(r.address, msg) if {
	not lib.production
	some r in databases
	days := lib.after(r, "backup_retention_period", 0)
	not days >= minimum_backup_days
	msg := sprintf("database keeps backups for %v days; production requires at least %v", [days, minimum_backup_days])
}
