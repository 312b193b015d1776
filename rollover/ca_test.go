package rollover

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/store"
)

// The External Account Binding of the configuration reaches the CA, and a
// key that cannot be used is reported at its line of the file.
func TestEABFromConfig(t *testing.T) {
	if pebbleBin == "" {
		t.Skip("needs Pebble: not in -short mode")
	}
	dir := t.TempDir()
	mac := base64.RawURLEncoding.EncodeToString([]byte("a MAC key of thirty-two bytes!!!"))
	p, err := pebbletest.Start(context.Background(), pebbletest.Options{Dir: filepath.Join(dir, "pebble"), Binary: pebbleBin,
		AlwaysValid: true, EABRequired: true, EABKeys: map[string]string{"kid-7": mac}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	keyFile := filepath.Join(dir, "eab.key")
	client := func(key string) (ACMEClient, error) {
		t.Helper()
		if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
			t.Fatal(err)
		}
		cfgFile := filepath.Join(dir, "daneroll.toml")
		src := fmt.Sprintf("state_dir = %q\n[acme]\ndirectory = %q\naccept_tos = true\nca_roots = [%q]\neab_kid = \"kid-7\"\neab_hmac_key_file = %q\n",
			filepath.Join(dir, "state"), p.Directory, p.RootsFile, keyFile)
		if err := os.WriteFile(cfgFile, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(cfgFile)
		if err != nil {
			t.Fatal(err)
		}
		e, err := Build(cfg, Wiring{Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return e.opts.ACME(ctx)
	}
	_, err = client("*not base64*\n")
	var h *HintError
	if !errors.As(err, &h) || !strings.HasPrefix(err.Error(), filepath.Join(dir, "daneroll.toml")+":7: acme: external account binding: hmac key: not base64url") ||
		!strings.Contains(h.Hint(), "eab_hmac_key_file") {
		t.Fatalf("undecodable key: %v", err)
	}
	if strings.Contains(err.Error(), "not base64*") {
		t.Errorf("the error quotes the key: %v", err)
	}
	if _, err := client(mac + "\n"); err != nil {
		t.Fatalf("with the CA's key: %v", err)
	}
	// The account exists: a key that is gone no longer matters.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(filepath.Join(dir, "daneroll.toml"), fmt.Sprintf("state_dir = %q\n[acme]\ndirectory = %q\naccept_tos = true\nca_roots = [%q]\n",
		filepath.Join(dir, "state"), p.Directory, p.RootsFile))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Build(cfg, Wiring{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := e.opts.ACME(context.Background()); err != nil {
		t.Fatalf("the bound account without EAB settings: %v", err)
	} else if _, ok := c.(*acme.Client); !ok {
		t.Fatalf("client %T", c)
	}
}

func TestKeepSetsPrunesArchive(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse", extra: "keep_sets = 2\n"})
	e := w.engine(nil)
	// check asserts the archive holds exactly want, that the live set is
	// the last of them, and that the journal knows issuers of those only.
	check := func(want ...string) {
		t.Helper()
		ids, err := w.store.Sets("mail")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, want) {
			t.Fatalf("archive holds %v, want %v", ids, want)
		}
		st := w.state()
		if live, _ := w.store.LiveID("mail"); live != want[len(want)-1] || st.LiveSet != live {
			t.Fatalf("live set %q (journal %q), want %q", live, st.LiveSet, want[len(want)-1])
		}
		for id := range st.Issuers {
			if !slices.Contains(want, id) {
				t.Errorf("the journal still records the issuer of removed set %s", id)
			}
		}
		if w.svc.Served() != st.Current {
			t.Errorf("service serves %s, want %s", w.svc.Served(), st.Current)
		}
	}

	w.mustRenew(e, RenewOptions{}, "issued")
	check("0001")
	w.mustRenew(e, RenewOptions{Force: true}, "renewed")
	check("0001", "0002")
	w.rep.reset()
	w.mustRenew(e, RenewOptions{Force: true}, "renewed")
	check("0002", "0003")
	lines, _ := w.rep.reset()
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "archive: removed set(s) 0001 (keep_sets = 2)") }) {
		t.Errorf("the removal was not reported:\n%s", strings.Join(lines, "\n"))
	}
	w.mustRenew(e, RenewOptions{Force: true}, "renewed")
	check("0003", "0004")
	if st := w.state(); st.Issuers["0003"] != w.pebble.Directory || st.Issuers["0004"] != w.pebble.Directory {
		t.Errorf("issuers of the kept sets lost: %v", st.Issuers)
	}

	// A set newer than the live one (as a rolled-back deploy leaves) pushes
	// the set served before the next renewal out of the newest two: it is
	// kept all the same, as the set to roll back to.
	live, err := w.store.Live("mail")
	if err != nil {
		t.Fatal(err)
	}
	if id, err := w.store.Install("mail", &store.Set{Key: live.Key, Cert: live.Cert, Chain: live.Chain}); err != nil || id != "0005" {
		t.Fatalf("planting a set: %q, %v", id, err)
	}
	w.mustRenew(e, RenewOptions{Force: true}, "renewed")
	if st := w.state(); st.LiveSet != "0006" {
		t.Fatalf("live set %s, want 0006", st.LiveSet)
	}
	ids, _ := w.store.Sets("mail")
	if !slices.Equal(ids, []string{"0004", "0005", "0006"}) {
		t.Fatalf("archive holds %v, want the previous set 0004 kept besides the newest two", ids)
	}
	w.mustRenew(e, RenewOptions{Force: true}, "renewed")
	check("0006", "0007")
}
