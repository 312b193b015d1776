package certbot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// FuzzRenewalConf feeds renewal configuration files to ParseConf and to
// the reading of certbot's settings from them. The seed corpus is in
// testdata/fuzz/FuzzRenewalConf (certbot's own files and configobj's
// corners, also compared with configobj itself by
// TestParseConfMatchesConfigobj). It checks that nothing panics, that
// every error is one *ConfError line naming the file and a line of it, that
// what is read keeps configobj's rules (no duplicate names, one item in a
// plain value, lines in order), and that a file written back from what was
// read reads the same.
func FuzzRenewalConf(f *testing.F) {
	samples, _ := filepath.Glob(filepath.Join("testdata", "conf", "*.conf"))
	for _, s := range samples {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "renewal/x.conf"
		lines := bytes.Count(data, []byte("\n")) + 1
		c, err := ParseConf(name, data)
		if err != nil {
			checkConfError(t, name, err, lines)
			return
		}
		checkConf(t, c, lines, 0)
		again, err := ParseConf(name, data)
		if err != nil || !reflect.DeepEqual(toPy(again), toPy(c)) {
			t.Fatalf("a second reading differs: %v", err)
		}
		if l, err := renewalParams(name, c); err != nil {
			checkConfError(t, name, err, lines)
		} else if !strings.HasPrefix(l.Server, "https://") || l.HTTP01Port < 1 || l.HTTP01Port > 65535 || l.Authenticator == "" {
			t.Fatalf("settings read: server %q, port %d, authenticator %q", l.Server, l.HTTP01Port, l.Authenticator)
		}
		if text, ok := formatConf(c); ok {
			back, err := ParseConf(name, []byte(text))
			if err != nil {
				t.Fatalf("written back, it does not read: %v\n%s", err, text)
			}
			if !reflect.DeepEqual(toPy(back), toPy(c)) {
				t.Fatalf("written back, it reads differently:\n%s\n got %v\nwant %v", text, toPy(back), toPy(c))
			}
		}
	})
}

// checkConfError checks that err is one line naming the file and, for a
// *ConfError, a line of it.
func checkConfError(t *testing.T, name string, err error, lines int) {
	t.Helper()
	msg := err.Error()
	if strings.ContainsAny(msg, "\n\r\u2028\u2029") {
		t.Fatalf("error on several lines: %q", msg)
	}
	if !strings.HasPrefix(msg, name+":") {
		t.Fatalf("error does not name the file: %q", msg)
	}
	var ce *ConfError
	if errors.As(err, &ce) {
		if ce.Line != 0 && (ce.Line < 1 || ce.Line > lines) {
			t.Fatalf("error at line %d of %d", ce.Line, lines)
		}
		if ce.Line > 0 && !strings.HasPrefix(msg, fmt.Sprintf("%s:%d: ", name, ce.Line)) {
			t.Fatalf("error does not name its line: %q", msg)
		}
	} else if !strings.HasPrefix(msg, name+": ") {
		t.Fatalf("error %q is neither a *ConfError nor about the file", msg)
	}
}

func checkConf(t *testing.T, c *Conf, lines, after int) {
	t.Helper()
	seen := map[string]bool{}
	last := after
	for _, v := range c.Values {
		if seen[v.Key] {
			t.Fatalf("duplicate key %q", v.Key)
		}
		seen[v.Key] = true
		if v.Line <= last || v.Line > lines {
			t.Fatalf("key %q at line %d (after %d, of %d)", v.Key, v.Line, last, lines)
		}
		last = v.Line
		if !v.List && len(v.Items) != 1 {
			t.Fatalf("plain value %q with %d items", v.Key, len(v.Items))
		}
	}
	for _, s := range c.Sections {
		if seen[s.Name] {
			t.Fatalf("duplicate section %q", s.Name)
		}
		seen[s.Name] = true
		if s.Line <= after || s.Line > lines || s.Name == "" {
			t.Fatalf("section %q at line %d", s.Name, s.Line)
		}
		checkConf(t, s, lines, s.Line)
	}
}

// formatConf writes c back in configobj syntax when every name and value
// is one configobj writes plainly; ok is false otherwise.
func formatConf(c *Conf) (string, bool) {
	var b strings.Builder
	ok := true
	var write func(c *Conf, depth int)
	write = func(c *Conf, depth int) {
		for _, v := range c.Values {
			if !simpleName.MatchString(v.Key) {
				ok = false
				return
			}
			items := make([]string, len(v.Items))
			for i, it := range v.Items {
				q, good := quoteItem(it)
				ok = ok && good
				items[i] = q
			}
			switch {
			case !v.List:
				fmt.Fprintf(&b, "%s = %s\n", v.Key, items[0])
			case len(items) == 0:
				fmt.Fprintf(&b, "%s = ,\n", v.Key)
			case len(items) == 1:
				fmt.Fprintf(&b, "%s = %s,\n", v.Key, items[0])
			default:
				fmt.Fprintf(&b, "%s = %s\n", v.Key, strings.Join(items, ", "))
			}
		}
		for _, s := range c.Sections {
			if !simpleName.MatchString(s.Name) {
				ok = false
				return
			}
			fmt.Fprintf(&b, "%s%s%s\n", strings.Repeat("[", depth+1), s.Name, strings.Repeat("]", depth+1))
			write(s, depth+1)
		}
	}
	write(c, 0)
	return b.String(), ok
}

var simpleName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:-]*$`)

// quoteItem quotes a value as configobj would, for values without a line
// break and without both kinds of quotes.
func quoteItem(s string) (string, bool) {
	if strings.ContainsAny(s, "\n") || strings.Contains(s, `"`) && strings.Contains(s, "'") {
		return "", false
	}
	if s == "" {
		return `""`, true
	}
	r := []rune(s)
	plain := !strings.ContainsAny(s, `,#'"`) && !unicode.IsSpace(r[0]) && !isSpace(r[0]) && !isSpace(r[len(r)-1])
	switch {
	case plain:
		return s, true
	case strings.Contains(s, `"`):
		return "'" + s + "'", true
	}
	return `"` + s + `"`, true
}
