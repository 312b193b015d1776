// Command demo shows daneroll's whole flow on one machine with nothing but
// Go: Pebble (Let's Encrypt's test CA), a DNSSEC-signed zone on three
// authoritative servers that take RFC 2136 updates (one of them lagging),
// and an SMTP server with STARTTLS that reloads on SIGHUP — all on
// 127.0.0.1, all removed at the end, on failure and on Ctrl-C too.
//
// It runs the real daneroll binary through a first issuance, a status, a
// renewal that keeps the key (the 3 1 1 digest does not change) and a key
// rollover to the pre-published next key, while a prober checks five times
// a second that the served key has a record on every server and in every
// answer a resolver may still cache. It ends with a DANE check of its own:
// DNSSEC validation from the DS down, a STARTTLS handshake and a match,
// also against what an in-process validating resolver answers.
//
// Run it with make demo, or from the source tree:
//
//	go build -o bin/daneroll ./cmd/daneroll && go run ./internal/demo -daneroll bin/daneroll
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/interrupt"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/services"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitInterrupted = 130
)

func main() {
	ctx, cancel := interrupt.Context("demo")
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

// step is one timed part of the demo, for the summary.
type step struct {
	title string
	took  time.Duration
	note  string
}

// demo holds a run's parts.
type demo struct {
	bin   string // the daneroll binary
	con   *console
	w     *world
	steps []step
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("daneroll", "bin/daneroll", "the daneroll `binary` to run")
	keep := fs.Bool("keep", false, "keep the working directory (state, configuration, Pebble's log) and print its path")
	ttl := fs.Int("ttl", 2, "tlsa_ttl in `seconds`; a hold lasts twice as long")
	lag := fs.Duration("lag", 700*time.Millisecond, "how late the third name server copies each change")
	every := fs.Duration("probe-every", 200*time.Millisecond, "how often the prober checks during the key rollover")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: demo [-daneroll bin/daneroll] [flags]\n\n%s\n\nflags:\n",
			"The whole daneroll flow on this machine: a test CA, a DNSSEC-signed zone and an SMTP service on 127.0.0.1.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "demo: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	switch {
	case *ttl < 1 || *ttl > 60:
		fmt.Fprintln(stderr, "demo: -ttl must be 1 to 60 seconds")
		return exitUsage
	case *lag < 0 || *lag > 30*time.Second:
		fmt.Fprintln(stderr, "demo: -lag must be 0 to 30s")
		return exitUsage
	case *every < 10*time.Millisecond:
		fmt.Fprintln(stderr, "demo: -probe-every must be at least 10ms")
		return exitUsage
	}
	abs, err := filepath.Abs(*bin)
	if err == nil {
		_, err = os.Stat(abs)
	}
	if err != nil {
		fmt.Fprintf(stderr, "demo: the daneroll binary: %v\ndemo: hint: make build (or make demo) puts it in bin/daneroll\n", err)
		return exitUsage
	}

	start := time.Now()
	con := newConsole(stdout)
	d := &demo{bin: abs, con: con}
	dir, err := os.MkdirTemp("", "daneroll-demo-")
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return exitFailed
	}
	defer func() {
		if *keep {
			con.printf("\nKept %s (state, daneroll.toml, pebble/pebble.log).", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintf(stderr, "demo: cleaning up: %v\n", err)
		}
	}()

	con.printf("daneroll demo: a certificate for an SMTP server with DANE, issued, renewed with")
	con.printf("the same key and rolled over to a new key without a moment in which a DANE client")
	con.printf("could see a key without a matching TLSA record. Everything runs on 127.0.0.1.")

	ok, err := d.play(ctx, worldOptions{dir: dir, ttl: *ttl, lag: *lag, reloadPID: os.Getpid()}, *every)
	if d.w != nil {
		d.w.close()
	}
	total := time.Since(start)
	switch {
	case err != nil && interrupted(ctx, err):
		fmt.Fprintln(stderr, "demo: interrupted; everything it started is stopped")
		return exitInterrupted
	case err != nil:
		fmt.Fprintf(stderr, "demo: error: %v\n", err)
		if d.w != nil && !*keep {
			fmt.Fprintf(stderr, "demo: hint: run with -keep to look at Pebble's log and daneroll's state afterwards\n")
		}
		return exitFailed
	}
	d.summary(total, ok)
	if !ok {
		return exitFailed
	}
	return exitOK
}

// play sets the world up and runs the steps; ok is false when a check
// failed, err is set when the demo could not go on.
func (d *demo) play(ctx context.Context, o worldOptions, every time.Duration) (ok bool, err error) {
	con := d.con
	con.heading("Setting up: a test CA, a signed zone on 3 name servers, a resolver, an SMTP server")
	t0 := time.Now()
	binDir := filepath.Join(o.dir, "bin")
	if err := os.Mkdir(binDir, 0o700); err != nil {
		return false, err
	}
	pebbleBin, err := pebbletest.Build(binDir)
	if err != nil {
		return false, fmt.Errorf("%w\n(the demo builds Pebble with the go command: run it from the daneroll source tree, e.g. with make demo)", err)
	}
	con.say("built Pebble (pinned in go.mod) in %s", seconds(time.Since(t0)))
	o.pebbleBin = pebbleBin
	o.say = con.say
	d.w, err = startWorld(ctx, o)
	if err != nil {
		return false, err
	}
	w := d.w
	if err := d.showConfig(); err != nil {
		return false, err
	}
	d.record("setup", time.Since(t0), "")

	ok = true
	check := func(cond bool, format string, args ...any) {
		if cond {
			con.say("ok: "+format, args...)
		} else {
			con.say("FAIL: "+format, args...)
			ok = false
		}
	}

	// 1. First issuance.
	con.heading("1/5  daneroll renew: the first certificate")
	con.say("Generates the current and the next key, publishes a 3 1 1 record for each,")
	con.say("waits until every name server serves them, holds for 2 x TTL, gets the")
	con.say("certificate over dns-01, installs it, reloads the service and checks it.")
	con.say("ns3 copies every change %s late: each confirm step waits for it.", o.lag)
	t := time.Now()
	if _, err := d.daneroll(ctx, "renew"); err != nil {
		return false, err
	}
	d.showArrival()
	first, err := d.served(ctx)
	if err != nil {
		return false, err
	}
	pub, err := d.publishedEverywhere(ctx)
	if err != nil {
		return false, err
	}
	check(slices.Contains(pub, first.key), "the service serves key %s, whose record ns1, ns2 and ns3 serve", short(first.key))
	check(len(pub) == 2, "%d records published: the current key and the pre-published next key", len(pub))
	d.record("1. first issuance", time.Since(t), fmt.Sprintf("including the hold of 2 x %ds", o.ttl))

	// 2. Status.
	con.heading("2/5  daneroll status")
	t = time.Now()
	if _, err := d.daneroll(ctx, "status"); err != nil {
		return false, err
	}
	d.record("2. status", time.Since(t), "")

	// 3. Renewal with the same key.
	con.heading("3/5  daneroll renew --force: a renewal that keeps the key")
	con.say("A routine renewal: a new certificate for the same key, so the TLSA records stay")
	con.say("valid and are left alone (only the dns-01 challenge's TXT record comes and goes).")
	t = time.Now()
	before, err := d.served(ctx)
	if err != nil {
		return false, err
	}
	con.say("before: 3 1 1 %s  certificate serial %s", before.key, before.serial)
	if _, err := d.daneroll(ctx, "renew", "--force"); err != nil {
		return false, err
	}
	after, err := d.served(ctx)
	if err != nil {
		return false, err
	}
	con.say("after:  3 1 1 %s  certificate serial %s", after.key, after.serial)
	check(after.serial != before.serial, "a new certificate is served")
	same := after.key == before.key
	check(same, "the 3 1 1 digest did not change")
	note := "3 1 1 digest unchanged"
	if !same {
		note = "3 1 1 digest CHANGED"
	}
	d.record("3. renewal, same key", time.Since(t), note)

	// 4. Key rollover under the prober.
	con.heading("4/5  daneroll rekey mail: the rollover to the pre-published next key")
	con.say("The next key's record has been visible since step 1, so the switch needs no")
	con.say("wait; then a new next key is published and the old key's record is retired.")
	t = time.Now()
	cur, err := d.served(ctx)
	if err != nil {
		return false, err
	}
	pub, err = d.publishedEverywhere(ctx)
	if err != nil {
		return false, err
	}
	next := ""
	for _, k := range pub {
		if k != cur.key {
			next = k
		}
	}
	con.say("served key:  3 1 1 %s", cur.key)
	con.say("next key:    3 1 1 %s", next)
	p, err := newProber(w, con)
	if err != nil {
		return false, err
	}
	con.say("prober: every %s, STARTTLS to the service, then the TLSA RRset on ns1, ns2, ns3", every)
	con.say("        and every answer a resolver may still cache (given within its TTL)")
	pctx, stopProber := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.run(pctx, every)
	}()
	out, rerr := d.daneroll(ctx, "rekey", certName)
	stopProber()
	wg.Wait()
	if rerr != nil {
		return false, rerr
	}
	switched, err := d.served(ctx)
	if err != nil {
		return false, err
	}
	pub, err = d.publishedEverywhere(ctx)
	if err != nil {
		return false, err
	}
	newNext := ""
	for _, k := range pub {
		if k != switched.key {
			newNext = k
		}
	}
	con.say("served key:  3 1 1 %s", switched.key)
	con.say("next key:    3 1 1 %s (new)", newNext)
	check(next != "" && switched.key == next, "the service switched to the pre-published next key")
	check(!strings.Contains(out, "hold: waiting"), "no hold: the next key's record had been visible long enough")
	check(!slices.Contains(pub, cur.key), "the old key's record is retired on every server")
	check(len(pub) == 2 && newNext != "" && newNext != cur.key, "a new next key is published on every server")
	checks, failed, skipped, changes := p.result()
	check(failed == 0 && checks > 0, "prober: %d checks, %d failures", checks, failed)
	check(changes == 1, "prober: saw the served key change %d time(s)", changes)
	if skipped > 0 {
		con.say("(prober: %d check(s) spanned the switch itself and were not counted)", skipped)
	}
	d.record("4. key rollover", time.Since(t), fmt.Sprintf("prober: %d checks, %d failures", checks, failed))

	// 5. An independent check.
	con.heading("5/5  An independent DANE check, without daneroll")
	con.say("DNSSEC validation of each server's TLSA RRset from the DS down, a STARTTLS")
	con.say("handshake, and RFC 7671/7672 matching of the served chain against each")
	con.say("server's records and against the validating resolver's answer.")
	t = time.Now()
	pass := d.finalCheck(ctx)
	certs, keys, gaps := d.historyCheck()
	for i, g := range gaps {
		if i == maxShownFailures {
			con.say("FAIL ... and %d more", len(gaps)-i)
			break
		}
		con.say("FAIL %s", g)
	}
	check(len(gaps) == 0, "history: %d certificates with %d keys served since the start, never one while", certs, keys)
	con.say("    a resolver could hold an answer from any server without its record")
	pass = pass && len(gaps) == 0
	verdict := "PASS"
	if !pass {
		verdict = "FAIL"
		ok = false
	}
	con.say("%s", verdict)
	d.record("5. independent check", time.Since(t), verdict)
	return ok, nil
}

func (d *demo) record(title string, took time.Duration, note string) {
	d.steps = append(d.steps, step{title: title, took: took, note: note})
}

// servedKey is what the service presents.
type servedKey struct {
	key    string // 3 1 1 digest, hex
	serial string // of the certificate, hex
}

// served asks the service over STARTTLS, as a client would.
func (d *demo) served(ctx context.Context) (servedKey, error) {
	ep, err := services.ParseEndpoint(d.w.endpoint())
	if err != nil {
		return servedKey{}, err
	}
	r, err := services.Probe(ctx, ep, services.ProbeOptions{Timeout: 10 * time.Second})
	if err != nil {
		return servedKey{}, err
	}
	return servedKey{key: r.LeafSPKI(), serial: fmt.Sprintf("%x", r.Chain[0].SerialNumber)}, nil
}

// publishedEverywhere returns the 3 1 1 digests at the TLSA name, failing
// unless every server serves the same ones.
func (d *demo) publishedEverywhere(ctx context.Context) ([]string, error) {
	var first []string
	for i, addr := range d.w.dns.Addrs() {
		rrs, _, err := fetchSigned(ctx, addr, d.w.owner(), dns.TypeTLSA)
		if err != nil {
			return nil, fmt.Errorf("ns%d: %w", i+1, err)
		}
		var got []string
		for _, rr := range rrs {
			got = append(got, strings.ToLower(rr.(*dns.TLSA).Certificate))
		}
		slices.Sort(got)
		if i == 0 {
			first = got
		} else if !slices.Equal(got, first) {
			return nil, fmt.Errorf("ns%d serves %v, ns1 %v", i+1, got, first)
		}
	}
	return first, nil
}

func (d *demo) summary(total time.Duration, ok bool) {
	con := d.con
	con.heading("Summary")
	for _, s := range d.steps {
		con.printf("%s", strings.TrimRight(fmt.Sprintf("  %-24s %6s   %s", s.title, seconds(s.took), s.note), " "))
	}
	con.say("%-24s %6s", "total", seconds(total))
	if ok {
		con.printf("\nPASS: every check passed.")
	} else {
		con.printf("\nFAIL: see the FAIL lines above.")
	}
}

// showConfig prints the part of daneroll's configuration the demo is
// about: the resolver, the publisher, the certificate and the service.
func (d *demo) showConfig() error {
	data, err := os.ReadFile(d.w.cfgFile)
	if err != nil {
		return err
	}
	d.con.say("daneroll's configuration, %s (from [dns] on):", d.w.cfgFile)
	text := string(data)
	if i := strings.Index(text, "\n[dns]\n"); i >= 0 {
		text = text[i:]
	}
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		d.con.printf("%s", strings.TrimRight("      "+l, " "))
	}
	return nil
}

// showArrival says when the first TLSA records reached each server, from
// the servers' own history: the lagging one got them last, and daneroll's
// confirmation (above) waited for it.
func (d *demo) showArrival() {
	var parts []string
	seen := map[int]bool{}
	for _, h := range d.w.dns.History(d.w.owner(), dns.TypeTLSA) {
		if h.Negative || seen[h.Server] {
			continue
		}
		seen[h.Server] = true
		parts = append(parts, fmt.Sprintf("ns%d at %s", h.Server+1, d.con.atStep(h.From)))
	}
	d.con.say("the records reached %s", strings.Join(parts, ", "))
}
