// Package e2e runs the real daneroll binary against real parts: Pebble, an
// in-process DNSSEC-signed zone on several authoritative servers taking
// RFC 2136 updates (or real BIND 9), a reloading TLS service (or a real
// postfix), and checks the promises daneroll makes across whole runs —
// including runs killed at every step.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/loopback"
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

// world is Pebble, a signed zone on three servers and an SMTP service that
// reloads on SIGHUP, with a daneroll configuration for them
// (internal/loopback).
type world struct {
	t        *testing.T
	lb       *loopback.World
	dir      string
	cfg      string
	state    string
	dns      *dnstest.Cluster
	resolver *dnstest.Resolver
	pebble   *pebbletest.Pebble
	// svc and port are the service of "mail", when there is one.
	svc  *tlsservice.Server
	port string
	// certs are the certificates' names.
	certs []string
	start time.Time
}

func newWorld(t *testing.T, policy string, ttl int) *world {
	return newWorldOf(t, policy, ttl, "mail")
}

// newWorldOf is newWorld with a certificate of each name, each with its
// own SMTP service: "mail" has "smtp", another name NAME has "smtp-NAME".
func newWorldOf(t *testing.T, policy string, ttl int, names ...string) *world {
	t.Helper()
	if bins.daneroll == "" {
		t.Skip("end-to-end tests do not run with -short")
	}
	var svcs []loopback.ServiceOptions
	var certs []loopback.CertificateOptions
	for _, name := range names {
		svcs = append(svcs, loopback.ServiceOptions{Name: serviceOf(name), Cert: name})
		certs = append(certs, loopback.CertificateOptions{Name: name, Policy: policy, TTL: ttl})
	}
	lb := loopback.StartT(t, loopback.Options{
		// Pebble passes every challenge unchecked: these tests are about
		// the TLSA records, not issuance.
		Pebble:   &pebbletest.Options{Binary: bins.pebble, AlwaysValid: true},
		Services: svcs,
		Config:   &loopback.ConfigOptions{Certificates: certs},
	})
	svc := lb.Service("smtp")
	w := &world{t: t, lb: lb, dir: lb.Dir, cfg: lb.ConfigFile, state: lb.StateDir, dns: lb.DNS, resolver: lb.Resolver,
		pebble: lb.Pebble, certs: names, start: lb.Started}
	if svc != nil {
		w.svc, w.port = svc.Server, svc.Port
	}
	return w
}

// serviceOf names the service of certificate name in worlds of newWorldOf.
func serviceOf(name string) string {
	if name == "mail" {
		return "smtp"
	}
	return "smtp-" + name
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

// ownerOf is the TLSA owner of certificate name's service.
func (w *world) ownerOf(name string) string { return w.lb.Service(serviceOf(name)).Owner() }

// keyIDsOf returns the IDs of certificate name's current and next key
// files ("" if absent).
func (w *world) keyIDsOf(name string) (current, next string) {
	w.t.Helper()
	s, err := store.OpenReadOnly(w.state)
	if err != nil {
		w.t.Fatal(err)
	}
	id := func(slot string) string {
		k, err := s.ReadKey(name, slot)
		if err != nil {
			return ""
		}
		return spkiHex(k.Public())
	}
	return id(store.Current), id(store.Next)
}

// publishedFor returns the TLSA digests each server serves for
// certificate name, asserting they agree.
func (w *world) publishedFor(name string) []string {
	w.t.Helper()
	got, err := w.lb.Published(w.ownerOf(name))
	var d *loopback.DisagreeError
	if errors.As(err, &d) {
		w.t.Error(err)
	} else if err != nil {
		w.t.Fatal(err)
	}
	return got
}

// reloadAll reloads every service of the world.
func (w *world) reloadAll() {
	for _, name := range w.certs {
		_ = w.lb.Service(serviceOf(name)).Server.Reload()
	}
}
