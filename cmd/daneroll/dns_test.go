package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/daneroll/daneroll/internal/cftest"
	"github.com/daneroll/daneroll/internal/dnstest"
)

// Recognisable secrets, so that a script can assert that no output shows
// them. The TSIG secret is base64 (as TSIG requires) made of letters and
// digits only, so that it is also a plain regular expression.
const (
	canaryTSIG  = "DANEROLLcanaryTSIGsecret0123456789abcdefghij"
	canaryToken = "DANEROLLcanaryCloudflareToken01234567890"
	testZone    = "example.test."
)

// TestDNSScript runs the dns_* scripts, which each get an in-process
// DNSSEC-signed zone example.test on three authoritative servers that take
// TSIG-signed RFC 2136 updates, and an in-process Cloudflare API for the
// same zone, behind an in-process caching, validating resolver with the
// zone's DS as trust anchor. Setup exports:
//
//	NS1 NS2 NS3   the servers' host:port (NS1 is the primary)
//	RESOLVER      the resolver's host:port, for [dns] resolver
//	TSIG_SECRET   the secret of TSIG key "daneroll."
//	CF_API        the Cloudflare API's base URL
//	CF_TOKEN      the API token it accepts
//
// and the command "served OWNER", which prints the TLSA records each server
// serves at OWNER, one "nsN USAGE SELECTOR MATCHING DATA" line each.
func TestDNSScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Files: scripts(t, func(name string) bool { return strings.HasPrefix(name, "dns_") }),
		Setup: func(env *testscript.Env) error {
			if err := setupCommon(env); err != nil {
				return err
			}
			_, err := startDNS(env)
			if err != nil {
				return err
			}
			cf := cftest.NewServer(canaryToken, strings.TrimSuffix(testZone, "."))
			env.Defer(cf.Close)
			env.Setenv("CF_API", cf.URL)
			env.Setenv("CF_TOKEN", canaryToken)
			return nil
		},
		Cmds: commands(),
	})
}

// clusterKey finds a script's DNS servers in its Values.
type clusterKey struct{}

// startDNS starts the signed three-server zone and a validating resolver
// in front of it for a script, and exports NS1, NS2, NS3, RESOLVER and
// TSIG_SECRET.
func startDNS(env *testscript.Env) (*dnstest.Cluster, error) {
	c, err := dnstest.Start(dnstest.Options{
		Origin:      testZone,
		Records:     []string{"mail 60 IN A 127.0.0.1"},
		Secondaries: 2,
		Signed:      true,
		TSIG:        map[string]string{"daneroll.": canaryTSIG},
		SOATTL:      60,
		NegativeTTL: 1,
	})
	if err != nil {
		return nil, err
	}
	env.Defer(func() { c.Close() })
	for i, a := range c.Addrs() {
		env.Setenv(fmt.Sprintf("NS%d", i+1), a)
	}
	// The resolver asks all three servers, as a real one picks among the
	// zone's name servers, and caches what it got for its TTL.
	r, err := dnstest.StartResolver(c.ResolverOptions())
	if err != nil {
		return nil, err
	}
	env.Defer(func() { r.Close() })
	env.Setenv("RESOLVER", r.Addr())
	env.Setenv("TSIG_SECRET", canaryTSIG)
	env.Values[clusterKey{}] = c
	return c, nil
}

// cmdServed prints the TLSA records every server of the zone serves at an
// owner name, asked without recursion as a confirmation would.
func cmdServed(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: served OWNER")
	}
	c, ok := ts.Value(clusterKey{}).(*dnstest.Cluster)
	if !ok {
		ts.Fatalf("served: this script has no DNS servers")
	}
	var out strings.Builder
	for i, addr := range c.Addrs() {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(args[0]), dns.TypeTLSA)
		m.RecursionDesired = false
		r, err := dns.Exchange(m, addr)
		ts.Check(err)
		for _, rr := range r.Answer {
			if t, ok := rr.(*dns.TLSA); ok {
				fmt.Fprintf(&out, "ns%d %d %d %d %s\n", i+1, t.Usage, t.Selector, t.MatchingType, t.Certificate)
			}
		}
	}
	_, err := ts.Stdout().Write([]byte(out.String()))
	ts.Check(err)
}
