package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// secretDir makes a directory holding a token and a TSIG secret, mode 0600.
func secretDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"cloudflare.token", "tsig.secret"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("c2VjcmV0\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestExampleParses(t *testing.T) {
	src, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := secretDir(t)
	text := strings.ReplaceAll(string(src), "/etc/daneroll/", dir+"/")
	file := filepath.Join(dir, "daneroll.toml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(file)
	if err != nil {
		t.Fatalf("config.example.toml does not load:\n%v", err)
	}
	if cfg.ACME.Directory != "https://acme-v02.api.letsencrypt.org/directory" {
		t.Errorf("directory alias not resolved: %q", cfg.ACME.Directory)
	}
	mail := cfg.Certificate("mail")
	if mail == nil {
		t.Fatal("certificate mail missing")
	}
	if mail.RekeyAfter.Duration != 180*24*time.Hour || mail.KeyPolicy != PolicyRollover || mail.TLSATTL != 300 {
		t.Errorf("mail = %+v", mail)
	}
	if got := cfg.Services["postfix"].Reload; len(got) != 2 || got[1] != "reload" {
		t.Errorf("postfix reload = %q", got)
	}
	if p := cfg.DNS.Publishers["ns1"]; p.Server != "192.0.2.53:53" || p.TSIGName != "daneroll." {
		t.Errorf("ns1 = %+v", p)
	}
	// Every key documented in the example is a key the loader knows, and
	// every key the loader knows appears in the example.
	for table, keys := range known {
		for _, k := range keys {
			if !strings.Contains(string(src), k) {
				t.Errorf("key %s.%s is not documented in config.example.toml", table, k)
			}
		}
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse("x.toml", `
[[certificate]]
domains = ["www.example.org"]
`)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Certificates[0]
	if c.Name != "www.example.org" || c.Challenge != ChallengeHTTP01 || c.HTTP01Listen != ":80" ||
		c.KeyType != "ec256" || c.KeyPolicy != PolicyRollover || c.TLSATTL != 300 || c.TLSAParams[0] != "3 1 1" {
		t.Errorf("defaults not applied: %+v", c)
	}
	if cfg.StateDir != DefaultState {
		t.Errorf("state_dir = %q", cfg.StateDir)
	}
	if cfg.DNS.HoldFactor != 2 {
		t.Errorf("hold_factor = %v", cfg.DNS.HoldFactor)
	}
}

func TestBadConfigs(t *testing.T) {
	dir := secretDir(t)
	worldReadable := filepath.Join(dir, "open.token")
	if err := os.WriteFile(worldReadable, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	groupReadable := filepath.Join(dir, "group.token")
	if err := os.WriteFile(groupReadable, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(groupReadable, 0o640)
	// Not a token: someone named the wrong file.
	huge := filepath.Join(dir, "huge.token")
	if err := os.WriteFile(huge, make([]byte, MaxSecretFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DANEROLL_TEST_EMPTY", "")
	const cert = "\n[[certificate]]\ndomains = [\"a.example.org\"]\n"
	tests := []struct {
		name string
		src  string
		want string // substring of the error, which starts with file:line
		line int
	}{
		{"unknown top-level key", "stat_dir = \"/x\"\n", `unknown key "stat_dir"`, 1},
		{"unknown key in certificate", cert + "chalenge = \"dns-01\"\n", `unknown key "certificate.chalenge"`, 4},
		{"wrong type", "[acme]\naccept_tos = \"yes\"\n", `accept_tos: wrong type`, 2},
		{"bad duration", cert + "rekey_after = \"180x\"\n", `unknown unit "x"`, 4},
		{"duration without unit", "[acme]\nrenew_before = \"30\"\n", `missing unit`, 2},
		{"syntax error", "[acme\n", `expected '.' or ']' to end table name`, 2},
		{"unknown key type", "[acme]\nkey_type = \"ed25519\"\n", `unknown key type "ed25519"`, 2},
		{"unknown key type in certificate", cert + "key_type = \"rsa1024\"\n", `key_type: unknown key type "rsa1024"`, 4},
		{"duplicate name", cert + "name = \"m\"\n" + cert + "name = \"m\"\n", `certificate "m": duplicate name (also at line 4)`, 8},
		{"empty domains", "[[certificate]]\nname = \"m\"\ndomains = []\n", `certificate "m": domains is empty`, 3},
		{"missing domains", "[[certificate]]\nname = \"m\"\n", `domains is empty`, 1},
		{"bad domain", "[[certificate]]\ndomains = [\"not a name\"]\n", `is not a domain name`, 2},
		{"undefined publisher", cert + "publisher = \"cf\"\n", `publisher "cf" is not defined`, 4},
		{"undefined service", cert + "services = [\"postfix\"]\n", `service "postfix" is not defined`, 4},
		{"dns-01 without publisher", cert + "challenge = \"dns-01\"\n", `dns-01 needs publisher`, 4},
		{"unknown challenge", cert + "challenge = \"http-02\"\n", `unknown challenge "http-02"`, 4},
		{"wildcard needs dns-01", "[[certificate]]\ndomains = [\"*.example.org\"]\n", `wildcard names need challenge = "dns-01"`, 2},
		{"unknown key policy", cert + "key_policy = \"forever\"\n", `unknown key_policy "forever"`, 4},
		{"rekey_after with reuse", cert + "key_policy = \"reuse\"\nrekey_after = \"30d\"\n", `rekey_after applies only to key_policy = "rollover"`, 5},
		{"tlsa without publisher", cert + "tlsa = [\"_25._tcp.a.example.org\"]\n", `tlsa records need a publisher`, 4},
		{"bad tlsa owner", "[dns.publisher.m]\ntype = \"manual\"\n" + cert + "publisher = \"m\"\ntlsa = [\"a.example.org\"]\n", `is not _PORT._PROTO.HOST`, 7},
		{"tlsa params 2 1 1", "[dns.publisher.m]\ntype = \"manual\"\n" + cert + "publisher = \"m\"\ntlsa_params = [\"2 1 1\"]\n", `only 3 (DANE-EE) is managed`, 7},
		{"missing token file", "[dns.publisher.cf]\ntype = \"cloudflare\"\napi_token_file = \"" + dir + "/nope\"\n", `/nope: no such file or directory`, 3},
		{"world-readable token", "[dns.publisher.cf]\ntype = \"cloudflare\"\napi_token_file = \"" + worldReadable + "\"\n", `is readable or writable by group or others (mode 0644)`, 3},
		{"huge token file", "[dns.publisher.cf]\ntype = \"cloudflare\"\napi_token_file = \"" + huge + "\"\n", `is 65537 bytes, more than a secret can be (64 KiB)`, 3},
		{"token env not set", "[dns.publisher.cf]\ntype = \"cloudflare\"\napi_token_env = \"DANEROLL_TEST_EMPTY\"\n", `environment variable DANEROLL_TEST_EMPTY is not set`, 3},
		{"no token at all", "[dns.publisher.cf]\ntype = \"cloudflare\"\n", `missing api_token_file`, 1},
		{"rfc2136 without tsig", "[dns.publisher.ns]\ntype = \"rfc2136\"\nserver = \"127.0.0.1:53\"\ntsig_secret_file = \"" + dir + "/tsig.secret\"\n", `needs tsig_name`, 1},
		{"bad tsig algorithm", "[dns.publisher.ns]\ntype = \"rfc2136\"\nserver = \"127.0.0.1\"\ntsig_name = \"k\"\ntsig_algorithm = \"md5\"\ntsig_secret_file = \"" + dir + "/tsig.secret\"\n", `unknown tsig_algorithm "md5"`, 5},
		{"key of other publisher type", "[dns.publisher.m]\ntype = \"manual\"\nserver = \"127.0.0.1:53\"\n", `server applies only to type "rfc2136"`, 3},
		{"unknown publisher type", "[dns.publisher.m]\ntype = \"route53\"\n", `unknown type "route53"`, 2},
		{"bad nameserver", "[dns.publisher.m]\ntype = \"manual\"\nnameservers = [\"127.0.0.1:99999\"]\n", `is not host:port`, 3},
		{"reload as one string", "[service.postfix]\nreload = [\"postfix reload\"]\n", `commands are never split on spaces`, 2},
		{"reload as a string", "[service.postfix]\nreload = \"postfix reload\"\n", `reload: wrong type`, 2},
		{"bad probe scheme", "[service.x]\nprobe = [\"ftp://a.example.org\"]\n", `unknown scheme "ftp"`, 2},
		{"empty service", "[service.x]\n", `needs reload`, 1},
		{"http directory", "[acme]\ndirectory = \"http://ca.example/dir\"\n", `is neither a known alias nor an https URL`, 2},
		{"missing ca root", "[acme]\nca_roots = [\"" + dir + "/none.pem\"]\n", `ca_roots: cannot read`, 2},
		{"ca root without certs", "[acme]\nca_roots = [\"" + dir + "/tsig.secret\"]\n", `holds no PEM certificate`, 2},
		{"hold factor", "[dns]\nhold_factor = 1.5\n", `hold_factor: 1.5 is outside 2 to 100`, 2},
		{"hold factor nan", "[dns]\nhold_factor = nan\n", `hold_factor: NaN is outside 2 to 100`, 2},
		{"listen port", cert + "http01_listen = \"0.0.0.0:99999\"\n", `is not [host]:port`, 4},
		{"email with a slash", "[acme]\nemail = \"../../x@y\"\n", `is not an e-mail address`, 2},
		{"tlsa ttl", cert + "tlsa_ttl = -5\n", `tlsa_ttl -5 is out of range`, 4},
		{"tlsa ttl for cloudflare", "[dns.publisher.cf]\ntype = \"cloudflare\"\napi_token_file = \"" + dir + "/cloudflare.token\"\n" +
			cert + "publisher = \"cf\"\ntlsa = [\"_25._tcp.a.example.org\"]\ntlsa_ttl = 5\n", `tlsa_ttl 5 is outside what Cloudflare accepts`, 9},
		{"both listen and webroot", cert + "http01_listen = \":80\"\nhttp01_webroot = \"/var/www\"\n", `set http01_listen or http01_webroot, not both`, 5},
		{"group-readable token", "[dns.publisher.cf]\ntype = \"cloudflare\"\napi_token_file = \"" + groupReadable + "\"\n", `is readable or writable by group or others (mode 0640)`, 3},
		{"http api_url off loopback", "[dns.publisher.cf]\ntype = \"cloudflare\"\napi_token_file = \"" + dir + "/cloudflare.token\"\napi_url = \"http://api.example.net/client/v4\"\n",
			`would send the API token in clear over the network`, 4},
		{"probe with an unknown parameter", "[service.x]\nprobe = [\"smtp://a.example.org:25?conect=127.0.0.1\"]\n", `unknown parameter "conect" (only connect= is known)`, 2},
		{"probe with a path", "[service.x]\nprobe = [\"https://a.example.org/health\"]\n", `a path is not allowed`, 2},
		{"wildcard tlsa owner", "[dns.publisher.m]\ntype = \"manual\"\n" + cert + "publisher = \"m\"\ntlsa = [\"_25._tcp.*.example.org\"]\nkey_policy = \"reuse\"\n", `wildcards are not managed`, 7},
		{"bad idn", "[[certificate]]\ndomains = [\"b\u00fccher\u200d.example\"]\n", `not a valid internationalized domain name`, 2},
		{"key change without a probe", "[dns.publisher.m]\ntype = \"manual\"\n" + cert + "publisher = \"m\"\ntlsa = [\"_25._tcp.a.example.org\"]\nkey_policy = \"fresh\"\n",
			`key_policy "fresh" changes the served key, but no service of it has a probe`, 8},
		{"key change without a probe, default policy", "[dns.publisher.m]\ntype = \"manual\"\n" + cert + "publisher = \"m\"\ntlsa = [\"_25._tcp.a.example.org\"]\nservices = [\"r\"]\n[service.r]\nreload = [\"true\"]\n",
			`key_policy "rollover" changes the served key, but no service of it has a probe`, 4},
		{"ttl longer than max_hold", "[dns]\nmax_hold = \"1h\"\n[dns.publisher.m]\ntype = \"manual\"\n" + cert + "publisher = \"m\"\ntlsa = [\"_25._tcp.a.example.org\"]\ntlsa_ttl = 3600\nkey_policy = \"reuse\"\n",
			`tlsa_ttl 3600 × hold_factor 2 asks for a hold of 2h, longer than max_hold (1h)`, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("x.toml", tt.src)
			if err == nil {
				t.Fatalf("no error for:\n%s", tt.src)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *config.Error: %v", err, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
			if tt.line > 0 {
				prefix := "x.toml:" + strconv.Itoa(tt.line) + ": "
				found := false
				for _, l := range strings.Split(msg, "\n") {
					if strings.HasPrefix(l, prefix) && strings.Contains(l, tt.want) {
						found = true
					}
				}
				if !found {
					t.Errorf("error %q: no line starting %q with %q", msg, prefix, tt.want)
				}
			}
			for _, l := range strings.Split(msg, "\n") {
				if !strings.HasPrefix(l, "x.toml:") {
					t.Errorf("error line %q does not name the file", l)
				}
			}
		})
	}
}

func TestHints(t *testing.T) {
	tests := map[string]string{
		"[[certificate]]\ndomains = [\"a.example.org\"]\nchalenge = \"dns-01\"\n": `did you mean "challenge"?`,
		"[service.p]\nreload = [\"postfix reload\"]\n":                            `write it as an array: reload = ["postfix", "reload"]`,
		"[[certificate]]\ndomains = [\"a.example.org\"]\npublisher = \"x\"\n":     "define it in a [dns.publisher.NAME] table",
	}
	for src, want := range tests {
		_, err := Parse("x.toml", src)
		var ce *Error
		if !errors.As(err, &ce) || ce.Hint() != want {
			t.Errorf("Parse(%q): hint of %v is %q, want %q", src, err, hintOf(err), want)
		}
	}
}

func hintOf(err error) string {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Hint()
	}
	return ""
}

func TestUnknownKeyReportedOncePerTable(t *testing.T) {
	src := "[[certificate]]\ndomains = [\"a.example.org\"]\ntypo = 1\n[[certificate]]\nname = \"b\"\ndomains = [\"b.example.org\"]\ntypo = 2\n"
	_, err := Parse("x.toml", src)
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 || es[0].Line != 3 || es[1].Line != 7 {
		t.Fatalf("err = %v, want one error at line 3 and one at line 7", err)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.toml"))
	var ce *Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Msg, "no such configuration file") || ce.Hint() == "" {
		t.Fatalf("err = %v", err)
	}
}

func TestDurations(t *testing.T) {
	good := map[string]time.Duration{
		"30d": 30 * 24 * time.Hour, "12h": 12 * time.Hour, "1d12h": 36 * time.Hour,
		"90s": 90 * time.Second, "2w": 14 * 24 * time.Hour, "1.5h": 90 * time.Minute, "500ms": 500 * time.Millisecond,
	}
	for in, want := range good {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, err := ParseDuration(FormatDuration(got)); err != nil || back != got {
			t.Errorf("FormatDuration(%v) = %q does not parse back", got, FormatDuration(got))
		}
	}
	for _, bad := range []string{"", "30", "d", "-1d", "3x", "1d-2h", "h1"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", bad)
		}
	}
}

func TestWhere(t *testing.T) {
	cfg, err := Parse("x.toml", "[acme]\naccept_tos = false\n\n[[certificate]]\ndomains = [\"a.example.org\"]\n\n[[certificate]]\nname = \"b\"\ndomains = [\"b.example.org\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Where("acme.accept_tos"); got != "x.toml:2" {
		t.Errorf("Where(acme.accept_tos) = %q", got)
	}
	if got := cfg.WhereCert(cfg.Certificate("b"), "domains"); got != "x.toml:9" {
		t.Errorf("WhereCert(b, domains) = %q", got)
	}
	if got := cfg.WhereCert(cfg.Certificate("b"), "key_policy"); got != "x.toml:7" {
		t.Errorf("WhereCert(b, key_policy) = %q, want the table's line", got)
	}
}

// Internationalized names are kept in their A-label form, the form the CA
// issues for and DNS serves, so that comparisons see the same name.
func TestIDNToALabels(t *testing.T) {
	cfg, err := Parse("x.toml", `
[dns.publisher.m]
type = "manual"
[[certificate]]
domains = ["Bücher.example", "*.bücher.example"]
publisher = "m"
tlsa = ["_443._tcp.bücher.example"]
services = ["web"]
[service.web]
probe = ["https://bücher.example:443?connect=127.0.0.1"]
`)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Certificates[0]
	if want := []string{"xn--bcher-kva.example", "*.xn--bcher-kva.example"}; !slices.Equal(c.Domains, want) {
		t.Errorf("domains = %q, want %q", c.Domains, want)
	}
	if c.Name != "xn--bcher-kva.example" {
		t.Errorf("name = %q", c.Name)
	}
	if want := []string{"_443._tcp.xn--bcher-kva.example"}; !slices.Equal(c.TLSA, want) {
		t.Errorf("tlsa = %q, want %q", c.TLSA, want)
	}
	if got := cfg.Services["web"].Probe[0]; got != "https://xn--bcher-kva.example:443?connect=127.0.0.1" {
		t.Errorf("probe = %q", got)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %v", cfg.Warnings)
	}
}

// A probe whose TLSA owner is not among the certificate's tlsa names checks
// nothing a DANE client relies on: say so at the probe's line.
func TestProbeOwnerWarnings(t *testing.T) {
	cfg, err := Parse("x.toml", `
[dns.publisher.m]
type = "manual"
[[certificate]]
name = "www"
domains = ["www.example.org"]
publisher = "m"
tlsa = ["_18434._tcp.www.example.org"]
services = ["nginx", "raw"]
[service.nginx]
reload = ["systemctl", "reload", "nginx"]
probe = ["https://www.example.org:18443?connect=127.0.0.1"]
[service.raw]
probe = ["tls://192.0.2.1:18434"]
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 2 {
		t.Fatalf("warnings = %v, want two", cfg.Warnings)
	}
	w := cfg.Warnings[0]
	if w.Line != 12 || !strings.Contains(w.Msg, "is looked up at _18443._tcp.www.example.org, which is not among certificate \"www\"'s tlsa names (_18434._tcp.www.example.org)") {
		t.Errorf("warning = %v", w)
	}
	if w.Hint() == "" {
		t.Error("no hint")
	}
	if w := cfg.Warnings[1]; w.Line != 14 || !strings.Contains(w.Msg, "names an IP address, which has no TLSA records") {
		t.Errorf("warning = %v", w)
	}
}

func TestUnverifiedDeployOnRequest(t *testing.T) {
	_, err := Parse("x.toml", `
[dns.publisher.m]
type = "manual"
[[certificate]]
domains = ["a.example.org"]
publisher = "m"
tlsa = ["_25._tcp.a.example.org"]
allow_unverified_deploy = true
`)
	if err != nil {
		t.Fatal(err)
	}
}

// The configuration names commands daneroll runs as root: only root or
// daneroll's user may be able to change it.
func TestConfigFileMustBeProtected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daneroll.toml")
	if err := os.WriteFile(path, []byte("state_dir = \"/tmp/x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o664)
	_, err := Load(path)
	var ce *Error
	if !errors.As(err, &ce) || ce.File != path || !strings.Contains(ce.Msg, "writable by group or others (mode 0664)") || ce.Hint() != "chmod go-w "+path {
		t.Errorf("group-writable config: %v (hint %q)", err, hintOf(err))
	}
	os.Chmod(path, 0o644)
	if os.Geteuid() != 0 {
		return
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if !errors.As(err, &ce) || !strings.Contains(ce.Msg, "owned by uid 65534, who could make daneroll run any command") {
		t.Errorf("foreign config: %v", err)
	}
	// Secret files too.
	secret := filepath.Join(t.TempDir(), "tsig.secret")
	os.WriteFile(secret, []byte("c2VjcmV0"), 0o600)
	os.Chown(secret, 65534, 65534)
	_, err = Parse("x.toml", "[dns.publisher.ns]\ntype = \"rfc2136\"\nserver = \"127.0.0.1\"\ntsig_name = \"k\"\ntsig_secret_file = \""+secret+"\"\n")
	if err == nil || !strings.Contains(err.Error(), "is owned by uid 65534, not by root or the user daneroll runs as") {
		t.Errorf("foreign secret: %v", err)
	}
}
