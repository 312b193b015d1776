// Package oneline makes text that came from elsewhere (a command's output,
// a remote server's reply, a record another host wrote to etcd) safe to put
// in a one-line message.
package oneline

import (
	"strings"
	"unicode"
)

// Clean replaces control characters (terminal escapes included), Unicode
// line and paragraph separators and format characters (bidirectional
// overrides, which can make a message read backwards) with '?', replaces
// invalid UTF-8, and cuts the result at max runes.
func Clean(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if n == max {
			b.WriteString("…")
			break
		}
		if unsafe(r) {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// unsafe reports whether r does not belong in a one-line message.
func unsafe(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}
