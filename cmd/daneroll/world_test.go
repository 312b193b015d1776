package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/daneroll/daneroll/internal/loopback"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/internal/tlsservice"
)

// maxWorlds bounds the Pebbles running at once, whatever -parallel says:
// Pebble is a separate process, and the machines that run these tests
// have few cores.
const maxWorlds = 2

// TestWorldScript runs the world_* scripts, each against a little internet
// of its own on loopback, as rollover's engine tests build it
// (internal/loopback, without its configuration): the signed zone of the
// dns_* scripts with its validating resolver (a script's configuration
// names it: [dns] resolver = "$RESOLVER"), Pebble validating dns-01 against
// the zone's primary, and an SMTP service with STARTTLS that serves
// $WORK/state/live/mail and reloads on SIGHUP to this process. Setup
// exports NS1, NS2, NS3, RESOLVER and TSIG_SECRET as for dns_* scripts (no
// Cloudflare API), and:
//
//	DIRECTORY   Pebble's ACME directory URL
//	ROOTS       a PEM file that makes Pebble's HTTPS trusted (acme.ca_roots)
//	HTTPPORT    where Pebble validates http-01
//	PORT        the SMTP service's port (TLSA owner _$PORT._tcp.mail.example.test)
//	TESTPID     this process's pid, for the reload command kill -HUP $TESTPID
//
// so a script's configuration must use state_dir = "state" and a
// certificate named "mail".
func TestWorldScript(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Pebble: not in -short mode")
	}
	bin, err := pebbletest.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	worlds := make(chan struct{}, maxWorlds)
	testscript.Run(t, testscript.Params{
		Files: scripts(t, func(name string) bool { return strings.HasPrefix(name, "world_") }),
		Setup: func(env *testscript.Env) error {
			worlds <- struct{}{}
			env.Defer(func() { <-worlds })
			return setupWorld(env, bin)
		},
		Cmds: commands(),
	})
}

func setupWorld(env *testscript.Env, pebbleBin string) error {
	if err := setupCommon(env); err != nil {
		return err
	}
	w, err := startWorld(env, loopback.Options{
		Dir:      filepath.Join(env.WorkDir, ".world"),
		StateDir: filepath.Join(env.WorkDir, "state"),
		Pebble:   &pebbletest.Options{Binary: pebbleBin},
		Services: []loopback.ServiceOptions{{Name: "smtp", Cert: "mail"}},
	})
	if err != nil {
		return err
	}
	env.Values[serviceKey{}] = w.Service("smtp").Server
	return nil
}

// serviceKey finds a world's SMTP service in the script's Values.
type serviceKey struct{}

// cmdServing prints the SPKI digest of the key the world's service serves
// now ("" before anything is served).
func cmdServing(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: serving")
	}
	svc, ok := ts.Value(serviceKey{}).(*tlsservice.Server)
	if !ok {
		ts.Fatalf("serving: this script has no service")
	}
	_, err := ts.Stdout().Write([]byte(svc.Served() + "\n"))
	ts.Check(err)
}
