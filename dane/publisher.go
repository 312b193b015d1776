package dane

import (
	"context"

	"github.com/miekg/dns"
)

// A Publisher changes single records in DNS zones it controls.
//
// Owner names are fully qualified, with the trailing dot, in lower case.
// Records are compared by owner, type and data; the TTL is not part of a
// record's identity (dns.IsDuplicate).
type Publisher interface {
	// Records returns the records of type rrtype at owner as the
	// publisher's source of truth (an API, the primary server) has them.
	Records(ctx context.Context, owner string, rrtype uint16) ([]dns.RR, error)
	// Add adds rr. When an identical record exists Add succeeds and changes
	// nothing; it never replaces or deletes other records at the name.
	Add(ctx context.Context, rr dns.RR) error
	// Delete removes exactly rr, never another record at the name. When no
	// such record exists Delete succeeds.
	Delete(ctx context.Context, rr dns.RR) error
	// String names the publisher in messages ("cloudflare", "rfc2136
	// 192.0.2.53:53").
	String() string
}
