package certbot

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseConfRenewal(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "conf", "webroot-map.conf"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConf("webroot-map.conf", data)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Str("archive_dir"); got != "/etc/letsencrypt/archive/www.example.test" {
		t.Errorf("archive_dir = %q", got)
	}
	rp := c.Section("renewalparams")
	if rp == nil || rp.Line != 10 {
		t.Fatalf("renewalparams = %+v", rp)
	}
	if v := rp.Get("webroot_path"); v == nil || !v.List || !reflect.DeepEqual(v.Items, []string{"/var/www/html"}) || v.Line != 19 {
		t.Errorf("webroot_path = %+v", v)
	}
	wm := rp.Section("webroot_map")
	if wm == nil || wm.Str("www.example.test") != "/var/www/html" {
		t.Errorf("webroot_map = %+v", wm)
	}
	if c.Section("webroot_map") != nil {
		t.Error("[[webroot_map]] found at the top level")
	}
}

func TestParseConfQuoting(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "conf", "quoting.conf"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConf("quoting.conf", data)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"archive_dir":     "/etc/letsencrypt/archive/mail.example.org",
		"privkey":         "/etc/letsencrypt/live/mail.example.org/privkey.pem",
		"chain":           "/etc/letsencrypt/live/mail.example.org/chain.pem",
		"empty":           "",
		"quoted key":      "value",
		"key with spaces": "value with spaces",
		`a"b`:             `c"d`,
	} {
		if got := c.Get(key); got == nil || got.List || len(got.Items) != 1 || got.Items[0] != want {
			t.Errorf("%s = %+v, want %q", key, got, want)
		}
	}
	if v := c.Get("two"); !v.List || !reflect.DeepEqual(v.Items, []string{"a", "b, c", "d # e"}) {
		t.Errorf("two = %+v", v)
	}
	if v := c.Get("empty_list"); !v.List || len(v.Items) != 0 {
		t.Errorf("empty_list = %+v", v)
	}
	rp := c.Section("renewalparams")
	for key, want := range map[string]string{
		"renew_hook":       "systemctl reload postfix, dovecot",
		"post_hook":        `echo "done" # not a comment`,
		"pre_hook":         "systemctl stop nginx",
		"manual_auth_hook": "/usr/local/bin/auth\n  --two\n  --lines",
	} {
		if got := rp.Str(key); got != want {
			t.Errorf("renewalparams.%s = %q, want %q", key, got, want)
		}
	}
	if got := rp.Section("webroot_map").Str("www.example.org"); got != "/var/www/www # here" {
		t.Errorf("webroot_map www = %q", got)
	}
	// "[ other ]" closes renewalparams and its webroot_map; [[ sub ]] and
	// [[[ subsub ]]] nest below it; [last] is back at the top.
	if got := c.Section("other").Section("sub").Section("subsub").Str("y"); got != "2" {
		t.Errorf("other.sub.subsub.y = %q", got)
	}
	if c.Section("last").Str("z") != "3" || c.Section("other").Get("z") != nil {
		t.Error("[last] did not return to the top level")
	}
}

func TestParseConfErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"error-dup-key.conf", `error-dup-key.conf:3: duplicate key "a"`},
		{"error-dup-section.conf", `error-dup-section.conf:3: duplicate section or key "s"`},
		{"error-too-nested.conf", `error-too-nested.conf:2: section "b" is nested more than one level below the one before`},
		{"error-unbalanced.conf", `error-unbalanced.conf:1: section "a": unbalanced brackets`},
		{"error-bad-quote.conf", `error-bad-quote.conf:1: "x": cannot read the value "\"abc" (unbalanced quotes, or an empty list item?)`},
		{"error-no-equals.conf", `error-no-equals.conf:2: cannot read "just words": neither a section nor key = value`},
		{"error-triple-open.conf", `error-triple-open.conf:1: no closing '''`},
		{"error-triple-junk.conf", `error-triple-junk.conf:1: text after the closing '''`},
		{"error-section-key-clash.conf", `error-section-key-clash.conf:2: duplicate section or key "a"`},
	} {
		data, err := os.ReadFile(filepath.Join("testdata", "conf", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseConf(tc.file, data)
		var ce *ConfError
		if !errors.As(err, &ce) || err.Error() != tc.want {
			t.Errorf("%s: %v, want %s", tc.file, err, tc.want)
		}
	}
	_, err := ParseConf("latin1.conf", []byte("a = 1\nb = caf\xe9\n"))
	if err == nil || err.Error() != "latin1.conf:2: not UTF-8 text" {
		t.Errorf("latin-1: %v", err)
	}
	_, err = ParseConf("long.conf", []byte("x = \""+strings.Repeat("a", 200)+"\n"))
	if err == nil || strings.Count(err.Error(), "a") > 100 || !strings.Contains(err.Error(), "…") {
		t.Errorf("long line quoted in full: %v", err)
	}
}

// TestParseConfMatchesConfigobj reads every sample file, seed corpus entry
// and a few generated ones with ParseConf and with Python's configobj
// itself (the one certbot runs with), and compares what both make of them.
func TestParseConfMatchesConfigobj(t *testing.T) {
	python := certbotPython(t)
	dir := t.TempDir()
	var files []string
	add := func(name string, data []byte) {
		p := filepath.Join(dir, strconv.Itoa(len(files))+"-"+filepath.Base(name))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	samples, _ := filepath.Glob(filepath.Join("testdata", "conf", "*.conf"))
	for _, f := range samples {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		add(f, data)
	}
	corpus, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzRenewalConf", "*"))
	for _, f := range corpus {
		add(f, readCorpusEntry(t, f))
	}
	for _, s := range confEdgeCases {
		add("edge", []byte(s))
	}
	if len(corpus) == 0 {
		t.Error("no seed corpus in testdata/fuzz/FuzzRenewalConf")
	}
	out, err := exec.Command(python, append([]string{filepath.Join("testdata", "configobj_dump.py")}, files...)...).Output()
	if err != nil {
		t.Fatalf("configobj_dump.py: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<24)
	i := 0
	for ; sc.Scan(); i++ {
		if i >= len(files) {
			t.Fatal("more results than files")
		}
		var want struct {
			OK    any `json:"ok"`
			Error any `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &want); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(files[i])
		c, err := ParseConf("f", data)
		switch {
		case want.OK == nil && err == nil:
			t.Errorf("%s: configobj refuses it (%v), ParseConf reads it\n%q", files[i], want.Error, data)
		case want.OK == nil:
			line, isLine := want.Error.(float64)
			var ce *ConfError
			if isLine && line > 0 && (!errors.As(err, &ce) || ce.Line != int(line)) {
				t.Errorf("%s: configobj fails at line %v, ParseConf: %v\n%q", files[i], line, err, data)
			}
		case err != nil:
			t.Errorf("%s: configobj reads it, ParseConf: %v\n%q", files[i], err, data)
		default:
			if got := toPy(c); !reflect.DeepEqual(got, want.OK) {
				t.Errorf("%s: ParseConf and configobj differ\n%q\n got %v\nwant %v", files[i], data, got, want.OK)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if i != len(files) {
		t.Fatalf("configobj_dump.py gave %d results for %d files", i, len(files))
	}
}

// confEdgeCases are corners of configobj's syntax, compared with configobj
// itself.
var confEdgeCases = []string{
	"",
	"\n\n",
	"\xef\xbb\xbfa = 1\n",
	"a = 1\r\nb = 2\r\n",
	"a = 1\r\r\n",
	"a\x1c= 1\n",
	"\u00a0a = \u00a0b\u00a0\n",
	"a = 'x'\n",
	"a = '\n",
	"a = \"\n",
	"a = ''\n",
	"a = ,,\n",
	"a = x, \n",
	"a = x ,y,\n",
	"a = ''',\n",
	"a = '''x'''\n",
	"a = '''x''''\n",
	"a = \"\"\"x\ny\n\"\"\"\n",
	"a = \"\"\"\n\"\"\" # c\n",
	"a = '''x\ny''' z\n",
	"a = '''x\n",
	"a = \"a\"\"b\"\n",
	"a = x#y\n",
	"a = #c\n",
	"a =#\n",
	"= 1\n",
	"'' = 1\n",
	"' = 1\n",
	"\"a = 1\n",
	"[a]\n[[b]]\n[[[c]]]\n[d]\n",
	"[a]\n[[b]]\n[[[c]]]\n[[e]]\nx = 1\n",
	"[ \"a b\" ]\nx = 1\n",
	"['a']\n['a']\n",
	"[a] # c\n",
	"[a] x\n",
	"[[a]\n",
	"[]\n",
	"[ ]\n",
	"[a\n",
	"[a]] = 1\n",
	"[a] = 1\n",
	"a = 1\na = 2\n",
	"[s]\na = '''x\ny'''\na = 2\n",
	"[s]\na = 1\n[[a]]\n",
	"a = \"x, y\", 'z'\n",
	"a = \"x\", y z, 'w' # c\n",
	"a = x, \"y\"z\n",
	"a = ,x\n",
	"a = x,,\n",
	"  # comment\n\t\n",
	"a = b = c\n",
	"a == b\n",
	"a = %(b)s\n",
}

// toPy turns c into what configobj_dump.py prints, as JSON decodes it.
func toPy(c *Conf) any {
	var conv func(c *Conf) map[string]any
	conv = func(c *Conf) map[string]any {
		values, sections := []any{}, []any{}
		for _, v := range c.Values {
			items := []any{}
			for _, s := range v.Items {
				items = append(items, s)
			}
			var val any = items
			if !v.List && len(items) == 1 {
				val = items[0]
			}
			values = append(values, []any{v.Key, val, v.List})
		}
		for _, s := range c.Sections {
			sections = append(sections, []any{s.Name, conv(s)})
		}
		return map[string]any{"values": values, "sections": sections}
	}
	return any(conv(c))
}

// certbotPython returns the Python interpreter certbot runs with (its
// configobj is the one that reads renewal files), or skips the test.
func certbotPython(t *testing.T) string {
	t.Helper()
	bin := certbotBinary(t)
	f, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	interp, ok := strings.CutPrefix(strings.TrimSpace(line), "#!")
	if !ok || strings.Contains(interp, " ") {
		needCertbot(t, "%s does not start with #!PYTHON", bin)
	}
	return interp
}

// readCorpusEntry decodes a "go test fuzz v1" file holding one []byte.
func readCorpusEntry(t *testing.T, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(data), "\n", 3)
	if len(lines) < 2 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: not a fuzz corpus file", file)
	}
	lit, ok := strings.CutPrefix(strings.TrimSpace(lines[1]), "[]byte(")
	lit, ok2 := strings.CutSuffix(lit, ")")
	if !ok || !ok2 {
		t.Fatalf("%s: not a []byte entry", file)
	}
	s, err := strconv.Unquote(lit)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return []byte(s)
}
