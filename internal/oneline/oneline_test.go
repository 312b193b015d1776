package oneline

import (
	"strings"
	"testing"
)

func TestCleanMakesOneSafeLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                  "plain",
		"a\nb\rc\td":             "a?b?c?d",
		"\x1b[2J\x7f\u0085":      "?[2J??",
		"rtl \u202egnp.exe":      "rtl ?gnp.exe",
		"sep\u2028\u2029\u200b.": "sep???.",
		"\xff":                   "\uFFFD",
		"ünïcødé ok":             "ünïcødé ok",
		strings.Repeat("x", 10):  "xxxx…",
	} {
		max := 100
		if strings.HasPrefix(in, "xxxx") {
			max = 4
		}
		if got := Clean(in, max); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
}
