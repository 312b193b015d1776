// Package e2e runs the real daneroll binary against real parts: Pebble, an
// in-process DNSSEC-signed zone on several authoritative servers taking
// RFC 2136 updates (or real BIND 9), a reloading TLS service (or a real
// postfix), and checks the promises daneroll makes across whole runs —
// including runs killed at every step.
package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/internal/tlsservice"
	"github.com/daneroll/daneroll/store"
)

var bins struct {
	daneroll, pebble string
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "daneroll-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	bins.daneroll = filepath.Join(dir, "daneroll")
	out, err := exec.Command("go", "build", "-o", bins.daneroll, "github.com/daneroll/daneroll/cmd/daneroll").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build daneroll: %v\n%s", err, out)
		os.Exit(2)
	}
	if bins.pebble, err = pebbletest.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const tsigSecret = "ZTJlLXRlc3QtdHNpZy1zZWNyZXQtZm9yLWRhbmVyb2xs"

// world is Pebble, a signed zone on three servers and an SMTP service that
// reloads on SIGHUP, with a daneroll configuration for them.
type world struct {
	t        *testing.T
	dir      string
	cfg      string
	state    string
	dns      *dnstest.Cluster
	resolver *dnstest.Resolver
	pebble   *pebbletest.Pebble
	svc      *tlsservice.Server
	port     string
	start    time.Time
}

func newWorld(t *testing.T, policy string, ttl int) *world {
	t.Helper()
	if bins.daneroll == "" {
		t.Skip("end-to-end tests do not run with -short")
	}
	w := &world{t: t, dir: t.TempDir(), start: time.Now()}
	w.state = filepath.Join(w.dir, "state")
	w.dns = dnstest.StartT(t, dnstest.Options{
		Origin:      "example.test.",
		Records:     []string{"mail 60 IN A 127.0.0.1"},
		Secondaries: 2,
		Signed:      true,
		TSIG:        map[string]string{"daneroll.": tsigSecret},
		SOATTL:      60,
		NegativeTTL: 1,
	})
	// The validating resolver a DANE client would use: verify asks it.
	w.resolver = w.dns.StartResolverT(t)
	var err error
	w.pebble, err = pebbletest.Start(context.Background(), pebbletest.Options{
		Dir: filepath.Join(w.dir, "pebble"), Binary: bins.pebble, AlwaysValid: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.pebble.Close() })
	w.svc, err = tlsservice.Start(tlsservice.Options{Addr: "127.0.0.1:0", LiveDir: filepath.Join(w.state, "live", "mail"),
		Protocol: "smtp", Hostname: "mail.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.svc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w.svc.ReloadOnSignal(ctx, syscall.SIGHUP)
	_, w.port, _ = net.SplitHostPort(w.svc.Addr())

	secret := filepath.Join(w.dir, "tsig.secret")
	if err := os.WriteFile(secret, []byte(tsigSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	var ns []string
	for _, a := range w.dns.Addrs() {
		ns = append(ns, strconv.Quote(a))
	}
	w.cfg = filepath.Join(w.dir, "daneroll.toml")
	conf := fmt.Sprintf(`state_dir = %q
[acme]
directory = %q
accept_tos = true
ca_roots = [%q]
[dns]
confirm_timeout = "1m"
resolver = %q
[dns.publisher.ns]
type = "rfc2136"
server = %q
tsig_name = "daneroll."
tsig_secret_file = %q
nameservers = [%s]
[[certificate]]
name = "mail"
domains = ["mail.example.test"]
publisher = "ns"
key_policy = %q
tlsa = ["_%s._tcp.mail.example.test"]
tlsa_ttl = %d
services = ["smtp"]
[service.smtp]
reload = ["kill", "-HUP", "%d"]
probe = ["smtp://mail.example.test:%s?connect=127.0.0.1"]
`, w.state, w.pebble.Directory, w.pebble.RootsFile, w.resolver.Addr(), w.dns.Primary(), secret, strings.Join(ns, ", "),
		policy, w.port, ttl, os.Getpid(), w.port)
	if err := os.WriteFile(w.cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// result of one daneroll run.
type result struct {
	out    string
	code   int
	killed bool
}

// daneroll runs the binary; failpoint is "" or "before:N" / "after:N".
func (w *world) daneroll(failpoint string, args ...string) result {
	w.t.Helper()
	return runDaneroll(w.t, w.cfg, failpoint, args...)
}

func runDaneroll(t testing.TB, cfg, failpoint string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.daneroll, append([]string{"-c", cfg}, args...)...)
	cmd.Env = append(os.Environ(), "DANEROLL_FAILPOINT="+failpoint)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	r := result{out: out.String()}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		r.killed = true
	} else if err != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		t.Fatalf("daneroll %v timed out:\n%s", args, r.out)
	}
	return r
}

func (w *world) mustRun(args ...string) string {
	w.t.Helper()
	r := w.daneroll("", args...)
	if r.code != 0 || r.killed {
		w.t.Fatalf("daneroll %v: exit %d:\n%s", args, r.code, r.out)
	}
	return r.out
}

func (w *world) owner() string { return "_" + w.port + "._tcp.mail.example.test." }

// keyIDs returns the IDs of the current and next key files ("" if absent).
func (w *world) keyIDs() (current, next string) {
	w.t.Helper()
	s, err := store.OpenReadOnly(w.state)
	if err != nil {
		w.t.Fatal(err)
	}
	id := func(slot string) string {
		k, err := s.ReadKey("mail", slot)
		if err != nil {
			return ""
		}
		return spkiHex(k.Public())
	}
	return id(store.Current), id(store.Next)
}

// servedEverywhere returns the TLSA digests each server serves, asserting
// they agree.
func (w *world) servedEverywhere() []string {
	w.t.Helper()
	var first []string
	for i, addr := range w.dns.Addrs() {
		m := new(dns.Msg)
		m.SetQuestion(w.owner(), dns.TypeTLSA)
		r, err := dns.Exchange(m, addr)
		if err != nil {
			w.t.Fatal(err)
		}
		var got []string
		for _, rr := range r.Answer {
			if t, ok := rr.(*dns.TLSA); ok {
				got = append(got, t.Certificate)
			}
		}
		if i == 0 {
			first = got
		} else if strings.Join(sorted(got), ",") != strings.Join(sorted(first), ",") {
			w.t.Errorf("server %d serves %v, the primary %v", i, got, first)
		}
	}
	return first
}
