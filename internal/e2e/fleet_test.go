package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/fleetkey"
	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/loopback"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/internal/rig"
	"github.com/daneroll/daneroll/internal/syncbuf"
	"github.com/daneroll/daneroll/internal/tlsservice"
	"github.com/daneroll/daneroll/services"
)

// fleet is three hosts serving mail.example.test on one port at 127.0.0.2,
// .3 and .4, each with its own state_dir, TLS service and daneroll agent,
// sharing their state through a three-member etcd cluster; Pebble and the
// signed zone of internal/loopback; and a DANE client probing all three
// hosts through the validating resolver the whole time.
type fleet struct {
	t     testing.TB
	lb    *loopback.World
	etcd  *rig.Etcd
	port  string
	owner string // _PORT._tcp.mail.example.test.
	// keyFile is the fleet key.
	keyFile string
	// gateway reaches etcd's JSON gateway with the rig's client
	// certificate.
	gateway *http.Client
	hosts   []*fleetHost
	start   time.Time
	probe   *fleetProber
}

type fleetHost struct {
	name, addr string
	cfg, state string
	metrics    string // [metrics] textfile
	svc        *tlsservice.Server

	mu    sync.Mutex // guards agent and log
	agent *exec.Cmd
	log   *syncbuf.Buffer
}

const fleetHosts = 3

// newFleet starts the fleet world, the agents included, with no
// certificate yet. reportTimeout is [store] report_timeout.
func newFleet(t testing.TB, reportTimeout string) *fleet {
	t.Helper()
	if bins.daneroll == "" {
		t.Skip("end-to-end tests do not run with -short")
	}
	f := &fleet{t: t}
	f.etcd = rig.StartEtcd(t, rig.EtcdOptions{Members: 3})
	tr := &http.Transport{TLSClientConfig: f.etcd.TLSConfig()}
	t.Cleanup(tr.CloseIdleConnections)
	f.gateway = &http.Client{Timeout: 5 * time.Second, Transport: tr}
	var records []string
	for i := range fleetHosts {
		records = append(records, fmt.Sprintf("mail 60 IN A 127.0.0.%d", i+2))
	}
	f.lb = loopback.StartT(t, loopback.Options{
		Pebble:  &pebbletest.Options{Binary: bins.pebble, AlwaysValid: true},
		Hosts:   []string{},
		Records: records,
	})
	f.start = f.lb.Started
	dir := f.lb.Dir
	tsigFile := filepath.Join(dir, "tsig.secret")
	if err := os.WriteFile(tsigFile, []byte(f.lb.TSIGSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "fleet.key")
	f.keyFile = keyFile
	if r := runDaneroll(t, "", "", "fleet-key", "--out", keyFile); r.code != 0 {
		t.Fatalf("fleet-key: %s", r.out)
	}
	f.startServices(dir)
	f.owner = "_" + f.port + "._tcp.mail.example.test."
	for _, h := range f.hosts {
		if err := os.MkdirAll(filepath.Dir(h.metrics), 0o755); err != nil {
			t.Fatal(err)
		}
		h.cfg = filepath.Join(dir, h.name+".toml")
		if err := os.WriteFile(h.cfg, []byte(f.config(h, tsigFile, keyFile, reportTimeout)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range f.hosts {
		f.startAgent(h)
	}
	f.waitMembers()
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(f.agentLogs())
		}
	})
	return f
}

// waitMembers waits until every host's agent has registered.
func (f *fleet) waitMembers() {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, h := range f.hosts {
		for f.etcdGet("certs/mail/members/"+h.name) == nil {
			if time.Now().After(deadline) {
				f.t.Fatalf("%s's agent did not register%s", h.name, f.agentLogs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// issue makes the fleet's first certificate from host1 and starts the
// DANE prober once every host serves it.
func (f *fleet) issue() string {
	f.t.Helper()
	out := f.mustRun(f.hosts[0], "renew")
	key := f.served()[0]
	if key == "" {
		f.t.Fatalf("host1 serves no key after the first renew:\n%s%s", out, f.agentLogs())
	}
	f.waitServed(key, 10*time.Second)
	f.probe = startFleetProber(f)
	return f.atRest()
}

// startServices starts one TLS service per host on one port.
func (f *fleet) startServices(dir string) {
	f.t.Helper()
	for attempt := 0; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			f.t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ln.Close()
		var hosts []*fleetHost
		var failed error
		for i := range fleetHosts {
			h := &fleetHost{name: fmt.Sprintf("host%d", i+1), addr: fmt.Sprintf("127.0.0.%d", i+2), log: &syncbuf.Buffer{}}
			h.state = filepath.Join(dir, h.name, "state")
			h.metrics = filepath.Join(dir, h.name, "daneroll.prom")
			h.svc, err = tlsservice.Start(tlsservice.Options{
				Addr:     net.JoinHostPort(h.addr, port),
				LiveDir:  filepath.Join(h.state, "live", "mail"),
				Protocol: "smtp",
				Hostname: "mail.example.test",
			})
			if err != nil {
				failed = err
				break
			}
			hosts = append(hosts, h)
		}
		if failed == nil {
			f.port, f.hosts = port, hosts
			break
		}
		for _, h := range hosts {
			h.svc.Close()
		}
		if attempt == 5 {
			f.t.Fatalf("no port free on 127.0.0.2-%d: %v", fleetHosts+1, failed)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	for _, h := range f.hosts {
		// Each host's reload (kill -HUP) reloads every host's service: a
		// reload only re-reads what that host's agent installed.
		h.svc.ReloadOnSignal(ctx, syscall.SIGHUP)
	}
	f.t.Cleanup(func() {
		cancel()
		for _, h := range f.hosts {
			h.svc.Close()
		}
	})
}

func (f *fleet) config(h *fleetHost, tsigFile, keyFile, reportTimeout string) string {
	ns := f.lb.DNS.Addrs()
	return fmt.Sprintf(`# %s of a fleet of %d (internal/e2e/fleet_test.go)
state_dir = %q

[acme]
directory = %q
email = "hostmaster@example.test"
accept_tos = true
ca_roots = [%q]

[dns]
resolver = %q
confirm_timeout = "1m"

[dns.publisher.ns]
type = "rfc2136"
server = %q
tsig_name = %q
tsig_algorithm = "hmac-sha256"
tsig_secret_file = %q
nameservers = [%s]

[store]
type = "etcd"
endpoints = [%s]
ca_file = %q
cert_file = %q
key_file = %q
fleet_key_file = %q
host = %q
lock_ttl = "5s"
report_timeout = %q

[metrics]
textfile = %q

[[certificate]]
name = "mail"
domains = ["mail.example.test"]
challenge = "dns-01"
publisher = "ns"
key_policy = "fresh"
tlsa = ["_%s._tcp.mail.example.test"]
tlsa_ttl = 1
services = ["smtp"]

[service.smtp]
reload = ["kill", "-HUP", "%d"]
reload_timeout = "10s"
probe = ["smtp://mail.example.test:%s?connect=%s"]
`, h.name, fleetHosts, h.state, f.lb.Pebble.Directory, f.lb.Pebble.RootsFile, f.lb.Resolver.Addr(),
		f.lb.DNS.Primary(), loopback.TSIGKey, tsigFile, loopback.QuoteAll(ns),
		loopback.QuoteAll(f.etcd.Endpoints), f.etcd.CAFile, f.etcd.ClientCertFile, f.etcd.ClientKeyFile, keyFile, h.name, reportTimeout,
		h.metrics, f.port, os.Getpid(), f.port, h.addr)
}

// startAgent runs host h's daneroll agent until stopAgent or the test's
// end.
func (f *fleet) startAgent(h *fleetHost) {
	f.t.Helper()
	cmd := exec.Command(bins.daneroll, "-c", h.cfg, "-v", "agent")
	cmd.Env = append(os.Environ(), "DANEROLL_FAILPOINT=")
	cmd.Stdout, cmd.Stderr = h.log, h.log
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	h.mu.Lock()
	h.agent = cmd
	h.mu.Unlock()
	f.t.Cleanup(func() { f.stopAgent(h) })
}

// stopAgent stops host h's agent (SIGTERM, as systemd does).
func (f *fleet) stopAgent(h *fleetHost) {
	h.mu.Lock()
	cmd := h.agent
	h.agent = nil
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		f.t.Errorf("%s: the agent did not stop on SIGTERM within 10 s", h.name)
	}
}

// run runs daneroll on host h.
func (f *fleet) run(h *fleetHost, failpoint string, args ...string) result {
	f.t.Helper()
	return runDaneroll(f.t, h.cfg, failpoint, args...)
}

func (f *fleet) mustRun(h *fleetHost, args ...string) string {
	f.t.Helper()
	r := f.run(h, "", args...)
	if r.code != 0 || r.killed {
		f.t.Fatalf("%s: daneroll %v: exit %d:\n%s%s", h.name, args, r.code, r.out, f.agentLogs())
	}
	return r.out
}

func (f *fleet) agentLogs() string {
	var b strings.Builder
	for _, h := range f.hosts {
		fmt.Fprintf(&b, "\n--- agent of %s:\n%s", h.name, tail(h.log.String(), 40))
	}
	return b.String()
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// fleetJournal is what the test reads of the journal in etcd.
type fleetJournal struct {
	Txn *struct {
		Kind, Step string
	} `json:"txn"`
}

// etcdGet reads one key of the fleet through etcd's JSON gateway.
func (f *fleet) etcdGet(key string) []byte {
	f.t.Helper()
	body, _ := json.Marshal(map[string][]byte{"key": []byte("/daneroll/" + key)})
	for _, ep := range f.etcd.Endpoints {
		req, _ := http.NewRequest(http.MethodPost, ep+"/v3/kv/range", bytes.NewReader(body))
		resp, err := f.gateway.Do(req)
		if err != nil {
			continue
		}
		var r struct {
			Kvs []struct {
				Value []byte `json:"value"`
			} `json:"kvs"`
		}
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			continue
		}
		if len(r.Kvs) == 0 {
			return nil
		}
		return r.Kvs[0].Value
	}
	f.t.Fatalf("no etcd member answers for %s", key)
	return nil
}

// etcdPut writes one key of the fleet, as anyone who can write to etcd
// can.
func (f *fleet) etcdPut(key string, value []byte) {
	f.t.Helper()
	body, _ := json.Marshal(map[string][]byte{"key": []byte("/daneroll/" + key), "value": value})
	req, _ := http.NewRequest(http.MethodPost, f.etcd.Endpoints[0]+"/v3/kv/put", bytes.NewReader(body))
	resp, err := f.gateway.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("put %s: %s", key, resp.Status)
	}
}

// served returns the key each host's service serves.
func (f *fleet) served() []string {
	var keys []string
	for _, h := range f.hosts {
		keys = append(keys, h.svc.Served())
	}
	return keys
}

// published is what every server serves at the TLSA name (they must
// agree).
func (f *fleet) published() []string {
	f.t.Helper()
	got, err := f.lb.Published(f.owner)
	if err != nil {
		f.t.Error(err)
	}
	return got
}

// waitServed waits until every host serves key.
func (f *fleet) waitServed(key string, within time.Duration) {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if slices.Equal(f.served(), []string{key, key, key}) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatalf("the hosts serve %v after %s, want %s everywhere%s", f.served(), within, key, f.agentLogs())
}

// atRest checks the fleet with no run going: no transaction pending in
// etcd, every host serving the live set's key, exactly the wanted records
// published (the live key, and for key_policy fresh nothing else), and no
// moment so far at which any host served a key that a resolver might have
// held an answer without.
func (f *fleet) atRest() (live string) {
	f.t.Helper()
	var j fleetJournal
	if data := f.etcdGet("certs/mail/journal"); data == nil {
		f.t.Fatal("no journal in etcd")
	} else if err := json.Unmarshal(data, &j); err != nil {
		f.t.Fatal(err)
	}
	if j.Txn != nil {
		f.t.Errorf("a %s transaction is still pending at %s", j.Txn.Kind, j.Txn.Step)
	}
	served := f.served()
	if served[0] == "" || slices.ContainsFunc(served, func(k string) bool { return k != served[0] }) {
		f.t.Errorf("the hosts serve %v, not one key", served)
	}
	if got := f.published(); !slices.Equal(got, served[:1]) {
		f.t.Errorf("published %v, want exactly the served key %s", got, served[0])
	}
	f.noGaps()
	return served[0]
}

// noGaps checks the cache model for every host and the prober's count.
func (f *fleet) noGaps() {
	f.t.Helper()
	history := f.lb.DNS.History(f.owner, dns.TypeTLSA)
	for _, h := range f.hosts {
		var served []dnstest.KeyServed
		timeline := h.svc.Timeline()
		for i, ch := range timeline {
			k := dnstest.KeyServed{From: ch.At, SPKI: ch.SPKI}
			if i+1 < len(timeline) {
				k.To = timeline[i+1].At
			}
			served = append(served, k)
		}
		for _, g := range dnstest.CacheGaps(history, served, time.Now()) {
			f.t.Errorf("%s: %s", h.name, g.Describe(f.start))
		}
	}
	if f.probe == nil {
		return
	}
	if n, fails := f.probe.result(); len(fails) > 0 {
		f.t.Errorf("the DANE prober failed %d of %d checks; first: %s", len(fails), n, strings.Join(fails[:min(5, len(fails))], "\n"))
	}
}

// fleetProber is a DANE client of every host: it connects to each,
// STARTTLS, and checks the key it is served against the TLSA records the
// validating resolver returns (AD set), as postfix's smtp client does.
type fleetProber struct {
	f      *fleet
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex // guards n and fails
	n     int
	fails []string
}

func startFleetProber(f *fleet) *fleetProber {
	ctx, cancel := context.WithCancel(context.Background())
	p := &fleetProber{f: f, cancel: cancel, done: make(chan struct{})}
	go p.run(ctx)
	f.t.Cleanup(p.stop)
	return p
}

func (p *fleetProber) stop() {
	p.cancel()
	<-p.done
}

func (p *fleetProber) run(ctx context.Context) {
	defer close(p.done)
	eps := make([]services.Endpoint, len(p.f.hosts))
	for i, h := range p.f.hosts {
		ep, err := services.ParseEndpoint(fmt.Sprintf("smtp://mail.example.test:%s?connect=%s", p.f.port, h.addr))
		if err != nil {
			panic(err)
		}
		eps[i] = ep
	}
	dc := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	for ctx.Err() == nil {
		for i, ep := range eps {
			msg := p.check(ctx, dc, ep)
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			p.n++
			if msg != "" {
				p.fails = append(p.fails, fmt.Sprintf("+%.3fs %s: %s", time.Since(p.f.start).Seconds(), p.f.hosts[i].name, msg))
			}
			p.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// check is one DANE connection, as a client makes it: the TLSA records
// from the validating resolver first, then the connection. It returns ""
// when the client would accept the server.
func (p *fleetProber) check(ctx context.Context, dc *dns.Client, ep services.Endpoint) string {
	m := new(dns.Msg)
	m.SetQuestion(p.f.owner, dns.TypeTLSA)
	m.SetEdns0(1232, true)
	r, _, err := dc.ExchangeContext(ctx, m, p.f.lb.Resolver.Addr())
	switch {
	case err != nil:
		return "resolver: " + err.Error()
	case r.Rcode != dns.RcodeSuccess:
		return "resolver answered " + dns.RcodeToString[r.Rcode]
	case !r.AuthenticatedData:
		return "the resolver's answer is not validated (no AD)"
	}
	res, err := services.Probe(ctx, ep, services.ProbeOptions{Timeout: 5 * time.Second})
	if err != nil {
		return err.Error()
	}
	key := res.LeafSPKI()
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TLSA); ok && t.Usage == 3 && t.Selector == 1 && t.MatchingType == 1 && strings.EqualFold(t.Certificate, key) {
			return ""
		}
	}
	return fmt.Sprintf("serves key %.16s, which none of the %d records the resolver returns matches", key, len(r.Answer))
}

func (p *fleetProber) result() (int, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n, slices.Clone(p.fails)
}

// TestFleetRenews issues the fleet's certificate from one host and changes
// its key from another: every host serves each key only once its record is
// everywhere a DANE client may look, and the old record goes only when all
// three serve the new key.
func TestFleetRenews(t *testing.T) {
	f := newFleet(t, "30s")
	first := f.issue()
	out := f.mustRun(f.hosts[1], "renew", "--force")
	t.Logf("renew --force on host2:\n%s", out)
	if !strings.Contains(out, "all 3 members (host1, host2, host3)") {
		t.Errorf("renew --force on host2 does not say every member serves the key:\n%s", out)
	}
	second := f.atRest()
	if second == first {
		t.Fatalf("renew --force kept key %s", first)
	}
	out = f.mustRun(f.hosts[2], "renew")
	if f.atRest() != second {
		t.Errorf("a renew with nothing to do changed the key:\n%s", out)
	}
	// Each member reports what each of its endpoints serves.
	for _, h := range f.hosts {
		var r struct {
			Endpoints map[string]string `json:"endpoints"`
		}
		if err := json.Unmarshal(f.etcdGet("certs/mail/reports/"+h.name), &r); err != nil {
			t.Fatal(err)
		}
		ep := "smtp://mail.example.test:" + f.port + "?connect=" + h.addr
		if len(r.Endpoints) != 1 || r.Endpoints[ep] != second {
			t.Errorf("%s reports %v, want %s serving %.12s", h.name, r.Endpoints, ep, second)
		}
	}
	status := f.mustRun(f.hosts[0], "status")
	t.Logf("status on host1:\n%s", status)
	prom, _ := os.ReadFile(f.hosts[0].metrics)
	for _, h := range f.hosts {
		for _, want := range []string{`daneroll_fleet_member_serving{certificate="mail",host="` + h.name + `"} 1`, `daneroll_fleet_agent_running{certificate="mail",host="` + h.name + `"} 1`} {
			if !strings.Contains(string(prom), want+"\n") {
				t.Errorf("host1's metrics lack %s:\n%s", want, prom)
			}
		}
	}
	for _, h := range f.hosts {
		if want := fmt.Sprintf("%s: serves set 0002, key %.16s…", h.name, second); !strings.Contains(status, want) {
			t.Errorf("status does not say %q:\n%s", want, status)
		}
	}
	// tlsa and check read the fleet's state like status does.
	if out := f.mustRun(f.hosts[2], "tlsa"); !strings.Contains(out, "3 1 1 "+second) || strings.Contains(out, first) {
		t.Errorf("tlsa on host3 does not give the live key's record (and only it):\n%s", out)
	}
	if out := f.mustRun(f.hosts[1], "check"); !strings.Contains(out, "PASS") {
		t.Errorf("check on host2:\n%s", out)
	}
	n, _ := f.probe.result()
	t.Logf("DANE prober: %d checks, none failed; keys %.12s then %.12s", n, first, second)
}

// TestFleetCoordinatorKilled kills the coordinator with SIGKILL just
// before, then just after, each journal write of a key change in turn,
// and resumes from another host: the resumed run waits out the dead one's
// lease and finishes the transaction, and no DANE client ever fails.
func TestFleetCoordinatorKilled(t *testing.T) {
	f := newFleet(t, "30s")
	key := f.issue()
	kills, coordinator := 0, 0
	for _, when := range []string{"before", "after"} {
		for n := 1; ; n++ {
			fp := fmt.Sprintf("%s:%d", when, n)
			h := f.hosts[coordinator%fleetHosts]
			r := f.run(h, fp, "renew", "--force")
			if !r.killed {
				if r.code != 0 {
					t.Fatalf("%s: renew --force on %s failed:\n%s%s", fp, h.name, r.out, f.agentLogs())
				}
				key = f.atRest()
				break
			}
			kills++
			// Whoever runs next resumes it: another host.
			coordinator++
			next := f.hosts[coordinator%fleetHosts]
			began := time.Now()
			rec := f.run(next, "", "renew")
			if rec.code != 0 || rec.killed {
				t.Fatalf("%s: killed on %s; renew on %s after it failed (exit %d):\n%s%s", fp, h.name, next.name, rec.code, rec.out, f.agentLogs())
			}
			now := f.atRest()
			t.Logf("%s: killed on %s, resumed on %s in %.1fs: key %.12s", fp, h.name, next.name, time.Since(began).Seconds(), now)
			if t.Failed() {
				t.Fatalf("after the kill at %s; the resumed run said:\n%s", fp, rec.out)
			}
			key = now
		}
	}
	n, _ := f.probe.result()
	t.Logf("%d kills; DANE prober: %d checks, none failed; last key %.12s", kills, n, key)
	if kills < 6 {
		t.Errorf("only %d journal writes to kill at: the failpoints did not reach the fleet's journal", kills)
	}
}

// TestFleetEtcdMemberKilled kills an etcd member in the middle of a key
// change: the run goes on with the other two.
func TestFleetEtcdMemberKilled(t *testing.T) {
	f := newFleet(t, "30s")
	first := f.issue()
	for _, member := range []int{0, 1} {
		done := make(chan result, 1)
		go func() { done <- runDaneroll(t, f.hosts[member+1].cfg, "", "renew", "--force") }()
		// Wait until the run is past publishing: the journal's step
		// moves on.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var j fleetJournal
			if data := f.etcdGet("certs/mail/journal"); data != nil && json.Unmarshal(data, &j) == nil && j.Txn != nil && j.Txn.Step != "" && j.Txn.Step != "begin" {
				t.Logf("killing etcd member %d with the transaction at step %s", member, j.Txn.Step)
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the renew did not start a transaction")
			}
			time.Sleep(20 * time.Millisecond)
		}
		f.etcd.Kill(member)
		r := <-done
		if r.code != 0 || r.killed {
			t.Fatalf("renew --force with etcd member %d killed: exit %d:\n%s%s", member, r.code, r.out, f.agentLogs())
		}
		if k := f.atRest(); k == first {
			t.Errorf("the key did not change")
		} else {
			first = k
		}
		f.etcd.Restart(member)
	}
	n, _ := f.probe.result()
	t.Logf("DANE prober: %d checks, none failed", n)
}

// TestFleetSilentMember stops one host's agent: the key change waits for
// its report, then rolls the fleet back to the old key and keeps both
// records; with the agent back, the next change goes through.
func TestFleetSilentMember(t *testing.T) {
	f := newFleet(t, "5s")
	old := f.issue()
	silent := f.hosts[2]
	f.stopAgent(silent)
	r := f.run(f.hosts[0], "", "renew", "--force")
	if r.code == 0 {
		t.Fatalf("renew --force succeeded without host3's report:\n%s", r.out)
	}
	for _, want := range []string{"no report from host3", "rolled back", "records kept"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("the failed renew does not say %q:\n%s", want, r.out)
		}
	}
	f.waitServed(old, 10*time.Second)
	st := f.run(f.hosts[1], "", "status")
	if st.code != 2 || !strings.Contains(st.out, "the agent of member host3 is not running") || !strings.Contains(st.out, "host3: serves set 0001") {
		t.Errorf("status after the rollback (exit %d) does not point at host3's agent:\n%s", st.code, st.out)
	}
	if prom, _ := os.ReadFile(f.hosts[1].metrics); !strings.Contains(string(prom), `daneroll_fleet_agent_running{certificate="mail",host="host3"} 0`+"\n") {
		t.Errorf("host2's metrics do not say host3's agent is stopped:\n%s", prom)
	}
	published := f.published()
	if len(published) != 2 || !slices.Contains(published, old) {
		t.Errorf("after the rollback the zone has %v; want the old key's record %.12s and the new one's, both kept", published, old)
	}
	f.noGaps()
	// A prune from host1 of a record no key of daneroll's matches asks
	// every member's endpoint, host3's too, before it removes it.
	unknown := strings.Repeat("ab", 32)
	if err := f.lb.DNS.Update(func(z *dnstest.Zone) error { return z.AddString(f.owner + " 1 IN TLSA 3 1 1 " + unknown) }); err != nil {
		t.Fatal(err)
	}
	out := f.mustRun(f.hosts[0], "prune")
	for _, h := range f.hosts {
		if want := "probing smtp://mail.example.test:" + f.port + "?connect=" + h.addr; !strings.Contains(out, want) {
			t.Errorf("prune on host1 does not say %q:\n%s", want, out)
		}
	}
	if got := f.published(); len(got) != 2 || slices.Contains(got, unknown) {
		t.Errorf("after the prune the zone has %v; want the two keys' records and not the unknown one", got)
	}

	f.startAgent(silent)
	out = f.mustRun(f.hosts[1], "renew", "--force")
	if !strings.Contains(out, "all 3 members") {
		t.Errorf("the renew with host3 back does not wait for all three:\n%s", out)
	}
	now := f.served()[0]
	if now == old {
		t.Fatalf("the key did not change")
	}
	f.waitServed(now, 10*time.Second)
	if got := f.published(); !slices.Contains(got, now) || slices.Contains(got, old) {
		t.Errorf("after the change the zone has %v; want %.12s and not the old %.12s", got, now, old)
	}
	f.noGaps()

	// A member gone for good leaves; deploys stop waiting for it.
	f.stopAgent(silent)
	out = f.mustRun(silent, "agent", "--leave")
	if !strings.Contains(out, "host3 is no longer a member of mail") {
		t.Errorf("agent --leave says:\n%s", out)
	}
	if f.etcdGet("certs/mail/members/host3") != nil {
		t.Error("host3 is still a member after --leave")
	}
}

// TestFleetFrozenCoordinator freezes the coordinator (SIGSTOP) in its
// hold for longer than lock_ttl: another host takes the lock, resumes and
// finishes the change; thawed, the old coordinator finds its lock lost and
// changes nothing more (fencing).
func TestFleetFrozenCoordinator(t *testing.T) {
	f := newFleet(t, "30s")
	f.issue()
	cmd := exec.Command(bins.daneroll, "-c", f.hosts[0].cfg, "renew", "--force")
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var j fleetJournal
		if data := f.etcdGet("certs/mail/journal"); data != nil && json.Unmarshal(data, &j) == nil && j.Txn != nil && j.Txn.Step == "hold" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the renew on host1 did not reach the hold:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := f.served()[0]
	// host2 waits for host1's lease to expire, then resumes.
	rec := f.mustRun(f.hosts[1], "renew")
	if !strings.Contains(rec, "resuming") {
		t.Errorf("the renew on host2 did not resume host1's transaction:\n%s", rec)
	}
	after := f.atRest()
	if after == frozen {
		t.Errorf("host2's run did not finish the key change")
	}
	journal := string(f.etcdGet("certs/mail/journal"))

	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if err == nil {
			t.Errorf("the thawed coordinator succeeded:\n%s", out.String())
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("the thawed coordinator did not stop:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "lost the lock of certificate mail") {
		t.Errorf("the thawed coordinator does not say it lost the lock:\n%s", out.String())
	}
	if got := string(f.etcdGet("certs/mail/journal")); got != journal {
		t.Errorf("the thawed coordinator changed the journal:\nbefore %s\nafter  %s", journal, got)
	}
	if f.atRest() != after {
		t.Errorf("the thawed coordinator changed what is served")
	}
	t.Logf("thawed coordinator:\n%s", out.String())
}

// safeAt is when the current key became safe to serve (the journal in
// etcd): confirmation on every server plus the hold.
func (f *fleet) safeAt() time.Time {
	f.t.Helper()
	var j struct {
		Current string `json:"current"`
		Keys    []struct {
			ID     string               `json:"id"`
			SafeAt map[string]time.Time `json:"safe_at"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(f.etcdGet("certs/mail/journal"), &j); err != nil {
		f.t.Fatal(err)
	}
	for _, k := range j.Keys {
		if k.ID == j.Current {
			return k.SafeAt[f.owner]
		}
	}
	f.t.Fatalf("no safe time of key %s in the journal", j.Current)
	return time.Time{}
}

// TestFleetAgentsRefuseAnUnpublishedKey points the fleet's live set, behind
// daneroll's back, at a set whose key has no TLSA record (a bug, a restore
// of etcd from an old backup, someone holding the fleet key): no agent
// installs it, each reports why, and every host keeps serving its key.
func TestFleetAgentsRefuseAnUnpublishedKey(t *testing.T) {
	f := newFleet(t, "30s")
	served := f.issue()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "mail.example.test"},
		DNSNames: []string{"mail.example.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	fk, err := fleetkey.Load(f.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := fk.Seal("/daneroll/certs/mail/sets/0099", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(map[string]any{"cert": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), "chain": "", "key": sealed})
	f.etcdPut("certs/mail/sets/0099", rec)
	f.etcdPut("certs/mail/live", []byte("0099"))

	deadline := time.Now().Add(20 * time.Second)
	for _, h := range f.hosts {
		for {
			var r struct {
				Set   string `json:"set"`
				OK    bool   `json:"ok"`
				Error string `json:"error"`
			}
			if data := f.etcdGet("certs/mail/reports/" + h.name); data != nil && json.Unmarshal(data, &r) == nil && r.Set == "0099" {
				if r.OK || !strings.Contains(r.Error, "not installed: set 0099 does not match the TLSA records a DANE client finds") {
					t.Errorf("%s reports on set 0099: ok %v, %q", h.name, r.OK, r.Error)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s reported nothing on set 0099%s", h.name, f.agentLogs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if got := f.served(); !slices.Equal(got, []string{served, served, served}) {
		t.Errorf("the hosts serve %v, want the published key %.12s everywhere", got, served)
	}
	f.noGaps()
}
