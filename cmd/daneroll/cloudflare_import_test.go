package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/cftest"
	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/internal/rig"
	"github.com/daneroll/daneroll/internal/tlsservice"
	"github.com/daneroll/daneroll/store"
)

// TestCloudflareImportPrune moves a DANE mail server from certbot to
// daneroll the way the README's "Moving from certbot" tells its user to,
// with the zone on Cloudflare as the seed user has it, and then removes the
// records the old scripts left behind:
//
//   - Pebble, and the zone example.test on Cloudflare (the in-process API
//     fake), served signed by three authoritative servers that mirror it
//     (one of them a little late), with a validating resolver in front;
//   - Debian's certbot makes lineage "mail" for mail.example.test
//     (standalone http-01 against Pebble, deploy hook "systemctl reload
//     postfix"), renews it once with a new key and, for key_policy reuse,
//     once more with --reuse-key;
//   - the zone holds, at _PORT._tcp.mail.example.test, the 3 1 1 record of
//     certbot's current key, the record of its earlier key (known to the
//     import), records of two keys daneroll never sees, and a second,
//     identical copy of one of the stale ones, as zones migrated to
//     Cloudflare hold;
//   - an SMTP service (STARTTLS) on 127.0.0.1:PORT serves certbot's
//     certificate from a copy of its files, and is pointed at daneroll's
//     live directory after the import, the files being the same.
//
// Then: import-certbot (no API call, no DNS change), the configuration
// edited as the README says (tlsa, the Cloudflare publisher, the resolver,
// the probe), tlsa printing the published record, renew (reuse: nothing
// due, no change; rollover: the next key's record published, nothing
// deleted), status listing the stale records with why, prune --dry-run
// (no change), prune (each stale record and the duplicate deleted after
// the service was probed; the current key's record, and the next key's,
// left), status without stale records. Throughout, the service serves
// certbot's key, no reload runs, and a model of resolver caches over every
// answer the authoritative servers gave finds no moment when the served
// key lacked a record a resolver could see.
func TestCloudflareImportPrune(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Pebble and runs certbot: not in -short mode")
	}
	certbotBin, err := exec.LookPath("certbot")
	if err != nil {
		if os.Getenv(rig.RequireEnv) == "1" {
			t.Fatalf("certbot not found (%s=1: not skipping; install the Debian package certbot)", rig.RequireEnv)
		}
		t.Skip("certbot not found: install the Debian package certbot")
	}
	// testscript.Main put this test binary on $PATH as "daneroll".
	daneroll, err := exec.LookPath("daneroll")
	if err != nil {
		t.Fatal(err)
	}
	fakeHost, err := filepath.Abs(filepath.Join("..", "..", "certbot", "testdata", "fakehost"))
	if err != nil {
		t.Fatal(err)
	}
	pebbleBin, err := pebbletest.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, policy := range []string{"reuse", "rollover"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			w := startCloudflareWorld(t, cfBins{certbot: certbotBin, daneroll: daneroll, pebble: pebbleBin, fakeHost: fakeHost}, policy)
			w.migrate()
		})
	}
}

type cfBins struct {
	certbot, daneroll, pebble, fakeHost string
}

// cfWorld is one run of the migration.
type cfWorld struct {
	t      *testing.T
	bins   cfBins
	policy string
	start  time.Time
	dir    string
	tree   string // certbot's directory
	host   string // the stand-in host daneroll sees (cron, systemctl)
	state  string
	cfg    string

	cf       *cftest.Server
	dns      *dnstest.Cluster
	resolver *dnstest.Resolver
	pebble   *pebbletest.Pebble
	svc      *tlsservice.Server
	port     string
	owner    string // _PORT._tcp.mail.example.test, without the dot
	link     string // where the service reads its key and certificate

	// 3 1 1 digests: certbot's current key, its earlier one, two keys
	// nobody serves; dup is the stale record that is in the zone twice.
	current, older, unknown1, unknown2, dup string
	// zoneBefore is the zone's other records, which nothing may touch.
	zoneBefore []string
}

const cfZone = "example.test"

func startCloudflareWorld(t *testing.T, bins cfBins, policy string) *cfWorld {
	w := &cfWorld{t: t, bins: bins, policy: policy, start: time.Now(), dir: t.TempDir()}
	w.tree = filepath.Join(w.dir, "letsencrypt")
	w.state = filepath.Join(w.dir, "state")
	w.cfg = filepath.Join(w.dir, "daneroll.toml")

	// The zone lives at Cloudflare; its name servers serve what the API
	// holds, signed.
	w.cf = cftest.NewServer(canaryToken, cfZone)
	t.Cleanup(w.cf.Close)
	if _, err := w.cf.AddRecord(cfZone, cftest.Record{Type: "A", Name: "mail", Content: "127.0.0.1", TTL: 60}); err != nil {
		t.Fatal(err)
	}
	w.dns = dnstest.StartT(t, dnstest.Options{Origin: testZone, Secondaries: 2, Signed: true, SOATTL: 60, NegativeTTL: 1})
	mirror, err := w.cf.MirrorTo(w.dns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mirror.Err(); err != nil {
			t.Errorf("Cloudflare's name servers could not serve a change: %v", err)
		}
	})
	w.resolver = w.dns.StartResolverT(t)

	httpPort, err := pebbletest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	w.pebble, err = pebbletest.Start(context.Background(), pebbletest.Options{
		Dir: filepath.Join(w.dir, "pebble"), Binary: bins.pebble, DNSServer: w.dns.Primary(), HTTPPort: httpPort,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.pebble.Close() })

	// The SMTP service listens from now on, but serves nothing until
	// certbot's files are where it reads them (w.link).
	w.link = filepath.Join(w.dir, "postfix-tls")
	if err := os.Symlink(filepath.Join(w.dir, "certbot-copy"), w.link); err != nil {
		t.Fatal(err)
	}
	w.svc, err = tlsservice.Start(tlsservice.Options{Addr: "127.0.0.1:0", LiveDir: w.link, Protocol: "smtp", Hostname: "mail.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.svc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w.svc.ReloadOnSignal(ctx, syscall.SIGHUP)
	_, w.port, _ = strings.Cut(w.svc.Addr(), ":")
	w.owner = "_" + w.port + "._tcp.mail.example.test"

	w.runCertbot(httpPort)
	w.seedZone()

	// The host daneroll sees: certbot's timer and cron lines, and a
	// systemctl whose "reload postfix" reloads the SMTP service.
	w.host = filepath.Join(w.dir, "host")
	if err := rig.CopyTree(bins.fakeHost, w.host); err != nil {
		t.Fatal(err)
	}
	systemctl := filepath.Join(w.host, "bin", "systemctl")
	if err := os.Rename(systemctl, systemctl+".fake"); err != nil {
		t.Fatal(err)
	}
	wrapper := fmt.Sprintf("#!/bin/sh\n# The stand-in systemctl; reload postfix reloads the test's SMTP service.\n"+
		"if [ \"$1\" = reload ] && [ \"$2\" = postfix ]; then kill -HUP %d; fi\nexec \"$0.fake\" \"$@\"\n", os.Getpid())
	if err := os.WriteFile(systemctl, []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}

	// The service serves certbot's certificate, as postfix did from
	// /etc/letsencrypt/live/mail/ before daneroll.
	copyDirTo := filepath.Join(w.dir, "certbot-copy")
	if err := os.Mkdir(copyDirTo, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"privkey.pem", "fullchain.pem"} {
		data, err := os.ReadFile(filepath.Join(w.tree, "live", "mail", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(copyDirTo, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.svc.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := w.svc.Served(); got != w.current {
		t.Fatalf("the service serves %s, certbot's key is %s", got, w.current)
	}
	// One of Cloudflare's name servers is a little behind from now on:
	// every change must wait for it.
	w.dns.SetLag(2, 300*time.Millisecond)
	return w
}

// runCertbot makes the lineage with Debian's certbot against Pebble,
// isolated from this machine's /etc/letsencrypt, cron and systemd.
func (w *cfWorld) runCertbot(httpPort int) {
	t := w.t
	host := filepath.Join(w.dir, "certbot-host")
	if err := rig.CopyTree(w.bins.fakeHost, host); err != nil {
		t.Fatal(err)
	}
	certbot := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		argv := slices.Concat(args, []string{"--non-interactive", "--agree-tos", "-m", "hostmaster@example.test", "--server", w.pebble.Directory,
			"--config", os.DevNull, "--config-dir", w.tree, "--work-dir", filepath.Join(w.dir, "certbot-work"), "--logs-dir", filepath.Join(w.dir, "certbot-logs")})
		cmd := exec.CommandContext(ctx, w.bins.certbot, argv...)
		cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+w.pebble.RootsFile,
			"PATH="+filepath.Join(host, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("certbot %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	lineage := []string{"--standalone", "--http-01-port", strconv.Itoa(httpPort), "--cert-name", "mail", "-d", "mail.example.test",
		"--deploy-hook", "systemctl reload postfix"}
	certbot(append([]string{"certonly"}, lineage...)...)
	// A renewal without reuse_key: a new key, as certbot does by default.
	certbot("renew", "--force-renewal", "--no-random-sleep-on-renew", "--cert-name", "mail")
	if w.policy == "reuse" {
		// From now on the same key: reuse_key = True in the lineage.
		certbot(append([]string{"certonly", "--force-renewal", "--reuse-key"}, lineage...)...)
	}
	w.current = spkiOfFile(t, filepath.Join(w.tree, "live", "mail", "privkey.pem"))
	w.older = spkiOfFile(t, filepath.Join(w.tree, "archive", "mail", "cert1.pem"))
	if w.older == w.current {
		t.Fatal("certbot's renewal kept the key")
	}
	if last := spkiOfFile(t, filepath.Join(w.tree, "archive", "mail", "cert2.pem")); last != w.current {
		t.Fatalf("certbot's second certificate has key %s, its live one %s", last, w.current)
	}
	conf, err := os.ReadFile(filepath.Join(w.tree, "renewal", "mail.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if reuse := regexp.MustCompile(`(?m)^reuse_key = True$`).Match(conf); reuse != (w.policy == "reuse") {
		t.Fatalf("certbot's renewal/mail.conf has reuse_key = True: %v, want %v:\n%s", reuse, w.policy == "reuse", conf)
	}
}

// seedZone publishes what the seed user's scripts left at Cloudflare, and
// waits until no resolver can hold the name's denial from before.
func (w *cfWorld) seedZone() {
	t := w.t
	w.unknown1, w.unknown2 = newKeyDigest(t), newKeyDigest(t)
	w.dup = w.older
	if w.policy == "rollover" {
		w.dup = w.unknown1
	}
	// The current key's record first: it has been there all along, and
	// no answer without it may ever have been given.
	for _, d := range []string{w.current, w.older, w.unknown1, w.unknown2} {
		if _, err := w.cf.AddRecord(cfZone, w.tlsaRecord(d)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.cf.AddRecord(cfZone, w.tlsaRecord(w.dup)); err == nil {
		t.Fatal("Cloudflare's API made an identical record")
	}
	if _, err := w.cf.AddIdenticalRecord(cfZone, w.tlsaRecord(w.dup)); err != nil {
		t.Fatal(err)
	}
	if got, want := w.zoneTLSA(), sortedStrings(w.older, w.current, w.unknown1, w.unknown2, w.dup); !slices.Equal(got, want) {
		t.Fatalf("the zone holds %v, want %v", got, want)
	}
	if got, want := w.servedEverywhere(), sortedStrings(w.older, w.current, w.unknown1, w.unknown2); !slices.Equal(got, want) {
		t.Fatalf("the name servers serve %v, want %v", got, want)
	}
	for _, r := range w.cf.Records(cfZone) {
		if r.Type != "TLSA" {
			w.zoneBefore = append(w.zoneBefore, r.ID+" "+r.Type+" "+r.Name+" "+r.Content)
		}
	}
	var until time.Time
	for _, h := range w.dns.History(w.owner, dns.TypeTLSA) {
		if h.Negative && !h.To.IsZero() {
			if end := h.To.Add(time.Duration(h.NegTTL) * time.Second); end.After(until) {
				until = end
			}
		}
	}
	time.Sleep(time.Until(until) + 50*time.Millisecond)
}

func (w *cfWorld) tlsaRecord(digest string) cftest.Record {
	// TTL 1: Cloudflare's automatic TTL, 300 seconds, as the API's
	// users leave it.
	return cftest.Record{Type: "TLSA", Name: w.owner, TTL: 1,
		Data: &cftest.TLSAData{Usage: 3, Selector: 1, MatchingType: 1, Certificate: digest}}
}

// migrate is the README's "Moving from certbot", then renew and prune.
func (w *cfWorld) migrate() {
	t := w.t
	all := sortedStrings(w.older, w.current, w.unknown1, w.unknown2, w.dup)

	// The import: certbot's key, certificate and account; no Cloudflare
	// call at all, no DNS change.
	requests := len(w.cf.Requests())
	serials := w.serials()
	r := w.mustRun("import-certbot", "--out", w.cfg, "--state-dir", w.state, w.tree)
	w.match(r.stdout, `(?m)^mail: imported key `+w.current[:16]+`…, certificate valid until \S+; 1 earlier key\(s\) known as retired$`)
	w.match(r.stdout, `(?m)^wrote `+regexp.QuoteMeta(w.cfg)+`$`)
	if n := len(w.cf.Requests()); n != requests {
		t.Errorf("the import made %d Cloudflare API call(s)", n-requests)
	}
	if got := w.serials(); !slices.Equal(got, serials) {
		t.Errorf("the zone's serials went from %v to %v during the import", serials, got)
	}
	w.checkZone("after the import", all)
	live := filepath.Join(w.state, "live", "mail")
	for _, f := range []string{"privkey.pem", "fullchain.pem"} {
		if !sameFile(t, filepath.Join(live, f), filepath.Join(w.tree, "live", "mail", f)) {
			t.Errorf("%s is not certbot's %s", filepath.Join(live, f), f)
		}
	}

	// Step 3: the configuration names the records and the publisher that
	// changes them, and the services get probes.
	w.editConfig()

	// Step 4: daneroll wants exactly the record that is published.
	r = w.mustRun("-c", w.cfg, "tlsa")
	if got, want := recordLines(r.stdout), []string{w.owner + ". 300 IN TLSA 3 1 1 " + w.current}; !slices.Equal(got, want) {
		t.Errorf("tlsa prints records %q, want %q:\n%s", got, want, r.stdout)
	}

	// Step 6: the service reads daneroll's live directory
	// and reloads; the files are the same, so what it serves is too.
	if err := os.Remove(w.link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(live, w.link); err != nil {
		t.Fatal(err)
	}
	if err := w.svc.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := w.svc.Served(); got != w.current {
		t.Fatalf("after pointing the service at %s it serves %s, want certbot's key %s", live, got, w.current)
	}

	// Step 7 and a real run.
	writes := len(w.writes())
	r = w.mustRun("-c", w.cfg, "renew", "--dry-run")
	if w.policy == "reuse" {
		w.match(r.stdout, `(?m)^mail: nothing due; next renewal \S+`)
	} else {
		w.match(r.stdout, `(?m)^mail: would publish-next: `)
	}
	if n := len(w.writes()); n != writes {
		t.Errorf("renew --dry-run changed the zone: %v", w.writes()[writes:])
	}
	w.checkZone("after renew --dry-run", all)
	r = w.mustRun("-c", w.cfg, "renew")
	var next string
	switch w.policy {
	case "reuse":
		w.match(r.stdout, `(?m)^mail: nothing due; next renewal \S+`)
		w.noMatch(r.stdout, `publish|delete|retire|obtain|deploy`)
		if got := w.writes(); len(got) != writes {
			t.Errorf("renew changed the zone: %v", got[writes:])
		}
	case "rollover":
		next = spkiOfFile(t, filepath.Join(w.state, "keys", "mail", "next.pem"))
		if next == w.current {
			t.Fatal("the next key is the current key")
		}
		w.match(r.stdout, `(?m)^mail: publish: add `+regexp.QuoteMeta(w.owner)+`\. 300 IN TLSA 3 1 1 `+next+`$`)
		w.match(r.stdout, `(?m)^mail: published next key: `)
		w.noMatch(r.stdout, `delete|retire|obtain|deploy`)
		got := w.writes()[writes:]
		if len(got) != 1 || got[0].Method != "POST" {
			t.Errorf("renew made %v, want one POST (the next key's record)", got)
		}
		all = sortedStrings(append(all, next)...)
	}
	// Confirmed on every server, the late one included, before renew
	// returned.
	w.checkZone("after renew", all)
	r = w.mustRun("-c", w.cfg, "renew")
	w.match(r.stdout, `(?m)^mail: nothing due; next renewal \S+`)

	// status: the current key's record (and the next one's) on every
	// server; each stale record with why.
	r = w.run("-c", w.cfg, "status")
	if r.code != 0 {
		t.Errorf("status exited %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	w.match(r.stdout, `(?m)^ +current 3 1 1 `+w.current+`  visible on 3/3$`)
	if next != "" {
		w.match(r.stdout, `(?m)^ +next +3 1 1 `+next+`  visible on 3/3$`)
	}
	w.match(r.stdout, `(?m)^ +stale +3 1 1 `+w.older+`  \(imported key; daneroll prune removes it\)$`)
	w.match(r.stdout, `(?m)^ +stale +3 1 1 `+w.unknown1+`  \(unknown key; daneroll prune removes it\)$`)
	w.match(r.stdout, `(?m)^ +stale +3 1 1 `+w.unknown2+`  \(unknown key; daneroll prune removes it\)$`)
	if n := len(regexp.MustCompile(`(?m)^ +stale `).FindAllString(r.stdout, -1)); n != 4 {
		t.Errorf("status lists %d stale records, want 4 (3 keys, one of them in 2 records):\n%s", n, r.stdout)
	}

	// prune --dry-run probes, says what it would remove, changes nothing.
	writes = len(w.writes())
	r = w.mustRun("-c", w.cfg, "prune", "--dry-run")
	w.match(r.stdout, `(?m)^mail: prune: probing smtp://mail\.example\.test:`+w.port+`$`)
	for _, d := range []string{w.older, w.unknown1, w.unknown2} {
		w.match(r.stdout, `(?m)^mail: prune: would remove `+regexp.QuoteMeta(w.owner)+`\. 300 IN TLSA 3 1 1 `+d+`$`)
	}
	w.match(r.stdout, `(?m)^mail: would prune: 4 stale record\(s\) to remove, 0 kept$`)
	w.noMatch(r.stdout, `keep|delete`)
	if got := w.writes(); len(got) != writes {
		t.Errorf("prune --dry-run changed the zone: %v", got[writes:])
	}
	w.checkZone("after prune --dry-run", all)

	// prune: the service probed first, then every stale record deleted by
	// its id, the duplicate too, and the deletion confirmed on every
	// server before it returns.
	r = w.mustRun("-c", w.cfg, "prune")
	probe := strings.Index(r.stdout, "mail: prune: probing smtp://mail.example.test:"+w.port+"\n")
	firstDelete := strings.Index(r.stdout, ": delete ")
	if probe < 0 || firstDelete < 0 || firstDelete < probe {
		t.Errorf("prune did not probe the service before deleting:\n%s", r.stdout)
	}
	for _, d := range []string{w.older, w.unknown1, w.unknown2} {
		w.match(r.stdout, `(?m)^mail: \w+: delete `+regexp.QuoteMeta(w.owner)+`\. 300 IN TLSA 3 1 1 `+d+`$`)
	}
	w.match(r.stdout, `(?m)^mail: pruned: `)
	w.noMatch(r.stdout, `keep|delete \S+ \S+ IN TLSA 3 1 1 (`+w.current+`|`+orNone(next)+`)`)
	var deletes int
	for _, c := range w.writes()[writes:] {
		if c.Method != "DELETE" {
			t.Errorf("prune made a %s %s", c.Method, c.Path)
		}
		deletes++
	}
	if deletes != 4 {
		t.Errorf("prune made %d deletions, want 4 (3 stale keys, one of them in 2 records)", deletes)
	}
	wanted := sortedStrings(w.current)
	if next != "" {
		wanted = sortedStrings(w.current, next)
	}
	w.checkZone("after prune", wanted)
	r = w.mustRun("-c", w.cfg, "status")
	w.noMatch(r.stdout, `stale`)
	w.match(r.stdout, `(?m)^ +current 3 1 1 `+w.current+`  visible on 3/3$`)
	r = w.mustRun("-c", w.cfg, "prune")
	w.match(r.stdout, `(?m)^mail: no stale record to remove \(0 kept\)$`)
	r = w.mustRun("-c", w.cfg, "renew")
	w.match(r.stdout, `(?m)^mail: nothing due; next renewal \S+`)
	w.checkZone("at the end", wanted)

	// The service served certbot's key throughout, never reloaded by
	// daneroll (nothing was deployed), and no resolver could have found
	// it without its record at any moment.
	tl := w.svc.Timeline()
	if len(tl) != 1 || tl[0].SPKI != w.current {
		t.Errorf("the service's timeline is %+v, want certbot's key %s throughout", tl, w.current)
	}
	if log, err := os.ReadFile(filepath.Join(w.host, "systemctl.log")); err == nil && strings.Contains(string(log), "reload") {
		t.Errorf("daneroll reloaded a service:\n%s", log)
	}
	w.cacheModel()
}

// editConfig makes the changes the README's step 3 asks for, to the
// configuration the import wrote.
func (w *cfWorld) editConfig() {
	t := w.t
	data, err := os.ReadFile(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	w.match(text, `(?m)^key_policy = "`+w.policy+`"$`)
	w.match(text, `(?m)^reload = \["systemctl", "reload", "postfix"\]$`)
	for _, edit := range [][2]string{
		// Pebble's HTTPS roots, which certbot had from REQUESTS_CA_BUNDLE.
		{`ca_roots = []`, fmt.Sprintf(`ca_roots = [%q]`, w.pebble.RootsFile)},
		{`# publisher = "NAME"`, `publisher = "cf"`},
		{`# tlsa = ["_25._tcp.mail.example.test"]`, fmt.Sprintf(`tlsa = [%q]`, w.owner)},
		{`# probe = ["smtp://mail.example.test:25"]`, fmt.Sprintf(`probe = ["smtp://mail.example.test:%s"]`, w.port)},
	} {
		if n := strings.Count(text, edit[0]); n != 1 {
			t.Fatalf("%q occurs %d times in the configuration the import wrote:\n%s", edit[0], n, text)
		}
		text = strings.Replace(text, edit[0], edit[1], 1)
	}
	token := filepath.Join(w.dir, "cloudflare.token")
	if err := os.WriteFile(token, []byte(canaryToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var ns []string
	for _, a := range w.dns.Addrs() {
		ns = append(ns, strconv.Quote(a))
	}
	// Cloudflare's name servers are the three of the cluster.
	text += fmt.Sprintf(`
[dns]
resolver = %q
confirm_timeout = "1m"

[dns.publisher.cf]
type = "cloudflare"
api_token_file = %q
api_url = %q
nameservers = [%s]
`, w.resolver.Addr(), token, w.cf.URL, strings.Join(ns, ", "))
	if err := os.WriteFile(w.cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// cacheModel checks the whole history of the TLSA name on every server
// against what the service served.
func (w *cfWorld) cacheModel() {
	var served []dnstest.KeyServed
	tl := w.svc.Timeline()
	for i, ch := range tl {
		k := dnstest.KeyServed{From: ch.At, SPKI: ch.SPKI}
		if i+1 < len(tl) {
			k.To = tl[i+1].At
		}
		served = append(served, k)
	}
	history := w.dns.History(w.owner, dns.TypeTLSA)
	for _, g := range dnstest.CacheGaps(history, served, time.Now()) {
		w.t.Errorf("a resolver could miss the served key's record: %s", g.Describe(w.start))
	}
	if len(history) == 0 {
		w.t.Error("the servers have no history for the TLSA name")
	}
}

type cfResult struct {
	stdout, stderr string
	code           int
}

// run runs daneroll in the world's directory, with the stand-in host.
func (w *cfWorld) run(args ...string) cfResult {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bins.daneroll, args...)
	cmd.Dir = w.dir
	cmd.Env = append(os.Environ(), testHostEnv+"="+w.host,
		"PATH="+filepath.Join(w.host, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cfResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		w.t.Fatalf("daneroll %s: %v", strings.Join(args, " "), err)
	}
	w.t.Logf("$ daneroll %s  (exit %d)\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// mustRun runs daneroll and fails the test unless it exits 0 with
// nothing on stderr but the import's hint.
func (w *cfWorld) mustRun(args ...string) cfResult {
	w.t.Helper()
	r := w.run(args...)
	if r.code != 0 {
		w.t.Fatalf("daneroll %s exited %d:\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if line != "" && !strings.HasPrefix(line, "daneroll: hint: ") {
			w.t.Errorf("daneroll %s: %s", strings.Join(args, " "), line)
		}
	}
	return r
}

func (w *cfWorld) match(text, re string) {
	w.t.Helper()
	if !regexp.MustCompile(re).MatchString(text) {
		w.t.Errorf("no match for %s in:\n%s", re, text)
	}
}

func (w *cfWorld) noMatch(text, re string) {
	w.t.Helper()
	if m := regexp.MustCompile(re).FindString(text); m != "" {
		w.t.Errorf("unexpected %q (%s) in:\n%s", m, re, text)
	}
}

// writes are the API calls that could change the zone, in order.
func (w *cfWorld) writes() []cftest.Request {
	var out []cftest.Request
	for _, r := range w.cf.Requests() {
		if r.Method != "GET" && r.Method != "HEAD" {
			out = append(out, r)
		}
	}
	return out
}

// zoneTLSA returns the digests of the 3 1 1 records the API holds at the
// owner name, one per record, sorted.
func (w *cfWorld) zoneTLSA() []string {
	var out []string
	for _, r := range w.cf.Records(cfZone) {
		if r.Type != "TLSA" {
			continue
		}
		if r.Name != w.owner || r.Data == nil || r.Data.Usage != 3 || r.Data.Selector != 1 || r.Data.MatchingType != 1 {
			w.t.Errorf("an unexpected TLSA record: %+v", r)
			continue
		}
		out = append(out, strings.ToLower(r.Data.Certificate))
	}
	slices.Sort(out)
	return out
}

// servedEverywhere returns the digests every authoritative server serves
// at the owner name, asked without recursion, failing the test when the
// servers disagree or a record is not 3 1 1.
func (w *cfWorld) servedEverywhere() []string {
	w.t.Helper()
	var first []string
	for i, addr := range w.dns.Addrs() {
		m := new(dns.Msg)
		m.SetQuestion(w.owner+".", dns.TypeTLSA)
		m.RecursionDesired = false
		r, err := dns.Exchange(m, addr)
		if err != nil {
			w.t.Fatal(err)
		}
		var got []string
		for _, rr := range r.Answer {
			if t, ok := rr.(*dns.TLSA); ok {
				if t.Usage != 3 || t.Selector != 1 || t.MatchingType != 1 {
					w.t.Errorf("server %d serves %s", i, t)
				}
				got = append(got, strings.ToLower(t.Certificate))
			}
		}
		slices.Sort(got)
		if i == 0 {
			first = got
		} else if !slices.Equal(got, first) {
			w.t.Errorf("server %d serves %v, the primary %v", i, got, first)
		}
	}
	return first
}

// checkZone asserts that the API holds exactly the records want (digests,
// duplicates repeated), every server serves them, and nothing else in the
// zone changed.
func (w *cfWorld) checkZone(when string, want []string) {
	w.t.Helper()
	if got := w.zoneTLSA(); !slices.Equal(got, want) {
		w.t.Errorf("%s: Cloudflare holds %v, want %v", when, got, want)
	}
	if got := w.servedEverywhere(); !slices.Equal(got, slices.Compact(slices.Clone(want))) {
		w.t.Errorf("%s: the name servers serve %v, want %v", when, got, slices.Compact(slices.Clone(want)))
	}
	var others []string
	for _, r := range w.cf.Records(cfZone) {
		if r.Type != "TLSA" {
			others = append(others, r.ID+" "+r.Type+" "+r.Name+" "+r.Content)
		}
	}
	if !slices.Equal(others, w.zoneBefore) {
		w.t.Errorf("%s: the zone's other records are %v, were %v", when, others, w.zoneBefore)
	}
}

func (w *cfWorld) serials() []uint32 {
	var out []uint32
	for i := range w.dns.Addrs() {
		out = append(out, w.dns.Serial(i))
	}
	return out
}

// recordLines are the zone-file lines of tlsa's output, comments left out.
func recordLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, ";") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	return lines
}

func sortedStrings(s ...string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// orNone is a regular expression alternative that matches nothing when s
// is empty.
func orNone(s string) string {
	if s == "" {
		return "$^"
	}
	return s
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

// spkiOfFile returns the 3 1 1 digest of a PEM key or certificate file.
func spkiOfFile(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
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
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// newKeyDigest is the 3 1 1 digest of a key nobody has.
func newKeyDigest(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
