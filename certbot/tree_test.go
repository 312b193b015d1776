package certbot

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/store"
)

func lineageNamed(t *testing.T, tr *Tree, name string) *Lineage {
	t.Helper()
	for _, l := range tr.Lineages {
		if l.Name == name {
			return l
		}
	}
	for _, s := range tr.Skipped {
		if s.Name == name {
			t.Fatalf("%s skipped: %v", name, s.Err)
		}
	}
	t.Fatalf("no lineage %s", name)
	return nil
}

func TestReadRealTree(t *testing.T) {
	dir, sh := certbotTree(t)
	before := snapshot(t, dir)
	tr, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Skipped) > 0 {
		t.Errorf("skipped: %v", tr.Skipped[0].Err)
	}
	var names []string
	for _, l := range tr.Lineages {
		names = append(names, l.Name)
	}
	if want := []string{"mail.example.test", "old.example.test", "www.example.test", "www.example.test-0001"}; !slices.Equal(names, want) {
		t.Fatalf("lineages %v, want %v", names, want)
	}
	for _, l := range tr.Lineages {
		live := filepath.Join(dir, "live", l.Name)
		read := func(f string) []byte {
			data, err := os.ReadFile(filepath.Join(live, f))
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
		// What is served now, exactly.
		if !bytes.Equal(l.Cert, read("cert.pem")) || !bytes.Equal(l.Chain, read("chain.pem")) ||
			!bytes.Equal(append(slices.Clone(l.Cert), l.Chain...), read("fullchain.pem")) {
			t.Errorf("%s: certificate files differ from live/", l.Name)
		}
		key, err := store.ParseKey(read("privkey.pem"))
		if err != nil || !samePublic(key.Public(), l.Key.Public()) {
			t.Errorf("%s: key is not live/privkey.pem's (%v)", l.Name, err)
		}
		if len(l.Warnings) > 0 {
			t.Errorf("%s: warnings %v", l.Name, l.Warnings)
		}
	}

	mail := lineageNamed(t, tr, "mail.example.test")
	if !mail.ReuseKey || mail.Version != 3 || mail.SameKeyVersions != 2 || len(mail.Older) != 0 || acme.KeyTypeOf(mail.Key) != "rsa2048" {
		t.Errorf("mail: reuse %v, version %d, same-key versions %d, older %d, key %s", mail.ReuseKey, mail.Version, mail.SameKeyVersions, len(mail.Older), keyDesc(mail.Key))
	}
	if !mail.Since.Before(mail.Leaf.NotBefore) {
		t.Errorf("mail: since %v is not the first certificate's notBefore (live one: %v)", mail.Since, mail.Leaf.NotBefore)
	}
	if !slices.Equal(mail.Domains, []string{"mail.example.test", "smtp.example.test"}) && !slices.Equal(mail.Domains, []string{"smtp.example.test", "mail.example.test"}) {
		t.Errorf("mail: domains %v", mail.Domains)
	}
	if mail.Authenticator != "standalone" || mail.HTTP01Port != sh.httpPort || mail.Server != sh.servers[0] {
		t.Errorf("mail: %s on %d from %s", mail.Authenticator, mail.HTTP01Port, mail.Server)
	}
	if len(mail.Hooks) != 1 || mail.Hooks[0].Kind != "renew_hook" || mail.Hooks[0].Command != "systemctl reload postfix && systemctl reload dovecot" {
		t.Errorf("mail: hooks %+v", mail.Hooks)
	}

	www := lineageNamed(t, tr, "www.example.test")
	if www.ReuseKey || www.Version != 3 || len(www.Older) != 2 || www.SameKeyVersions != 0 || acme.KeyTypeOf(www.Key) != "ec384" {
		t.Errorf("www: reuse %v, version %d, older %d, same-key %d, key %s", www.ReuseKey, www.Version, len(www.Older), www.SameKeyVersions, keyDesc(www.Key))
	}
	if !www.Since.Equal(www.Leaf.NotBefore) {
		t.Errorf("www: since %v, want the live certificate's notBefore %v", www.Since, www.Leaf.NotBefore)
	}
	if www.Authenticator != "webroot" || !slices.Equal(www.WebrootMap, []WebrootEntry{{"www.example.test", sh.webroot}}) {
		t.Errorf("www: %s %+v", www.Authenticator, www.WebrootMap)
	}
	dup := lineageNamed(t, tr, "www.example.test-0001")
	if acme.KeyTypeOf(dup.Key) != "ec256" || len(dup.Older) != 2 || !slices.Equal(dup.Domains, []string{"www.example.test"}) {
		t.Errorf("www-0001: key %s, older %d, domains %v", keyDesc(dup.Key), len(dup.Older), dup.Domains)
	}
	old := lineageNamed(t, tr, "old.example.test")
	if old.Server != sh.servers[1] || !old.Leaf.NotAfter.Before(time.Now()) {
		t.Errorf("old: server %s, not after %v", old.Server, old.Leaf.NotAfter)
	}

	if len(tr.Accounts) != 2 {
		t.Fatalf("%d accounts, want 2", len(tr.Accounts))
	}
	for i, a := range tr.Accounts {
		srv := map[string]string{mail.Server: "main", old.Server: "expired"}[a.Server]
		if a.Err != nil || a.Key == nil || srv == "" || !strings.HasPrefix(a.URI, "https://127.0.0.1:") {
			t.Errorf("account %d: %+v", i, a)
		}
		u, _ := url.Parse(a.Server)
		if want := filepath.Join("accounts", u.Host, u.Path, a.ID); a.Dir != want {
			t.Errorf("account %d: dir %s, want %s", i, a.Dir, want)
		}
	}
	if after := snapshot(t, dir); after != before {
		t.Error("reading changed the certbot directory")
	}
}

// TestPlanRealTree checks the configuration made from certbot's tree: it
// loads, and says what certbot did.
func TestPlanRealTree(t *testing.T) {
	dir, sh := certbotTree(t)
	tr, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p, err := tr.Plan(PlanOptions{StateDir: "/var/lib/daneroll", SecretsDir: "/etc/daneroll", Now: now, RekeyAfter: config.DefaultRekey})
	if err != nil {
		t.Fatal(err)
	}
	text := string(p.Config)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "daneroll.toml"), text)
	if err != nil {
		t.Fatalf("the configuration does not load: %v\n%s", err, text)
	}
	if len(cfg.Warnings) > 0 {
		t.Errorf("warnings: %v", cfg.Warnings)
	}
	if cfg.StateDir != "/var/lib/daneroll" || cfg.ACME.Directory != sh.servers[0] || !cfg.ACME.AcceptTOS || cfg.ACME.Email != "" {
		t.Errorf("acme: %+v, state %s", cfg.ACME, cfg.StateDir)
	}
	if p.Account == nil || p.Account.Server != sh.servers[0] || p.Directory != sh.servers[0] {
		t.Errorf("account %+v, directory %s", p.Account, p.Directory)
	}
	if len(cfg.Certificates) != 4 {
		t.Fatalf("%d certificates", len(cfg.Certificates))
	}
	want := map[string]struct {
		keyType, policy, listen, webroot string
		services                         []string
	}{
		"mail.example.test":     {"rsa2048", "reuse", ":" + itoa(sh.httpPort), "", []string{"postfix", "dovecot"}},
		"old.example.test":      {"ec256", "rollover", ":" + itoa(sh.httpPort), "", nil},
		"www.example.test":      {"ec384", "rollover", "", sh.webroot, nil},
		"www.example.test-0001": {"ec256", "rollover", ":" + itoa(sh.httpPort), "", nil},
	}
	for _, c := range cfg.Certificates {
		w, ok := want[c.Name]
		if !ok {
			t.Errorf("unexpected certificate %s", c.Name)
			continue
		}
		if c.KeyType != w.keyType || c.KeyPolicy != w.policy || c.Challenge != "http-01" || c.HTTP01Listen != w.listen ||
			c.HTTP01Webroot != w.webroot || !slices.Equal(c.Services, w.services) || len(c.TLSA) != 0 {
			t.Errorf("%s: %+v", c.Name, c)
		}
	}
	if s := cfg.Services["postfix"]; !slices.Equal(s.Reload, []string{"systemctl", "reload", "postfix"}) {
		t.Errorf("postfix: %+v", s)
	}
	if s := cfg.Services["dovecot"]; !slices.Equal(s.Reload, []string{"systemctl", "reload", "dovecot"}) {
		t.Errorf("dovecot: %+v", s)
	}
	for _, frag := range []string{
		// The post-hook is more than a reload: kept as a comment.
		"#   echo renewed >>/dev/null\n",
		"daneroll runs commands as argv arrays, never through a shell",
		// The lineage from the other Pebble, and the expired one.
		"certbot renewed this lineage from " + sh.servers[1],
		"certificate expired on ",
		// Why rollover, and what it means for published records.
		"certbot made a new key at every renewal (no reuse_key)",
		"# tlsa = [\"_25._tcp.mail.example.test\", \"_993._tcp.mail.example.test\"]\n",
		"# probe = [\"smtp://mail.example.test:25\"]\n",
		"# probe = [\"imaps://mail.example.test:993\"]\n",
		"Note: lineage www.example.test-0001 has the same names",
		"2 other keys of earlier certificates",
		"2 earlier certificates with the same key",
	} {
		if !strings.Contains(text, frag) && !strings.Contains(unwrapComments(text), frag) {
			t.Errorf("the configuration lacks %q", frag)
		}
	}
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "www.example.test: certbot's post-hook is not a plain reload") {
		t.Errorf("notes: %q", p.Notes)
	}
	if len(p.Hooks) != 2 || p.Hooks[0].Lineage != "mail.example.test" || !slices.Equal(p.Hooks[0].Services, []string{"postfix", "dovecot"}) ||
		p.Hooks[1].Lineage != "www.example.test" || p.Hooks[1].Hook.Label() != "post-hook" || p.Hooks[1].Services != nil ||
		p.Hooks[1].File != filepath.Join(dir, "renewal", "www.example.test.conf") {
		t.Errorf("hooks: %+v", p.Hooks)
	}
}

// TestSkippedLineages breaks lineages the ways they are found broken: each
// is skipped with a line naming the file, the others are imported, and the
// configuration keeps the skipped ones commented out.
func TestSkippedLineages(t *testing.T) {
	dir, _ := certbotTree(t)
	// A live link to an archive entry that is gone.
	must(t, os.Remove(filepath.Join(dir, "archive", "www.example.test", "cert3.pem")))
	// A live link out of the tree.
	must(t, os.Remove(filepath.Join(dir, "live", "mail.example.test", "privkey.pem")))
	must(t, os.Symlink("../../../outside/privkey.pem", filepath.Join(dir, "live", "mail.example.test", "privkey.pem")))
	// A key that is not the certificate's.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pemKey, _ := store.EncodeKey(other)
	must(t, os.WriteFile(filepath.Join(dir, "archive", "www.example.test-0001", "privkey3.pem"), pemKey, 0o600))
	// A renewal file certbot would call broken.
	conf := filepath.Join(dir, "renewal", "old.example.test.conf")
	data, _ := os.ReadFile(conf)
	must(t, os.WriteFile(conf, bytes.Replace(data, []byte("[renewalparams]\n"), []byte("[renewalparams]\nreuse_key = 'yes\n"), 1), 0o644))
	// A lineage name daneroll cannot use, with nothing else.
	must(t, os.WriteFile(filepath.Join(dir, "renewal", "bad name.conf"), []byte("[renewalparams]\n"), 0o644))

	tr, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range tr.Skipped {
		got[s.Name] = s.Err.Error()
	}
	want := map[string]string{
		"www.example.test": filepath.Join(dir, "live/www.example.test/cert.pem") + ": points to " +
			filepath.Join(dir, "archive/www.example.test/cert3.pem") + ", which does not exist",
		"mail.example.test": filepath.Join(dir, "live/mail.example.test/privkey.pem") +
			`: points to "../../../outside/privkey.pem", not to ../../archive/mail.example.test/privkeyN.pem as certbot links it`,
		"www.example.test-0001": filepath.Join(dir, "archive/www.example.test-0001/cert3.pem") + ": not the certificate of privkey3.pem",
		"old.example.test":      conf + `:11: "reuse_key": cannot read the value "'yes" (unbalanced quotes, or an empty list item?)`,
		"bad name":              filepath.Join(dir, "renewal/bad name.conf") + `: the lineage name "bad name" is not one daneroll can use (letters, digits, '.', '-', '_')`,
	}
	for name, msg := range want {
		if got[name] != msg {
			t.Errorf("%s:\n got %s\nwant %s", name, got[name], msg)
		}
	}
	if len(tr.Lineages) != 0 {
		t.Errorf("imported %d lineages", len(tr.Lineages))
	}
	if _, err := tr.Plan(PlanOptions{StateDir: "/s", SecretsDir: "/e", Now: time.Now(), RekeyAfter: config.DefaultRekey}); err == nil ||
		err.Error() != dir+": no lineage can be imported (5 skipped)" {
		t.Errorf("plan: %v", err)
	}

	// With one good lineage left, the plan imports it and comments the
	// others out; the configuration still loads.
	must(t, os.WriteFile(conf, data, 0o644))
	tr, err = Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tr.Plan(PlanOptions{StateDir: "/s", SecretsDir: "/e", Now: time.Now(), RekeyAfter: config.DefaultRekey})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("daneroll.toml", string(p.Config))
	if err != nil {
		t.Fatalf("%v\n%s", err, p.Config)
	}
	if len(cfg.Certificates) != 1 || cfg.Certificates[0].Name != "old.example.test" {
		t.Errorf("certificates %+v", cfg.Certificates)
	}
	if !strings.Contains(unwrapComments(string(p.Config)), "TODO: certbot lineage www.example.test was NOT imported: ") ||
		!strings.Contains(string(p.Config), "# name = \"www.example.test\"\n") {
		t.Errorf("the skipped lineage is not in the configuration:\n%s", p.Config)
	}
}

// TestOlderVersionProblems: an unreadable earlier version is a warning,
// not a reason to skip the lineage; a missing certificate falls back to the
// private key.
func TestOlderVersionProblems(t *testing.T) {
	dir, _ := certbotTree(t)
	a := filepath.Join(dir, "archive", "www.example.test")
	must(t, os.Remove(filepath.Join(a, "cert1.pem")))
	must(t, os.WriteFile(filepath.Join(a, "cert2.pem"), []byte("garbage"), 0o644))
	must(t, os.Remove(filepath.Join(a, "privkey2.pem")))
	tr, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	www := lineageNamed(t, tr, "www.example.test")
	if len(www.Older) != 1 {
		t.Errorf("%d older keys, want 1 (from privkey1.pem)", len(www.Older))
	}
	if len(www.Warnings) != 1 || !strings.Contains(www.Warnings[0], "cert2.pem: no PEM certificate: its key is not known as an earlier key") {
		t.Errorf("warnings %q", www.Warnings)
	}
}

// TestAccountFromV1Directory: accounts registered by old certbots live
// under acme-v01.api.letsencrypt.org, reached from the v2 directory by an
// absolute link certbot made; the link is not followed (it may point
// anywhere) but the v1 directory is where certbot would look.
func TestAccountFromV1Directory(t *testing.T) {
	dir, sh := certbotTree(t)
	u, _ := url.Parse(sh.servers[0])
	tr, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	id := lineageNamed(t, tr, "mail.example.test").AccountID
	v1 := filepath.Join(dir, "accounts", "acme-v01.api.letsencrypt.org", "directory")
	must(t, os.MkdirAll(v1, 0o700))
	must(t, os.Rename(filepath.Join(dir, "accounts", u.Host, u.Path, id), filepath.Join(v1, id)))
	must(t, os.MkdirAll(filepath.Join(dir, "accounts", "acme-v02.api.letsencrypt.org"), 0o700))
	must(t, os.Symlink(v1, filepath.Join(dir, "accounts", "acme-v02.api.letsencrypt.org", "directory")))
	for _, name := range []string{"mail.example.test", "www.example.test", "www.example.test-0001"} {
		conf := filepath.Join(dir, "renewal", name+".conf")
		data, _ := os.ReadFile(conf)
		must(t, os.WriteFile(conf, bytes.ReplaceAll(data, []byte(sh.servers[0]), []byte(LetsEncrypt)), 0o644))
	}
	tr, err = Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	var acct *Account
	for _, a := range tr.Accounts {
		if a.Server == LetsEncrypt {
			acct = a
		}
	}
	if acct == nil || acct.Err != nil || acct.Dir != "accounts/acme-v01.api.letsencrypt.org/directory/"+id {
		t.Fatalf("account %+v", acct)
	}
	p, err := tr.Plan(PlanOptions{StateDir: "/s", SecretsDir: "/e", Now: time.Now(), RekeyAfter: config.DefaultRekey})
	if err != nil {
		t.Fatal(err)
	}
	if p.Account != acct || !strings.Contains(string(p.Config), "\ndirectory = \"letsencrypt\"\n") {
		t.Errorf("account %+v, config:\n%s", p.Account, p.Config)
	}
}

// TestCloudflareLineage: a dns-cloudflare lineage gets a cloudflare
// publisher whose token file is made from the plugin's credentials; the
// global API key, which daneroll cannot use, is a TODO, and no secret
// shows in the configuration or in an error.
func TestCloudflareLineage(t *testing.T) {
	dir, sh := certbotTree(t)
	const token = "CFtokenForTheTest0123456789abcdefghijklm"
	// Written where certbot wrote it: paths under config_dir are read
	// from the tree, wherever it is now.
	must(t, os.WriteFile(filepath.Join(dir, "cloudflare.ini"), []byte("# Cloudflare API token\ndns_cloudflare_api_token = "+token+"\n"), 0o600))
	outside := filepath.Join(t.TempDir(), "global.ini")
	must(t, os.WriteFile(outside, []byte("dns_cloudflare_email = a@example.test\ndns_cloudflare_api_key = 0123456789abcdef\n"), 0o600))
	set := func(name, creds string) {
		conf := filepath.Join(dir, "renewal", name+".conf")
		data, _ := os.ReadFile(conf)
		data = bytes.Replace(data, []byte("authenticator = standalone"), []byte("authenticator = dns-cloudflare\ndns_cloudflare_credentials = "+creds), 1)
		must(t, os.WriteFile(conf, data, 0o644))
	}
	set("mail.example.test", filepath.Join(sh.dir, "cloudflare.ini"))
	set("www.example.test-0001", outside)
	tr, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	secrets := t.TempDir()
	p, err := tr.Plan(PlanOptions{StateDir: "/s", SecretsDir: secrets, Now: time.Now(), RekeyAfter: config.DefaultRekey})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Secrets) != 1 || p.Secrets[0].Path != filepath.Join(secrets, "cloudflare.token") || string(p.Secrets[0].Data) != token+"\n" {
		t.Fatalf("secrets %+v", p.Secrets)
	}
	must(t, os.WriteFile(p.Secrets[0].Path, p.Secrets[0].Data, 0o600))
	cfg, err := config.Parse("daneroll.toml", string(p.Config))
	if err != nil {
		t.Fatalf("%v\n%s", err, p.Config)
	}
	mail, dup := cfg.Certificate("mail.example.test"), cfg.Certificate("www.example.test-0001")
	if mail.Challenge != "dns-01" || mail.Publisher != "cloudflare" || cfg.DNS.Publishers["cloudflare"].APITokenFile != p.Secrets[0].Path {
		t.Errorf("mail: %+v", mail)
	}
	if dup.Challenge != "dns-01" || dup.Publisher != "manual" || cfg.DNS.Publishers["manual"].Type != "manual" {
		t.Errorf("www-0001: %+v", dup)
	}
	if !slices.ContainsFunc(p.Notes, func(n string) bool {
		return strings.Contains(n, "www.example.test-0001: certbot's dns-cloudflare credentials cannot be used ("+outside+": holds the global API key")
	}) {
		t.Errorf("notes %q", p.Notes)
	}
	if strings.Contains(string(p.Config), token) || strings.Contains(strings.Join(p.Notes, "\n"), "0123456789abcdef") {
		t.Error("a secret shows")
	}
	// A credentials file that cannot be read never shows its lines.
	must(t, os.WriteFile(outside, []byte("dns_cloudflare_api_token = 'unterminated"+token+"\n"), 0o600))
	tr, _ = Read(dir)
	for _, l := range tr.Lineages {
		if l.cloudflareErr != nil && strings.Contains(l.cloudflareErr.Error(), token) {
			t.Errorf("the error shows the token: %v", l.cloudflareErr)
		}
	}
}

func TestNotACertbotDirectory(t *testing.T) {
	dir := t.TempDir()
	if _, err := Read(dir); err == nil || err.Error() != dir+": no renewal/ directory: not a certbot configuration directory" {
		t.Errorf("empty directory: %v", err)
	}
	if _, err := Read(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "no such file or directory") {
		t.Errorf("missing directory: %v", err)
	}
	must(t, os.Mkdir(filepath.Join(dir, "renewal"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "renewal", "big.conf"), bytes.Repeat([]byte("# x\n"), 100000), 0o644))
	tr, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Skipped) != 1 || !strings.Contains(tr.Skipped[0].Err.Error(), "big.conf: larger than 256 KiB") {
		t.Errorf("skipped %+v", tr.Skipped)
	}
	if _, err := tr.Plan(PlanOptions{}); err == nil {
		t.Error("a plan without lineages")
	}
}

// unwrapComments joins the lines of each comment, so that a test can look
// for a phrase wherever the lines break.
func unwrapComments(s string) string { return strings.ReplaceAll(s, "\n# ", " ") }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestPlanSettings: certbot settings with a daneroll form carry over,
// the others become comments; the configuration loads either way.
func TestPlanSettings(t *testing.T) {
	dir, _ := certbotTree(t)
	edit := func(name, old, new string) {
		conf := filepath.Join(dir, "renewal", name+".conf")
		data, _ := os.ReadFile(conf)
		if !bytes.Contains(data, []byte(old)) {
			t.Fatalf("%s lacks %q", conf, old)
		}
		must(t, os.WriteFile(conf, bytes.Replace(data, []byte(old), []byte(new), 1), 0o644))
	}
	edit("mail.example.test", "# renew_before_expiry = 30 days", "renew_before_expiry = 3 weeks")
	edit("mail.example.test", "[renewalparams]\n", "[renewalparams]\npreferred_chain = ISRG Root X1\nmust_staple = True\nautorenew = False\n")
	edit("www.example.test", "# renew_before_expiry = 30 days", "renew_before_expiry = 2 months")
	edit("www.example.test-0001", "authenticator = standalone", "authenticator = nginx\ninstaller = nginx")
	edit("old.example.test", "authenticator = standalone", "authenticator = dns-route53")
	tr, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tr.Plan(PlanOptions{StateDir: "/s", SecretsDir: "/e", Now: time.Now(), RekeyAfter: config.DefaultRekey})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("daneroll.toml", string(p.Config))
	if err != nil {
		t.Fatalf("%v\n%s", err, p.Config)
	}
	mail, www, dup, old := cfg.Certificate("mail.example.test"), cfg.Certificate("www.example.test"),
		cfg.Certificate("www.example.test-0001"), cfg.Certificate("old.example.test")
	if mail.RenewBefore.Duration != 21*24*time.Hour || mail.PreferredChain != "ISRG Root X1" {
		t.Errorf("mail: renew_before %v, preferred_chain %q", mail.RenewBefore, mail.PreferredChain)
	}
	if www.RenewBefore.Duration != 0 {
		t.Errorf("www: renew_before %v", www.RenewBefore)
	}
	if dup.Challenge != "http-01" || dup.HTTP01Listen != ":80" || !slices.Equal(dup.Services, []string{"nginx"}) ||
		!slices.Equal(cfg.Services["nginx"].Reload, []string{"systemctl", "reload", "nginx"}) {
		t.Errorf("www-0001: %+v, nginx %+v", dup, cfg.Services["nginx"])
	}
	if old.Challenge != "dns-01" || old.Publisher != "manual" {
		t.Errorf("old: %+v", old)
	}
	text := unwrapComments(string(p.Config))
	for _, frag := range []string{
		"certbot's must_staple = True (",
		"daneroll does not request OCSP must-staple",
		"certbot's autorenew = False: certbot never renewed this lineage on its own; daneroll renew does.",
		"certbot's renew_before_expiry = 2 months has no daneroll form",
		"TODO: certbot's nginx authenticator answered http-01 through nginx",
		"TODO: certbot's dns-route53 authenticator has no daneroll counterpart; dns-01 goes through the manual publisher",
	} {
		if !strings.Contains(text, frag) {
			t.Errorf("the configuration lacks %q", frag)
		}
	}
	if len(p.Notes) != 3 {
		t.Errorf("notes %q", p.Notes)
	}
}

// certbot makes a lineage per --duplicate: a host with many of the same
// names gets one note on each, not one per pair (1000 clones of five
// certificates once made a 36 MB configuration that daneroll refused).
func TestPlanManyDuplicates(t *testing.T) {
	dir, _ := certbotTree(t)
	tr, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	www := lineageNamed(t, tr, "www.example.test")
	const clones = 300
	for i := range clones {
		c := *www
		c.Name = fmt.Sprintf("www.example.test-%04d", i+2)
		tr.Lineages = append(tr.Lineages, &c)
	}
	p, err := tr.Plan(PlanOptions{StateDir: "/s", SecretsDir: "/e", Now: time.Now(), RekeyAfter: config.DefaultRekey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse("daneroll.toml", string(p.Config)); err != nil {
		t.Fatalf("the configuration does not load: %v", err)
	}
	if per := len(p.Config) / len(tr.Lineages); per > 4<<10 {
		t.Errorf("%d bytes of configuration per lineage", per)
	}
	text := unwrapComments(string(p.Config))
	// www, www-0001 and the clones: each has 301 others.
	want := "Note: lineages www.example.test-0001, www.example.test-0002, www.example.test-0003 and 298 more have the same names"
	if n := strings.Count(text, want); n != 1 {
		t.Errorf("%d × %q", n, want)
	}
	if n := strings.Count(text, "the same names"); n != clones+2 {
		t.Errorf("%d notes on the same names, want %d", n, clones+2)
	}
}

func TestAccountID(t *testing.T) {
	for id, want := range map[string]bool{
		"0123456789abcdef0123456789abcdef": true,
		"A_b-9":                            true,
		strings.Repeat("a", 128):           true,
		strings.Repeat("a", 129):           false,
		"":                                 false,
		"..":                               false,
		"a/b":                              false,
		"é":                                false,
		"a b":                              false,
	} {
		if got := accountID(id); got != want {
			t.Errorf("accountID(%q) = %v", id, got)
		}
	}
}
