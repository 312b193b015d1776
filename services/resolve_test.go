package services

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/miekg/dns"
)

// testResolver stands in for a validating resolver: an in-process server
// on 127.0.0.1, UDP and TCP on one port, whose answers the test scripts.
type testResolver struct {
	addr string
	// answer fills the reply to q, already set up with SetReply (and the
	// request's EDNS0); transport is "udp" or "tcp".
	answer func(q dns.Question, transport string, reply *dns.Msg)

	mu    sync.Mutex // guards asked
	asked []asked
}

// asked is one request a testResolver got.
type asked struct {
	name          string
	qtype         uint16
	transport     string
	rd, ad, do    bool
	edns, udpSize uint16
}

func startResolver(t *testing.T, answer func(q dns.Question, transport string, reply *dns.Msg)) *testResolver {
	t.Helper()
	var (
		pc  net.PacketConn
		l   net.Listener
		err error
	)
	for range 50 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("no port free for both UDP and TCP: %v", err)
	}
	r := &testResolver{addr: pc.LocalAddr().String(), answer: answer}
	handler := func(transport string) dns.HandlerFunc {
		return func(w dns.ResponseWriter, req *dns.Msg) {
			q := req.Question[0]
			a := asked{name: q.Name, qtype: q.Qtype, transport: transport, rd: req.RecursionDesired, ad: req.AuthenticatedData}
			reply := new(dns.Msg)
			reply.SetReply(req)
			if opt := req.IsEdns0(); opt != nil {
				a.edns, a.udpSize, a.do = 1, opt.UDPSize(), opt.Do()
				reply.SetEdns0(1232, opt.Do())
			}
			r.mu.Lock()
			r.asked = append(r.asked, a)
			r.mu.Unlock()
			r.answer(q, transport, reply)
			_ = w.WriteMsg(reply)
		}
	}
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: handler("udp")},
		{Listener: l, Handler: handler("tcp")},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return r
}

func (r *testResolver) requests() []asked {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.asked)
}

// zone answers from records (zone-file lines with absolute names) as a
// recursive resolver does: following CNAMEs, NXDOMAIN for names that have
// nothing, AD set when secure.
func zone(t *testing.T, secure bool, lines ...string) func(dns.Question, string, *dns.Msg) {
	t.Helper()
	var rrs []dns.RR
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatal(err)
		}
		rrs = append(rrs, rr)
	}
	return func(q dns.Question, _ string, m *dns.Msg) {
		m.AuthenticatedData = secure
		name, exists := q.Name, false
		for hops := 0; hops < 20; hops++ {
			var cname string
			for _, rr := range rrs {
				h := rr.Header()
				if !strings.EqualFold(h.Name, name) {
					continue
				}
				exists = true
				switch {
				case h.Rrtype == q.Qtype:
					m.Answer = append(m.Answer, dns.Copy(rr))
				case h.Rrtype == dns.TypeCNAME:
					m.Answer = append(m.Answer, dns.Copy(rr))
					cname = rr.(*dns.CNAME).Target
				}
			}
			if cname == "" {
				break
			}
			name = cname
		}
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
	}
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// checkResolveError checks that err is one line, names host and resolver,
// and contains want.
func checkResolveError(t *testing.T, err error, host, resolver, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	prefix := "resolve " + host + " via " + resolver + ": "
	if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, want) || strings.ContainsAny(msg, "\r\n") {
		t.Errorf("err = %q, want %q", msg, prefix+"…"+want+"…")
	}
	t.Logf("%v", err)
}

func TestResolve(t *testing.T) {
	r := startResolver(t, zone(t, true,
		"mail.example.test. 300 IN A 192.0.2.25",
		"mail.example.test. 300 IN A 192.0.2.26",
		"mail.example.test. 300 IN A 192.0.2.25", // a duplicate
		"mail.example.test. 300 IN AAAA 2001:db8::25",
		"other.example.test. 300 IN A 192.0.2.99",
	))
	got, secure, err := Resolve(context.Background(), r.addr, "Mail.Example.Test.")
	if err != nil {
		t.Fatal(err)
	}
	if want := addrs("192.0.2.25", "192.0.2.26", "2001:db8::25"); !slices.Equal(got, want) || !secure {
		t.Errorf("Resolve = %v, %v; want %v, secure", got, secure, want)
	}
	reqs := r.requests()
	var types []string
	for _, a := range reqs {
		types = append(types, dns.TypeToString[a.qtype])
		if a.name != "mail.example.test." || a.transport != "udp" || !a.rd || !a.ad || a.edns == 0 || !a.do || a.udpSize != ednsSize {
			t.Errorf("request %+v: want mail.example.test. over UDP with RD, AD, EDNS0 (%d) and DO", a, ednsSize)
		}
	}
	if slices.Sort(types); !slices.Equal(types, []string{"A", "AAAA"}) {
		t.Errorf("asked for %v, want A and AAAA", types)
	}
}

func TestResolveSecureOnlyWhenEveryAnswerIs(t *testing.T) {
	secure := zone(t, true, "mail.example.test. 300 IN A 192.0.2.25")
	r := startResolver(t, func(q dns.Question, tr string, m *dns.Msg) {
		secure(q, tr, m)
		// The AAAA denial is not validated: the name's addresses are
		// not known to be complete.
		m.AuthenticatedData = q.Qtype == dns.TypeA
	})
	got, sec, err := Resolve(context.Background(), r.addr, "mail.example.test")
	if err != nil || !slices.Equal(got, addrs("192.0.2.25")) || sec {
		t.Errorf("Resolve = %v, %v, %v; want 192.0.2.25, not secure", got, sec, err)
	}
}

// TestResolveIgnoresHostsFile: localhost is in /etc/hosts everywhere; the
// resolver, not the file, answers for it.
func TestResolveIgnoresHostsFile(t *testing.T) {
	r := startResolver(t, zone(t, false, "elsewhere.test. 300 IN A 192.0.2.1"))
	_, _, err := Resolve(context.Background(), r.addr, "localhost")
	checkResolveError(t, err, "localhost", r.addr, "NXDOMAIN")

	r = startResolver(t, zone(t, false, "localhost. 300 IN A 192.0.2.7"))
	got, secure, err := Resolve(context.Background(), r.addr, "localhost")
	if err != nil || !slices.Equal(got, addrs("192.0.2.7")) || secure {
		t.Errorf("Resolve(localhost) = %v, %v, %v; want the resolver's 192.0.2.7 only", got, secure, err)
	}
}

func TestResolveFollowsCNAMEs(t *testing.T) {
	r := startResolver(t, zone(t, true,
		"mail.example.test. 300 IN CNAME mx1.example.test.",
		"mx1.example.test. 300 IN CNAME host.example.net.",
		"host.example.net. 300 IN A 192.0.2.25",
		"host.example.net. 300 IN AAAA 2001:db8::25",
	))
	got, secure, err := Resolve(context.Background(), r.addr, "mail.example.test")
	if err != nil || !slices.Equal(got, addrs("192.0.2.25", "2001:db8::25")) || !secure {
		t.Errorf("Resolve = %v, %v, %v", got, secure, err)
	}
}

func TestResolveFailures(t *testing.T) {
	tests := []struct {
		name, host, want string
		answer           func(q dns.Question, transport string, m *dns.Msg)
	}{
		{"NXDOMAIN", "mail.example.test", "NXDOMAIN", zone(t, true, "other.example.test. 300 IN A 192.0.2.1")},
		{"no addresses", "mail.example.test", "no A or AAAA records", zone(t, true, "mail.example.test. 300 IN MX 10 mail.example.test.")},
		{"SERVFAIL", "mail.example.test", "SERVFAIL for A", func(q dns.Question, _ string, m *dns.Msg) {
			m.Rcode = dns.RcodeServerFailure
		}},
		{"SERVFAIL with the reason", "mail.example.test", "SERVFAIL for AAAA (DNSSEC Bogus: signature expired?[0m)", func(q dns.Question, _ string, m *dns.Msg) {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
				return
			}
			m.Rcode = dns.RcodeServerFailure
			opt := m.IsEdns0()
			opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeDNSBogus, ExtraText: "signature expired\x1b[0m"})
		}},
		{"REFUSED without a question", "mail.example.test", "REFUSED for A", func(q dns.Question, _ string, m *dns.Msg) {
			m.Rcode, m.Question = dns.RcodeRefused, nil
		}},
		{"another question", "mail.example.test", "malformed answer for A: answers another question", func(q dns.Question, _ string, m *dns.Msg) {
			m.Question[0].Name = "evil.example.test."
		}},
		{"records of another name", "mail.example.test", "no A or AAAA records", func(q dns.Question, _ string, m *dns.Msg) {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "evil.example.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 66)})
		}},
		{"too many records", "mail.example.test", "malformed answer for A: 150 records", func(q dns.Question, transport string, m *dns.Msg) {
			if transport == "udp" {
				m.Truncated = true
				return
			}
			for i := range 150 {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(10, 0, byte(i>>8), byte(i))})
			}
		}},
		{"CNAME loop", "mail.example.test", "CNAME chain longer than", zone(t, true,
			"mail.example.test. 300 IN CNAME b.example.test.",
			"b.example.test. 300 IN CNAME mail.example.test.",
		)},
		{"two CNAMEs", "mail.example.test", "2 CNAMEs at mail.example.test.", zone(t, true,
			"mail.example.test. 300 IN CNAME a.example.test.",
			"mail.example.test. 300 IN CNAME b.example.test.",
			"a.example.test. 300 IN A 192.0.2.1",
		)},
		{"blocked", "mail.example.test", "only the unspecified address", zone(t, false,
			"mail.example.test. 300 IN A 0.0.0.0",
			"mail.example.test. 300 IN AAAA ::",
		)},
		{"not a host name", "mail example!", "is not a host name", zone(t, false)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startResolver(t, tt.answer)
			got, secure, err := Resolve(context.Background(), r.addr, tt.host)
			if got != nil || secure {
				t.Errorf("Resolve = %v, %v with an error", got, secure)
			}
			checkResolveError(t, err, tt.host, r.addr, tt.want)
			if strings.Contains(err.Error(), "\x1b") {
				t.Errorf("err %q carries the resolver's control characters", err)
			}
		})
	}
	_, _, err := Resolve(context.Background(), "", "mail.example.test")
	if err == nil || err.Error() != "resolve mail.example.test: no resolver given" {
		t.Errorf("without a resolver: %v", err)
	}
}

func TestResolveTruncatedRetriesOverTCP(t *testing.T) {
	full := zone(t, true, "mail.example.test. 300 IN A 192.0.2.25")
	r := startResolver(t, func(q dns.Question, transport string, m *dns.Msg) {
		if transport == "udp" {
			m.Truncated = true
			return
		}
		full(q, transport, m)
	})
	got, secure, err := Resolve(context.Background(), r.addr, "mail.example.test")
	if err != nil || !slices.Equal(got, addrs("192.0.2.25")) || !secure {
		t.Fatalf("Resolve = %v, %v, %v", got, secure, err)
	}
	var transports []string
	for _, a := range r.requests() {
		transports = append(transports, a.transport)
	}
	if slices.Sort(transports); !slices.Equal(transports, []string{"tcp", "tcp", "udp", "udp"}) {
		t.Errorf("transports %v, want each question over UDP, then TCP", transports)
	}
}

// TestResolveThroughDNSTest resolves through the repository's own test
// name server, with more addresses than fit in a UDP answer.
func TestResolveThroughDNSTest(t *testing.T) {
	var records []string
	var want []netip.Addr
	for i := range 90 {
		records = append(records, fmt.Sprintf("mx 300 IN A 192.0.2.%d", i+1))
		want = append(want, netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}))
	}
	records = append(records, "mx 300 IN AAAA 2001:db8::25")
	want = append(want, netip.MustParseAddr("2001:db8::25"))
	c := dnstest.StartT(t, dnstest.Options{Origin: "example.test.", Records: records})
	got, secure, err := Resolve(context.Background(), c.Primary(), "mx.example.test")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, netip.Addr.Compare)
	if !slices.Equal(got, want) || secure {
		t.Errorf("Resolve = %v, %v; want %d addresses, not secure (an authoritative server validates nothing)", got, secure, len(want))
	}
	tcp := false
	for _, q := range c.Queries() {
		tcp = tcp || q.Transport == "tcp" && q.Type == dns.TypeA
	}
	if !tcp {
		t.Error("the truncated A answer was not asked again over TCP")
	}
}

func TestResolveUnreachableResolver(t *testing.T) {
	// A resolver that takes questions and never answers, on UDP and TCP.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if l, err := net.Listen("tcp", pc.LocalAddr().String()); err == nil {
		defer l.Close()
	}
	silent := pc.LocalAddr().String()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = Resolve(ctx, silent, "mail.example.test")
	checkResolveError(t, err, "mail.example.test", silent, "timeout")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want errors.Is context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a 300ms deadline held Resolve for %v", d)
	}

	// Canceled, without a deadline.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	_, _, err = Resolve(ctx, silent, "mail.example.test")
	checkResolveError(t, err, "mail.example.test", silent, "canceled")
	if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Errorf("err = %v after %v, want context.Canceled at once", err, time.Since(start))
	}

	// Nothing listening: refused at once.
	closed := closedUDPAddr(t)
	_, _, err = Resolve(context.Background(), closed, "mail.example.test")
	checkResolveError(t, err, "mail.example.test", closed, "connection refused")
}

// closedUDPAddr returns a loopback address where nothing listens for UDP.
func closedUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestResolveIPLiteral(t *testing.T) {
	for in, want := range map[string]string{"192.0.2.25": "192.0.2.25", "2001:DB8::25": "2001:db8::25"} {
		got, secure, err := Resolve(context.Background(), closedUDPAddr(t), in)
		if err != nil || !slices.Equal(got, addrs(want)) || secure {
			t.Errorf("Resolve(%s) = %v, %v, %v; want it as is, not secure", in, got, secure, err)
		}
	}
}

func TestResolverAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5353": "127.0.0.1:5353",
		"127.0.0.1":      "127.0.0.1:53",
		"::1":            "[::1]:53",
		"[::1]":          "[::1]:53",
		"[::1]:53":       "[::1]:53",
		"":               "error",
		"a b":            "error",
	} {
		got, err := resolverAddr(in)
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("resolverAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestProbeThroughResolverDialer probes a server whose name only the test
// resolver knows.
func TestProbeThroughResolverDialer(t *testing.T) {
	cert := newCert(t, "mx.resolver-only.test")
	f := startFake(t, cert, smtpServer("220 mx.resolver-only.test ESMTP\r\n"))
	host, port, _ := net.SplitHostPort(f.addr)
	r := startResolver(t, zone(t, true, "mx.resolver-only.test. 300 IN A "+host))
	e, err := ParseEndpoint("smtp://mx.resolver-only.test:" + port)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Probe(context.Background(), e, ProbeOptions{DialContext: ResolverDialer(r.addr), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Addr != f.addr || !res.Chain[0].Equal(cert.Leaf) || !f.saw("SNI mx.resolver-only.test") {
		t.Errorf("probe reached %s, chain %v, server saw %q", res.Addr, res.Chain[0].Subject, f.received())
	}
	if len(r.requests()) == 0 {
		t.Error("the resolver was never asked")
	}

	// The resolver's word, not the system's: unknown to it, the name is
	// not found, and the probe says where it looked.
	e2, _ := ParseEndpoint("smtp://unknown.resolver-only.test:" + port)
	_, err = Probe(context.Background(), e2, ProbeOptions{DialContext: ResolverDialer(r.addr), Timeout: 20 * time.Second})
	checkProbeError(t, err, e2, "resolve unknown.resolver-only.test via "+r.addr+": NXDOMAIN")
}

func TestResolverDialerTriesEachAddress(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	f := startFake(t, cert, smtpServer("220 hi\r\n"))
	_, port, _ := net.SplitHostPort(f.addr)
	// 127.0.0.2 is loopback too, with nothing listening on the port.
	r := startResolver(t, zone(t, true,
		"mail.example.test. 300 IN A 127.0.0.2",
		"mail.example.test. 300 IN A 127.0.0.1",
		"down.example.test. 300 IN A 127.0.0.2",
		"down.example.test. 300 IN A 127.0.0.3",
	))
	dial := ResolverDialer(r.addr)
	c, err := dial(context.Background(), "tcp", "mail.example.test:"+port)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RemoteAddr().String(); got != f.addr {
		t.Errorf("connected to %s, want %s after 127.0.0.2 refused", got, f.addr)
	}
	c.Close()

	e, _ := ParseEndpoint("smtp://down.example.test:" + port)
	_, err = Probe(context.Background(), e, ProbeOptions{DialContext: dial, Timeout: 20 * time.Second})
	checkProbeError(t, err, e, "connect down.example.test:"+port+": 127.0.0.2 connection refused, 127.0.0.3 connection refused")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("err = %v, want errors.Is ECONNREFUSED", err)
	}

	// tcp6 wants an IPv6 address, which the name does not have.
	_, err = dial(context.Background(), "tcp6", "mail.example.test:"+port)
	checkResolveError(t, err, "mail.example.test", r.addr, "no address for tcp6")

	// An IP literal is dialled as it is: the resolver is not asked.
	before := len(r.requests())
	c, err = dial(context.Background(), "tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if len(r.requests()) != before {
		t.Error("an IP literal was resolved")
	}
}

func TestShareDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for remaining, want := range map[int]time.Duration{1: 20 * time.Second, 2: 10 * time.Second, 4: 5 * time.Second, 100: dialMinimum} {
		sctx, scancel := shareDeadline(ctx, remaining)
		dl, _ := sctx.Deadline()
		if got := time.Until(dl); got > want || got < want-time.Second {
			t.Errorf("%d remaining: %v for this one, want %v", remaining, got, want)
		}
		scancel()
	}
	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	sctx, scancel := shareDeadline(short, 5)
	defer scancel()
	if dl, _ := sctx.Deadline(); time.Until(dl) < 900*time.Millisecond {
		t.Errorf("with less than %v left, one address got %v, want all of it", dialMinimum, time.Until(dl))
	}
}
