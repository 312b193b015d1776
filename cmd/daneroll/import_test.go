package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/internal/rig"
	"github.com/daneroll/daneroll/store"
)

// TestImportScript runs the scripts in testdata/import, which move from
// certbot directories made by Debian's certbot against Pebble. (They are
// not in testdata/script, where TestScript would run them without these.)
// It builds, once, a certbot directory with certbot against Pebble, which
// validates http-01 for real through a signed zone example.test (mail, www
// and smtp at 127.0.0.1) on three servers:
//
//	mail.example.test      RSA 2048, reuse_key, standalone on $HTTPPORT,
//	                       deploy hook "systemctl reload postfix"; versions 1-2
//	www.example.test       ECDSA P-384, webroot; versions 1-2, two keys
//	www.example.test-0001  the same name again (--duplicate), standalone
//
// and publishes, as a certbot user would have, _25._tcp.mail.example.test
// TLSA 3 1 1 for mail's key and _443._tcp.www.example.test TLSA 3 1 1 for
// both of www's keys (the older one stale). Each script gets a copy of the
// tree in $WORK/letsencrypt, a stand-in for the host's cron files, crontab
// and systemctl in $WORK/host (a copy of certbot/testdata/fakehost, named
// by $DANEROLL_TEST_HOST; its bin/ comes first on $PATH, so no command
// reaches this machine's systemd), and:
//
//	DIRECTORY ROOTS  Pebble's ACME directory and the roots of its HTTPS
//	HTTPPORT         where Pebble validates http-01
//	RESOLVER NS1 NS2 NS3 TSIG_SECRET   the zone, as dns_* scripts get it
//	ACCOUNT_URI      certbot's account at Pebble
//	ACCOUNT_DIR      where daneroll keeps it after an import into state/
//	MAILKEY WWWKEY WWWOLD   3 1 1 digests of mail's key and www's two keys
//	MAILKEY16 WWWKEY16      their first 16 digits
//
// and the commands of the other scripts plus
//
//	replace FILE OLD NEW   replace the one occurrence of OLD (\n is a
//	                       newline) in FILE
//	append FILE FROM       append FROM to FILE, with $VARS replaced
//
// The import_* scripts in testdata/script need no certbot: TestScript
// runs them.
func TestImportScript(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Pebble and runs certbot: not in -short mode")
	}
	w := startImportWorld(t)
	cmds := commands()
	cmds["replace"] = cmdReplace
	cmds["append"] = cmdAppend
	testscript.Run(t, testscript.Params{
		Dir:   filepath.Join("testdata", "import"),
		Setup: w.setup,
		Cmds:  cmds,
	})
}

// importWorld is what the import scripts share.
type importWorld struct {
	tree     string // the certbot directory certbot wrote
	fakeHost string // certbot/testdata/fakehost
	cluster  *dnstest.Cluster
	env      map[string]string
}

func startImportWorld(t *testing.T) *importWorld {
	certbotBin, err := exec.LookPath("certbot")
	if err != nil {
		if os.Getenv(rig.RequireEnv) == "1" {
			t.Fatalf("certbot not found (%s=1: not skipping; install the Debian package certbot)", rig.RequireEnv)
		}
		t.Skip("certbot not found: install the Debian package certbot")
	}
	fakeHost, err := filepath.Abs(filepath.Join("..", "..", "certbot", "testdata", "fakehost"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pebbleBin, err := pebbletest.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dnstest.Start(dnstest.Options{
		Origin:      testZone,
		Records:     []string{"mail 60 IN A 127.0.0.1", "www 60 IN A 127.0.0.1", "smtp 60 IN A 127.0.0.1"},
		Secondaries: 2,
		Signed:      true,
		TSIG:        map[string]string{"daneroll.": canaryTSIG},
		SOATTL:      60,
		NegativeTTL: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r, err := dnstest.StartResolver(c.ResolverOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	port, err := pebbletest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p, err := pebbletest.Start(ctx, pebbletest.Options{Dir: filepath.Join(dir, "pebble"), Binary: pebbleBin, DNSServer: c.Primary(), HTTPPort: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	w := &importWorld{tree: filepath.Join(dir, "letsencrypt"), fakeHost: fakeHost, cluster: c}
	host := filepath.Join(dir, "host")
	if err := rig.CopyTree(fakeHost, host); err != nil {
		t.Fatal(err)
	}
	webroot := filepath.Join(dir, "www")
	if err := os.MkdirAll(webroot, 0o755); err != nil {
		t.Fatal(err)
	}
	certbot := func(args ...string) {
		t.Helper()
		argv := slices.Concat(args, []string{"--non-interactive", "--agree-tos", "-m", "hostmaster@example.test", "--server", p.Directory,
			"--config", os.DevNull, "--config-dir", w.tree, "--work-dir", filepath.Join(dir, "work"), "--logs-dir", filepath.Join(dir, "logs")})
		cmd := exec.CommandContext(ctx, certbotBin, argv...)
		cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+p.RootsFile,
			"PATH="+filepath.Join(host, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("certbot %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// webroot answers http-01 from the webroot, as nginx would.
	webrootServer := func() func() {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.FileServer(http.Dir(webroot)), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(l)
		return func() { srv.Close() }
	}
	ps := strconv.Itoa(port)
	certbot("certonly", "--standalone", "--http-01-port", ps, "-d", "mail.example.test",
		"--reuse-key", "--key-type", "rsa", "--rsa-key-size", "2048", "--deploy-hook", "systemctl reload postfix")
	stop := webrootServer()
	certbot("certonly", "--webroot", "-w", webroot, "-d", "www.example.test", "--key-type", "ecdsa", "--elliptic-curve", "secp384r1")
	certbot("renew", "--force-renewal", "--no-random-sleep-on-renew", "--cert-name", "www.example.test")
	stop()
	certbot("certonly", "--standalone", "--http-01-port", ps, "-d", "www.example.test", "--duplicate")
	certbot("renew", "--force-renewal", "--no-random-sleep-on-renew", "--cert-name", "mail.example.test")

	// The records a certbot user publishes: for mail's key, and for both
	// of www's keys (the first one's record left behind).
	digest := func(file string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(w.tree, file))
		if err != nil {
			t.Fatal(err)
		}
		var pub crypto.PublicKey
		if key, err := store.ParseKey(data); err == nil {
			pub = key.Public()
		} else if c, err := parseCertPEM(data); err == nil {
			pub = c.PublicKey
		} else {
			t.Fatalf("%s: %v", file, err)
		}
		der, _ := x509.MarshalPKIXPublicKey(pub)
		sum := sha256.Sum256(der)
		return hex.EncodeToString(sum[:])
	}
	mail, www, wwwOld := digest("live/mail.example.test/privkey.pem"), digest("live/www.example.test/privkey.pem"), digest("archive/www.example.test/cert1.pem")
	if www == wwwOld {
		t.Fatal("certbot kept www's key")
	}
	err = c.Update(func(z *dnstest.Zone) error {
		return z.AddString("_25._tcp.mail 60 IN TLSA 3 1 1 "+mail, "_443._tcp.www 60 IN TLSA 3 1 1 "+www, "_443._tcp.www 60 IN TLSA 3 1 1 "+wwwOld)
	})
	if err != nil {
		t.Fatal(err)
	}
	regr, err := filepath.Glob(filepath.Join(w.tree, "accounts", "*", "dir", "*", "regr.json"))
	if err != nil || len(regr) != 1 {
		t.Fatalf("certbot's account: %v %v", regr, err)
	}
	data, _ := os.ReadFile(regr[0])
	uri := strings.TrimSuffix(strings.SplitN(string(data), `"uri": "`, 2)[1], `"}`)
	w.env = map[string]string{
		"DIRECTORY": p.Directory, "ROOTS": p.RootsFile, "HTTPPORT": ps,
		"RESOLVER": r.Addr(), "TSIG_SECRET": canaryTSIG,
		"ACCOUNT_URI": uri, "ACCOUNT_DIR": filepath.Join("state", "accounts", "127.0.0.1_"+strings.Split(strings.TrimPrefix(p.Directory, "https://127.0.0.1:"), "/")[0], "default"),
		"MAILKEY": mail, "WWWKEY": www, "WWWOLD": wwwOld, "MAILKEY16": mail[:16], "WWWKEY16": www[:16],
	}
	for i, a := range c.Addrs() {
		w.env[fmt.Sprintf("NS%d", i+1)] = a
	}
	return w
}

func (w *importWorld) setup(env *testscript.Env) error {
	if err := setupCommon(env); err != nil {
		return err
	}
	if err := rig.CopyTree(w.tree, filepath.Join(env.WorkDir, "letsencrypt")); err != nil {
		return err
	}
	host := filepath.Join(env.WorkDir, "host")
	if err := rig.CopyTree(w.fakeHost, host); err != nil {
		return err
	}
	for k, v := range w.env {
		env.Setenv(k, v)
	}
	env.Setenv(testHostEnv, host)
	env.Setenv("PATH", filepath.Join(host, "bin")+string(os.PathListSeparator)+env.Getenv("PATH"))
	env.Values[clusterKey{}] = w.cluster
	return nil
}

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no certificate")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

func cmdReplace(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: replace FILE OLD NEW")
	}
	unescape := func(s string) string { return strings.ReplaceAll(s, `\n`, "\n") }
	text, old := ts.ReadFile(args[0]), unescape(args[1])
	if n := strings.Count(text, old); n != 1 {
		ts.Fatalf("replace: %q occurs %d times in %s", old, n, args[0])
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(strings.Replace(text, old, unescape(args[2]), 1)), 0o644))
}

func cmdAppend(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: append FILE FROM")
	}
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_WRONLY|os.O_APPEND, 0)
	ts.Check(err)
	_, err = f.WriteString(os.Expand(ts.ReadFile(args[1]), ts.Getenv))
	ts.Check(err)
	ts.Check(f.Close())
}
