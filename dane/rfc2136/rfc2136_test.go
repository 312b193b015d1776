package rfc2136

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/miekg/dns"
)

var _ dane.Publisher = (*Publisher)(nil)

var (
	secret      = base64.StdEncoding.EncodeToString([]byte("daneroll test secret, 32 bytes!!"))
	otherSecret = base64.StdEncoding.EncodeToString([]byte("some other secret of 32 bytes..."))
)

const owner = "_25._tcp.mail.example.test."

func rr(t *testing.T, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func tlsa(t *testing.T, n int) dns.RR {
	return rr(t, owner+" 300 IN TLSA 3 1 1 "+strings.Repeat("0", 62)+string(rune('0'+n))+"0")
}

// start runs a signed zone with a TLSA record and a TXT record of someone
// else at the owner, and a key "daneroll." allowed to change it.
func start(t *testing.T, opts dnstest.Options) *dnstest.Cluster {
	t.Helper()
	if opts.Origin == "" {
		opts.Origin = "example.test."
	}
	opts.Records = append(opts.Records,
		"mail A 192.0.2.25",
		"_25._tcp.mail 300 TLSA 3 1 1 "+strings.Repeat("f", 64),
		`_25._tcp.mail 300 TXT "someone else's"`)
	if opts.TSIG == nil {
		opts.TSIG = map[string]string{"daneroll.": secret}
	}
	return dnstest.StartT(t, opts)
}

func newPublisher(t *testing.T, server string, mod func(*Config)) *Publisher {
	t.Helper()
	cfg := Config{Server: server, TSIGName: "daneroll", TSIGAlgorithm: dns.HmacSHA256, TSIGSecret: secret, Timeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func records(t *testing.T, p *Publisher, name string, rrtype uint16) []dns.RR {
	t.Helper()
	got, err := p.Records(t.Context(), name, rrtype)
	if err != nil {
		t.Fatalf("Records(%s, %s): %v", name, dns.TypeToString[rrtype], err)
	}
	return got
}

func has(rrs []dns.RR, want dns.RR) bool {
	for _, r := range rrs {
		if dns.IsDuplicate(r, want) {
			return true
		}
	}
	return false
}

func TestAddListDelete(t *testing.T) {
	c := start(t, dnstest.Options{Signed: true, Secondaries: 1})
	p := newPublisher(t, c.Primary(), nil)
	if p.String() != "rfc2136 "+c.Primary() {
		t.Fatalf("String() = %q", p.String())
	}
	foreignTLSA := rr(t, owner+" 300 IN TLSA 3 1 1 "+strings.Repeat("f", 64))
	foreignTXT := rr(t, owner+` 300 IN TXT "someone else's"`)
	ours := tlsa(t, 1)
	challenge := rr(t, `_acme-challenge.mail.example.test. 60 IN TXT "token-value"`)

	if got := records(t, p, owner, dns.TypeTLSA); len(got) != 1 || !has(got, foreignTLSA) {
		t.Fatalf("before: %v", got)
	}
	if got := records(t, p, "_acme-challenge.mail.example.test.", dns.TypeTXT); len(got) != 0 {
		t.Fatalf("TXT before: %v", got)
	}

	serial := c.Serial(0)
	for range 2 { // the second add is a no-op
		if err := p.Add(t.Context(), ours); err != nil {
			t.Fatal(err)
		}
		if err := p.Add(t.Context(), challenge); err != nil {
			t.Fatal(err)
		}
	}
	if c.Serial(0) != serial+2 {
		t.Fatalf("serial %d after two adds and two repeats, want %d", c.Serial(0), serial+2)
	}
	got := records(t, p, owner, dns.TypeTLSA)
	if len(got) != 2 || !has(got, ours) || !has(got, foreignTLSA) {
		t.Fatalf("after add: %v", got)
	}
	if got := records(t, p, "_acme-challenge.mail.example.test", dns.TypeTXT); len(got) != 1 || !has(got, challenge) {
		t.Fatalf("TXT after add: %v", got)
	}
	// Only records of the type asked, no RRSIGs.
	if got := records(t, p, owner, dns.TypeTXT); len(got) != 1 || !has(got, foreignTXT) {
		t.Fatalf("TXT at owner: %v", got)
	}

	for range 2 { // deleting what is gone succeeds
		if err := p.Delete(t.Context(), ours); err != nil {
			t.Fatal(err)
		}
		if err := p.Delete(t.Context(), challenge); err != nil {
			t.Fatal(err)
		}
	}
	got = records(t, p, owner, dns.TypeTLSA)
	if len(got) != 1 || !has(got, foreignTLSA) {
		t.Fatalf("after delete: %v (the other record must stay)", got)
	}
	if got := records(t, p, owner, dns.TypeTXT); len(got) != 1 {
		t.Fatalf("TXT at owner after delete: %v", got)
	}
	if got := records(t, p, "_acme-challenge.mail.example.test", dns.TypeTXT); len(got) != 0 {
		t.Fatalf("TXT after delete: %v", got)
	}
	if ours.Header().Class != dns.ClassINET || ours.Header().Ttl != 300 {
		t.Fatalf("Delete changed the caller's record: %v", ours)
	}

	// What went over the wire: updates over TCP with the zone section
	// IN SOA example.test., signed with fudge 300; queries over TCP, no
	// recursion.
	var updates, soaQueries int
	for _, q := range c.Queries() {
		if q.Transport != "tcp" || q.RD {
			t.Fatalf("request over %s with RD %v: %v", q.Transport, q.RD, q.Request)
		}
		if q.Opcode == dns.OpcodeUpdate {
			updates++
			zs := q.Request.Question[0]
			ts := q.Request.IsTsig()
			if zs.Name != "example.test." || zs.Qclass != dns.ClassINET || zs.Qtype != dns.TypeSOA ||
				ts == nil || ts.Fudge != 300 || ts.Algorithm != dns.HmacSHA256 || ts.Hdr.Name != "daneroll." ||
				len(q.Request.Ns) != 1 || len(q.Request.Answer) != 0 {
				t.Fatalf("update: %v", q.Request)
			}
			if u := q.Request.Ns[0].Header(); u.Class != dns.ClassINET && (u.Class != dns.ClassNONE || u.Ttl != 0) {
				t.Fatalf("update record %v: want class IN (add) or NONE with TTL 0 (delete)", q.Request.Ns[0])
			}
		}
		if q.Opcode == dns.OpcodeQuery && q.Type == dns.TypeSOA {
			soaQueries++
		}
	}
	if updates != 8 {
		t.Fatalf("%d updates sent, want 8", updates)
	}
	// The zone is looked up once per owner name.
	if soaQueries != 2 {
		t.Fatalf("%d SOA queries, want 2 (one per owner)", soaQueries)
	}
}

func TestAlgorithmsAndNames(t *testing.T) {
	c := start(t, dnstest.Options{})
	for _, alg := range []string{"hmac-sha512", dns.HmacSHA1, ""} {
		p := newPublisher(t, c.Primary(), func(cfg *Config) { cfg.TSIGAlgorithm = alg; cfg.TSIGName = "DaneRoll." })
		r := tlsa(t, 2)
		if err := p.Add(t.Context(), r); err != nil {
			t.Fatalf("%q: %v", alg, err)
		}
		// Owner names in any case, without the trailing dot.
		if got := records(t, p, strings.ToUpper(strings.TrimSuffix(owner, ".")), dns.TypeTLSA); !has(got, r) {
			t.Fatalf("%q: records %v", alg, got)
		}
		if err := p.Delete(t.Context(), r); err != nil {
			t.Fatalf("%q: %v", alg, err)
		}
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no server", Config{TSIGName: "k", TSIGSecret: secret}, "no server"},
		{"no key", Config{Server: "127.0.0.1:53", TSIGSecret: secret}, "no TSIG key name"},
		{"algorithm", Config{Server: "127.0.0.1:53", TSIGName: "k", TSIGAlgorithm: "hmac-md5", TSIGSecret: secret}, "unknown TSIG algorithm"},
		{"secret", Config{Server: "127.0.0.1:53", TSIGName: "k", TSIGSecret: "s3cr3t!value"}, "not base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("error shows the secret: %v", err)
			}
		})
	}
	p, err := New(Config{Server: "192.0.2.53", TSIGName: "k", TSIGSecret: secret})
	if err != nil || p.String() != "rfc2136 192.0.2.53:53" {
		t.Fatalf("default port: %v, %v", p, err)
	}
}

// TestRefusals checks that each way a server can say no comes back as an
// error that says why, never with the secret in it.
func TestRefusals(t *testing.T) {
	c := start(t, dnstest.Options{
		Secondaries: 1,
		TSIG:        map[string]string{"daneroll.": secret, "limited.": otherSecret},
		UpdatePolicy: func(key, name string, rrtype uint16) bool {
			return key == "daneroll." || (key == "limited." && rrtype == dns.TypeTXT)
		},
	})
	other := dnstest.StartT(t, dnstest.Options{Origin: "example.org.", TSIG: map[string]string{"daneroll.": secret}})
	down := freeAddr(t)

	for _, tc := range []struct {
		name   string
		server string
		mod    func(*Config)
		record dns.RR
		want   []string
	}{
		{"bad secret", c.Primary(), func(cfg *Config) { cfg.TSIGSecret = otherSecret }, tlsa(t, 3),
			[]string{"TSIG key daneroll. rejected by " + c.Primary() + " (NOTAUTH, BADSIG): check tsig_name/tsig_algorithm/tsig_secret"}},
		{"unknown key", c.Primary(), func(cfg *Config) { cfg.TSIGName = "stranger" }, tlsa(t, 3),
			[]string{"TSIG key stranger. rejected by " + c.Primary() + " (NOTAUTH, BADKEY): check tsig_name/tsig_algorithm/tsig_secret"}},
		{"clock", c.Primary(), func(cfg *Config) { cfg.Now = func() time.Time { return time.Now().Add(-time.Hour) } }, tlsa(t, 3),
			[]string{"TSIG time rejected by " + c.Primary() + " (NOTAUTH, BADTIME)", "clock"}},
		{"policy", c.Primary(), func(cfg *Config) { cfg.TSIGName = "limited."; cfg.TSIGSecret = otherSecret }, tlsa(t, 3),
			[]string{"REFUSED", "does not allow key limited. to change " + owner + " TLSA", "check update-policy/allow-update"}},
		{"secondary", c.Addrs()[1], nil, tlsa(t, 3),
			[]string{"REFUSED", "is the primary of example.test."}},
		{"server down", down, nil, tlsa(t, 3),
			[]string{"cannot reach " + down, "connection refused"}},
		{"outside any zone", other.Primary(), nil, tlsa(t, 3),
			[]string{"no zone on " + other.Primary() + " holds " + owner}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPublisher(t, tc.server, tc.mod)
			before := c.Serial(0)
			err := p.Add(t.Context(), tc.record)
			if err == nil {
				t.Fatalf("Add succeeded")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			if strings.Contains(msg, secret) || strings.Contains(msg, otherSecret) {
				t.Errorf("error shows a secret: %q", msg)
			}
			if c.Serial(0) != before {
				t.Errorf("the zone changed")
			}
			if err := p.Delete(t.Context(), tc.record); err == nil {
				t.Errorf("Delete succeeded where Add failed")
			}
		})
	}

	// The limited key may change TXT records.
	p := newPublisher(t, c.Primary(), func(cfg *Config) { cfg.TSIGName = "limited."; cfg.TSIGSecret = otherSecret })
	if err := p.Add(t.Context(), rr(t, `_acme-challenge.example.test. 60 IN TXT "x"`)); err != nil {
		t.Fatal(err)
	}
}

func TestRecordsErrors(t *testing.T) {
	c := start(t, dnstest.Options{Records: []string{"sub NS ns.elsewhere.test."}})
	p := newPublisher(t, c.Primary(), nil)
	if _, err := p.Records(t.Context(), "www.example.org.", dns.TypeTLSA); err == nil || !strings.Contains(err.Error(), "REFUSED") {
		t.Fatalf("outside the zone: %v", err)
	}
	if _, err := p.Records(t.Context(), "_25._tcp.www.sub.example.test.", dns.TypeTLSA); err == nil ||
		!strings.Contains(err.Error(), "delegated") {
		t.Fatalf("below a delegation: %v", err)
	}
	if err := p.Add(t.Context(), rr(t, "_25._tcp.www.sub.example.test. 300 IN TLSA 3 1 1 00")); err == nil ||
		!strings.Contains(err.Error(), "delegated") {
		t.Fatalf("add below a delegation: %v", err)
	}
	// A name that does not exist has no records; that is no error.
	if got := records(t, p, "nothere.example.test.", dns.TypeTLSA); len(got) != 0 {
		t.Fatalf("NXDOMAIN: %v", got)
	}
	if err := p.Add(t.Context(), rr(t, "example.test. SOA a. b. 1 2 3 4 5")); err == nil {
		t.Fatalf("a SOA was sent")
	}
}

func TestCNAMEOwner(t *testing.T) {
	c := start(t, dnstest.Options{Records: []string{"_25._tcp.alias CNAME _25._tcp.mail"}})
	p := newPublisher(t, c.Primary(), nil)
	err := p.Add(t.Context(), rr(t, "_25._tcp.alias.example.test. 300 IN TLSA 3 1 1 00"))
	if err == nil || !strings.Contains(err.Error(), "is a CNAME") {
		t.Fatalf("add at a CNAME: %v", err)
	}
}

func TestTimeout(t *testing.T) {
	// A server that accepts connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() })
		}
	}()
	p := newPublisher(t, l.Addr().String(), func(cfg *Config) { cfg.Timeout = 200 * time.Millisecond })
	begin := time.Now()
	err = p.Add(t.Context(), tlsa(t, 4))
	if err == nil || !strings.Contains(err.Error(), "cannot reach "+l.Addr().String()+": no answer within 200ms") {
		t.Fatalf("error %v", err)
	}
	if time.Since(begin) > 5*time.Second {
		t.Fatalf("timeout took %v", time.Since(begin))
	}

	// A canceled context stops at once.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := p.Records(ctx, owner, dns.TypeTLSA); err == nil || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("canceled: %v", err)
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestUntrustedAnswers has a server answer updates with NOERROR that is
// not signed, or signed with another secret: neither counts as success.
func TestUntrustedAnswers(t *testing.T) {
	for _, tc := range []struct {
		name       string
		signWith   string // "" answers unsigned
		wantSubstr string
	}{
		{"unsigned", "", "is not signed with TSIG key daneroll."},
		{"other secret", otherSecret, "fails the TSIG check"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeServer(t, tc.signWith)
			p := newPublisher(t, addr, nil)
			err := p.Add(t.Context(), tlsa(t, 5))
			if err == nil || !strings.Contains(err.Error(), tc.wantSubstr) {
				t.Fatalf("error %v, want %q", err, tc.wantSubstr)
			}
		})
	}
}

// fakeServer answers SOA queries for example.test. and accepts every
// update, answering it signed with signWith (or unsigned when "").
func fakeServer(t *testing.T, signWith string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	soa := rr(t, "example.test. 3600 IN SOA ns. host. 1 2 3 4 5")
	srv := &dns.Server{
		Listener:      l,
		TsigSecret:    map[string]string{"daneroll.": signWith},
		MsgAcceptFunc: func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			m.Authoritative = true
			if r.Opcode == dns.OpcodeQuery {
				m.Ns = []dns.RR{soa}
			}
			if ts := r.IsTsig(); ts != nil && signWith != "" {
				m.SetTsig(ts.Hdr.Name, ts.Algorithm, 300, time.Now().Unix())
			}
			w.WriteMsg(m)
		}),
	}
	started := make(chan struct{})
	failed := make(chan error, 1)
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { failed <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-failed:
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown() })
	return l.Addr().String()
}

// TestConfirmAfterPublish publishes through the primary and has the dane
// confirmation ask every server: a frozen secondary holds it back until it
// copies the change.
func TestConfirmAfterPublish(t *testing.T) {
	c := start(t, dnstest.Options{Signed: true, Secondaries: 2})
	p := newPublisher(t, c.Primary(), nil)
	conf := &dane.Confirmer{Nameservers: c.Addrs(), Querier: &dane.Querier{Timeout: 5 * time.Second}}
	ours := tlsa(t, 6)
	want := []dane.Want{{Owner: owner, Type: dns.TypeTLSA, Present: []dns.RR{ours}}}

	c.Freeze(2)
	if err := p.Add(t.Context(), ours); err != nil {
		t.Fatal(err)
	}
	rep, err := conf.Check(t.Context(), want)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Confirmed || !strings.Contains(strings.Join(rep.Lagging(), "\n"), c.Addrs()[2]+" (serial "+fmt.Sprint(c.Serial(2))+"): lacks "+owner) {
		t.Fatalf("with a frozen secondary: confirmed %v, lagging %q", rep.Confirmed, rep.Lagging())
	}
	c.Thaw(2)
	rep, err = conf.Check(t.Context(), want)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Confirmed || rep.Zones[0].Serial != c.Serial(0) || !rep.Zones[0].Signed {
		t.Fatalf("after thaw: confirmed %v, lagging %q", rep.Confirmed, rep.Lagging())
	}
}
