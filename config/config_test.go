package config

import (
	"errors"
	"os"
	"path/filepath"
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
		{"world-readable token", "[dns.publisher.cf]\ntype = \"cloudflare\"\napi_token_file = \"" + worldReadable + "\"\n", `is readable by everyone (mode 0644)`, 3},
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
