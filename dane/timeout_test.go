package dane_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/dane"
)

// roundBound is how long a call given a one-second timeout may take on a
// loaded machine; without the bound it took minutes.
const roundBound = 3 * time.Second

// silentServer listens on one loopback port, UDP and TCP, and never
// answers: datagrams are read and dropped, connections accepted and held.
func silentServer(t *testing.T) string {
	t.Helper()
	var (
		pc  net.PacketConn
		l   net.Listener
		err error
	)
	// The UDP port must be the TCP one; it may be taken, so try a few.
	for range 20 {
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if pc, err = net.ListenPacket("udp", l.Addr().String()); err == nil {
			break
		}
		l.Close()
	}
	if err != nil {
		t.Fatalf("no port free for both UDP and TCP: %v", err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards conns
		conns []net.Conn
	)
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(io.Discard, c) })
		}
	})
	t.Cleanup(func() {
		pc.Close()
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

func silentServers(t *testing.T, n int) []string {
	var out []string
	for range n {
		out = append(out, silentServer(t))
	}
	return out
}

func namesAll(t *testing.T, what string, err error, addrs []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	for _, a := range addrs {
		if !strings.Contains(err.Error(), a) {
			t.Errorf("%s: error does not name %s: %v", what, a, err)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: error is not on one line: %q", what, err)
	}
}

func TestWaitBoundedWithSilentServers(t *testing.T) {
	addrs := silentServers(t, 3)
	conf := &dane.Confirmer{Nameservers: addrs}
	want := []dane.Want{{Owner: owner, Type: dns.TypeTLSA, Present: []dns.RR{tlsa(t, rec1)}}}

	start := time.Now()
	_, err := conf.Wait(context.Background(), want, time.Second)
	if d := time.Since(start); d > roundBound {
		t.Errorf("Wait with a 1s timeout took %v", d)
	}
	namesAll(t, "Wait", err, addrs)

	conf.Timeout = time.Second
	start = time.Now()
	_, err = conf.Check(context.Background(), want)
	if d := time.Since(start); d > roundBound {
		t.Errorf("Check with a 1s Timeout took %v", d)
	}
	namesAll(t, "Check", err, addrs)
}

// hangAfterSOA answers the question that finds the zone and then never
// answers again, until the context ends: servers that go silent in the
// middle of a round.
func hangAfterSOA(ctx context.Context, q *dns.Msg, _, _ string) (*dns.Msg, error) {
	if qt := q.Question[0]; qt.Qtype == dns.TypeSOA && qt.Name == owner {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
			Ns: "ns." + zone, Mbox: "hostmaster." + zone, Serial: 1, Minttl: 60}}
		return m, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestRoundBoundedWhenServersHang(t *testing.T) {
	addrs := []string{"192.0.2.1:53", "192.0.2.2:53", "192.0.2.3:53"}
	// A Querier timeout far beyond the test: only the round's deadline can
	// end the questions.
	conf := &dane.Confirmer{Nameservers: addrs, Timeout: time.Second,
		Querier: &dane.Querier{Timeout: time.Hour, Exchange: hangAfterSOA}}
	want := []dane.Want{{Owner: owner, Type: dns.TypeTLSA, Present: []dns.RR{tlsa(t, rec1)}}}

	start := time.Now()
	rep, err := conf.Check(context.Background(), want)
	if d := time.Since(start); d > roundBound {
		t.Errorf("Check with a 1s Timeout took %v", d)
	}
	if err != nil {
		t.Fatal(err)
	}
	if rep.Confirmed {
		t.Fatal("confirmed by servers that never answered")
	}
	if lag := strings.Join(rep.Lagging(), " | "); len(rep.Lagging()) != len(addrs) {
		t.Errorf("lagging = %q, want every server", lag)
	}

	conf.Timeout = 0
	start = time.Now()
	_, err = conf.Wait(context.Background(), want, time.Second)
	if d := time.Since(start); d > roundBound {
		t.Errorf("Wait with a 1s timeout took %v", d)
	}
	var te *dane.TimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v, want a *TimeoutError", err)
	}
	namesAll(t, "Wait", err, addrs)
}

func TestServerOrderIsStable(t *testing.T) {
	// Answers come back in any order; the report keeps the servers'.
	addrs := []string{"192.0.2.3:53", "192.0.2.1:53", "192.0.2.2:53"}
	f := &fakeAuth{zone: zone, soaTTL: 60, minTTL: 60}
	exchange := func(ctx context.Context, q *dns.Msg, network, addr string) (*dns.Msg, error) {
		if addr == addrs[0] {
			time.Sleep(20 * time.Millisecond)
		}
		return f.exchange(ctx, q, network, addr)
	}
	conf := &dane.Confirmer{Nameservers: addrs, Querier: &dane.Querier{Exchange: exchange}}
	rep, err := conf.Check(context.Background(), []dane.Want{{Owner: owner, Type: dns.TypeTLSA}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range rep.Zones[0].Servers {
		got = append(got, s.Addr)
	}
	if strings.Join(got, " ") != strings.Join(addrs, " ") || !rep.Confirmed {
		t.Errorf("servers %v (confirmed %v), want %v", got, rep.Confirmed, addrs)
	}
}
