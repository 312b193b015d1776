package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/internal/rig"
	"github.com/daneroll/daneroll/services"
	"github.com/daneroll/daneroll/store"
)

// realWorld is Pebble validating dns-01 against a real, DNSSEC-signing
// BIND 9 that takes RFC 2136 updates; unbound validating with the zone's
// DS as trust anchor; and, once a certificate exists, a real postfix whose
// smtpd serves daneroll's live set.
type realWorld struct {
	t       testing.TB
	dir     string
	bind    *rig.BIND
	unbound *rig.Unbound
	nsIP    string // unbound also listens on nsIP:53, for posttls-finger
	pebble  *pebbletest.Pebble
	postfix *rig.Postfix
	port    int
	policy  string
	ttl     int
	cfg     string
	state   string
}

func newRealWorld(t testing.TB, policy string, ttl int) *realWorld {
	t.Helper()
	if bins.daneroll == "" {
		t.Skip("end-to-end tests do not run with -short")
	}
	w := &realWorld{t: t, dir: t.TempDir(), policy: policy, ttl: ttl}
	w.state = filepath.Join(w.dir, "state")
	w.bind = rig.StartBIND(t, rig.BINDOptions{
		Signed:     true,
		TSIGName:   "daneroll.",
		Records:    []string{"mail IN A 127.0.0.1"},
		SOAMinimum: 1,
		DefaultTTL: 5,
	})
	w.nsIP = rig.FreeResolverIP(t)
	w.unbound = rig.StartUnbound(t, rig.UnboundOptions{
		StubZone: w.bind.Zone, StubAddr: w.bind.Addr, TrustAnchor: w.bind.DS(),
		ExtraListen: []string{w.nsIP + "@53"},
	})
	var err error
	w.pebble, err = pebbletest.Start(context.Background(), pebbletest.Options{
		Dir: filepath.Join(w.dir, "pebble"), Binary: bins.pebble, DNSServer: w.bind.Addr,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.pebble.Close() })
	if w.port, err = pebbletest.FreePort(); err != nil {
		t.Fatal(err)
	}
	w.writeConfig(false)
	return w
}

// writeConfig writes the daneroll configuration, with the postfix service
// once postfix runs.
func (w *realWorld) writeConfig(withPostfix bool) {
	w.t.Helper()
	secret := filepath.Join(w.dir, "tsig.secret")
	if err := os.WriteFile(secret, []byte(w.bind.TSIGSecret), 0o600); err != nil {
		w.t.Fatal(err)
	}
	// Before postfix exists (the bootstrap) nothing can be probed.
	services := "allow_unverified_deploy = true\n"
	if withPostfix {
		services = fmt.Sprintf(`services = ["postfix"]
[service.postfix]
reload = [%s]
probe = ["smtp://mail.example.test:%d?connect=127.0.0.1"]
`, quoteArgs(w.postfix.ReloadArgv()), w.port)
	}
	w.cfg = filepath.Join(w.dir, "daneroll.toml")
	conf := fmt.Sprintf(`state_dir = %q
[acme]
directory = %q
accept_tos = true
ca_roots = [%q]
[dns]
resolver = %q
confirm_timeout = "2m"
[dns.publisher.bind]
type = "rfc2136"
server = %q
tsig_name = %q
tsig_algorithm = %q
tsig_secret_file = %q
nameservers = [%q]
[[certificate]]
name = "mail"
domains = ["mail.example.test"]
publisher = "bind"
key_policy = %q
tlsa = ["_%d._tcp.mail.example.test"]
tlsa_ttl = %d
%s`, w.state, w.pebble.Directory, w.pebble.RootsFile, w.unbound.Addr, w.bind.Addr, w.bind.TSIGName,
		w.bind.TSIGAlgorithm, secret, w.bind.Addr, w.policy, w.port, w.ttl, services)
	if err := os.WriteFile(w.cfg, []byte(conf), 0o600); err != nil {
		w.t.Fatal(err)
	}
}

func quoteArgs(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = strconv.Quote(a)
	}
	return strings.Join(q, ", ")
}

func (w *realWorld) run(args ...string) string {
	w.t.Helper()
	r := runDaneroll(w.t, w.cfg, "", args...)
	if r.code != 0 || r.killed {
		w.t.Fatalf("daneroll %v: exit %d:\n%s", args, r.code, r.out)
	}
	return r.out
}

func (w *realWorld) startPostfix() {
	w.t.Helper()
	w.postfix = rig.StartPostfix(w.t, rig.PostfixOptions{
		Hostname:   "mail.example.test",
		Port:       w.port,
		ChainFiles: []string{filepath.Join(w.state, "live", "mail", store.FileCombined)},
	})
	w.writeConfig(true)
}

func (w *realWorld) owner() string {
	return fmt.Sprintf("_%d._tcp.mail.example.test.", w.port)
}

// prober checks DANE the way a sending MTA does, every half second:
// TLSA through the validating resolver (AD required), STARTTLS with
// postfix, and the match by RFC 7672 rules.
type prober struct {
	mu       sync.Mutex // guards checks and failures
	checks   int
	failures []string

	stop chan struct{}
	done chan struct{}
}

func (w *realWorld) startProber() *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	ep, err := services.ParseEndpoint(fmt.Sprintf("smtp://mail.example.test:%d?connect=127.0.0.1", w.port))
	if err != nil {
		w.t.Fatal(err)
	}
	q := &dane.Querier{Timeout: 2 * time.Second}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			err := checkOnce(q, w.unbound.Addr, w.owner(), ep)
			p.mu.Lock()
			p.checks++
			if err != nil {
				p.failures = append(p.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
			}
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func checkOnce(q *dane.Querier, resolver, owner string, ep services.Endpoint) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	look, err := dane.LookupTLSA(ctx, q, resolver, owner)
	if err != nil {
		return err
	}
	if !look.Secure || len(look.Records) == 0 {
		return fmt.Errorf("TLSA: secure=%v, %d records", look.Secure, len(look.Records))
	}
	res, err := services.Probe(ctx, ep, services.ProbeOptions{Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	_, err = dane.Verify(look.Records, res.Chain, dane.VerifyOptions{Names: []string{ep.Host}, SMTP: true, Now: time.Now()})
	return err
}

func (p *prober) finish() (int, []string) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.checks, p.failures
}

// TestPostfixKeyChangeWithoutAGap changes the key postfix serves while a
// DANE-validating client checks it twice a second through unbound: not one
// check may fail, from the first issuance to the retirement of the old
// record. posttls-finger, postfix's own DANE client, agrees at the end.
func TestPostfixKeyChangeWithoutAGap(t *testing.T) {
	for _, tc := range []struct{ policy, change string }{
		{"rollover", "rekey"},
		{"fresh", "renew --force"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			w := newRealWorld(t, tc.policy, 5)
			w.run("renew")
			w.startPostfix()
			p := w.startProber()
			curBefore, _ := keyIDs(t, w.state)
			args := strings.Fields(tc.change)
			if tc.change == "rekey" {
				args = append(args, "mail")
			}
			start := time.Now()
			out := w.run(args...)
			took := time.Since(start)
			// Keep probing for a TTL after the retire: caches still
			// holding the old RRset must not break anything either.
			time.Sleep(time.Duration(w.ttl)*time.Second + time.Second)
			checks, failures := p.finish()
			t.Logf("%s %s took %s; %d DANE checks through unbound, %d failures", tc.policy, tc.change, took.Round(time.Millisecond), checks, len(failures))
			if len(failures) > 0 {
				t.Errorf("DANE failed %d of %d times:\n%s\ndaneroll said:\n%s", len(failures), checks, strings.Join(failures, "\n"), out)
			}
			if checks < 10 {
				t.Errorf("only %d checks", checks)
			}
			curAfter, next := keyIDs(t, w.state)
			if curAfter == curBefore {
				t.Fatalf("the key did not change:\n%s", out)
			}
			// Exactly the wanted records are left, and signed.
			m, err := w.bind.Query(context.Background(), w.owner(), dns.TypeTLSA)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			signed := false
			for _, rr := range m.Answer {
				switch rr := rr.(type) {
				case *dns.TLSA:
					got = append(got, rr.Certificate)
				case *dns.RRSIG:
					signed = true
				}
			}
			want := []string{curAfter}
			if tc.policy == "rollover" {
				want = append(want, next)
			}
			if strings.Join(sorted(got), ",") != strings.Join(sorted(want), ",") || !signed {
				t.Errorf("BIND serves %v (signed %v), want %v", got, signed, want)
			}
			fin, err := rig.PostTLSFinger(t, w.nsIP, fmt.Sprintf("[mail.example.test]:%d", w.port))
			if err != nil || !rig.DANEVerified(fin) {
				t.Errorf("posttls-finger does not verify DANE (%v):\n%s", err, fin)
			}
			// status sees the records on BIND and validated by unbound.
			if out := w.run("status"); !strings.Contains(out, "(signed, validated by the resolver, 1 authoritative server)") ||
				!strings.Contains(out, "visible on 1/1") || strings.Contains(out, "warning") {
				t.Errorf("status:\n%s", out)
			}
			// daneroll's own end-to-end check agrees, for the configured
			// probes and for a target given on the command line.
			for _, args := range [][]string{{"check"}, {"check", fmt.Sprintf("smtp://mail.example.test:%d?connect=127.0.0.1", w.port)}} {
				r := runDaneroll(t, w.cfg, "", args...)
				if r.code != 0 || !strings.Contains(r.out, "PASS smtp://mail.example.test") || !strings.Contains(r.out, "DNSSEC-validated") {
					t.Errorf("daneroll %v: exit %d\n%s", args, r.code, r.out)
				}
			}
			// With the records gone, check fails with exit code 2.
			if err := w.deleteTLSA(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(w.ttl+1) * time.Second)
			if r := runDaneroll(t, w.cfg, "", "check"); r.code != 2 || !strings.Contains(r.out, "FAIL") {
				t.Errorf("check without records: exit %d\n%s", r.code, r.out)
			}
		})
	}
}

func keyIDs(t testing.TB, state string) (current, next string) {
	t.Helper()
	s, err := store.OpenReadOnly(state)
	if err != nil {
		t.Fatal(err)
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

// deleteTLSA removes the whole TLSA RRset behind daneroll's back.
func (w *realWorld) deleteTLSA() error {
	m := new(dns.Msg)
	m.SetUpdate(w.bind.Zone)
	rr := &dns.ANY{Hdr: dns.RR_Header{Name: w.owner(), Rrtype: dns.TypeTLSA, Class: dns.ClassANY}}
	m.RemoveRRset([]dns.RR{rr})
	m.SetTsig(w.bind.TSIGName, dns.Fqdn(w.bind.TSIGAlgorithm), 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", TsigSecret: map[string]string{w.bind.TSIGName: w.bind.TSIGSecret}}
	r, _, err := c.Exchange(m, w.bind.Addr)
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("delete TLSA: %s", dns.RcodeToString[r.Rcode])
	}
	return nil
}
