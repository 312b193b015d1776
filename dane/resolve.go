package dane

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/miekg/dns"
)

// Lookup is a validating resolver's answer for a TLSA RRset.
type Lookup struct {
	Owner   string
	Records []TLSA
	// Secure is the resolver's AD bit: it validated the answer with
	// DNSSEC. DANE applies only to secure records (RFC 6698 §4.1).
	Secure bool
	Rcode  int
}

// LookupTLSA asks the validating resolver for the TLSA records at owner.
func LookupTLSA(ctx context.Context, q *Querier, resolver, owner string) (*Lookup, error) {
	owner = strings.ToLower(dns.Fqdn(owner))
	m, err := q.Query(ctx, hostPort(resolver), owner, dns.TypeTLSA, true)
	if err != nil {
		return nil, err
	}
	l := &Lookup{Owner: owner, Secure: m.AuthenticatedData, Rcode: m.Rcode}
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return l, fmt.Errorf("resolver %s answers %s for %s TLSA", resolver, dns.RcodeToString[m.Rcode], owner)
	}
	for _, rr := range m.Answer {
		if t, ok := rr.(*dns.TLSA); ok {
			rec, err := FromRR(t)
			if err != nil {
				return l, err
			}
			l.Records = append(l.Records, rec)
		}
	}
	return l, nil
}

// LookupMX returns the MX host names of domain, most preferred first, and
// whether the resolver validated the answer.
func LookupMX(ctx context.Context, q *Querier, resolver, domain string) ([]string, bool, error) {
	m, err := q.Query(ctx, hostPort(resolver), domain, dns.TypeMX, true)
	if err != nil {
		return nil, false, err
	}
	if m.Rcode != dns.RcodeSuccess {
		return nil, m.AuthenticatedData, fmt.Errorf("resolver %s answers %s for %s MX", resolver, dns.RcodeToString[m.Rcode], domain)
	}
	var mx []*dns.MX
	for _, rr := range m.Answer {
		if x, ok := rr.(*dns.MX); ok {
			mx = append(mx, x)
		}
	}
	sort.SliceStable(mx, func(i, j int) bool { return mx[i].Preference < mx[j].Preference })
	var hosts []string
	for _, x := range mx {
		if x.Mx == "." {
			// RFC 7505 null MX.
			return nil, m.AuthenticatedData, fmt.Errorf("%s accepts no mail (null MX)", domain)
		}
		hosts = append(hosts, strings.TrimSuffix(x.Mx, "."))
	}
	return hosts, m.AuthenticatedData, nil
}

// SystemResolver is the first name server of /etc/resolv.conf.
func SystemResolver() (string, error) {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cc.Servers) == 0 {
		return "", fmt.Errorf("no resolver in /etc/resolv.conf: set [dns] resolver")
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}
