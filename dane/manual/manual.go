// Package manual is the publisher for people who edit their zone files by
// hand: it says exactly which lines to add or remove, and daneroll then
// waits, as for any publisher, until every authoritative server serves the
// change.
package manual

import (
	"context"
	"fmt"
	"strings"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/dane"
)

// Instruction is one change for the operator to make.
type Instruction struct {
	Action string // "add" or "remove"
	Zone   string
	Line   string // the record in zone-file form
}

func (i Instruction) String() string {
	return fmt.Sprintf("%s in zone %s: %s", i.Action, strings.TrimSuffix(i.Zone, "."), i.Line)
}

// Publisher reads records from the zone's authoritative servers and hands
// every change to Notify.
type Publisher struct {
	confirmer *dane.Confirmer
	notify    func(Instruction)
}

// New returns a manual publisher. conf finds and asks the authoritative
// servers; notify is told each change to make (the command line prints it).
func New(conf *dane.Confirmer, notify func(Instruction)) *Publisher {
	return &Publisher{confirmer: conf, notify: notify}
}

func (p *Publisher) String() string { return "manual" }

// Records returns what the first authoritative server that answers serves.
func (p *Publisher) Records(ctx context.Context, owner string, rrtype uint16) ([]dns.RR, error) {
	_, rrs, err := p.lookup(ctx, owner, rrtype)
	return rrs, err
}

func (p *Publisher) lookup(ctx context.Context, owner string, rrtype uint16) (string, []dns.RR, error) {
	owner = strings.ToLower(dns.Fqdn(owner))
	zone, err := p.confirmer.ZoneOf(ctx, owner)
	if err != nil {
		return "", nil, fmt.Errorf("manual: %w", err)
	}
	servers, err := p.confirmer.Servers(ctx, zone)
	if err != nil {
		return "", nil, fmt.Errorf("manual: %w", err)
	}
	q := p.confirmer.Querier
	if q == nil {
		q = &dane.Querier{}
	}
	// What the zone holds is the union of what its servers serve: a
	// lagging or lame server must not hide a record (which would keep a
	// stale record from being removed).
	var (
		out      []dns.RR
		answered int
		lastErr  error
	)
	for _, s := range servers {
		if s.Err != nil {
			lastErr = s.Err
			continue
		}
		m, err := q.Query(ctx, s.Addr, owner, rrtype, false)
		if err == nil && (!m.Authoritative || (m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError)) {
			err = fmt.Errorf("%s does not answer authoritatively for %s (%s)", s.Addr, owner, dns.RcodeToString[m.Rcode])
		}
		if err != nil {
			lastErr = err
			continue
		}
		answered++
		for _, rr := range m.Answer {
			if rr.Header().Rrtype == rrtype && strings.EqualFold(rr.Header().Name, owner) && !contains(out, rr) {
				out = append(out, rr)
			}
		}
	}
	if answered == 0 {
		return "", nil, fmt.Errorf("manual: no authoritative server of %s answered: %w", zone, lastErr)
	}
	return zone, out, nil
}

// Add asks the operator to add rr, unless it is already served.
func (p *Publisher) Add(ctx context.Context, rr dns.RR) error {
	zone, have, err := p.lookup(ctx, rr.Header().Name, rr.Header().Rrtype)
	if err != nil {
		return err
	}
	if !contains(have, rr) {
		p.notify(Instruction{Action: "add", Zone: zone, Line: rr.String()})
	}
	return nil
}

// Delete asks the operator to remove rr, if it is served.
func (p *Publisher) Delete(ctx context.Context, rr dns.RR) error {
	zone, have, err := p.lookup(ctx, rr.Header().Name, rr.Header().Rrtype)
	if err != nil {
		return err
	}
	if contains(have, rr) {
		p.notify(Instruction{Action: "remove", Zone: zone, Line: rr.String()})
	}
	return nil
}

func contains(set []dns.RR, rr dns.RR) bool {
	for _, x := range set {
		if dns.IsDuplicate(x, rr) {
			return true
		}
	}
	return false
}
