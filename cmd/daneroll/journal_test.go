package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// Under systemd, each log line starts with the priority journald reads and
// carries no timestamp or level of its own (the journal has both).
func TestJournaldLines(t *testing.T) {
	var out bytes.Buffer
	l := slog.New(newLogHandler(&out, slog.LevelDebug, true)).With("cert", "mail")
	l.Error("boom", "n", 1)
	l.Warn("careful")
	l.Info("fyi")
	l.Debug("detail")
	want := []string{`<3>msg=boom cert=mail n=1`, `<4>msg=careful cert=mail`, `<6>msg=fyi cert=mail`, `<7>msg=detail cert=mail`}
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !underSystemd(func(k string) string { return map[string]string{"JOURNAL_STREAM": "8:1234"}[k] }) ||
		underSystemd(func(string) string { return "" }) {
		t.Error("underSystemd")
	}
	// Outside systemd: the usual text lines, with time and level.
	out.Reset()
	slog.New(newLogHandler(&out, slog.LevelInfo, false)).Warn("careful")
	if !strings.HasPrefix(out.String(), "time=") || !strings.Contains(out.String(), "level=WARN") {
		t.Errorf("plain line %q", out.String())
	}
}
