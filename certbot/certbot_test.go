package certbot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/internal/rig"
)

var pebbleBin string

func TestMain(m *testing.M) {
	// Fuzzing needs no Pebble: its workers start without building one.
	noPebble := func() bool {
		fz := flag.Lookup("test.fuzz")
		return testing.Short() || fz != nil && fz.Value.String() != ""
	}
	pebbletest.Main(cleanupAfter{m}, noPebble, &pebbleBin)
}

// cleanupAfter stops what the shared certbot tree left running.
type cleanupAfter struct{ m *testing.M }

func (c cleanupAfter) Run() int {
	code := c.m.Run()
	shared.close()
	return code
}

// sharedTree is a certbot configuration directory made once per test
// binary by Debian's certbot against Pebble; tests copy it.
type sharedTree struct {
	once sync.Once
	err  error

	dir      string // the config dir certbot wrote
	tmp      string
	pebbles  []*pebbletest.Pebble
	servers  []string // Pebble directory URLs: main, expired
	webroot  string
	httpPort int
}

var shared = &sharedTree{}

func (s *sharedTree) close() {
	for _, p := range s.pebbles {
		p.Close()
	}
	if s.tmp != "" {
		os.RemoveAll(s.tmp)
	}
}

// certbotTree returns a fresh copy of the shared tree:
//
//	mail.example.test      RSA 2048, reuse_key, standalone, a deploy hook
//	                       reloading postfix and dovecot; versions 1-3, one key
//	www.example.test       ECDSA P-384, webroot (webroot_map), a post-hook
//	                       that is more than a reload; versions 1-3, three keys
//	www.example.test-0001  the same name again (--duplicate), ECDSA P-256,
//	                       standalone; versions 1-3, three keys
//	old.example.test       ECDSA P-256 from another Pebble whose certificates
//	                       last 3 seconds: expired
//
// and the accounts of both Pebbles.
func certbotTree(t *testing.T) (dir string, s *sharedTree) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs certbot against Pebble: not in -short mode")
	}
	bin := certbotBinary(t)
	shared.once.Do(func() { shared.err = shared.build(bin) })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	dir = filepath.Join(t.TempDir(), "letsencrypt")
	if err := rig.CopyTree(shared.dir, dir); err != nil {
		t.Fatal(err)
	}
	return dir, shared
}

func (s *sharedTree) build(bin string) error {
	if pebbleBin == "" {
		return fmt.Errorf("no Pebble binary")
	}
	var err error
	if s.tmp, err = os.MkdirTemp("", "daneroll-certbot-tree-"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i, life := range []time.Duration{90 * 24 * time.Hour, 3 * time.Second} {
		p, err := pebbletest.Start(ctx, pebbletest.Options{
			Dir: filepath.Join(s.tmp, "pebble"+strconv.Itoa(i)), Binary: pebbleBin, AlwaysValid: true,
			Profiles: map[string]time.Duration{"default": life},
		})
		if err != nil {
			return err
		}
		s.pebbles = append(s.pebbles, p)
		s.servers = append(s.servers, p.Directory)
	}
	if s.httpPort, err = pebbletest.FreePort(); err != nil {
		return err
	}
	s.dir = filepath.Join(s.tmp, "letsencrypt")
	s.webroot = filepath.Join(s.tmp, "www")
	if err := os.MkdirAll(s.webroot, 0o755); err != nil {
		return err
	}
	// certbot runs its hooks: through a systemctl that only logs, never
	// this machine's.
	if err := rig.CopyTree(filepath.Join("testdata", "fakehost"), filepath.Join(s.tmp, "host")); err != nil {
		return err
	}
	port := strconv.Itoa(s.httpPort)
	runs := []struct {
		pebble int
		args   []string
	}{
		{0, []string{"certonly", "--standalone", "--http-01-port", port, "-d", "mail.example.test", "-d", "smtp.example.test",
			"--reuse-key", "--key-type", "rsa", "--rsa-key-size", "2048",
			"--deploy-hook", "systemctl reload postfix && systemctl reload dovecot"}},
		{0, []string{"certonly", "--webroot", "-w", s.webroot, "-d", "www.example.test",
			"--key-type", "ecdsa", "--elliptic-curve", "secp384r1", "--post-hook", "echo renewed >>/dev/null"}},
		{0, []string{"certonly", "--standalone", "--http-01-port", port, "-d", "www.example.test", "--duplicate"}},
		{0, []string{"renew", "--force-renewal", "--no-random-sleep-on-renew"}},
		{0, []string{"renew", "--force-renewal", "--no-random-sleep-on-renew"}},
		{1, []string{"certonly", "--standalone", "--http-01-port", port, "-d", "old.example.test"}},
	}
	for _, r := range runs {
		if err := s.certbot(ctx, bin, r.pebble, r.args...); err != nil {
			return err
		}
	}
	// Until old.example.test's 3 seconds are over.
	time.Sleep(4 * time.Second)
	return nil
}

// certbot runs Debian's certbot on the tree, against one of the Pebbles.
func (s *sharedTree) certbot(ctx context.Context, bin string, pebble int, args ...string) error {
	cli := filepath.Join(s.tmp, "cli.ini")
	if err := os.WriteFile(cli, []byte("max-log-backups = 0\n"), 0o644); err != nil {
		return err
	}
	argv := slices.Concat(args, []string{"--non-interactive", "--agree-tos", "-m", "hostmaster@example.test",
		"--server", s.servers[pebble], "--config", cli,
		"--config-dir", s.dir, "--work-dir", filepath.Join(s.tmp, "work"), "--logs-dir", filepath.Join(s.tmp, "logs")})
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+s.pebbles[pebble].RootsFile,
		"PATH="+filepath.Join(s.tmp, "host", "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("certbot %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// snapshot describes every path under dir: mode, and the SHA-256 of a
// file or the target of a link.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b bytes.Buffer
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s %s %s", rel, fi.Mode(), fi.ModTime().UTC().Format(time.RFC3339Nano))
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			fmt.Fprintf(&b, " -> %s", l)
		case fi.Mode().IsRegular():
			data, _ := os.ReadFile(p)
			sum := sha256.Sum256(data)
			fmt.Fprintf(&b, " %s", hex.EncodeToString(sum[:]))
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
