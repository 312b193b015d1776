package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse feeds arbitrary text to the configuration loader: it must never
// panic, every error line must name the file, and a configuration it
// accepts must hold what the rest of daneroll relies on.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("..", "config.example.toml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		"",
		"[[certificate]]\ndomains = [\"a.example.org\"]\n",
		"[[certificate]]\ndomains = [\"bücher.example\", \"*.bücher.example\"]\nchallenge = \"dns-01\"\npublisher = \"m\"\n[dns.publisher.m]\ntype = \"manual\"\n",
		"[dns]\nhold_factor = nan\nmax_hold = \"1h\"\n",
		"[service.x]\nprobe = [\"smtp://a.example.org:25?connect=[::1]\"]\n",
		"[[certificate]]\ntlsa = [\"_25._tcp.*.example.org\"]\n",
		"a = \"\"\"\n[[certificate]]\n\"\"\"\n",
		"[acme]\nca_roots = [\"/dev/zero\"]\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := Parse("fuzz.toml", src)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.toml") {
					t.Fatalf("error line %q does not name the file", line)
				}
			}
			return
		}
		for _, c := range cfg.Certificates {
			if c.Name == "" || !certName.MatchString(c.Name) || len(c.Domains) == 0 {
				t.Fatalf("accepted certificate %+v", c)
			}
			for _, d := range c.Domains {
				if !isASCII(d) || strings.ToLower(d) != d || !utf8.ValidString(d) {
					t.Fatalf("domain %q is not a lower-case A-label name", d)
				}
			}
			for _, o := range c.TLSA {
				if !tlsaOwner.MatchString(o) || strings.Contains(o, "*") || !isASCII(o) {
					t.Fatalf("accepted tlsa owner %q", o)
				}
			}
			if c.TLSATTL < 1 || len(c.TLSAParams) == 0 {
				t.Fatalf("defaults missing: %+v", c)
			}
		}
		if cfg.DNS.HoldFactor < 2 || cfg.DNS.HoldFactor > 100 || cfg.DNS.MaxHold.Duration <= 0 || cfg.DNS.ConfirmTimeout.Duration <= 0 {
			t.Fatalf("dns settings %+v", cfg.DNS)
		}
	})
}
