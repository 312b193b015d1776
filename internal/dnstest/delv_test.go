package dnstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestDelvValidates has BIND's validator (delv) check the signed zone with
// the cluster's DS as its trust anchor: positive answers, NXDOMAIN, NODATA,
// an empty non-terminal, a change made by UPDATE and truncation over UDP.
func TestDelvValidates(t *testing.T) {
	if testing.Short() {
		t.Skip("needs delv (bind9-dnsutils)")
	}
	delv, err := exec.LookPath("delv")
	if err != nil {
		t.Skip("delv not installed (Debian: bind9-dnsutils)")
	}
	var records []string
	records = append(records, testRecords...)
	for i := range 40 {
		records = append(records, fmt.Sprintf("big TXT \"%s%02d\"", strings.Repeat("y", 50), i))
	}
	c := StartT(t, Options{Origin: "example.test.", Records: records, Signed: true, Secondaries: 1})
	ds := c.DS()
	anchor := fmt.Sprintf("trust-anchors {\n  %s static-ds %d %d %d \"%s\";\n};\n",
		ds.Hdr.Name, ds.KeyTag, ds.Algorithm, ds.DigestType, ds.Digest)
	file := filepath.Join(t.TempDir(), "anchor.conf")
	if err := os.WriteFile(file, []byte(anchor), 0o644); err != nil {
		t.Fatal(err)
	}

	run := func(addr, name, qtype string) string {
		t.Helper()
		host, port, _ := net.SplitHostPort(addr)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, delv, "@"+host, "-p", port, "-a", file, "+root=example.test.", name, qtype).CombinedOutput()
		if err != nil {
			t.Fatalf("delv %s %s: %v\n%s", name, qtype, err, out)
		}
		return string(out)
	}
	for _, addr := range c.Addrs() {
		for _, tc := range []struct{ name, qtype, want string }{
			{"_25._tcp.mail.example.test.", "TLSA", "; fully validated"},
			{"mail.example.test.", "A", "; fully validated"},
			{"nothere.example.test.", "A", "; negative response, fully validated"},
			{"mail.example.test.", "TLSA", "; negative response, fully validated"},
			{"_tcp.mail.example.test.", "TLSA", "; negative response, fully validated"},
			{"big.example.test.", "TXT", "; fully validated"}, // too big for UDP: over TCP
		} {
			out := run(addr, tc.name, tc.qtype)
			if !strings.Contains(out, tc.want) {
				t.Errorf("%s: delv %s %s: want %q in\n%s", addr, tc.name, tc.qtype, tc.want, out)
			}
		}
	}

	// With a wrong anchor the same answers do not validate: delv checks.
	bogus := strings.Replace(anchor, ds.Digest[:8], "00000000", 1)
	if err := os.WriteFile(file, []byte(bogus), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(c.Primary())
	out, _ := exec.CommandContext(t.Context(), delv, "@"+host, "-p", port, "-a", file, "+root=example.test.",
		"mail.example.test.", "A").CombinedOutput()
	if strings.Contains(string(out), "fully validated") {
		t.Fatalf("validated with a wrong trust anchor:\n%s", out)
	}
	if err := os.WriteFile(file, []byte(anchor), 0o644); err != nil {
		t.Fatal(err)
	}

	m := new(dns.Msg)
	m.SetUpdate("example.test.")
	m.Insert([]dns.RR{mustRR(t, "_443._tcp.www2.example.test. 300 IN TLSA "+tlsaData)})
	if r, err := sendUpdate(t, c.Primary(), m, key{}, time.Now()); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("update: %v %v", r, err)
	}
	for _, addr := range c.Addrs() {
		if out := run(addr, "_443._tcp.www2.example.test.", "TLSA"); !strings.Contains(out, "; fully validated") {
			t.Errorf("%s: new record not validated:\n%s", addr, out)
		}
	}
}
