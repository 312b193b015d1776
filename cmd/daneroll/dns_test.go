package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/loopback"
)

// Recognisable secrets, so that a script can assert that no output shows
// them. The TSIG secret is base64 (as TSIG requires) made of letters and
// digits only, so that it is also a plain regular expression.
const (
	canaryTSIG  = "DANEROLLcanaryTSIGsecret0123456789abcdefghij"
	canaryToken = "DANEROLLcanaryCloudflareToken01234567890"
	testZone    = loopback.Zone
)

// TestDNSScript runs the dns_* scripts, which each get an in-process
// DNSSEC-signed zone example.test on three authoritative servers that take
// TSIG-signed RFC 2136 updates, and an in-process Cloudflare API for the
// same zone, behind an in-process caching, validating resolver with the
// zone's DS as trust anchor (internal/loopback without Pebble or services).
// Setup exports:
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
			_, err := startWorld(env, loopback.Options{Cloudflare: &loopback.CloudflareOptions{Token: canaryToken}})
			return err
		},
		Cmds: commands(),
	})
}

// clusterKey finds a script's DNS servers in its Values.
type clusterKey struct{}

// startWorld starts a loopback world for a script with the canary TSIG
// secret, stops it when the script ends, exports what the world's Env says
// and keeps its servers for served.
func startWorld(env *testscript.Env, o loopback.Options) (*loopback.World, error) {
	o.TSIGSecret = canaryTSIG
	w, err := loopback.Start(context.Background(), o)
	if err != nil {
		return nil, err
	}
	env.Defer(w.Close)
	for k, v := range w.Env() {
		env.Setenv(k, v)
	}
	env.Values[clusterKey{}] = w.DNS
	return w, nil
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
	per, err := loopback.Served(c.Addrs(), args[0])
	ts.Check(err)
	var out strings.Builder
	for i, rrs := range per {
		for _, t := range rrs {
			fmt.Fprintf(&out, "ns%d %d %d %d %s\n", i+1, t.Usage, t.Selector, t.MatchingType, t.Certificate)
		}
	}
	_, err = ts.Stdout().Write([]byte(out.String()))
	ts.Check(err)
}
