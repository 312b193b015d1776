package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/internal/tlsservice"
)

const (
	zone     = "example.test."
	mailHost = "mail.example.test"
	certName = "mail"
	tsigName = "daneroll."
)

// world is the demo's little internet on 127.0.0.1: Pebble as the CA, a
// signed zone on three authoritative servers taking RFC 2136 updates, a
// caching, validating resolver in front of them, and an SMTP service with
// STARTTLS serving daneroll's live set, with a daneroll configuration that
// ties them together.
type world struct {
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

	closers []func() // run in reverse by close
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

// startWorld starts every part; on error the parts already started are
// stopped.
func startWorld(ctx context.Context, o worldOptions) (_ *world, err error) {
	w := &world{dir: o.dir, state: filepath.Join(o.dir, "state"), start: time.Now()}
	defer func() {
		if err != nil {
			w.close()
		}
	}()

	secret, err := newSecret()
	if err != nil {
		return nil, err
	}
	w.dns, err = dnstest.Start(dnstest.Options{
		Origin:      zone,
		Records:     []string{"mail 60 IN A 127.0.0.1"},
		Secondaries: 2,
		Signed:      true,
		TSIG:        map[string]string{tsigName: secret},
		SOATTL:      60,
		NegativeTTL: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	w.closers = append(w.closers, func() { w.dns.Close() })
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

	// A resolver as DANE clients use: it asks the three servers, keeps
	// each answer for its TTL and sets the AD bit for what validates from
	// the DS. daneroll's status asks it, as [dns] resolver.
	w.resolver, err = dnstest.StartResolver(w.dns.ResolverOptions())
	if err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	w.closers = append(w.closers, func() { w.resolver.Close() })
	o.say("res  %-16s validating resolver: asks ns1-ns3, caches for the TTL, the DS as trust anchor", w.resolver.Addr())

	w.pebble, err = pebbletest.Start(ctx, pebbletest.Options{
		Dir:       filepath.Join(o.dir, "pebble"),
		Binary:    o.pebbleBin,
		DNSServer: w.dns.Primary(),
	})
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	w.closers = append(w.closers, func() { w.pebble.Close() })
	o.say("CA   %-16s Pebble, Let's Encrypt's test CA; validates dns-01 by asking ns1", hostPortOf(w.pebble.Directory))

	w.svc, err = tlsservice.Start(tlsservice.Options{
		Addr:     "127.0.0.1:0",
		LiveDir:  filepath.Join(w.state, "live", certName),
		Protocol: "smtp",
		Hostname: mailHost,
	})
	if err != nil {
		return nil, fmt.Errorf("smtp service: %w", err)
	}
	w.closers = append(w.closers, func() { w.svc.Close() })
	sctx, cancel := context.WithCancel(context.Background())
	w.closers = append(w.closers, cancel)
	w.svc.ReloadOnSignal(sctx, syscall.SIGHUP)
	_, w.port, _ = net.SplitHostPort(w.svc.Addr())
	o.say("SMTP %-16s STARTTLS with state/live/%s; reloads on SIGHUP to pid %d", w.svc.Addr(), certName, o.reloadPID)

	if err := w.writeConfig(secret, o); err != nil {
		return nil, err
	}
	return w, nil
}

// newSecret makes a fresh TSIG secret, so nothing secret is in the source.
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("tsig secret: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

func (w *world) writeConfig(secret string, o worldOptions) error {
	secretFile := filepath.Join(w.dir, "tsig.secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("tsig secret: %w", err)
	}
	var ns []string
	for _, a := range w.dns.Addrs() {
		ns = append(ns, strconv.Quote(a))
	}
	w.cfgFile = filepath.Join(w.dir, "daneroll.toml")
	cfg := fmt.Sprintf(`# Written by the daneroll demo: everything on 127.0.0.1.
state_dir = %q

[acme]
directory = %q
email = "hostmaster@example.test"
accept_tos = true
ca_roots = [%q]

[dns]
resolver = %q
confirm_timeout = "1m"

[dns.publisher.ns1]
type = "rfc2136"
server = %q
tsig_name = %q
tsig_algorithm = "hmac-sha256"
tsig_secret_file = %q
nameservers = [%s]

[[certificate]]
name = %q
domains = [%q]
challenge = "dns-01"
publisher = "ns1"
key_policy = "rollover"
tlsa = ["_%s._tcp.%s"]
tlsa_ttl = %d
services = ["smtp"]

[service.smtp]
reload = ["kill", "-HUP", "%d"]
reload_timeout = "10s"
probe = ["smtp://%s:%s?connect=127.0.0.1"]
`, w.state, w.pebble.Directory, w.pebble.RootsFile, w.resolver.Addr(), w.dns.Primary(), tsigName, secretFile, strings.Join(ns, ", "),
		certName, mailHost, w.port, mailHost, o.ttl, o.reloadPID, mailHost, w.port)
	if err := os.WriteFile(w.cfgFile, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// owner is the TLSA record's name.
func (w *world) owner() string { return "_" + w.port + "._tcp." + mailHost + "." }

// endpoint is the service as daneroll's probe names it.
func (w *world) endpoint() string {
	return "smtp://" + mailHost + ":" + w.port + "?connect=127.0.0.1"
}

// close stops every part, last started first.
func (w *world) close() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		w.closers[i]()
	}
	w.closers = nil
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
