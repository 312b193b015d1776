package tlsservice

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daneroll/daneroll/internal/rig"
)

// TestPostTLSFinger talks to the SMTP service with postfix's own TLS client,
// the client DANE operators check their servers with.
func TestPostTLSFinger(t *testing.T) {
	if testing.Short() {
		t.Skip("runs posttls-finger")
	}
	finger, err := exec.LookPath("posttls-finger")
	if err != nil {
		if os.Getenv(rig.RequireEnv) != "" {
			t.Fatalf("posttls-finger: %v (Debian package postfix)", err)
		}
		t.Skipf("posttls-finger: %v (Debian package postfix)", err)
	}
	st := newState(t)
	a := st.set("0001", time.Hour)
	st.switchTo("0001")
	s := start(t, Options{LiveDir: st.live(), Protocol: "smtp", Hostname: "mail.example.test"})

	// An empty main.cf: postfix's defaults, whatever the machine's
	// /etc/postfix says. "[IP]:port" needs no DNS.
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	target := "[127.0.0.1]:" + s.Addr()[strings.LastIndexByte(s.Addr(), ':')+1:]
	cmd := exec.CommandContext(ctx, finger, "-c", "-l", "may", "-d", "sha256", target)
	cmd.Env = append(os.Environ(), "MAIL_CONFIG="+conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("posttls-finger %s: %v\n%s", target, err, out)
	}
	// pkey_fingerprint is the digest of the SPKI, colon-separated.
	var fp []string
	for i := 0; i < len(a.spki); i += 2 {
		fp = append(fp, strings.ToUpper(a.spki[i:i+2]))
	}
	for _, want := range []string{"TLS connection established", "pkey_fingerprint=" + strings.Join(fp, ":")} {
		if !strings.Contains(string(out), want) {
			t.Errorf("posttls-finger output lacks %q:\n%s", want, out)
		}
	}
}
