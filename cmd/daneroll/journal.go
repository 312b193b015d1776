package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
)

// underSystemd reports whether stderr goes to the journal: systemd sets
// JOURNAL_STREAM for a unit's output connected to it, and INVOCATION_ID for
// every unit it runs.
func underSystemd(getenv func(string) string) bool {
	return getenv("JOURNAL_STREAM") != "" || getenv("INVOCATION_ID") != ""
}

// newLogHandler is the handler for daneroll's log lines on w. Under
// systemd each line starts with the syslog priority journald reads
// (sd-daemon(3): "<3>" error, "<4>" warning, "<6>" info, "<7>" debug) and
// carries no time or level of its own: the journal records both.
func newLogHandler(w io.Writer, level slog.Level, journald bool) slog.Handler {
	if !journald {
		return slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})
	}
	j := &journalHandler{out: w, buf: &lineBuffer{}}
	j.inner = slog.NewTextHandler(j.buf, &slog.HandlerOptions{Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{}
			}
			return a
		}})
	return j
}

// journalHandler prefixes each record with its syslog priority.
type journalHandler struct {
	inner slog.Handler
	out   io.Writer
	buf   *lineBuffer
}

// lineBuffer collects one record's text.
type lineBuffer struct {
	mu sync.Mutex // guards b, held for a whole record, from format to write
	b  bytes.Buffer
}

func (l *lineBuffer) Write(p []byte) (int, error) { return l.b.Write(p) }

func (j *journalHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return j.inner.Enabled(ctx, level)
}

func (j *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	j.buf.mu.Lock()
	defer j.buf.mu.Unlock()
	j.buf.b.Reset()
	j.buf.b.WriteString(priority(r.Level))
	if err := j.inner.Handle(ctx, r); err != nil {
		return err
	}
	_, err := j.out.Write(j.buf.b.Bytes())
	return err
}

func (j *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &journalHandler{inner: j.inner.WithAttrs(attrs), out: j.out, buf: j.buf}
}

func (j *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: j.inner.WithGroup(name), out: j.out, buf: j.buf}
}

func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	}
	return "<7>"
}
