package dane

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// TXTChallenge publishes ACME dns-01 records through a Publisher and waits
// until every authoritative server serves them, with the same confirmation
// TLSA records get. It implements acme.TXTPublisher.
type TXTChallenge struct {
	Publisher Publisher
	Confirmer *Confirmer
	// TTL of the challenge records; default 60.
	TTL uint32
	// Timeout bounds the wait for confirmation; default 10 minutes.
	Timeout time.Duration
	// Track, when set, is told of a record before it is added (present
	// true) and after it is deleted (present false), so that a record
	// left behind by a killed run can be found and removed by the next.
	// An error from it stops PresentTXT before anything is added.
	Track func(rr *dns.TXT, present bool) error
}

func (c *TXTChallenge) record(fqdn, value string) *dns.TXT {
	ttl := c.TTL
	if ttl == 0 {
		ttl = 60
	}
	return &dns.TXT{
		Hdr: dns.RR_Header{Name: strings.ToLower(dns.Fqdn(fqdn)), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl},
		Txt: []string{value},
	}
}

// PresentTXT adds the record and returns once every authoritative server
// serves it.
func (c *TXTChallenge) PresentTXT(ctx context.Context, fqdn, value string) error {
	rr := c.record(fqdn, value)
	if c.Track != nil {
		if err := c.Track(rr, true); err != nil {
			return fmt.Errorf("dns-01: %w", err)
		}
	}
	if err := c.Publisher.Add(ctx, rr); err != nil {
		return fmt.Errorf("dns-01: %s: %w", c.Publisher, err)
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	if _, err := c.Confirmer.Wait(ctx, []Want{{Owner: rr.Hdr.Name, Type: dns.TypeTXT, Present: []dns.RR{rr}}}, timeout); err != nil {
		return fmt.Errorf("dns-01: confirm %s: %w", rr.Hdr.Name, err)
	}
	return nil
}

// CleanUpTXT removes the record. Its removal is not waited for: a stale
// challenge record harms nobody.
func (c *TXTChallenge) CleanUpTXT(ctx context.Context, fqdn, value string) error {
	rr := c.record(fqdn, value)
	if err := c.Publisher.Delete(ctx, rr); err != nil {
		return fmt.Errorf("dns-01: %s: %w", c.Publisher, err)
	}
	if c.Track != nil {
		if err := c.Track(rr, false); err != nil {
			return fmt.Errorf("dns-01: %w", err)
		}
	}
	return nil
}
