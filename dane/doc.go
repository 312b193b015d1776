// Package dane computes, publishes, confirms and verifies DANE TLSA records.
//
// # Records
//
// [TLSA] is the data of one record (usage, selector, matching type and the
// association data); it is computed from a certificate, a chain or a bare key
// for every combination RFC 6698 defines, and read from and written to
// zone-file text.
//
// # Publishing
//
// A [Publisher] adds and deletes single records in a zone: Cloudflare
// (package dane/cloudflare), RFC 2136 dynamic updates with TSIG
// (dane/rfc2136), or a person editing a zone file (dane/manual). Every
// operation is idempotent: adding a record that exists and deleting one that
// does not both succeed, and nothing is ever replaced in place. The same
// publishers serve ACME dns-01 challenges (TXT records).
//
// # Confirming
//
// A change counts only once every authoritative server of the zone serves it:
// see [Confirmer]. The hold that follows is computed from the TTLs a resolver
// may still be holding, never a fixed sleep.
package dane
