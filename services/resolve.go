package services

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/oneline"
)

// A DANE client (postfix with smtp_dns_support_level = dane) finds the
// addresses of an MX host through its own validating resolver; a probe that
// means to see what such a client sees must do the same, not ask
// /etc/hosts or whatever /etc/resolv.conf names.

const (
	// resolveTry bounds one exchange with the resolver, UDP or TCP; ctx
	// may end it sooner.
	resolveTry = 3 * time.Second
	// ednsSize is the UDP payload size offered (DNS Flag Day 2020): an
	// answer that does not fit comes truncated and is asked again over
	// TCP.
	ednsSize = 1232
	// maxCNAMEs bounds a CNAME chain, loops included.
	maxCNAMEs = 8
	// maxAnswerRRs bounds the answer section accepted: far more than any
	// sane host has addresses, few enough to keep a hostile answer cheap.
	maxAnswerRRs = 100
	// dialMinimum is the least time each address gets when a deadline is
	// shared among several (as net.Dialer does), so that one silent
	// address does not leave the others no time.
	dialMinimum = 2 * time.Second
)

// resolveError is an error of Resolve: "resolve mail.example.org via
// 127.0.0.1:53: NXDOMAIN".
type resolveError struct {
	host, resolver string
	reason         string
	err            error // underlying: network, context; may be nil
}

func (e *resolveError) Error() string {
	if e.resolver == "" {
		return "resolve " + e.host + ": " + e.reason
	}
	return "resolve " + e.host + " via " + e.resolver + ": " + e.reason
}

func (e *resolveError) Unwrap() error { return e.err }

// Resolve looks up host's A and AAAA records through resolver (host:port,
// port 53 when none is given), never /etc/hosts or /etc/resolv.conf, and
// reports whether every answer carried the AD bit (DNSSEC-validated): both
// answers, the denial of a missing address family included. The addresses
// are the A records, then the AAAA records, in the resolver's order. An IP
// literal is returned as it is, and is not secure: no answer vouches for
// it.
//
// Both questions must succeed: an answer the resolver could not give
// (SERVFAIL, which a validating resolver also says for a bogus answer) or
// NXDOMAIN is an error, as is no address at all.
func Resolve(ctx context.Context, resolver, host string) (addrs []netip.Addr, secure bool, err error) {
	fail := func(reason string, err error) ([]netip.Addr, bool, error) {
		return nil, false, &resolveError{host: oneline.Clean(host, 100), resolver: oneline.Clean(resolver, 100), reason: reason, err: err}
	}
	name, err := normalizeHost(host)
	if err != nil {
		return fail(err.Error(), nil)
	}
	if a, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{a}, false, nil
	}
	server, err := resolverAddr(resolver)
	if err != nil {
		return fail(err.Error(), nil)
	}
	var v4, v6 lookupResult
	var wg sync.WaitGroup
	wg.Go(func() { v4 = lookup(ctx, server, name, dns.TypeA) })
	v6 = lookup(ctx, server, name, dns.TypeAAAA)
	wg.Wait()

	// NXDOMAIN is about the name, whichever question met it first.
	for _, r := range []lookupResult{v4, v6} {
		if r.rcode == dns.RcodeNameError {
			return fail("NXDOMAIN"+r.ede, nil)
		}
	}
	for _, r := range []lookupResult{v4, v6} {
		if r.err != nil {
			reason := r.reason
			if ctxErr := ctx.Err(); ctxErr != nil {
				reason = "timeout"
				if errors.Is(ctxErr, context.Canceled) {
					reason = "canceled"
				}
				return fail(reason, errors.Join(ctxErr, r.err))
			}
			return fail(reason, r.err)
		}
	}
	addrs = append(v4.addrs, v6.addrs...)
	if len(addrs) == 0 {
		if v4.unspecified || v6.unspecified {
			// What blocking resolvers answer; dialled, it reaches this
			// very host.
			return fail("only the unspecified address (0.0.0.0 or ::), which is no host's", nil)
		}
		return fail("no A or AAAA records", nil)
	}
	return addrs, v4.ad && v6.ad, nil
}

// resolverAddr checks a resolver address and adds port 53 when it has none.
func resolverAddr(resolver string) (string, error) {
	if resolver == "" {
		return "", errors.New("no resolver given")
	}
	if _, _, err := net.SplitHostPort(resolver); err == nil {
		return resolver, nil
	}
	h := strings.TrimSuffix(strings.TrimPrefix(resolver, "["), "]")
	if h == "" || strings.ContainsAny(h, " /[]") {
		return "", fmt.Errorf("resolver %q is not host:port", resolver)
	}
	return net.JoinHostPort(h, "53"), nil
}

// lookupResult is the outcome of one question.
type lookupResult struct {
	addrs       []netip.Addr
	ad          bool
	unspecified bool // an address 0.0.0.0 or :: was left out
	rcode       int
	ede         string // " (Extended DNS Error …)" when the resolver gave one
	reason      string // why err, for the message
	err         error
}

// lookup asks server for name's records of qtype (A or AAAA) and follows
// CNAMEs within the answer.
func lookup(ctx context.Context, server, name string, qtype uint16) lookupResult {
	qt := dns.TypeToString[qtype]
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.RecursionDesired = true
	// AD in a query asks for AD in the answer (RFC 6840 §5.7); DO asks for
	// DNSSEC records, which some resolvers need to say AD at all.
	q.AuthenticatedData = true
	q.SetEdns0(ednsSize, true)

	r, err := exchange(ctx, "udp", server, q)
	var ne net.Error
	if err == nil && r.Truncated || errors.Is(err, dns.ErrBuf) || err != nil && errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
		// Too big for UDP (truncated, or sent whole by a server that
		// ignored our size), or UDP lost on the way (a path dropping
		// fragments, a firewall): TCP.
		r, err = exchange(ctx, "tcp", server, q)
	}
	if err != nil {
		return lookupResult{reason: exchangeFailure(err) + " asking for " + qt, err: err}
	}
	if reason := checkReply(q, r); reason != "" {
		return lookupResult{reason: "malformed answer for " + qt + ": " + reason, err: errors.New(reason)}
	}
	res := lookupResult{ad: r.AuthenticatedData, rcode: r.Rcode, ede: extendedError(r)}
	switch r.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return res
	default:
		res.reason = rcodeName(r.Rcode) + " for " + qt + res.ede
		res.err = errors.New(res.reason)
		return res
	}
	owner, reason := followCNAMEs(r.Answer, q.Question[0].Name)
	if reason != "" {
		res.reason, res.err = reason, errors.New(reason)
		return res
	}
	for _, rr := range r.Answer {
		h := rr.Header()
		if h.Class != dns.ClassINET || h.Rrtype != qtype || !strings.EqualFold(h.Name, owner) {
			continue
		}
		var a netip.Addr
		switch rr := rr.(type) {
		case *dns.A:
			a, _ = netip.AddrFromSlice(rr.A.To4())
		case *dns.AAAA:
			a, _ = netip.AddrFromSlice(rr.AAAA.To16())
		}
		switch {
		case !a.IsValid():
		case a.IsUnspecified():
			res.unspecified = true
		case !slices.Contains(res.addrs, a):
			res.addrs = append(res.addrs, a)
		}
	}
	return res
}

// exchange sends q to server over network and returns the answer, within
// resolveTry and ctx.
func exchange(ctx context.Context, network, server string, q *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, resolveTry)
	defer cancel()
	c := &dns.Client{Net: network, UDPSize: ednsSize, Timeout: resolveTry}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// miekg/dns heeds ctx's deadline, not its cancellation: a deadline in
	// the past unblocks it.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	return r, err
}

// exchangeFailure says in a few words why an exchange failed.
func exchangeFailure(err error) string {
	var se *os.SyscallError
	switch {
	case isTimeout(err):
		return "no answer (timeout)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, dns.ErrId):
		return "answer with the wrong ID"
	case errors.As(err, &se):
		return se.Err.Error()
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		err = opErr.Err
	}
	return oneline.Clean(err.Error(), 200)
}

// checkReply returns why r is not an answer to q, or "".
func checkReply(q, r *dns.Msg) string {
	switch {
	case !r.Response:
		return "not a response"
	case r.Opcode != dns.OpcodeQuery:
		return "opcode " + dns.OpcodeToString[r.Opcode]
	case len(r.Question) == 0 && r.Rcode != dns.RcodeSuccess:
		// Some servers drop the question from a refusal; the rcode says
		// enough.
	case len(r.Question) != 1:
		return fmt.Sprintf("%d questions", len(r.Question))
	case !strings.EqualFold(r.Question[0].Name, q.Question[0].Name) ||
		r.Question[0].Qtype != q.Question[0].Qtype || r.Question[0].Qclass != q.Question[0].Qclass:
		return "answers another question: " + oneline.Clean(r.Question[0].Name, 100) + " " + dns.TypeToString[r.Question[0].Qtype]
	case len(r.Answer) > maxAnswerRRs:
		return fmt.Sprintf("%d records, more than %d", len(r.Answer), maxAnswerRRs)
	}
	return ""
}

// followCNAMEs returns the name whose records answer a question for name:
// the end of the CNAME chain that starts at name, within answer.
func followCNAMEs(answer []dns.RR, name string) (owner, reason string) {
	owner = name
	for hops := 0; ; hops++ {
		var next []string
		for _, rr := range answer {
			c, ok := rr.(*dns.CNAME)
			if ok && c.Hdr.Class == dns.ClassINET && strings.EqualFold(c.Hdr.Name, owner) &&
				!slices.ContainsFunc(next, func(n string) bool { return strings.EqualFold(n, c.Target) }) {
				next = append(next, c.Target)
			}
		}
		switch {
		case len(next) == 0:
			return owner, ""
		case len(next) > 1:
			return "", fmt.Sprintf("malformed answer: %d CNAMEs at %s", len(next), oneline.Clean(owner, 100))
		case hops == maxCNAMEs:
			return "", fmt.Sprintf("CNAME chain longer than %d (a loop?)", maxCNAMEs)
		}
		owner = next[0]
	}
}

// rcodeName is "SERVFAIL", "REFUSED"… or the number of an unknown rcode.
func rcodeName(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return fmt.Sprintf("rcode %d", rcode)
}

// extendedError returns the resolver's Extended DNS Error (RFC 8914) as
// " (DNSSEC Bogus: signature expired)", or "". Validating resolvers use it
// to say why they answer SERVFAIL, which otherwise says nothing.
func extendedError(r *dns.Msg) string {
	opt := r.IsEdns0()
	if opt == nil {
		return ""
	}
	for _, o := range opt.Option {
		ede, ok := o.(*dns.EDNS0_EDE)
		if !ok {
			continue
		}
		s, known := dns.ExtendedErrorCodeToString[ede.InfoCode]
		if !known {
			s = fmt.Sprintf("extended error %d", ede.InfoCode)
		}
		if ede.ExtraText != "" {
			s += ": " + ede.ExtraText
		}
		return " (" + oneline.Clean(s, 150) + ")"
	}
	return ""
}

// ResolverDialer returns a ProbeOptions.DialContext that resolves names
// through resolver (see Resolve) and dials each address in turn until one
// connects, sharing ctx's deadline among them; IP literals are dialled
// directly. "tcp4" and "tcp6" dial only addresses of their family.
func ResolverDialer(resolver string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: err}
		}
		if _, err := netip.ParseAddr(host); err == nil {
			return d.DialContext(ctx, network, addr)
		}
		addrs, _, err := Resolve(ctx, resolver, host)
		if err != nil {
			return nil, err
		}
		switch {
		case strings.HasSuffix(network, "4"):
			addrs = slices.DeleteFunc(addrs, func(a netip.Addr) bool { return !a.Unmap().Is4() })
		case strings.HasSuffix(network, "6"):
			addrs = slices.DeleteFunc(addrs, func(a netip.Addr) bool { return a.Unmap().Is4() })
		}
		if len(addrs) == 0 {
			return nil, &resolveError{host: host, resolver: resolver, reason: "no address for " + network}
		}
		fails := &dialError{addr: addr}
		for i, a := range addrs {
			actx, cancel := shareDeadline(ctx, len(addrs)-i)
			c, err := d.DialContext(actx, network, net.JoinHostPort(a.String(), port))
			cancel()
			if err == nil {
				return c, nil
			}
			fails.tried = append(fails.tried, a)
			fails.errs = append(fails.errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return nil, fails
	}
}

// shareDeadline returns ctx with a deadline that leaves time for the
// remaining addresses after this one, but at least dialMinimum.
func shareDeadline(ctx context.Context, remaining int) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok || remaining <= 1 {
		return ctx, func() {}
	}
	left := time.Until(dl)
	share := max(left/time.Duration(remaining), min(dialMinimum, left))
	return context.WithTimeout(ctx, share)
}

// dialError is ResolverDialer's error when no address connected:
// "connect mail.example.org:25: 192.0.2.25 connection refused, 2001:db8::25
// network is unreachable".
type dialError struct {
	addr  string
	tried []netip.Addr
	errs  []error
}

// maxDialErrors bounds the addresses a dialError names.
const maxDialErrors = 4

func (e *dialError) Error() string {
	var b strings.Builder
	b.WriteString("connect ")
	b.WriteString(e.addr)
	b.WriteString(": ")
	for i, err := range e.errs {
		if i == maxDialErrors {
			fmt.Fprintf(&b, " and %d more", len(e.errs)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.tried[i].String())
		b.WriteByte(' ')
		b.WriteString(dialFailure(err))
	}
	return b.String()
}

func (e *dialError) Unwrap() []error { return e.errs }

// dialFailure says in a few words why one address did not connect.
func dialFailure(err error) string {
	var se *os.SyscallError
	switch {
	case isTimeout(err), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &se):
		return se.Err.Error()
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		err = opErr.Err
	}
	return oneline.Clean(err.Error(), 100)
}
