package rig

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BINDOptions configures one authoritative BIND 9 server with one zone.
type BINDOptions struct {
	// Zone is the zone's name; default "example.test.".
	Zone string
	// Records are zone-file lines added after the SOA, the NS and "ns1 A
	// 127.0.0.1", with $ORIGIN set to Zone: "mail IN A 127.0.0.1".
	Records []string
	// TSIGName is the name of the key allowed to update the zone
	// (update-policy "grant KEY zonesub ANY"); default "daneroll-test.".
	TSIGName string
	// TSIGAlgorithm is the key's algorithm as named.conf spells it:
	// hmac-sha1, hmac-sha224, hmac-sha256 (default), hmac-sha384, hmac-sha512.
	TSIGAlgorithm string
	// SOAMinimum is the SOA minimum field, the negative-caching TTL; default 1.
	SOAMinimum uint32
	// DefaultTTL is the zone's $TTL; default 2.
	DefaultTTL uint32
	// Signed makes BIND sign the zone (inline signing with a CSK made before
	// start, so DS is known) and sign every update.
	Signed bool
}

// BIND is a running named serving one zone on 127.0.0.1.
type BIND struct {
	// Addr is "127.0.0.1:port", for UDP and TCP.
	Addr string
	// Zone is the zone's name, fully qualified and lower case.
	Zone string
	// TSIGName is the update key's name, fully qualified.
	TSIGName string
	// TSIGAlgorithm is the key's algorithm as named.conf spells it
	// ("hmac-sha256"); miekg/dns wants dns.Fqdn of it.
	TSIGAlgorithm string
	// TSIGSecret is the key's secret, base64. Never log it.
	TSIGSecret string
	// Dir holds named.conf, the zone file, the keys and named.log.
	Dir string

	ds   string
	proc *process
}

// tsigSize returns the HMAC output size of a TSIG algorithm named accepts,
// which is also the secret length the rig generates, or 0 when unsupported.
func tsigSize(alg string) int {
	switch alg {
	case "hmac-sha1":
		return 20
	case "hmac-sha224":
		return 28
	case "hmac-sha256":
		return 32
	case "hmac-sha384":
		return 48
	case "hmac-sha512":
		return 64
	}
	return 0
}

// StartBIND starts named with the zone opts describes and returns once the
// zone is served over UDP and TCP, and signed when opts.Signed. The server
// stops in t.Cleanup. Needs bind9 (named) and bind9-utils (dnssec-keygen,
// dnssec-dsfromkey); skips under -short.
func StartBIND(t testing.TB, opts BINDOptions) *BIND {
	t.Helper()
	integration(t)
	named := lookBinary(t, "named", "bind9")
	var keygen, dsfromkey string
	if opts.Signed {
		keygen = lookBinary(t, "dnssec-keygen", "bind9-utils")
		dsfromkey = lookBinary(t, "dnssec-dsfromkey", "bind9-utils")
	}

	if opts.Zone == "" {
		opts.Zone = "example.test."
	}
	if opts.TSIGName == "" {
		opts.TSIGName = "daneroll-test."
	}
	if opts.TSIGAlgorithm == "" {
		opts.TSIGAlgorithm = "hmac-sha256"
	}
	opts.TSIGAlgorithm = strings.TrimSuffix(strings.ToLower(opts.TSIGAlgorithm), ".")
	size := tsigSize(opts.TSIGAlgorithm)
	if size == 0 {
		t.Fatalf("rig: bind: unsupported TSIG algorithm %q", opts.TSIGAlgorithm)
	}
	if opts.SOAMinimum == 0 {
		opts.SOAMinimum = 1
	}
	if opts.DefaultTTL == 0 {
		opts.DefaultTTL = 2
	}
	secret := make([]byte, size)
	if _, err := rand.Read(secret); err != nil {
		t.Fatalf("rig: bind: tsig secret: %v", err)
	}

	b := &BIND{
		Zone:          dns.CanonicalName(opts.Zone),
		TSIGName:      dns.CanonicalName(opts.TSIGName),
		TSIGAlgorithm: opts.TSIGAlgorithm,
		TSIGSecret:    base64.StdEncoding.EncodeToString(secret),
		Dir:           tempDir(t),
	}
	keyDir := filepath.Join(b.Dir, "keys")
	if err := os.Mkdir(keyDir, 0o700); err != nil {
		t.Fatalf("rig: bind: %v", err)
	}
	writeFile(t, filepath.Join(b.Dir, "zone.db"), b.zoneFile(opts), 0o644)

	began := time.Now()
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("rig: bind: %v", err)
		}
		b.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf := filepath.Join(b.Dir, "named.conf")
		writeFile(t, conf, b.namedConf(port, opts.Signed, opts.DefaultTTL), 0o600)
		if opts.Signed && b.ds == "" {
			b.ds = b.makeKey(t, keygen, dsfromkey, conf, keyDir)
		}
		b.proc, err = startProcess("named", filepath.Join(b.Dir, "named.log"),
			[]string{named, "-g", "-4", "-n", "1", "-c", conf}, nil)
		if err != nil {
			t.Fatalf("rig: bind: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		err = b.waitReady(ctx, opts.Signed)
		cancel()
		if err == nil {
			break
		}
		b.proc.terminate()
		if errors.Is(err, errRetry) && attempt < startAttempts {
			continue
		}
		t.Fatalf("rig: bind: %v\nnamed log:\n%s", err, b.proc.log())
	}
	t.Cleanup(b.Stop)
	t.Logf("rig: named serving %s on %s (signed %v), ready in %v", b.Zone, b.Addr, opts.Signed, time.Since(began).Round(time.Millisecond))
	return b
}

// zoneFile renders the zone's master file.
func (b *BIND) zoneFile(opts BINDOptions) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "$ORIGIN %s\n$TTL %d\n", b.Zone, opts.DefaultTTL)
	// Short refresh/retry/expire are irrelevant (no secondaries); the minimum
	// is the negative TTL resolvers apply to a name that does not exist yet.
	fmt.Fprintf(&sb, "@ IN SOA ns1 hostmaster 1 3600 600 86400 %d\n", opts.SOAMinimum)
	sb.WriteString("@ IN NS ns1\nns1 IN A 127.0.0.1\n")
	for _, r := range opts.Records {
		sb.WriteString(r)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// namedConf renders named.conf for one instance listening on port.
func (b *BIND) namedConf(port int, signed bool, ttl uint32) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `options {
	directory %[1]q;
	pid-file %[2]q;
	session-keyfile %[3]q;
	managed-keys-directory %[1]q;
	listen-on port %[4]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	notify no;
	dnssec-validation no;
	allow-transfer { 127.0.0.0/8; };
	minimal-responses no;
};
// No rndc channel: its default port 953 would collide between instances.
controls { };
key %[5]q {
	algorithm %[6]s;
	secret %[7]q;
};
`, b.Dir, filepath.Join(b.Dir, "named.pid"), filepath.Join(b.Dir, "session.key"), port,
		b.TSIGName, b.TSIGAlgorithm, b.TSIGSecret)
	if signed {
		// One CSK that never rolls: tests need a stable DS. A short DNSKEY TTL
		// keeps resolver caches from holding keys across tests.
		fmt.Fprintf(&sb, `dnssec-policy "rig" {
	keys { csk lifetime unlimited algorithm ecdsap256sha256; };
	dnskey-ttl %d;
	max-zone-ttl 86400;
};
`, ttl)
	}
	fmt.Fprintf(&sb, "zone %q {\n\ttype primary;\n\tfile %q;\n\tupdate-policy { grant %q zonesub ANY; };\n",
		strings.TrimSuffix(b.Zone, "."), filepath.Join(b.Dir, "zone.db"), b.TSIGName)
	if signed {
		// Inline signing keeps the unsigned zone apart and re-signs each
		// update at once: an update is served signed within milliseconds.
		fmt.Fprintf(&sb, "\tkey-directory %q;\n\tdnssec-policy \"rig\";\n\tinline-signing yes;\n", filepath.Join(b.Dir, "keys"))
	}
	sb.WriteString("};\n")
	return sb.String()
}

// makeKey creates the zone's CSK before named starts and returns its DS line.
func (b *BIND) makeKey(t testing.TB, keygen, dsfromkey, conf, keyDir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	out, err := run(ctx, keygen, "-q", "-k", "rig", "-l", conf, "-K", keyDir, strings.TrimSuffix(b.Zone, "."))
	if err != nil {
		t.Fatalf("rig: bind: dnssec-keygen: %v", err)
	}
	base := strings.TrimSpace(out)
	if base == "" || strings.ContainsAny(base, "/\n") {
		t.Fatalf("rig: bind: dnssec-keygen: unexpected output %q", out)
	}
	out, err = run(ctx, dsfromkey, "-2", filepath.Join(keyDir, base+".key"))
	if err != nil {
		t.Fatalf("rig: bind: dnssec-dsfromkey: %v", err)
	}
	ds := strings.TrimSpace(out)
	if _, err := dns.NewRR(ds); err != nil || strings.Count(ds, "\n") != 0 {
		t.Fatalf("rig: bind: dnssec-dsfromkey: unexpected output %q", out)
	}
	return ds
}

// waitReady waits until named answers for the zone over UDP and TCP (and
// serves it signed when signed). It returns errRetry when named lost the race
// for its port.
func (b *BIND) waitReady(ctx context.Context, signed bool) error {
	return poll(ctx, 20*time.Millisecond, func() error {
		if done, werr := b.proc.exited(); done {
			log := b.proc.log()
			if strings.Contains(log, "unable to listen") || strings.Contains(log, "address in use") {
				return permanent{fmt.Errorf("named: %w", errRetry)}
			}
			return permanent{fmt.Errorf("named exited: %v", werr)}
		}
		for _, network := range []string{"udp", "tcp"} {
			r, err := b.exchange(ctx, network, b.Zone, dns.TypeSOA)
			if err != nil {
				return err
			}
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) == 0 {
				return fmt.Errorf("named: SOA over %s: %s, aa=%v, %d answers", network, dns.RcodeToString[r.Rcode], r.Authoritative, len(r.Answer))
			}
		}
		if signed {
			return b.signedNow(ctx)
		}
		return nil
	})
}

// DS returns the zone's DS record for the resolver's trust anchor
// ("example.test. IN DS 4066 13 2 CF2D…", from dnssec-dsfromkey -2), or ""
// when the zone is not signed.
func (b *BIND) DS() string { return b.ds }

// WaitSigned waits until named serves the zone's DNSKEY RRset and signed SOA.
func (b *BIND) WaitSigned(ctx context.Context) error {
	if b.ds == "" {
		return fmt.Errorf("bind: zone %s is not signed", b.Zone)
	}
	return poll(ctx, 20*time.Millisecond, func() error { return b.signedNow(ctx) })
}

// signedNow checks once that DNSKEY and SOA are served with RRSIGs.
func (b *BIND) signedNow(ctx context.Context) error {
	for _, qtype := range []uint16{dns.TypeDNSKEY, dns.TypeSOA} {
		r, err := b.Query(ctx, b.Zone, qtype)
		if err != nil {
			return err
		}
		if !hasType(r.Answer, qtype) || !hasRRSIG(r.Answer, qtype) {
			return fmt.Errorf("bind: %s %s not served signed yet", b.Zone, dns.TypeToString[qtype])
		}
	}
	return nil
}

// Query asks named once for name/qtype, with the DO bit and without
// recursion, over UDP and then TCP if the answer was truncated.
func (b *BIND) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	r, err := b.exchange(ctx, "udp", name, qtype)
	if err == nil && r.Truncated {
		r, err = b.exchange(ctx, "tcp", name, qtype)
	}
	return r, err
}

func (b *BIND) exchange(ctx context.Context, network, name string, qtype uint16) (*dns.Msg, error) {
	return exchange(ctx, network, b.Addr, name, qtype, false)
}

// Serial returns the SOA serial named serves now.
func (b *BIND) Serial(ctx context.Context) (uint32, error) {
	r, err := b.Query(ctx, b.Zone, dns.TypeSOA)
	if err != nil {
		return 0, err
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa.Serial, nil
		}
	}
	return 0, fmt.Errorf("bind: no SOA in answer (%s)", dns.RcodeToString[r.Rcode])
}

// Log returns named's recent output, for failure messages.
func (b *BIND) Log() string { return b.proc.log() }

// Stop kills named; it is safe to call more than once and runs in t.Cleanup.
func (b *BIND) Stop() { b.proc.terminate() }

// exchange sends one query for name/qtype with the DO bit to addr.
func exchange(ctx context.Context, network, addr, name string, qtype uint16, recursive bool) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = recursive
	m.SetEdns0(4096, true)
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if err != nil {
		return nil, fmt.Errorf("query %s %s over %s: %w", name, dns.TypeToString[qtype], network, err)
	}
	return r, nil
}

// hasType reports whether rrs holds a record of type qtype.
func hasType(rrs []dns.RR, qtype uint16) bool {
	for _, rr := range rrs {
		if rr.Header().Rrtype == qtype {
			return true
		}
	}
	return false
}

// hasRRSIG reports whether rrs holds an RRSIG covering qtype.
func hasRRSIG(rrs []dns.RR, covered uint16) bool {
	for _, rr := range rrs {
		if sig, ok := rr.(*dns.RRSIG); ok && sig.TypeCovered == covered {
			return true
		}
	}
	return false
}
