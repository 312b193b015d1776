package services

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tlsOnly is a fake dialogue: a TLS handshake, then wait.
func tlsOnly(c *fconn) {
	if c.startTLS() {
		c.hang()
	}
}

func TestProbeUntilSeesTheChainChange(t *testing.T) {
	old, fresh := newCert(t, "mail.example.test"), newCert(t, "mail.example.test")
	f := startFake(t, old, tlsOnly)
	// Like a server after its reload command returned: the old chain for
	// a few more connections, then the new one.
	const oldHandshakes = 3
	f.startSwitch(oldHandshakes, fresh)
	e := endpointAt(t, "tls", f.addr)
	var probes atomic.Int32
	res, err := ProbeUntil(context.Background(), e, ProbeOptions{Timeout: 20 * time.Second}, 2*time.Minute, func(r *ProbeResult) bool {
		probes.Add(1)
		return r.Chain[0].Equal(fresh.Leaf)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Chain[0].Equal(fresh.Leaf) {
		t.Errorf("returned %s, want the new chain", res.LeafSPKI())
	}
	if n := probes.Load(); n != oldHandshakes+1 {
		t.Errorf("accept called %d times, want %d (old chain %d times, then the new one)", n, oldHandshakes+1, oldHandshakes)
	}
}

// startSwitch makes the fake serve next from the (after+1)th handshake on.
func (f *fake) startSwitch(after int32, next *tls.Certificate) {
	f.switchAfter.Store(after)
	f.next.Store(next)
}

func TestProbeUntilSaysWhatItLastSaw(t *testing.T) {
	old := newCert(t, "mail.example.test")
	f := startFake(t, old, tlsOnly)
	e := endpointAt(t, "tls", f.addr)
	start := time.Now()
	res, err := ProbeUntil(context.Background(), e, ProbeOptions{Timeout: 20 * time.Second}, 700*time.Millisecond, func(*ProbeResult) bool { return false })
	pe := checkProbeError(t, err, e, "no acceptable chain within 700ms")
	for _, want := range []string{"last seen: " + f.addr, `leaf for "mail.example.test"`, "SPKI SHA-256 " + spkiOf(old), "not after " + old.Leaf.NotAfter.UTC().Format(time.RFC3339)} {
		if !strings.Contains(pe.Error(), want) {
			t.Errorf("error %q does not say %q", pe, want)
		}
	}
	if res == nil || !res.Chain[0].Equal(old.Leaf) {
		t.Errorf("returned %v, want the last chain seen", res)
	}
	if f.handshakes.Load() < 2 {
		t.Errorf("%d probes in 700ms: ProbeUntil did not retry", f.handshakes.Load())
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("a 700ms wait took %v", d)
	}
}

func TestProbeUntilServerDown(t *testing.T) {
	e := endpointAt(t, "smtp", closedAddr(t))
	res, err := ProbeUntil(context.Background(), e, ProbeOptions{Timeout: 20 * time.Second}, 2*time.Second, func(*ProbeResult) bool { return true }) // room for a loaded machine
	checkProbeError(t, err, e, "last probe: connect "+e.DialAddr()+": connection refused")
	if res != nil {
		t.Errorf("returned %v with no successful probe", res)
	}
}

func TestProbeUntilOnce(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	f := startFake(t, cert, tlsOnly)
	e := endpointAt(t, "tls", f.addr)
	_, err := ProbeUntil(context.Background(), e, ProbeOptions{Timeout: 20 * time.Second}, 0, func(*ProbeResult) bool { return false })
	checkProbeError(t, err, e, "chain not accepted; last seen:")
	if n := f.handshakes.Load(); n != 1 {
		t.Errorf("%d probes with wait 0, want 1", n)
	}
	// A failing single probe returns the probe's own error.
	down := endpointAt(t, "tls", closedAddr(t))
	_, err = ProbeUntil(context.Background(), down, ProbeOptions{Timeout: 20 * time.Second}, 0, func(*ProbeResult) bool { return true })
	checkProbeError(t, err, down, "connection refused")
}

func TestProbeUntilCanceled(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	f := startFake(t, cert, tlsOnly)
	e := endpointAt(t, "tls", f.addr)
	ctx, cancel := context.WithCancel(context.Background())
	var seen atomic.Int32
	_, err := ProbeUntil(ctx, e, ProbeOptions{Timeout: 20 * time.Second}, time.Hour, func(*ProbeResult) bool {
		if seen.Add(1) == 2 {
			cancel()
		}
		return false
	})
	checkProbeError(t, err, e, "gave up waiting for an acceptable chain (context canceled) after 2 probes; last seen:")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want errors.Is context.Canceled", err)
	}
}
