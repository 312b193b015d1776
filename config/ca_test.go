package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// eabDir holds an HMAC key file, mode 0600, and one readable by others.
func eabDir(t *testing.T) (private, open string) {
	t.Helper()
	dir := t.TempDir()
	private = filepath.Join(dir, "eab.key")
	open = filepath.Join(dir, "open.key")
	for _, f := range []string{private, open} {
		if err := os.WriteFile(f, []byte("c2VjcmV0LWtleS1mb3ItdGVzdHM\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	return private, open
}

func TestCAChoice(t *testing.T) {
	key, _ := eabDir(t)
	t.Setenv("DANEROLL_TEST_EAB", "c2VjcmV0LWtleS1mb3ItdGVzdHM")
	tests := []struct {
		src       string
		directory string
		warning   string // substring of the one warning expected, "" for none
	}{
		{"[acme]\ndirectory = \"letsencrypt\"\n", "https://acme-v02.api.letsencrypt.org/directory", ""},
		{"[acme]\ndirectory = \"zerossl\"\n", "https://acme.zerossl.com/v2/DV90", "ZeroSSL registers a new account only with External Account Binding"},
		{"[acme]\ndirectory = \"google\"\n", "https://dv.acme-v02.api.pki.goog/directory", "Google Trust Services registers"},
		{"[acme]\ndirectory = \"google-staging\"\n", "https://dv.acme-v02.test-api.pki.goog/directory", "Google Trust Services registers"},
		// The same CA named by its URL is the same CA.
		{"[acme]\ndirectory = \"https://acme.zerossl.com/v2/DV90\"\n", "https://acme.zerossl.com/v2/DV90", "ZeroSSL"},
		{"[acme]\ndirectory = \"https://acme.sectigo.com/v2/DV\"\n", "https://acme.sectigo.com/v2/DV", "Sectigo registers"},
		{"[acme]\ndirectory = \"zerossl\"\neab_kid = \"kid-1\"\neab_hmac_key_file = \"" + key + "\"\n", "https://acme.zerossl.com/v2/DV90", ""},
		{"[acme]\ndirectory = \"google\"\neab_kid = \"kid-1\"\neab_hmac_key_env = \"DANEROLL_TEST_EAB\"\n", "https://dv.acme-v02.api.pki.goog/directory", ""},
	}
	for _, tt := range tests {
		cfg, err := Parse("x.toml", tt.src)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.src, err)
			continue
		}
		if cfg.ACME.Directory != tt.directory {
			t.Errorf("Parse(%q): directory %q, want %q", tt.src, cfg.ACME.Directory, tt.directory)
		}
		switch {
		case tt.warning == "" && len(cfg.Warnings) > 0:
			t.Errorf("Parse(%q): warnings %v", tt.src, cfg.Warnings)
		case tt.warning != "":
			if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].Error(), tt.warning) || cfg.Warnings[0].Line != 2 ||
				!strings.Contains(cfg.Warnings[0].Hint(), "eab_kid") {
				t.Errorf("Parse(%q): warnings %v, want one at line 2 with %q and a hint naming eab_kid", tt.src, cfg.Warnings, tt.warning)
			}
		}
	}
	// ZeroSSL's hint says what daneroll does not do.
	cfg, _ := Parse("x.toml", "[acme]\ndirectory = \"zerossl\"\n")
	if h := cfg.Warnings[0].Hint(); !strings.Contains(h, "does not register by e-mail") {
		t.Errorf("zerossl hint %q", h)
	}
	// The key file is checked, never read into the configuration.
	_, err := Parse("x.toml", "[acme]\neab_kid = \"kid-1\"\neab_hmac_key_file = \"eab.key\"\n")
	if err == nil || !strings.Contains(err.Error(), "x.toml:3: acme: eab_hmac_key_file:") {
		t.Errorf("relative missing key file: %v", err)
	}
	cfg, err = Parse("x.toml", "[acme]\neab_kid = \"kid-1\"\neab_hmac_key_file = \""+key+"\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ACME.EABKID != "kid-1" || cfg.ACME.EABHMACKeyFile != key {
		t.Errorf("acme = %+v", cfg.ACME)
	}
}

func TestBadCAConfigs(t *testing.T) {
	key, open := eabDir(t)
	t.Setenv("DANEROLL_TEST_EAB", "c2VjcmV0")
	t.Setenv("DANEROLL_TEST_EMPTY", "")
	const cert = "[[certificate]]\ndomains = [\"a.example.org\"]\n"
	tests := []struct {
		name string
		src  string
		want string
		line int
		hint string
	}{
		{"kid without key", "[acme]\ndirectory = \"zerossl\"\neab_kid = \"kid-1\"\n", "acme: eab_kid is set without eab_hmac_key_file", 3, "the CA hands out both"},
		{"key without kid", "[acme]\neab_hmac_key_file = \"" + key + "\"\n", "acme: eab_hmac_key_file is set without eab_kid", 2, "the CA hands out both"},
		{"env without kid", "[acme]\neab_hmac_key_env = \"DANEROLL_TEST_EAB\"\n", "acme: eab_hmac_key_env is set without eab_kid", 2, ""},
		{"file and env", "[acme]\neab_kid = \"k\"\neab_hmac_key_file = \"" + key + "\"\neab_hmac_key_env = \"DANEROLL_TEST_EAB\"\n",
			"acme: set eab_hmac_key_file or eab_hmac_key_env, not both", 4, ""},
		{"key readable by others", "[acme]\neab_kid = \"k\"\neab_hmac_key_file = \"" + open + "\"\n", "is readable or writable by group or others (mode 0644)", 3, "chmod 600"},
		{"missing key file", "[acme]\neab_kid = \"k\"\neab_hmac_key_file = \"" + key + ".none\"\n", "no such file or directory", 3, ""},
		{"key env not set", "[acme]\neab_kid = \"k\"\neab_hmac_key_env = \"DANEROLL_TEST_EMPTY\"\n", "environment variable DANEROLL_TEST_EMPTY is not set", 3, ""},
		{"kid with a space", "[acme]\neab_kid = \"kid 1\"\neab_hmac_key_file = \"" + key + "\"\n", `acme.eab_kid: "kid 1" holds spaces or control characters`, 2, ""},
		{"preferred chain with spaces", "[acme]\npreferred_chain = \" ISRG Root X1\"\n", `acme.preferred_chain: " ISRG Root X1" has surrounding spaces`, 2, "ISRG Root X1"},
		{"certificate preferred chain", cert + "preferred_chain = \"ISRG Root X1\\n\"\n", `certificate "a.example.org": preferred_chain: "ISRG Root X1\n" has surrounding spaces or control characters`, 3, ""},
		{"keep_sets 1", cert + "keep_sets = 1\n", `certificate "a.example.org": keep_sets = 1 would remove the set to roll back to`, 3, "set 0 to keep every set, or 2 or more"},
		{"keep_sets negative", cert + "keep_sets = -3\n", `keep_sets -3 is negative`, 3, ""},
		{"keep_sets string", cert + "keep_sets = \"all\"\n", `keep_sets: wrong type`, 3, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("x.toml", tt.src)
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("err = %v, want config errors", err)
			}
			prefix := "x.toml:" + strconv.Itoa(tt.line) + ": "
			var found *Error
			for _, e := range es {
				if strings.HasPrefix(e.Error(), prefix) && strings.Contains(e.Error(), tt.want) {
					found = e
				}
			}
			if found == nil {
				t.Fatalf("error %q: no line starting %q with %q", err, prefix, tt.want)
			}
			if !strings.Contains(found.Hint(), tt.hint) {
				t.Errorf("hint %q does not contain %q", found.Hint(), tt.hint)
			}
			if strings.Contains(err.Error(), "c2VjcmV0") {
				t.Errorf("an error shows the secret: %v", err)
			}
		})
	}
}

func TestPreferredChainAndKeepSets(t *testing.T) {
	cfg, err := Parse("x.toml", `
[acme]
preferred_chain = "ISRG Root X1"

[[certificate]]
domains = ["a.example.org"]
keep_sets = 2

[[certificate]]
domains = ["b.example.org"]
preferred_chain = "ISRG Root X2"
keep_sets = 0
`)
	if err != nil {
		t.Fatal(err)
	}
	a, b := cfg.Certificate("a.example.org"), cfg.Certificate("b.example.org")
	if cfg.ACME.PreferredChain != "ISRG Root X1" || a.PreferredChain != "ISRG Root X1" || b.PreferredChain != "ISRG Root X2" {
		t.Errorf("preferred chains: acme %q, a %q, b %q", cfg.ACME.PreferredChain, a.PreferredChain, b.PreferredChain)
	}
	if a.KeepSets != 2 || b.KeepSets != 0 {
		t.Errorf("keep_sets: a %d, b %d", a.KeepSets, b.KeepSets)
	}
	// By default every set is kept and the CA picks the chain.
	cfg, err = Parse("x.toml", "[[certificate]]\ndomains = [\"a.example.org\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Certificates[0]; c.KeepSets != 0 || c.PreferredChain != "" {
		t.Errorf("defaults: %+v", c)
	}
}
