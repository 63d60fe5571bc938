# The EKS API endpoint: a public endpoint must be restricted to listed CIDRs, never 0.0.0.0/0 (an
# empty `public_cidrs` means 0.0.0.0/0 to AWS). Denied in production, a warning elsewhere.
package stacksmith.cluster_endpoint

import rego.v1

import data.stacksmith.lib

open_to_world(r) if {
	lib.after(r, "endpoint_public_access", false) == true
	"0.0.0.0/0" in lib.after(r, "public_access_cidrs", [])
}

open_to_world(r) if {
	lib.after(r, "endpoint_public_access", false) == true
	count(lib.after(r, "public_access_cidrs", [])) == 0
}

violations contains lib.finding(r.address, "public cluster endpoint is open to 0.0.0.0/0 (list trusted ranges in `cluster.endpoint.public_cidrs` or set `public: false`)") if {
	some r in lib.resources("aws.eks.cluster")
	open_to_world(r)
}

deny contains v if {
	lib.production
	some v in violations
}

warn contains v if {
	not lib.production
	some v in violations
}
