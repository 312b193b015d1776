package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/loopback"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/internal/tlsservice"
)

const (
	zone     = loopback.Zone
	mailHost = "mail.example.test"
	certName = "mail"
)

// world is the demo's little internet on 127.0.0.1 (internal/loopback):
// Pebble as the CA, a signed zone on three authoritative servers taking
// RFC 2136 updates, a caching, validating resolver in front of them, and
// an SMTP service with STARTTLS serving daneroll's live set, with a
// daneroll configuration that ties them together.
type world struct {
	lb      *loopback.World
	dir     string // everything the demo writes
	state   string // daneroll's state_dir
	cfgFile string
	port    string // the SMTP service's port
	dns     *dnstest.Cluster
	// resolver is daneroll's [dns] resolver, as a DANE client's would be.
	resolver *dnstest.Resolver
	pebble   *pebbletest.Pebble
	svc      *tlsservice.Server
	start    time.Time // for "+1.234s" stamps in the final history check
}

// worldOptions are the demo's knobs.
type worldOptions struct {
	dir       string
	pebbleBin string
	ttl       int           // tlsa_ttl, seconds
	lag       time.Duration // how late the third server copies the primary
	reloadPID int           // the process that reloads the service on SIGHUP
	say       func(format string, args ...any)
}

// startWorld starts every part and says what it started; on error the
// parts already started are stopped.
func startWorld(ctx context.Context, o worldOptions) (*world, error) {
	lb, err := loopback.Start(ctx, loopback.Options{
		Dir:      o.dir,
		Pebble:   &pebbletest.Options{Binary: o.pebbleBin},
		Services: []loopback.ServiceOptions{{Name: "smtp", Cert: certName, Hostname: mailHost}},
		Config: &loopback.ConfigOptions{
			Certificates: []loopback.CertificateOptions{{Name: certName, Domains: []string{mailHost}, Policy: "rollover", TTL: o.ttl}},
			Reload:       []string{"kill", "-HUP", strconv.Itoa(o.reloadPID)},
		},
	})
	if err != nil {
		return nil, err
	}
	svc := lb.Service("smtp")
	w := &world{lb: lb, dir: lb.Dir, state: lb.StateDir, cfgFile: lb.ConfigFile, port: svc.Port, dns: lb.DNS,
		resolver: lb.Resolver, pebble: lb.Pebble, svc: svc.Server, start: lb.Started}

	// A secondary that copies each change late, as real ones do after a
	// NOTIFY and a zone transfer: daneroll must wait for it, not assume.
	w.dns.SetLag(2, o.lag)
	for i, a := range w.dns.Addrs() {
		role := "primary, takes TSIG-signed RFC 2136 updates"
		if i > 0 {
			role = "secondary"
		}
		if i == 2 {
			role = fmt.Sprintf("secondary, copies every change %s late", o.lag)
		}
		o.say("ns%d  %-16s %s", i+1, a, role)
	}
	o.say("zone %s signed (ECDSA P-256, NSEC); its DS, the trust anchor:", strings.TrimSuffix(zone, "."))
	o.say("     %s", rrLine(w.dns.DS()))
	// The resolver asks the three servers, keeps each answer for its TTL
	// and sets the AD bit for what validates from the DS. daneroll's
	// status asks it, as [dns] resolver.
	o.say("res  %-16s validating resolver: asks ns1-ns3, caches for the TTL, the DS as trust anchor", w.resolver.Addr())
	o.say("CA   %-16s Pebble, Let's Encrypt's test CA; validates dns-01 by asking ns1", hostPortOf(w.pebble.Directory))
	o.say("SMTP %-16s STARTTLS with state/live/%s; reloads on SIGHUP to pid %d", w.svc.Addr(), certName, o.reloadPID)
	return w, nil
}

// owner is the TLSA record's name.
func (w *world) owner() string { return "_" + w.port + "._tcp." + mailHost + "." }

// endpoint is the service as daneroll's probe names it.
func (w *world) endpoint() string {
	return "smtp://" + mailHost + ":" + w.port + "?connect=127.0.0.1"
}

// close stops every part, last started first.
func (w *world) close() {
	if w.lb != nil {
		w.lb.Close()
	}
}

func hostPortOf(url string) string {
	s := strings.TrimPrefix(url, "https://")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	return s
}

// rrLine is a record on one line with single spaces, as people write them.
func rrLine(rr dns.RR) string { return strings.Join(strings.Fields(rr.String()), " ") }
