// Package loopback starts daneroll's little internet on 127.0.0.1: Pebble
// as the CA, the DNSSEC-signed zone example.test on a primary that takes
// TSIG-signed RFC 2136 updates and secondaries that copy it, a caching,
// validating resolver in front of them, optionally the Cloudflare API fake
// serving the same zone, TLS services that serve daneroll's live sets and
// reload on SIGHUP, and a daneroll configuration that ties them together.
//
// The engine tests of rollover, the scripts of cmd/daneroll, the end-to-end
// tests, the demo and the benchmarks all build their world here, so that
// they test against one world and a fix to it reaches them all.
//
// Start is for programs (the demo): it returns errors and leaves the
// stopping to Close. StartT is Start for tests: it fails the test on error
// and stops the world when the test ends. (The real servers — BIND 9,
// unbound, postfix — are internal/rig's.)
package loopback

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/internal/cftest"
	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/internal/tlsservice"
	"github.com/daneroll/daneroll/store"
)

const (
	// Zone is the world's zone.
	Zone = "example.test."
	// TSIGKey is the name of the TSIG key the primary takes updates
	// signed with.
	TSIGKey = "daneroll."
)

// Options configure a world. The zero value is a zone on three servers
// with its resolver, and nothing else.
type Options struct {
	// Dir holds what the world writes: Pebble's files, the secrets and the
	// configuration. Start needs it when Pebble or Config is set; StartT
	// makes a temporary one when it is empty.
	Dir string
	// StateDir is daneroll's state_dir, whose live sets (StateDir/live/CERT)
	// the services serve; default Dir/state.
	StateDir string

	// Servers is the number of authoritative servers: the primary and
	// Servers-1 secondaries that copy it; default 3.
	Servers int
	// Hosts are names in the zone, relative ("mail"), with an A record
	// 127.0.0.1 of TTL 60; default "mail".
	Hosts []string
	// Records are more zone-file lines, names relative to the zone.
	Records []string
	// SOATTL is the SOA's TTL, NegativeTTL its negative-caching TTL, in
	// seconds; default 60 and 1, so that a name daneroll adds is cached as
	// absent for a second at most and holds stay short.
	SOATTL, NegativeTTL uint32
	// TSIGSecret is the base64 secret of TSIGKey; default a fresh random
	// one, so that nothing secret is in the source. Tests that assert a
	// secret never shows give a recognisable one.
	TSIGSecret string

	// Pebble, when set, starts Pebble as the CA. Binary is required (see
	// pebbletest.Build and pebbletest.Main); Dir defaults to Dir/pebble and
	// DNSServer to the zone's primary, so that dns-01 and http-01 are
	// validated through the world's zone.
	Pebble *pebbletest.Options
	// Cloudflare, when set, starts the Cloudflare API fake with the zone.
	Cloudflare *CloudflareOptions
	// Services are the TLS services to start.
	Services []ServiceOptions
	// Config, when set, writes a daneroll configuration for the world to
	// Dir/daneroll.toml and loads it; it needs Pebble.
	Config *ConfigOptions
}

// CloudflareOptions configure the Cloudflare API fake.
type CloudflareOptions struct {
	// Token is the API token it accepts; default a fresh random one.
	Token string
	// Mirror makes the world's servers serve what the API holds, as
	// Cloudflare's name servers do (cftest's API.MirrorTo), so that a
	// change made through the API can be confirmed on them. A
	// configuration's "cf" publisher needs it.
	Mirror bool
}

// ServiceOptions configure a TLS service. It serves the live set of a
// certificate and re-reads it on SIGHUP to this process (every service of
// every world in the process: a reload is only a re-read) and on
// Service.Reload.
type ServiceOptions struct {
	// Name is its [service.NAME] in the configuration; default Protocol.
	Name string
	// Cert is the certificate whose live set it serves; default "mail".
	Cert string
	// Protocol is "smtp" (ESMTP with STARTTLS, the default) or "tls"
	// (implicit TLS).
	Protocol string
	// Hostname is the name it is known by: in its SMTP greeting, its TLSA
	// owner _PORT._tcp.HOSTNAME and its probe; default CERT.example.test.
	Hostname string
}

// World is a running world.
type World struct {
	// Dir and StateDir are Options.Dir and the state_dir.
	Dir, StateDir string
	// ConfigFile is the configuration Options.Config wrote ("" without),
	// Config that file loaded.
	ConfigFile string
	Config     *config.Config
	// TSIGSecret is the secret of TSIGKey, TSIGSecretFile a file that holds
	// it ("" without a configuration).
	TSIGSecret, TSIGSecretFile string

	DNS *dnstest.Cluster
	// Resolver is the validating resolver in front of DNS, with the zone's
	// DS as its trust anchor; the configuration's [dns] resolver.
	Resolver *dnstest.Resolver
	// Pebble is nil without Options.Pebble.
	Pebble *pebbletest.Pebble
	// Cloudflare is the API fake (nil without Options.Cloudflare),
	// CloudflareToken the token it accepts and Mirror, when mirrored, what
	// reports a change that did not reach the servers.
	Cloudflare      *cftest.Server
	CloudflareToken string
	Mirror          *cftest.Mirror
	// Services in the order of Options.Services.
	Services []*Service
	// Started is when the world started, for "+1.234s" stamps.
	Started time.Time

	mu      sync.Mutex // guards closers
	closers []func()
}

// Service is a running TLS service.
type Service struct {
	*tlsservice.Server
	Name, Cert, Protocol, Hostname string
	// Port is the port it listens on at 127.0.0.1.
	Port string
}

// Owner is the service's TLSA owner name, _PORT._tcp.HOSTNAME. (fully
// qualified).
func (s *Service) Owner() string { return "_" + s.Port + "._tcp." + dns.Fqdn(s.Hostname) }

// Endpoint is the service as a daneroll probe names it.
func (s *Service) Endpoint() string {
	return s.Protocol + "://" + s.Hostname + ":" + s.Port + "?connect=127.0.0.1"
}

// TB is the part of testing.TB that StartT uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// StartT starts a world for a test and stops it when the test ends.
func StartT(t TB, o Options) *World {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	w, err := Start(context.Background(), o)
	if err != nil {
		t.Fatalf("loopback world: %v", err)
	}
	t.Cleanup(w.Close)
	return w
}

// Start starts every part of a world; ctx bounds the start. On error the
// parts already started are stopped.
func Start(ctx context.Context, o Options) (_ *World, err error) {
	w := &World{Dir: o.Dir, StateDir: o.StateDir, TSIGSecret: o.TSIGSecret, Started: time.Now()}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	if o.Dir == "" && (o.Pebble != nil || o.Config != nil) {
		return nil, errors.New("Options.Dir is required with Pebble or Config")
	}
	if o.Dir != "" {
		if err := os.MkdirAll(o.Dir, 0o700); err != nil {
			return nil, err
		}
	}
	if w.StateDir == "" {
		w.StateDir = filepath.Join(o.Dir, "state")
	}
	if w.TSIGSecret == "" {
		if w.TSIGSecret, err = newSecret(); err != nil {
			return nil, err
		}
	}
	if err := w.startDNS(o); err != nil {
		return nil, err
	}
	if o.Cloudflare != nil {
		if err := w.startCloudflare(o); err != nil {
			return nil, fmt.Errorf("cloudflare: %w", err)
		}
	}
	if o.Pebble != nil {
		po := *o.Pebble
		if po.Dir == "" {
			po.Dir = filepath.Join(o.Dir, "pebble")
		}
		if po.DNSServer == "" {
			po.DNSServer = w.DNS.Primary()
		}
		if w.Pebble, err = pebbletest.Start(ctx, po); err != nil {
			return nil, fmt.Errorf("pebble: %w", err)
		}
		w.onClose(func() { w.Pebble.Close() })
	}
	if err := w.startServices(o.Services); err != nil {
		return nil, err
	}
	if o.Config != nil {
		if err := w.writeConfig(*o.Config); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	return w, nil
}

func (w *World) startDNS(o Options) error {
	servers := o.Servers
	if servers == 0 {
		servers = 3
	}
	hosts := o.Hosts
	if hosts == nil {
		hosts = []string{"mail"}
	}
	records := make([]string, 0, len(hosts)+len(o.Records))
	for _, h := range hosts {
		records = append(records, h+" 60 IN A 127.0.0.1")
	}
	records = append(records, o.Records...)
	soaTTL, negTTL := o.SOATTL, o.NegativeTTL
	if soaTTL == 0 {
		soaTTL = 60
	}
	if negTTL == 0 {
		negTTL = 1
	}
	var err error
	w.DNS, err = dnstest.Start(dnstest.Options{
		Origin:      Zone,
		Records:     records,
		Secondaries: servers - 1,
		Signed:      true,
		TSIG:        map[string]string{TSIGKey: w.TSIGSecret},
		SOATTL:      soaTTL,
		NegativeTTL: negTTL,
	})
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	w.onClose(func() { w.DNS.Close() })
	// A resolver as DANE clients use: it asks every server, as a real one
	// picks among a zone's name servers, keeps each answer for its TTL and
	// sets the AD bit for what validates from the DS.
	w.Resolver, err = dnstest.StartResolver(w.DNS.ResolverOptions())
	if err != nil {
		return fmt.Errorf("resolver: %w", err)
	}
	w.onClose(func() { w.Resolver.Close() })
	return nil
}

func (w *World) startCloudflare(o Options) error {
	w.CloudflareToken = o.Cloudflare.Token
	if w.CloudflareToken == "" {
		var err error
		if w.CloudflareToken, err = newSecret(); err != nil {
			return err
		}
	}
	w.Cloudflare = cftest.NewServer(w.CloudflareToken, strings.TrimSuffix(Zone, "."))
	w.onClose(w.Cloudflare.Close)
	if o.Cloudflare.Mirror {
		var err error
		if w.Mirror, err = w.Cloudflare.MirrorTo(w.DNS); err != nil {
			return err
		}
	}
	return nil
}

func (w *World) startServices(opts []ServiceOptions) error {
	if len(opts) == 0 {
		return nil
	}
	// One context for every service's signal handler, ended by Close.
	ctx, cancel := context.WithCancel(context.Background())
	w.onClose(cancel)
	for _, so := range opts {
		s := &Service{Name: so.Name, Cert: so.Cert, Protocol: so.Protocol, Hostname: so.Hostname}
		if s.Protocol == "" {
			s.Protocol = "smtp"
		}
		if s.Name == "" {
			s.Name = s.Protocol
		}
		if s.Cert == "" {
			s.Cert = "mail"
		}
		if s.Hostname == "" {
			s.Hostname = s.Cert + "." + strings.TrimSuffix(Zone, ".")
		}
		if w.Service(s.Name) != nil {
			return fmt.Errorf("two services named %q", s.Name)
		}
		var err error
		s.Server, err = tlsservice.Start(tlsservice.Options{
			Addr:     "127.0.0.1:0",
			LiveDir:  filepath.Join(w.StateDir, "live", s.Cert),
			Protocol: s.Protocol,
			Hostname: s.Hostname,
		})
		if err != nil {
			return fmt.Errorf("service %s: %w", s.Name, err)
		}
		w.onClose(func() { s.Close() })
		s.ReloadOnSignal(ctx, syscall.SIGHUP)
		if _, s.Port, err = net.SplitHostPort(s.Addr()); err != nil {
			return fmt.Errorf("service %s: %w", s.Name, err)
		}
		w.Services = append(w.Services, s)
	}
	return nil
}

// newSecret makes a random base64 secret (TSIG, API token).
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("secret: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

func (w *World) onClose(f func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closers = append(w.closers, f)
}

// Close stops every part, the last started first. Closing again does
// nothing.
func (w *World) Close() {
	w.mu.Lock()
	closers := w.closers
	w.closers = nil
	w.mu.Unlock()
	for _, f := range slices.Backward(closers) {
		f()
	}
}

// Service returns the service of that name, or nil.
func (w *World) Service(name string) *Service {
	for _, s := range w.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Env is what a script needs to know about the world, as environment
// variables:
//
//	NS1 … NSn     the servers' host:port (NS1 is the primary)
//	RESOLVER      the resolver's host:port
//	TSIG_SECRET   the secret of TSIG key "daneroll."
//	DIRECTORY     Pebble's ACME directory URL (with Pebble)
//	ROOTS         a PEM file that makes Pebble's HTTPS trusted
//	HTTPPORT      where Pebble validates http-01
//	PORT          the first service's port
//	TESTPID       this process, whose SIGHUP reloads the services
//	CF_API        the Cloudflare fake's base URL (with Cloudflare)
//	CF_TOKEN      the token it accepts
func (w *World) Env() map[string]string {
	env := map[string]string{
		"RESOLVER":    w.Resolver.Addr(),
		"TSIG_SECRET": w.TSIGSecret,
		"TESTPID":     strconv.Itoa(os.Getpid()),
	}
	for i, a := range w.DNS.Addrs() {
		env[fmt.Sprintf("NS%d", i+1)] = a
	}
	if w.Pebble != nil {
		env["DIRECTORY"] = w.Pebble.Directory
		env["ROOTS"] = w.Pebble.RootsFile
		env["HTTPPORT"] = strconv.Itoa(w.Pebble.HTTPPort)
	}
	if len(w.Services) > 0 {
		env["PORT"] = w.Services[0].Port
	}
	if w.Cloudflare != nil {
		env["CF_API"] = w.Cloudflare.URL
		env["CF_TOKEN"] = w.CloudflareToken
	}
	return env
}

// Journal reads certificate cert's journal into v, as daneroll left it; ok
// is false when there is none.
func (w *World) Journal(cert string, v any) (ok bool, err error) {
	s, err := store.OpenReadOnly(w.StateDir)
	if err != nil {
		return false, err
	}
	return s.ReadJSON(store.JournalPath(cert), v)
}

// Served returns, for each of the servers (host:port), the TLSA records it
// serves at owner, asked without recursion as daneroll's confirmation asks.
func Served(servers []string, owner string) ([][]*dns.TLSA, error) {
	out := make([][]*dns.TLSA, len(servers))
	for i, addr := range servers {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(owner), dns.TypeTLSA)
		m.RecursionDesired = false
		r, err := dns.Exchange(m, addr)
		if err != nil {
			return nil, fmt.Errorf("server %d (%s): %w", i, addr, err)
		}
		for _, rr := range r.Answer {
			if t, ok := rr.(*dns.TLSA); ok {
				out[i] = append(out[i], t)
			}
		}
	}
	return out, nil
}

// Served is Served for the world's servers.
func (w *World) Served(owner string) ([][]*dns.TLSA, error) {
	return Served(w.DNS.Addrs(), owner)
}

// DisagreeError is Published's error when a server serves other records
// (or the same in another order) than the primary.
type DisagreeError struct {
	Server       int      // index in DNS.Addrs
	Got, Primary []string // the data of what each serves
}

func (e *DisagreeError) Error() string {
	return fmt.Sprintf("server %d serves %v, the primary %v", e.Server, e.Got, e.Primary)
}

// Published returns the data (hex, as served) of the TLSA records at owner
// that every server serves. When the servers disagree it returns the
// primary's records and one *DisagreeError for each server that serves
// others (errors.Join); when a server cannot be asked, only an error.
func (w *World) Published(owner string) ([]string, error) {
	per, err := w.Served(owner)
	if err != nil {
		return nil, err
	}
	data := func(rrs []*dns.TLSA) []string {
		var out []string
		for _, t := range rrs {
			out = append(out, t.Certificate)
		}
		return out
	}
	primary := data(per[0])
	var errs []error
	for i := 1; i < len(per); i++ {
		if got := data(per[i]); !slices.Equal(got, primary) {
			errs = append(errs, &DisagreeError{Server: i, Got: got, Primary: primary})
		}
	}
	return primary, errors.Join(errs...)
}
