package fleetkey

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	agearmor "filippo.io/age/armor"
)

// Two fixed identities, made for these tests only, so that fuzz inputs
// stay reproducible.
const (
	testFile = `# created: 2026-01-02T03:04:05Z
# public key: age1wtmvm4ger34vdk22lqzdweltkj8ujnxx5z9c2486yrnghgflvd5qghazz2
AGE-SECRET-KEY-1G97U6DWCVUAJD79FVX6QMLDCQMZDX0EHK3DG5CJURRSCDGZATLMSFJGHDF
`
	testRecipient = "age1wtmvm4ger34vdk22lqzdweltkj8ujnxx5z9c2486yrnghgflvd5qghazz2"
	otherSecret   = "AGE-SECRET-KEY-1U4NQPP89GV4TP8E8FFKUYFTK6DRPSKFSK5V5FXT4T7WKSDUV3PDS2DMEF6"
)

func mustParse(t testing.TB, content string) *Key {
	t.Helper()
	id, err := parseKeyFile("test", []byte(content))
	if err != nil {
		t.Fatal(err)
	}
	return newKey(id)
}

func testKeys(t testing.TB) (k, other *Key) {
	return mustParse(t, testFile), mustParse(t, otherSecret+"\n")
}

// write puts content in a new file of dir with mode perm (whatever the
// umask) and returns its path.
func write(t *testing.T, dir, name, content string, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
	return path
}

const label = "certs/mail/keys/next"

var keyPEM = []byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ0zvA5Ig6KtPm1Q9f8n5XQ1sRaf2sT6x0u2bH2Xm6yQ\n-----END PRIVATE KEY-----\n")

func TestRoundTrip(t *testing.T) {
	k, _ := testKeys(t)
	if got := k.Recipient(); got != testRecipient {
		t.Fatalf("Recipient() = %s, want %s", got, testRecipient)
	}
	for _, data := range [][]byte{keyPEM, nil, {}, {'\n'}, bytes.Repeat([]byte{0}, 64<<10), bytes.Repeat([]byte("x"), 64<<10+1)} {
		sealed, err := k.Seal(label, data)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(sealed, []byte("age-encryption.org/v1\n")) {
			t.Fatalf("sealed text is not binary age: %q", sealed[:min(len(sealed), 40)])
		}
		if len(data) > 8 && bytes.Contains(sealed, data[:8]) || bytes.Contains(sealed, []byte(label)) {
			t.Fatal("the data or the label shows in the sealed text")
		}
		got, err := k.Open(label, sealed)
		if err != nil {
			t.Fatalf("Open of %d bytes: %v", len(data), err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("Open of %d bytes gave %d bytes back, not the same", len(data), len(got))
		}
	}
	// Sealing twice gives different texts (age's file key is random).
	a, _ := k.Seal(label, keyPEM)
	b, _ := k.Seal(label, keyPEM)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same data are equal")
	}
}

// TestFormat pins what the age tool sees in a sealed text: the header lines,
// then the data.
func TestFormat(t *testing.T) {
	k, _ := testKeys(t)
	sealed, err := k.Seal(label, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	r, err := age.Decrypt(bytes.NewReader(sealed), k.id)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := "daneroll-sealed v2\n" + label + "\n" + string(k.mac(label, keyPEM)) + "\n" + string(keyPEM); string(plain) != want {
		t.Fatalf("plaintext = %q, want %q", plain, want)
	}
}

func TestWrongLabel(t *testing.T) {
	k, _ := testKeys(t)
	sealed, err := k.Seal(label, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []string{"certs/mail/keys/current", "certs/mail/keys/nex", "certs/mail/keys/next/", "Certs/mail/keys/next"} {
		_, err := k.Open(other, sealed)
		if !errors.Is(err, ErrWrongLabel) {
			t.Fatalf("Open(%q) = %v, want ErrWrongLabel", other, err)
		}
		if !strings.Contains(err.Error(), label) || !strings.Contains(err.Error(), other) {
			t.Errorf("error %q does not name both labels", err)
		}
	}
}

func TestBadLabel(t *testing.T) {
	k, _ := testKeys(t)
	sealed, err := k.Seal(label, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "a\nb", label + "\n", "with space", "tab\t", "nul\x00", "é", "del\x7f", strings.Repeat("a", MaxLabel+1)} {
		if _, err := k.Seal(bad, keyPEM); !errors.Is(err, ErrBadLabel) {
			t.Errorf("Seal(%q) = %v, want ErrBadLabel", bad, err)
		}
		if _, err := k.Open(bad, sealed); !errors.Is(err, ErrBadLabel) {
			t.Errorf("Open(%q) = %v, want ErrBadLabel", bad, err)
		}
	}
	long := strings.Repeat("a", MaxLabel)
	sealed, err = k.Seal(long, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Open(long, sealed); err != nil {
		t.Fatal(err)
	}
}

func TestAnotherKey(t *testing.T) {
	k, other := testKeys(t)
	sealed, err := other.Seal(label, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.Open(label, sealed)
	if !errors.Is(err, ErrWrongKey) || errors.Is(err, ErrDamaged) {
		t.Fatalf("Open of another key's text = %v, want ErrWrongKey", err)
	}
	if !strings.Contains(err.Error(), k.Recipient()) {
		t.Errorf("error %q does not name this key's recipient", err)
	}
	// A generated key is another key too.
	g, _, err := Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Open(label, sealed); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Open with a new key = %v, want ErrWrongKey", err)
	}
}

// headerLen is the length of the age header of sealed, up to and including
// the MAC line.
func headerLen(t *testing.T, sealed []byte) int {
	t.Helper()
	i := bytes.Index(sealed, []byte("\n--- "))
	if i < 0 {
		t.Fatal("no MAC line")
	}
	j := bytes.IndexByte(sealed[i+1:], '\n')
	return i + 1 + j + 1
}

func TestFlippedByte(t *testing.T) {
	k, _ := testKeys(t)
	data := bytes.Repeat(keyPEM, 1000) // more than one 64 KiB chunk
	sealed, err := k.Seal(label, data)
	if err != nil {
		t.Fatal(err)
	}
	hdr := headerLen(t, sealed)
	positions := []int{}
	for i := 0; i < hdr+64; i++ { // every byte of the header, the nonce, the start of the payload
		positions = append(positions, i)
	}
	positions = append(positions, 64<<10, len(sealed)/2, len(sealed)-17, len(sealed)-1)
	for _, pos := range positions {
		for _, bit := range []byte{0x01, 0x80} {
			bad := bytes.Clone(sealed)
			bad[pos] ^= bit
			_, err := k.Open(label, bad)
			switch {
			case err == nil:
				t.Fatalf("flipping bit %#x of byte %d: Open succeeded", bit, pos)
			case errors.Is(err, ErrWrongLabel) || errors.Is(err, ErrBadLabel):
				t.Fatalf("flipping bit %#x of byte %d: %v", bit, pos, err)
			case pos >= hdr && !errors.Is(err, ErrDamaged):
				// Past the header nothing looks like another key.
				t.Fatalf("flipping bit %#x of byte %d (payload): %v, want ErrDamaged", bit, pos, err)
			case !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrWrongKey):
				t.Fatalf("flipping bit %#x of byte %d: %v, want ErrDamaged or ErrWrongKey", bit, pos, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of more than one line: %q", err)
			}
		}
	}
}

func TestTruncated(t *testing.T) {
	k, _ := testKeys(t)
	for _, data := range [][]byte{keyPEM, bytes.Repeat(keyPEM, 1000)} {
		sealed, err := k.Seal(label, data)
		if err != nil {
			t.Fatal(err)
		}
		lengths := []int{}
		for n := 0; n < len(sealed) && n < 400; n++ {
			lengths = append(lengths, n)
		}
		lengths = append(lengths, 64<<10, len(sealed)-17, len(sealed)-16, len(sealed)-1)
		for _, n := range lengths {
			if n >= len(sealed) {
				continue
			}
			if _, err := k.Open(label, sealed[:n]); !errors.Is(err, ErrDamaged) {
				t.Fatalf("Open of the first %d of %d bytes = %v, want ErrDamaged", n, len(sealed), err)
			}
		}
		// Trailing bytes are damage too.
		if _, err := k.Open(label, append(bytes.Clone(sealed), 0)); !errors.Is(err, ErrDamaged) {
			t.Fatalf("Open with a byte appended = %v, want ErrDamaged", err)
		}
	}
}

func TestOversize(t *testing.T) {
	k, _ := testKeys(t)
	// The most Seal accepts, with the longest label, fits in MaxSealed.
	long := strings.Repeat("l", MaxLabel)
	data := bytes.Repeat([]byte{0xa5}, MaxData)
	sealed, err := k.Seal(long, data)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) > MaxSealed {
		t.Fatalf("Seal of MaxData bytes made %d bytes, more than MaxSealed", len(sealed))
	}
	if got, err := k.Open(long, sealed); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Open of MaxData bytes: %v", err)
	}
	if _, err := k.Seal(label, make([]byte, MaxData+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Seal of MaxData+1 bytes = %v, want ErrTooLarge", err)
	}
	big := append(bytes.Clone(sealed), make([]byte, MaxSealed+1-len(sealed))...)
	if _, err := k.Open(long, big); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("Open of MaxSealed+1 bytes = %v, want ErrDamaged (too large)", err)
	}
}

// TestNotSealed: age files this package did not make are damaged, whoever
// they are for.
func TestNotSealed(t *testing.T) {
	k, other := testKeys(t)
	encrypt := func(plain string, rs ...age.Recipient) []byte {
		var buf bytes.Buffer
		w, err := age.Encrypt(&buf, rs...)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, plain)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	scrypt, err := age.NewScryptRecipient("password")
	if err != nil {
		t.Fatal(err)
	}
	scrypt.SetWorkFactor(10)
	hybrid, err := age.GenerateHybridIdentity()
	if err != nil {
		t.Fatal(err)
	}
	good := "daneroll-sealed v2\n" + label + "\n" + string(k.mac(label, keyPEM)) + "\n" + string(keyPEM)
	// Sealed to the fleet key's public key by someone without it: a MAC
	// under another key, none, or one for another label.
	forged := "daneroll-sealed v2\n" + label + "\n" + string(other.mac(label, keyPEM)) + "\n" + string(keyPEM)
	noMAC := "daneroll-sealed v2\n" + label + "\n" + strings.Repeat("0", 64) + "\n" + string(keyPEM)
	otherLabel := "daneroll-sealed v2\n" + label + "\n" + string(k.mac("certs/x/keys/next", keyPEM)) + "\n" + string(keyPEM)
	for _, c := range []struct {
		name   string
		sealed []byte
		want   error
	}{
		{"empty", nil, ErrDamaged},
		{"garbage", []byte("hello world"), ErrDamaged},
		{"age header only", []byte("age-encryption.org/v1\n"), ErrDamaged},
		{"no header", encrypt(string(keyPEM), k.recipient), ErrDamaged},
		{"empty plaintext", encrypt("", k.recipient), ErrDamaged},
		{"other version", encrypt("daneroll-sealed v1\n"+label+"\n"+string(keyPEM), k.recipient), ErrDamaged},
		{"no label line", encrypt("daneroll-sealed v2\n"+label, k.recipient), ErrDamaged},
		{"empty label", encrypt("daneroll-sealed v2\n\n", k.recipient), ErrDamaged},
		{"bad label", encrypt("daneroll-sealed v2\na b\n", k.recipient), ErrDamaged},
		{"no MAC line", encrypt("daneroll-sealed v2\n"+label+"\n"+string(keyPEM), k.recipient), ErrDamaged},
		{"MAC of another fleet key", encrypt(forged, k.recipient), ErrForged},
		{"MAC of zeros", encrypt(noMAC, k.recipient), ErrForged},
		{"MAC for another label", encrypt(otherLabel, k.recipient), ErrForged},
		{"two recipients", encrypt(good, k.recipient, other.recipient), ErrDamaged},
		{"scrypt", encrypt(good, scrypt), ErrDamaged},
		{"post-quantum", encrypt(good, hybrid.Recipient()), ErrDamaged},
		{"armored", armor(t, k), ErrDamaged},
		{"age CLI style, ours", encrypt(good, k.recipient), nil},
	} {
		_, err := k.Open(label, c.sealed)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: Open = %v, want %v", c.name, err, c.want)
		}
	}
}

// armor returns a sealed text in age's armored (PEM-like) form, which Open
// does not read.
func armor(t testing.TB, k *Key) []byte {
	sealed, err := k.Seal(label, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := agearmor.NewWriter(&buf)
	if _, err := w.Write(sealed); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestKeyPrintsNoSecret(t *testing.T) {
	k, _ := testKeys(t)
	for _, s := range []string{k.String(), k.GoString()} {
		if strings.Contains(s, "AGE-SECRET-KEY") || !strings.Contains(s, testRecipient) {
			t.Fatalf("printed key %q", s)
		}
	}
}

func TestGenerateLoad(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.FixedZone("CEST", 2*3600))
	k, content, err := Generate(now)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(content), "\n")
	if len(lines) != 4 || lines[0] != "# created: 2026-05-06T07:08:09+02:00" ||
		lines[1] != "# public key: "+k.Recipient() || !strings.HasPrefix(lines[2], "AGE-SECRET-KEY-1") || lines[3] != "" {
		t.Fatalf("Generate wrote %q", content)
	}
	if !strings.HasPrefix(k.Recipient(), "age1") {
		t.Fatalf("Recipient() = %q", k.Recipient())
	}
	path := write(t, t.TempDir(), "fleet.key", string(content), 0o600)
	loaded, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Recipient() != k.Recipient() {
		t.Fatalf("loaded %s, generated %s", loaded.Recipient(), k.Recipient())
	}
	sealed, err := k.Seal(label, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := loaded.Open(label, sealed); err != nil || !bytes.Equal(got, keyPEM) {
		t.Fatalf("the loaded key does not open what the generated one sealed: %v", err)
	}
	k2, _, err := Generate(now)
	if err != nil {
		t.Fatal(err)
	}
	if k2.Recipient() == k.Recipient() {
		t.Fatal("two generated keys are the same")
	}
}

func TestLoadGood(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"age-keygen": testFile,
		"comments and blanks": "\n\n# the fleet key of example.org\n#\n   # indented comment\n\n" +
			"AGE-SECRET-KEY-1G97U6DWCVUAJD79FVX6QMLDCQMZDX0EHK3DG5CJURRSCDGZATLMSFJGHDF\n\n# end\n",
		"no final newline":     "AGE-SECRET-KEY-1G97U6DWCVUAJD79FVX6QMLDCQMZDX0EHK3DG5CJURRSCDGZATLMSFJGHDF",
		"CRLF":                 "# created: 2026-01-02T03:04:05Z\r\nAGE-SECRET-KEY-1G97U6DWCVUAJD79FVX6QMLDCQMZDX0EHK3DG5CJURRSCDGZATLMSFJGHDF\r\n",
		"surrounding spaces":   "  AGE-SECRET-KEY-1G97U6DWCVUAJD79FVX6QMLDCQMZDX0EHK3DG5CJURRSCDGZATLMSFJGHDF \t\n",
		"comment naming a key": "# public key: age1wtmvm4ger34vdk22lqzdweltkj8ujnxx5z9c2486yrnghgflvd5qghazz2\nAGE-SECRET-KEY-1G97U6DWCVUAJD79FVX6QMLDCQMZDX0EHK3DG5CJURRSCDGZATLMSFJGHDF\n",
	} {
		for _, perm := range []os.FileMode{0o600, 0o400, 0o700} {
			path := write(t, dir, "key", content, perm)
			k, err := Load(path)
			if err != nil {
				t.Fatalf("%s, mode %04o: %v", name, perm, err)
			}
			if k.Recipient() != testRecipient {
				t.Fatalf("%s: Recipient() = %s", name, k.Recipient())
			}
			os.Remove(path)
		}
	}
}

func TestLoadRefused(t *testing.T) {
	dir := t.TempDir()
	const good = "AGE-SECRET-KEY-1G97U6DWCVUAJD79FVX6QMLDCQMZDX0EHK3DG5CJURRSCDGZATLMSFJGHDF"
	typo := strings.Replace(good, "DWCV", "DWCW", 1)
	type tc struct {
		name   string
		path   string
		reason string // in the error
		hint   string // in the hint
	}
	cases := []tc{
		{"two identities", write(t, dir, "two", good+"\n"+otherSecret+"\n", 0o600), "holds 2 identities", "only"},
		{"the same identity twice", write(t, dir, "twice", good+"\n"+good+"\n", 0o600), "holds 2 identities", ""},
		{"no identity", write(t, dir, "none", "# created: 2026-01-02T03:04:05Z\n\n", 0o600), "holds no age identity", "age-keygen"},
		{"empty", write(t, dir, "empty", "", 0o600), "holds no age identity", ""},
		{"garbage", write(t, dir, "garbage", "\x00\x01\x02 hello\xff\n", 0o600), "line 1 is neither a comment nor an age identity", ""},
		{"garbage after the key", write(t, dir, "garbage2", good+"\nsecret: hunter2\n", 0o600), "line 2 is neither", ""},
		{"typo in the key", write(t, dir, "typo", "# c\n"+typo+"\n", 0o600), "line 2 is not a valid age identity", ""},
		{"cut key", write(t, dir, "cut", good[:40]+"\n", 0o600), "line 1 is not a valid age identity", ""},
		{"lower case", write(t, dir, "lower", strings.ToLower(good)+"\n", 0o600), "line 1 is not a valid age identity", ""},
		{"post-quantum", write(t, dir, "pq", "AGE-SECRET-KEY-PQ-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\n", 0o600), "post-quantum", "-pq"},
		{"plugin", write(t, dir, "plugin", "AGE-PLUGIN-YUBIKEY-1QQQQQQ\n", 0o600), "plugin identity", ""},
		{"recipients file", write(t, dir, "recipients", testRecipient+"\n", 0o600), "line 1 is a public key", "age-keygen"},
		{"0644", write(t, dir, "world-readable", testFile, 0o644), "mode 0644", "chmod 600 " + filepath.Join(dir, "world-readable")},
		{"0640", write(t, dir, "group-readable", testFile, 0o640), "mode 0640", "chmod 600 "},
		{"0602", write(t, dir, "other-writable", testFile, 0o602), "mode 0602", "chmod 600 "},
		{"space in the path", write(t, dir, "my key", testFile, 0o604), "mode 0604", "chmod 600 '" + filepath.Join(dir, "my key") + "'"},
		{"too large", write(t, dir, "large", strings.Repeat("#"+strings.Repeat(" ", 1000)+"\n", 70)+good+"\n", 0o600), "more than an age identity file ever is", ""},
		{"missing", filepath.Join(dir, "missing"), "no such file or directory", "copy it from another member"},
		{"directory", dir, "is a directory", ""},
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(write(t, dir, "target", testFile, 0o600), link); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, tc{"symlink", link, "is a symlink", "the file itself"})
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, tc{"dangling symlink", dangling, "is a symlink", ""})
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, tc{"FIFO", fifo, "is not a regular file (a FIFO)", ""})
	if _, err := os.Stat("/dev/null"); err == nil {
		cases = append(cases, tc{"device", "/dev/null", "is not a regular file (a character device)", ""})
	}
	if os.Geteuid() == 0 {
		// Only root can give a file away.
		p := write(t, dir, "foreign", testFile, 0o600)
		if err := os.Chown(p, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, tc{"another owner", p, "owned by uid 4242", "chown 0 " + p})
	}

	for _, c := range cases {
		done := make(chan error, 1)
		go func() {
			_, err := Load(c.path)
			done <- err
		}()
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Load hangs", c.name)
		}
		if err == nil {
			t.Errorf("%s: Load succeeded", c.name)
			continue
		}
		var le *LoadError
		if !errors.As(err, &le) {
			t.Errorf("%s: %v is not a *LoadError", c.name, err)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "fleetkey: "+c.path+": ") {
			t.Errorf("%s: error %q does not start with the path", c.name, msg)
		}
		if !strings.Contains(msg, c.reason) {
			t.Errorf("%s: error %q does not say %q", c.name, msg, c.reason)
		}
		if !strings.Contains(le.Hint(), c.hint) {
			t.Errorf("%s: hint %q does not say %q", c.name, le.Hint(), c.hint)
		}
		for _, s := range []string{msg, le.Hint()} {
			if strings.Contains(strings.ToUpper(s), "AGE-SECRET-KEY") || strings.Contains(s, "hunter2") || strings.Contains(s, "\n") {
				t.Errorf("%s: error or hint shows the file or runs over one line: %q", c.name, s)
			}
		}
	}
}

// TestLoadOwnedByRoot: a key file of root's is accepted whoever runs daneroll
// (root installs /etc/daneroll).
func TestLoadOwnedByRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a file owned by root")
	}
	path := write(t, t.TempDir(), "fleet.key", testFile, 0o600)
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
}

// TestAgeKeygen: Load reads what age-keygen writes.
func TestAgeKeygen(t *testing.T) {
	keygen, err := exec.LookPath("age-keygen")
	if err != nil {
		t.Skip("age-keygen is not installed")
	}
	path := filepath.Join(t.TempDir(), "fleet.key")
	if out, err := exec.Command(keygen, "-o", path).CombinedOutput(); err != nil {
		t.Fatalf("age-keygen: %v: %s", err, out)
	}
	// age-keygen -o makes the file 0600; make sure, whatever its version.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := exec.Command(keygen, "-y", path).Output()
	if err != nil {
		t.Fatalf("age-keygen -y: %v", err)
	}
	if got, want := k.Recipient(), strings.TrimSpace(string(pub)); got != want {
		t.Fatalf("Recipient() = %s, age-keygen -y says %s", got, want)
	}
}

// fuzzSeeds are sealed texts made once by Seal with the test keys: fixed,
// because the fuzzing engine runs the seeds in other processes, where Seal
// would make other texts.
var fuzzSeeds = []struct {
	byOther bool // sealed to the other key
	label   string
	data    string
	sealed  string // base64
}{
	{false, label, string(keyPEM), "YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSA0Zzd3V2pkanJwN3lkREJITlN6QlI1aUw4bEZaQUw2NmsvTXMrSGFjZ2tzCndoMnVHZTgwS2hmLzQ1NExST21HVUk5d0p1dDFDRDVQQ0pUNUFkS0FJMmMKLS0tIEp1dENlUXZKdWo4aWUxRXNNekZBQjV3R2FSZ0dPRjV0L25WQ2hFSWMzc2MKC6hd78EAb9u+CxBsBMBPYYyqjm0NcW/Hb3KMbl3ZfaY/DlD1cagBhBmnzCz88bdHrd0Zv6R8qaK/N/6JxLQv7+uoVOWN9qj6DrZ2x/isMiB1LCdO5cWw70VGIlfAInEghX/D5ZTLihQVgtIIo6NOekIfm9qFN0M2C4dmRXAQm7DAHr6MeZWw9+aGD+cGhotcJHsTtyqRiAaOsJ1EgxBa4Wos7OiGj02V/7ikY16aHPZ79NoD53EWPJd65F5U1yK77HwzeLKGAGFhb1bq+sdqfOuXbUZ3Qm0rGqJtqCFp5LFVi4DTO4flqL6tjl3rQwSawVJ/dc4G1sNEESnVYLRDJA=="},
	{false, "certs/mail/sets/0002", "cert\nchain\nkey", "YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBXN3BIRFp2MGQrM2xUdmZONTFPTUtzRnlQdzE4cWlESVhJV3hxeUxBcTNzCkpIM09XMTFIMU9pakRTVytNYUNiNjU1ZnZ0RkY5THdzVnBVVEIyb3YxcDgKLS0tIHNoWDdPSDdPVEJnVlVER1pjUlBoc1BNQjQrNk1LbElUTGZ3cHN2THB0YmcKj/nvHwQSGkygXHhXAaPSrs6/a6cSNF+GfYT06bUvjUccfkKAAod3r6yGd2XghKtDW3kOHHPxcfQGCtyl85b7W7mCwDwgC36JosjRqjOEQRBQa/7bEtekCfguXZGFyJ6fhiNdpfHR6NNagwbwE6BEv61spxh2cDTpwy1s2qRDbxxSPcRxhGYdTtk0m8hVSgdiQg72RHy4xA=="},
	{false, "x", "", "YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBJVVREWDJyZEEwTFd3ZzI3RjVvMGZWWUdEVVZEUGdSYmh3SDNNdk0wZEZVCndudm5IcnR3dFZESDFzNWdySTNuS1RscktyZFVmRE53aURCdjd3M1hLRFUKLS0tIG03S0x6cGVwMHNPVGpqTE5TUDJrRXRESFVNOGZNYldSZFR2dGI3ZFk0M1EKv+9lk5hF+JMhYAkUHDxGdxk24feSzEKJ7ZYmtd/PQTleOHzOVGBYxFwPWdngZb+MvpbURWb7/OfOn48cCLsnad++bZW9nDxS063jtl/5JWVJYyBb6z3tnS73MOrGdhwcPyP/WVjJyj+SkQSoSJ+JyB8dESSqWg=="},
	{true, label, string(keyPEM), "YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSByMytRQ0E2Q3pEYjdCYngwWUcvTXZkVEwyRXU1UWhpYjZWS2dKVTBRUEdBCmhpRTJBUTVOL0U4L2RmN3BiQnVyeFFxVjg4aW5VMlY3RWlONjF3TnV5MHcKLS0tIFRpbHJ3TEM4T2JwYWNWWXlrKzdoQVBYWkdJaG50UUlkMmt2SU0zcDlmamsKtUo7ogcQ47KJKOFS1l1EHQeB368/RPD35PjqPsGSh17LvcXf2k6ojigXmEs8nukBud37PR7XPAh8H1ZdWcKk+8jwHrYaDVvlm5Ik4LkxffrCFBqw5cj5U+JfvN4QgtQyzoyFyPXmiZMct9fK2K3B2vR86ozacKYC9KUPTEfFagFiM6SmacdabM2ECnb1OsBYVL9NooH0tNuMIFaU8EW9OYQc2HkxciJ6UPq5BIzfprRcI0q9WWGOkqa3uRQ/lgJyixdeYmJ4AcgkYRTdw+MqElIfd0FP0HgeKtoemaCyZv93GaM4gdoOEdJL1o+ppAlFmSnZ7BkwetZVOj0RkHawEQ=="},
}

// FuzzOpen: Open never panics, its errors are one line and of one of the
// documented kinds, and it succeeds only on a sealed text of fuzzSeeds
// with its label, giving back its data.
func FuzzOpen(f *testing.F) {
	k, other := testKeys(f)
	type made struct{ label, data string }
	ours := map[string]made{}
	for _, s := range fuzzSeeds {
		sealed, err := base64.StdEncoding.DecodeString(s.sealed)
		if err != nil {
			f.Fatal(err)
		}
		by := k
		if s.byOther {
			by = other
		} else {
			ours[string(sealed)] = made{s.label, s.data}
		}
		if got, err := by.Open(s.label, sealed); err != nil || string(got) != s.data {
			f.Fatalf("seed for %s does not open: %v", s.label, err)
		}
		f.Add(sealed, s.label)
	}
	first, _ := base64.StdEncoding.DecodeString(fuzzSeeds[0].sealed)
	f.Add(first, "certs/mail/keys/current")
	f.Add(first, "a\nb")
	f.Add(first, "")
	f.Add([]byte{}, label)
	f.Add([]byte("age-encryption.org/v1\n-> X25519 AAAA\n\n--- AAAA\n"), label)
	f.Add(armor(f, k), label)

	f.Fuzz(func(t *testing.T, sealed []byte, label string) {
		data, err := k.Open(label, sealed)
		if err != nil {
			if !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrWrongKey) && !errors.Is(err, ErrForged) && !errors.Is(err, ErrWrongLabel) && !errors.Is(err, ErrBadLabel) {
				t.Fatalf("error of no documented kind: %v", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of more than one line: %q", err)
			}
			return
		}
		m, ok := ours[string(sealed)]
		if !ok || m.label != label || m.data != string(data) {
			t.Fatalf("Open(%q) succeeded on a text Seal did not make for it", label)
		}
	})
}
