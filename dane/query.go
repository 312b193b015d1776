package dane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Querier sends single DNS questions to one server at a time.
type Querier struct {
	// Timeout bounds each exchange, the UDP question and its TCP retry
	// each; default 3s. A deadline of the context given to Query, when
	// earlier, wins.
	Timeout time.Duration
	// Exchange replaces the network (tests); nil uses miekg/dns.
	Exchange func(ctx context.Context, m *dns.Msg, network, addr string) (*dns.Msg, error)
}

// Query asks server (host:port) one question, over UDP with EDNS0 and the
// DO bit, and again over TCP when the answer is truncated. recursion sets
// RD: authoritative checks never ask for recursion.
func (q *Querier) Query(ctx context.Context, server, name string, qtype uint16, recursion bool) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = recursion
	// 1232 bytes fits any path without fragmentation (DNS Flag Day 2020);
	// larger answers come truncated and are asked again over TCP, as is
	// a UDP question that got no answer (a path dropping fragments).
	m.SetEdns0(1232, true)
	resp, err := q.exchange(ctx, m, "udp", server)
	var ne net.Error
	if err == nil && resp.Truncated || err != nil && errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
		resp, err = q.exchange(ctx, m, "tcp", server)
	}
	if err != nil {
		return nil, fmt.Errorf("ask %s for %s %s: %w", server, name, dns.TypeToString[qtype], err)
	}
	return resp, nil
}

func (q *Querier) exchange(ctx context.Context, m *dns.Msg, network, server string) (*dns.Msg, error) {
	timeout := q.Timeout
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	// The context's deadline, when earlier, wins over Timeout: miekg/dns
	// sets the connection's deadlines from both.
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if q.Exchange != nil {
		return q.Exchange(ctx, m, network, server)
	}
	c := &dns.Client{Net: network, Timeout: timeout, UDPSize: 1232}
	co, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	// miekg/dns obeys the context's deadline but not its cancellation;
	// closing the connection is what ends a wait that nobody needs any
	// more. A passed deadline is left to the read deadline, whose error
	// says "timeout".
	stop := context.AfterFunc(ctx, func() {
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			co.Close()
		}
	})
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, m.Copy(), co)
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		return nil, ctx.Err()
	}
	return resp, err
}

// isUnreachable reports whether err means this host has no route to the
// address (typically IPv6 on a v4-only host), as opposed to a server that is
// down or slow.
func isUnreachable(err error) bool {
	return errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT)
}

// rrsetOf returns the records of type t at owner in section, and the RRSIGs
// that cover them.
func rrsetOf(section []dns.RR, owner string, t uint16) (rrs []dns.RR, sigs []*dns.RRSIG) {
	for _, rr := range section {
		h := rr.Header()
		if !strings.EqualFold(h.Name, owner) {
			continue
		}
		if h.Rrtype == t {
			rrs = append(rrs, rr)
		}
		if sig, ok := rr.(*dns.RRSIG); ok && sig.TypeCovered == t {
			sigs = append(sigs, sig)
		}
	}
	return rrs, sigs
}

// soaOf returns the SOA in the answer or authority section.
func soaOf(m *dns.Msg) *dns.SOA {
	for _, sec := range [][]dns.RR{m.Answer, m.Ns} {
		for _, rr := range sec {
			if soa, ok := rr.(*dns.SOA); ok {
				return soa
			}
		}
	}
	return nil
}

// negativeTTL is how long a resolver may cache "no such record" from this
// SOA (RFC 2308 §5): the smaller of the SOA's TTL and its MINIMUM, each read
// as NegativeCacheTTL says.
func negativeTTL(soa *dns.SOA) uint32 {
	return min(NegativeCacheTTL(soa.Hdr.Ttl), NegativeCacheTTL(soa.Minttl))
}

// hostPort adds port 53 when addr has no port.
func hostPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(strings.Trim(addr, "[]"), "53")
}
