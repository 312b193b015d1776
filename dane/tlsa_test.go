package dane

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

const vectorDir = "testdata/vectors"

// tlsaVector is one line of testdata/vectors/vectors.txt.
type tlsaVector struct {
	line                   int
	file                   string
	usage, selector, match uint8
	data                   string
}

func readVectors(t *testing.T) []tlsaVector {
	t.Helper()
	f, err := os.Open(filepath.Join(vectorDir, "vectors.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var vs []tlsaVector
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Split(line, " ")
		if len(fs) != 5 {
			t.Fatalf("vectors.txt:%d: %d fields, want 5", n, len(fs))
		}
		v := tlsaVector{line: n, file: fs[0], data: fs[4]}
		for i, p := range []*uint8{&v.usage, &v.selector, &v.match} {
			x, err := strconv.ParseUint(fs[i+1], 10, 8)
			if err != nil {
				t.Fatalf("vectors.txt:%d: %v", n, err)
			}
			*p = uint8(x)
		}
		vs = append(vs, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return vs
}

// vectorRecord computes a vector's record the way vectors.txt describes
// (and "daneroll tlsa --cert" does): the first certificate, or for usages
// 0 and 2 the last one of a chain; the key for key files.
func vectorRecord(t *testing.T, v tlsaVector) TLSA {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorDir, v.file))
	if err != nil {
		t.Fatal(err)
	}
	chain, pub, err := ReadPEM(data)
	if err != nil {
		t.Fatalf("%s: ReadPEM: %v", v.file, err)
	}
	var rec TLSA
	if len(chain) == 0 {
		rec, err = ComputeKey(pub, v.usage, v.match)
	} else {
		cert := chain[0]
		if (v.usage == UsagePKIXTA || v.usage == UsageDANETA) && len(chain) > 1 {
			cert = chain[len(chain)-1]
		}
		rec, err = Compute(cert, v.usage, v.selector, v.match)
	}
	if err != nil {
		t.Fatalf("vectors.txt:%d: %v", v.line, err)
	}
	return rec
}

func TestVectors(t *testing.T) {
	vs := readVectors(t)
	kinds := map[string]bool{}
	for _, v := range vs {
		rec := vectorRecord(t, v)
		want := fmt.Sprintf("%d %d %d %s", v.usage, v.selector, v.match, v.data)
		if got := rec.String(); got != want {
			t.Errorf("vectors.txt:%d: %s: got\n%s\nwant\n%s", v.line, v.file, got, want)
		}
		if v.selector == SelectorSPKI && v.match == MatchSHA256 && (v.usage == UsageDANEEE) {
			data, _ := os.ReadFile(filepath.Join(vectorDir, v.file))
			_, pub, _ := ReadPEM(data)
			if got, err := SPKISHA256(pub); err != nil || got != v.data {
				t.Errorf("vectors.txt:%d: SPKISHA256 = %s, %v; want %s", v.line, got, err, v.data)
			}
		}
		kinds[fmt.Sprintf("%s %d %d", filepath.Ext(v.file), v.selector, v.match)] = true
	}
	// The vectors must cover every selector and matching type for
	// certificates, and every matching type for key files.
	for _, ext := range []string{".crt", ".pem"} {
		for s := range 2 {
			for m := range 3 {
				if !kinds[fmt.Sprintf("%s %d %d", ext, s, m)] {
					t.Errorf("no vector for %s files, selector %d, matching %d", ext, s, m)
				}
			}
		}
	}
	for _, ext := range []string{".key", ".pub"} {
		for m := range 3 {
			if !kinds[fmt.Sprintf("%s 1 %d", ext, m)] {
				t.Errorf("no vector for %s files, matching %d", ext, m)
			}
		}
	}
	if len(vs) < 90 {
		t.Errorf("only %d vectors", len(vs))
	}
}

// TestVectorsOpenSSL recomputes the "3 1 1" vectors of the certificates with
// this machine's openssl, with the pipeline of the DANE how-tos, to catch
// hand edits of vectors.txt.
func TestVectorsOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	n := 0
	for _, v := range readVectors(t) {
		if v.usage != UsageDANEEE || v.selector != SelectorSPKI || v.match != MatchSHA256 || !strings.HasSuffix(v.file, ".crt") {
			continue
		}
		cmd := exec.Command("bash", "-c", `set -o pipefail; openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256`, "-", v.file)
		cmd.Dir = vectorDir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: openssl: %v", v.file, err)
		}
		s := strings.TrimSpace(string(out))
		if got := s[strings.LastIndex(s, " ")+1:]; got != v.data {
			t.Errorf("%s: openssl says %s, vectors.txt %s", v.file, got, v.data)
		}
		n++
	}
	if n < 4 {
		t.Errorf("cross-checked only %d certificates", n)
	}
}

func TestReadPEMForms(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(vectorDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	leafPEM, leafKey, intPEM, otherKey := read("leaf.crt"), read("leaf.key"), read("int.crt"), read("ec256.key")
	leafBlock, _ := pem.Decode(leafPEM)

	chain, pub, err := ReadPEM(joinBytes(leafKey, leafPEM, intPEM))
	if err != nil {
		t.Fatalf("combined file: %v", err)
	}
	if len(chain) != 2 || !bytes.Equal(chain[0].Raw, leafBlock.Bytes) {
		t.Fatalf("combined file: chain of %d, leaf first: %v", len(chain), len(chain) > 0 && bytes.Equal(chain[0].Raw, leafBlock.Bytes))
	}
	if !samePublicKey(pub, chain[0].PublicKey) {
		t.Error("combined file: pub is not the leaf's key")
	}

	// openssl x509 -text output and other prose around the blocks.
	if chain, _, err := ReadPEM(joinBytes([]byte("Certificate:\n    Data: ...\n"), leafPEM)); err != nil || len(chain) != 1 {
		t.Errorf("text around PEM: %d certs, %v", len(chain), err)
	}
	if chain, pub, err := ReadPEM(leafBlock.Bytes); err != nil || len(chain) != 1 || !samePublicKey(pub, chain[0].PublicKey) {
		t.Errorf("DER certificate: %d certs, %v", len(chain), err)
	}

	keyBlock, _ := pem.Decode(leafKey)
	corrupt := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyBlock.Bytes[:len(keyBlock.Bytes)-9]})
	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"key of another certificate", "does not belong", joinBytes(leafPEM, otherKey)},
		{"two keys", "2 keys", joinBytes(leafKey, otherKey)},
		{"encrypted PKCS#8", "encrypted", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}})},
		{"encrypted legacy PEM", "encrypted", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1, 2, 3}})},
		{"unknown block", "not a certificate or a key", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte{1}})},
		{"corrupt key", "PEM block 1", corrupt},
		{"nothing", "no PEM certificate or key", []byte("hello\n")},
		{"empty", "no PEM certificate or key", nil},
	} {
		_, _, err := ReadPEM(tc.data)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
			continue
		}
		// Key material never reaches messages.
		for _, k := range [][]byte{leafKey, otherKey, corrupt} {
			for _, line := range strings.Split(string(k), "\n") {
				if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(err.Error(), line[:16]) {
					t.Errorf("%s: error shows key material: %v", tc.name, err)
				}
			}
		}
	}
}

func joinBytes(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestParseTLSA(t *testing.T) {
	d := sha256.Sum256([]byte("x"))
	h := hex.EncodeToString(d[:])
	want := TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: d[:]}
	for _, s := range []string{
		"3 1 1 " + h,
		"3 1 1 " + strings.ToUpper(h),
		"  3\t1 1 " + h[:10] + " " + h[10:40] + "\t" + h[40:] + "  ",
		"3 1 1 ( " + h[:32] + "\n\t" + h[32:] + " )",
		"DANE-EE SPKI SHA2-256 " + h,
		"dane-ee spki sha2-256 " + h,
		"3 1 1 " + h + " ; the current key",
		`\# 35 030101` + h,
		`\# 35 ( 03 01 01 ` + h + ` )`,
	} {
		got, err := ParseTLSA(s)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTLSA(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if got, err := ParseTLSA("255 255 255 00"); err != nil || !got.Equal(TLSA{255, 255, 255, []byte{0}}) {
		t.Errorf("private-use values: %v, %v", got, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"", "want usage"},
		{"3 1 1", "want usage"},
		{"3 1 1 abc", "odd number"},
		{"3 1 1 zz", "not hex"},
		{"256 1 1 00", "usage"},
		{"3 -1 1 00", "selector"},
		{"3 1 x 00", "matching type"},
		{`\# 3 030101`, "too short"},
		{`\# 4 030101`, "length says 4"},
		{`\# 2 0301`, "too short"},
		{`\#`, "generic"},
	} {
		_, err := ParseTLSA(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseTLSA(%q): err = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestParseZoneLine(t *testing.T) {
	d := sha512.Sum512([]byte("y"))
	h := hex.EncodeToString(d[:])
	want := TLSA{Usage: 2, Selector: 0, MatchingType: 2, Data: d[:]}
	for _, tc := range []struct {
		line, owner string
		ttl         uint32
	}{
		{"_25._tcp.mail.example.org. 300 IN TLSA 2 0 2 " + h, "_25._tcp.mail.example.org.", 300},
		{"_25._tcp.Mail.Example.ORG 300 in tlsa 2 0 2 " + h, "_25._tcp.mail.example.org.", 300},
		{"_25._tcp.mail.example.org. IN 300 TLSA 2 0 2 " + h, "_25._tcp.mail.example.org.", 300},
		{"_25._tcp.mail.example.org. IN TLSA 2 0 2 " + h, "_25._tcp.mail.example.org.", 0},
		{"_25._tcp.mail.example.org.\t3600\tTLSA\t2 0 2 " + h, "_25._tcp.mail.example.org.", 3600},
		{"_443._tcp.www.example.org. TLSA 2 0 2 " + h + " ; pinned CA", "_443._tcp.www.example.org.", 0},
		{"_443._tcp.www.example.org. 0 IN TYPE52 \\# 67 020002" + h, "_443._tcp.www.example.org.", 0},
		{"_443._tcp.www.example.org. 60 IN TLSA ( 2 0 2 " + h[:64] + " " + h[64:] + " )", "_443._tcp.www.example.org.", 60},
		{"  _443._tcp.www.example.org. 60 IN TLSA 2 0 2 " + h, "_443._tcp.www.example.org.", 60},
	} {
		owner, ttl, got, err := ParseZoneLine(tc.line)
		if err != nil || owner != tc.owner || ttl != tc.ttl || !got.Equal(want) {
			t.Errorf("ParseZoneLine(%q) = %q, %d, %v, %v; want %q, %d, %v", tc.line, owner, ttl, got, err, tc.owner, tc.ttl, want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"; only a comment", "empty"},
		{"300 IN TLSA 3 1 1 " + h[:64], "no owner"},
		{"TLSA 3 1 1 " + h[:64], "no owner"},
		{"@ 300 IN TLSA 3 1 1 " + h[:64], "explicit owner"},
		{"$ORIGIN example.org.", "explicit owner"},
		{"a..b. 300 IN TLSA 3 1 1 " + h[:64], "not a domain name"},
		{"_25._tcp.bücher.example. 300 IN TLSA 3 1 1 " + h[:64], "not ASCII"},
		{"_25._tcp.\xff.example. 300 IN TLSA 3 1 1 " + h[:64], "not ASCII"},
		{"x.example. 300 IN A 192.0.2.1", "record type is A"},
		{"x.example. 300 CH TLSA 3 1 1 " + h[:64], "class CH"},
		{"x.example. 4294967296 IN TLSA 3 1 1 " + h[:64], "out of range"},
		{"x.example. 300 IN", "no record type"},
		{"x.example. 300 IN TLSA 3 1 1", "want usage"},
		{"x.example. 300 300 TLSA 3 1 1 " + h[:64], "record type is 300"},
	} {
		_, _, _, err := ParseZoneLine(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseZoneLine(%q): err = %v, want %q", tc.in, err, tc.want)
		}
	}
}

// TestZoneLineRoundTrip writes random records as zone lines, reads them back
// with ParseZoneLine and with miekg/dns's zone parser, an independent
// implementation, and reads miekg/dns's own presentation back too.
func TestZoneLineRoundTrip(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(7, 11))
	labels := []string{"_25", "_tcp", "_443", "Mail", "mx1", "EXAMPLE", "org", "test", "a-b"}
	for i := range 500 {
		var rec TLSA
		rec.Usage, rec.Selector, rec.MatchingType = uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256))
		rec.Data = make([]byte, 1+rng.IntN(300))
		for j := range rec.Data {
			rec.Data[j] = byte(rng.IntN(256))
		}
		var name []string
		for range 2 + rng.IntN(4) {
			name = append(name, labels[rng.IntN(len(labels))])
		}
		owner := strings.Join(name, ".")
		if rng.IntN(2) == 0 {
			owner += "."
		}
		wantOwner := strings.ToLower(dns.Fqdn(owner))
		var ttl uint32
		if rng.IntN(3) > 0 {
			ttl = rng.Uint32()
		}
		line := ZoneLine(owner, ttl, rec)

		gotOwner, gotTTL, got, err := ParseZoneLine(line)
		if err != nil || gotOwner != wantOwner || gotTTL != ttl || !got.Equal(rec) {
			t.Fatalf("%d: %q read back as %q %d %v, %v", i, line, gotOwner, gotTTL, got, err)
		}

		rr, err := dns.NewRR(line)
		if err != nil {
			t.Fatalf("%d: miekg/dns rejects %q: %v", i, line, err)
		}
		mt, ok := rr.(*dns.TLSA)
		if !ok {
			t.Fatalf("%d: miekg/dns reads %q as %T", i, line, rr)
		}
		if mt.Hdr.Name != wantOwner || (ttl != 0 && mt.Hdr.Ttl != ttl) {
			t.Fatalf("%d: miekg/dns reads owner %q ttl %d from %q", i, mt.Hdr.Name, mt.Hdr.Ttl, line)
		}
		if fr, err := FromRR(mt); err != nil || !fr.Equal(rec) {
			t.Fatalf("%d: miekg/dns reads %v from %q", i, fr, line)
		}

		rr2 := rec.RR(owner, ttl)
		if rr2.Hdr.Name != wantOwner || rr2.Hdr.Ttl != ttl || rr2.Hdr.Rrtype != dns.TypeTLSA || rr2.Hdr.Class != dns.ClassINET {
			t.Fatalf("%d: RR header %v", i, rr2.Hdr)
		}
		if !dns.IsDuplicate(rr2, mt) {
			t.Fatalf("%d: RR %v differs from parsed %v", i, rr2, mt)
		}
		// miekg/dns presentation: tabs, uppercase hex in some versions.
		gotOwner, gotTTL, got, err = ParseZoneLine(rr2.String())
		if err != nil || gotOwner != wantOwner || gotTTL != ttl || !got.Equal(rec) {
			t.Fatalf("%d: %q read back as %q %d %v, %v", i, rr2.String(), gotOwner, gotTTL, got, err)
		}
	}
}

func TestRecordText(t *testing.T) {
	rec := TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{0xAB, 0x01, 0xff}}
	if got, want := rec.String(), "3 1 1 ab01ff"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if got, want := ZoneLine("_25._tcp.MX.example.org", 300, rec), "_25._tcp.mx.example.org. 300 IN TLSA 3 1 1 ab01ff"; got != want {
		t.Errorf("ZoneLine = %q, want %q", got, want)
	}
	if got, want := ZoneLine("_25._tcp.mx.example.org.", 0, rec), "_25._tcp.mx.example.org. IN TLSA 3 1 1 ab01ff"; got != want {
		t.Errorf("ZoneLine without TTL = %q, want %q", got, want)
	}
	if _, err := FromRR(&dns.TLSA{Hdr: dns.RR_Header{Name: "x."}, Certificate: "xyz"}); err == nil {
		t.Error("FromRR accepted non-hex data")
	}
	if _, err := FromRR(nil); err == nil {
		t.Error("FromRR accepted nil")
	}
	for _, u := range []TLSA{
		{4, 1, 1, rec.Data}, {3, 0, 1, rec.Data}, {3, 1, 2, rec.Data}, {3, 1, 1, rec.Data[:2]}, {3, 1, 1, nil},
	} {
		if rec.Equal(u) || u.Equal(rec) {
			t.Errorf("%v equals %v", rec, u)
		}
	}
	if !rec.Equal(TLSA{3, 1, 1, bytes.Clone(rec.Data)}) {
		t.Error("a copy is not Equal")
	}
}

func TestComputeKey(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	s256, s512 := sha256.Sum256(der), sha512.Sum512(der)
	for m, want := range [][]byte{der, s256[:], s512[:]} {
		for _, key := range []any{k.Public(), k} { // a private key stands for its public key
			got, err := ComputeKey(key, 3, uint8(m))
			if err != nil || !got.Equal(TLSA{3, 1, uint8(m), want}) {
				t.Errorf("matching %d, %T: %v, %v", m, key, got, err)
			}
		}
	}
	if got, err := SPKISHA256(k); err != nil || got != hex.EncodeToString(s256[:]) {
		t.Errorf("SPKISHA256 = %s, %v", got, err)
	}
	for _, tc := range []struct {
		usage, matching uint8
		key             any
	}{{4, 1, k}, {3, 3, k}, {3, 1, nil}, {3, 1, "not a key"}} {
		if _, err := ComputeKey(tc.key, tc.usage, tc.matching); err == nil {
			t.Errorf("ComputeKey(%T, %d, %d) accepted", tc.key, tc.usage, tc.matching)
		}
	}
	if _, err := SPKISHA256(nil); err == nil {
		t.Error("SPKISHA256(nil) accepted")
	}
}
