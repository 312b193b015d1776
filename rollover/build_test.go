package rollover

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/daneroll/daneroll/config"
)

// Secrets read from the environment stay in daneroll: reload commands run
// without them.
func TestReloadCommandsDoNotSeeSecrets(t *testing.T) {
	t.Setenv("DANEROLL_TEST_TSIG", "c2VjcmV0LXRzaWcta2V5LXZhbHVl")
	t.Setenv("DANEROLL_TEST_OTHER", "kept")
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "daneroll.toml"), `
state_dir = "state"
[dns.publisher.ns]
type = "rfc2136"
server = "127.0.0.1:1"
tsig_name = "daneroll."
tsig_secret_env = "DANEROLL_TEST_TSIG"
`)
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	e, err := Build(cfg, Wiring{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := e.opts.Reload(ctx, []string{"sh", "-c", `test -z "${DANEROLL_TEST_TSIG+set}"`}, 5*time.Second); err != nil {
		t.Errorf("the reload command saw the TSIG secret's variable: %v", err)
	}
	if err := e.opts.Reload(ctx, []string{"sh", "-c", `test "$DANEROLL_TEST_OTHER" = kept`}, 5*time.Second); err != nil {
		t.Errorf("the reload command lost the rest of the environment: %v", err)
	}
	if os.Getenv("DANEROLL_TEST_TSIG") == "" {
		t.Error("daneroll's own environment lost the secret")
	}
}
