package certbot

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/daneroll/daneroll/internal/rig"
)

// needCertbot skips t because Debian's certbot cannot run here, or fails it
// when the environment asks for every real part (make test).
func needCertbot(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(rig.RequireEnv) == "1" {
		t.Fatalf("%s (%s=1: not skipping; install the Debian package certbot)", msg, rig.RequireEnv)
	}
	t.Skip(msg + ": install the Debian package certbot")
}

// certbotBinary returns the path of certbot, or skips (fails) t.
func certbotBinary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("certbot")
	if err != nil {
		needCertbot(t, "certbot not found")
	}
	return p
}
