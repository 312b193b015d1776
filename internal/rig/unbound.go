package rig

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// UnboundOptions configures one validating unbound resolver.
type UnboundOptions struct {
	// StubZone is the zone unbound asks StubAddr about, e.g. BIND.Zone.
	StubZone string
	// StubAddr is the authoritative server, "127.0.0.1:port" (BIND.Addr) or
	// unbound's "127.0.0.1@port".
	StubAddr string
	// TrustAnchor is a DS (BIND.DS()) or DNSKEY line; answers in StubZone
	// then carry AD, or SERVFAIL when they do not validate. Empty: no
	// anchor, answers are insecure (no AD).
	TrustAnchor string
	// ExtraListen are more addresses to serve on, "IP@port" or "IP:port",
	// e.g. FreeResolverIP(t)+"@53" for a resolv.conf (which has no port).
	ExtraListen []string
	// CacheMaxTTL caps how long unbound caches positive answers, in seconds;
	// 0 keeps unbound's default (the record's TTL up to a day).
	CacheMaxTTL uint32
}

// Unbound is a running validating resolver.
type Unbound struct {
	// Addr is "127.0.0.1:port", UDP and TCP.
	Addr string
	// Dir holds unbound.conf and unbound.log.
	Dir string

	proc *process
}

// StartUnbound starts unbound and returns once it answers on all its
// addresses. It stops in t.Cleanup. Needs unbound; ports below 1024 in
// ExtraListen need root. Skips under -short.
func StartUnbound(t testing.TB, opts UnboundOptions) *Unbound {
	t.Helper()
	integration(t)
	bin := lookBinary(t, "unbound", "unbound")
	zone := ""
	stub := ""
	if opts.StubZone != "" {
		zone = dns.CanonicalName(opts.StubZone)
		var err error
		if stub, err = unboundAddr(opts.StubAddr); err != nil {
			t.Fatalf("rig: unbound: stub address: %v", err)
		}
	}
	var extra []string
	for _, a := range opts.ExtraListen {
		ua, err := unboundAddr(a)
		if err != nil {
			t.Fatalf("rig: unbound: extra listen address: %v", err)
		}
		if strings.HasSuffix(ua, "@53") {
			needRoot(t, "unbound on port 53")
		}
		extra = append(extra, ua)
	}

	u := &Unbound{Dir: tempDir(t)}
	began := time.Now()
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("rig: unbound: %v", err)
		}
		u.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf := filepath.Join(u.Dir, "unbound.conf")
		writeFile(t, conf, u.conf(port, zone, stub, extra, opts), 0o644)
		u.proc, err = startProcess("unbound", filepath.Join(u.Dir, "unbound.log"),
			[]string{bin, "-d", "-c", conf}, nil)
		if err != nil {
			t.Fatalf("rig: unbound: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		err = u.waitReady(ctx, port, extra)
		cancel()
		if err == nil {
			break
		}
		u.proc.terminate()
		if errors.Is(err, errRetry) && attempt < startAttempts {
			continue
		}
		t.Fatalf("rig: unbound: %v\nunbound log:\n%s", err, u.proc.log())
	}
	t.Cleanup(u.Stop)
	t.Logf("rig: unbound on %s %v, ready in %v", u.Addr, extra, time.Since(began).Round(time.Millisecond))
	return u
}

// conf renders unbound.conf.
func (u *Unbound) conf(port int, zone, stub string, extra []string, opts UnboundOptions) string {
	var sb strings.Builder
	sb.WriteString("server:\n")
	fmt.Fprintf(&sb, "\tinterface: 127.0.0.1@%d\n", port)
	for _, a := range extra {
		fmt.Fprintf(&sb, "\tinterface: %s\n", a)
	}
	fmt.Fprintf(&sb, `	directory: %[1]q
	pidfile: %[2]q
	username: ""
	chroot: ""
	use-syslog: no
	logfile: ""
	verbosity: 1
	val-log-level: 2
	do-ip6: no
	num-threads: 1
	so-reuseport: no
	access-control: 127.0.0.0/8 allow
	# The authoritative server is on loopback, which unbound refuses to
	# query by default.
	do-not-query-localhost: no
	module-config: "validator iterator"
	# Tests add records and expect resolvers to see them quickly: negative
	# answers and bogus results are cached one second; a server that was
	# not up yet is retried within seconds, not 15 minutes.
	cache-max-negative-ttl: 1
	val-bogus-ttl: 1
	infra-host-ttl: 5
	infra-keep-probing: yes
	prefetch: no
	serve-expired: no
	ede: yes
	msg-cache-size: 1m
	rrset-cache-size: 1m
	key-cache-size: 1m
	neg-cache-size: 1m
	outgoing-range: 64
	num-queries-per-thread: 32
`, u.Dir, filepath.Join(u.Dir, "unbound.pid"))
	if opts.CacheMaxTTL > 0 {
		fmt.Fprintf(&sb, "\tcache-max-ttl: %d\n", opts.CacheMaxTTL)
	}
	if zone != "" {
		// Unbound answers some names itself (test., invalid., onion., …:
		// RFC 6761); a transparent local zone lets queries for the stub zone
		// through to it.
		fmt.Fprintf(&sb, "\tlocal-zone: %q transparent\n", zone)
	}
	if opts.TrustAnchor != "" {
		// unbound's parser wants the presentation format with single spaces;
		// miekg/dns's String() separates fields with tabs.
		fmt.Fprintf(&sb, "\ttrust-anchor: %q\n", strings.Join(strings.Fields(opts.TrustAnchor), " "))
	}
	if zone != "" {
		fmt.Fprintf(&sb, "stub-zone:\n\tname: %q\n\tstub-addr: %s\n", zone, stub)
	}
	sb.WriteString("remote-control:\n\tcontrol-enable: no\n")
	return sb.String()
}

// waitReady waits until unbound answers on every address. It returns
// errRetry when unbound lost the race for its port.
func (u *Unbound) waitReady(ctx context.Context, port int, extra []string) error {
	addrs := []string{u.Addr}
	for _, a := range extra {
		host, port, _ := strings.Cut(a, "@")
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	return poll(ctx, 20*time.Millisecond, func() error {
		if done, werr := u.proc.exited(); done {
			log := u.proc.log()
			if strings.Contains(log, fmt.Sprintf("in use for 127.0.0.1 port %d", port)) {
				return permanent{fmt.Errorf("unbound: %w", errRetry)}
			}
			return permanent{fmt.Errorf("unbound exited: %v", werr)}
		}
		for _, a := range addrs {
			for _, network := range []string{"udp", "tcp"} {
				// localhost is one of unbound's own local zones: the answer
				// needs no upstream, only a listening unbound.
				r, err := exchange(ctx, network, a, "localhost.", dns.TypeA, true)
				if err != nil {
					return err
				}
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
					return fmt.Errorf("unbound on %s/%s: localhost A: %s", a, network, dns.RcodeToString[r.Rcode])
				}
			}
		}
		return nil
	})
}

// Query asks unbound once for name/qtype, recursively and with the DO bit,
// over UDP and then TCP if the answer was truncated. Check r.AuthenticatedData
// for validation.
func (u *Unbound) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	r, err := exchange(ctx, "udp", u.Addr, name, qtype, true)
	if err == nil && r.Truncated {
		r, err = exchange(ctx, "tcp", u.Addr, name, qtype, true)
	}
	return r, err
}

// Log returns unbound's recent output, for failure messages.
func (u *Unbound) Log() string { return u.proc.log() }

// Stop kills unbound; it is safe to call more than once and runs in t.Cleanup.
func (u *Unbound) Stop() { u.proc.terminate() }

// unboundAddr converts "IP:port" or "IP@port" to unbound's "IP@port".
func unboundAddr(a string) (string, error) {
	host, port, ok := strings.Cut(a, "@")
	if !ok {
		var err error
		if host, port, err = net.SplitHostPort(a); err != nil {
			return "", err
		}
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("%q: want a loopback IP address", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: bad port", a)
	}
	return host + "@" + port, nil
}

// FreeResolverIP returns a loopback address (127.x.y.z) whose port 53 is
// free for UDP and TCP, for a resolver that a resolv.conf can name:
// resolv.conf has no port, and a random 127/8 address keeps concurrent tests
// (and a system resolver on 127.0.0.53) apart. Needs root.
func FreeResolverIP(t testing.TB) string {
	t.Helper()
	needRoot(t, "a resolver on port 53")
	var lastErr error
	for range 50 {
		ip := fmt.Sprintf("127.%d.%d.%d", 50+rand.IntN(200), rand.IntN(256), 1+rand.IntN(254))
		addr := net.JoinHostPort(ip, "53")
		l, err := net.Listen("tcp4", addr)
		if err != nil {
			lastErr = err
			continue
		}
		pc, err := net.ListenPacket("udp4", addr)
		l.Close()
		if err != nil {
			lastErr = err
			continue
		}
		pc.Close()
		return ip
	}
	t.Fatalf("rig: no free loopback address for port 53: %v", lastErr)
	return ""
}
