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
// see [Confirmer]. The servers of a zone are asked in parallel and every
// round is bounded ([Confirmer.Timeout], the timeout given to
// [Confirmer.Wait]), so a server that never answers costs one timeout, not
// one per question. The hold that follows is computed from the TTLs a
// resolver may still be holding, never a fixed sleep.
//
// # TTLs from DNS answers
//
// The TTLs in answers come from servers daneroll does not control, so they
// are read as a resolver reads them before they decide a hold: a TTL with
// the top bit set counts as 0 (RFC 2181 §8), a positive TTL (an RRset, an
// NSEC or NSEC3 record) is capped at [MaxCacheTTL], 7 days, BIND's
// max-cache-ttl default and the largest among common resolvers (unbound and
// PowerDNS Recursor default to 1 day), and a negative TTL from an SOA at
// [MaxNegativeTTL], 3 hours, BIND's max-ncache-ttl default (unbound's is
// 1 hour). [HoldFor] therefore never exceeds [MaxHold] and never overflows.
package dane
