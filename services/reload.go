package services

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/daneroll/daneroll/internal/oneline"
)

// DefaultReloadTimeout applies when Reload is given no timeout.
const DefaultReloadTimeout = time.Minute

// The output kept from a reload command: its start (what it was doing) and
// its end (usually why it failed). The middle of a chatty command is dropped.
const (
	outputHead = 1 << 10
	outputTail = 3 << 10
)

// pipeGrace is how long Reload waits, after the command exited or was killed,
// for its output pipe to close. A reload command that starts a daemon (an
// init script's "restart") may leave that daemon holding the pipe forever.
const pipeGrace = 2 * time.Second

// ReloadError is the error of a command daneroll runs (a reload, a
// notification) that could not start, failed or timed out.
type ReloadError struct {
	// Verb says what the command was for: "reload" or "notify".
	Verb string
	// Argv is the command as given.
	Argv []string
	// ExitCode is the command's exit status, or -1 when it did not exit on
	// its own (not started, killed by a signal, timed out).
	ExitCode int
	// TimedOut reports that the command was killed because it ran longer
	// than its timeout.
	TimedOut bool
	// Output is the command's combined stdout and stderr, trimmed to a few
	// KiB (start and end kept) and made valid UTF-8, for the user to read.
	Output string
	// Err is the underlying error: from os/exec, or the context's error.
	Err error
}

func (e *ReloadError) Error() string {
	var b strings.Builder
	verb := e.Verb
	if verb == "" {
		verb = "reload"
	}
	b.WriteString(verb + " ")
	b.WriteString(formatArgv(e.Argv))
	b.WriteString(": ")
	b.WriteString(e.reason())
	if gist := outputGist(e.Output); gist != "" {
		b.WriteString(": ")
		b.WriteString(gist)
	}
	return b.String()
}

func (e *ReloadError) reason() string {
	var (
		exitErr *exec.ExitError
		pathErr *fs.PathError
	)
	switch {
	case e.TimedOut:
		return "timed out, killed"
	case errors.Is(e.Err, context.Canceled):
		return "interrupted, killed"
	case errors.Is(e.Err, exec.ErrNotFound):
		return fmt.Sprintf("program %q not found in $PATH", e.Argv[0])
	case errors.As(e.Err, &pathErr):
		// "no such file or directory", "permission denied".
		return fmt.Sprintf("cannot run %q: %v", e.Argv[0], pathErr.Err)
	case errors.As(e.Err, &exitErr):
		// "exit status 3" or "signal: killed".
		return exitErr.ProcessState.String()
	case e.Err != nil:
		return e.Err.Error()
	}
	return "failed"
}

func (e *ReloadError) Unwrap() error { return e.Err }

// ReloadOptions configure Reload. The zero value is ready to use.
type ReloadOptions struct {
	// Timeout bounds the command; DefaultReloadTimeout when <= 0.
	Timeout time.Duration
	// Env is the command's whole environment (KEY=VALUE entries); nil
	// inherits daneroll's. daneroll's own environment may carry secrets
	// (API tokens, TSIG keys) that a reload command has no business
	// seeing: see EnvWithout.
	Env []string
	// Logger receives the command's output at debug level; nil discards.
	Logger *slog.Logger
	// Stdin is the command's standard input; empty when nil.
	Stdin []byte
	// Verb names what the command is for in errors and logs: "reload"
	// when empty.
	Verb string
}

// Reload runs argv (never through a shell, never split on spaces) with a
// timeout and the environment opts say. Standard input is empty, so a
// command that prompts fails instead of hanging. On timeout or when ctx
// ends, the command and every process it started in its process group are
// killed. On failure the error is a *ReloadError that carries the exit
// status and the command's combined output; the output of successful runs is
// logged at debug level.
func Reload(ctx context.Context, argv []string, opts ReloadOptions) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Verb == "" {
		opts.Verb = "reload"
	}
	if len(argv) == 0 || argv[0] == "" {
		return errors.New(opts.Verb + ": empty command")
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultReloadTimeout
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	out := &capBuffer{}
	cmd := exec.CommandContext(tctx, argv[0], argv[1:]...)
	cmd.Env = opts.Env // nil inherits, as os/exec does
	if opts.Stdin != nil {
		cmd.Stdin = bytes.NewReader(opts.Stdin)
	}
	// One writer for both streams: os/exec then copies them with a single
	// goroutine, so capBuffer needs no lock, and the interleaving is kept.
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = pipeGrace
	killGroupOnCancel(cmd)

	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start).Round(time.Millisecond)
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		// The command succeeded; something it started in the background
		// still holds its output open. That is the daemon's business.
		log.Debug(opts.Verb+": command exited, a background process kept its output open",
			"argv", argv, "elapsed", elapsed)
		err = nil
	}
	if err == nil {
		log.Debug(opts.Verb+": done", "argv", argv, "elapsed", elapsed, "output", out.String())
		return nil
	}
	rerr := &ReloadError{Verb: opts.Verb, Argv: argv, ExitCode: -1, Output: out.String(), Err: err}
	if cmd.ProcessState != nil && cmd.ProcessState.Exited() {
		rerr.ExitCode = cmd.ProcessState.ExitCode()
	}
	// A command that was killed reports "signal: killed"; say why instead.
	if tctx.Err() != nil && (cmd.ProcessState == nil || !cmd.ProcessState.Exited()) {
		if ctx.Err() != nil {
			rerr.Err = ctx.Err()
		} else {
			rerr.TimedOut = true
			rerr.Err = fmt.Errorf("after %s: %w", timeout, context.DeadlineExceeded)
		}
	}
	log.Debug(opts.Verb+": failed", "argv", argv, "elapsed", elapsed, "error", rerr.reason(), "output", rerr.Output)
	return rerr
}

// capBuffer keeps the first outputHead and the last outputTail bytes written
// to it. It is written by one goroutine at a time (see Reload).
type capBuffer struct {
	head, tail []byte
	total      int64
}

func (c *capBuffer) Write(p []byte) (int, error) {
	n := len(p)
	c.total += int64(n)
	if room := outputHead - len(c.head); room > 0 {
		k := min(room, len(p))
		c.head = append(c.head, p[:k]...)
		p = p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	if len(p) >= outputTail {
		c.tail = append(c.tail[:0], p[len(p)-outputTail:]...)
		return n, nil
	}
	if over := len(c.tail) + len(p) - outputTail; over > 0 {
		c.tail = append(c.tail[:0], c.tail[over:]...)
	}
	c.tail = append(c.tail, p...)
	return n, nil
}

var _ io.Writer = (*capBuffer)(nil)

func (c *capBuffer) String() string {
	kept := int64(len(c.head) + len(c.tail))
	s := string(c.head)
	if omitted := c.total - kept; omitted > 0 {
		s += fmt.Sprintf("\n[… %d bytes omitted …]\n", omitted)
	}
	s += string(c.tail)
	return strings.TrimSpace(strings.ToValidUTF8(s, "\uFFFD"))
}

// EnvWithout returns environ (KEY=VALUE entries, as from os.Environ)
// without the variables named: every entry for them, duplicates included,
// since a program sees one of them and which one is not ours to guess. The
// result is never nil, so that as ReloadOptions.Env it never means
// "inherit", even when nothing is left.
func EnvWithout(environ []string, names ...string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		key, _, _ := strings.Cut(kv, "=")
		if !slices.ContainsFunc(names, func(n string) bool { return n != "" && sameEnvName(key, n) }) {
			out = append(out, kv)
		}
	}
	return out
}

// sameEnvName reports whether two environment variable names are the same
// variable: case-sensitive, except on Windows.
func sameEnvName(a, b string) bool {
	if runtime.GOOS == "windows" {
		return strings.EqualFold(a, b)
	}
	return a == b
}

// The parts of a reload command's output that its error message quotes.
const (
	gistLine = 200   // runes kept of each quoted line
	gistGap  = " … " // between the first and last lines when lines were skipped
	gistNext = " / " // between the first and last lines when they are adjacent
)

// outputGist returns the first and the last non-empty lines of output,
// cleaned and cut, as one line. Commands disagree on where the cause goes:
// postfix, nginx -t and systemctl put it first and end with a generic
// "fatal: … failed" or "See journalctl", scripts end with it. One line of
// output is quoted once.
func outputGist(output string) string {
	// The non-empty lines; the marker of an omission counts as one, so
	// that a cut shows as a gap.
	var lines []string
	for l := range strings.Lines(output) {
		if l = visibleLine(l); l != "" {
			lines = append(lines, l)
		}
	}
	first := slices.IndexFunc(lines, isSaid)
	if first < 0 {
		return ""
	}
	last := len(lines) - 1
	for !isSaid(lines[last]) {
		last--
	}
	head, tail := oneline.Clean(lines[first], gistLine), oneline.Clean(lines[last], gistLine)
	switch {
	case first == last || head == tail:
		return head
	case last == first+1:
		return head + gistNext + tail
	}
	return head + gistGap + tail
}

// visibleLine returns what a terminal would show of one line of output:
// trimmed, tabs as spaces, and only what follows the last carriage return
// (progress meters redraw their line with one).
func visibleLine(l string) string {
	l = strings.TrimSpace(l)
	if i := strings.LastIndexByte(l, '\r'); i >= 0 {
		l = strings.TrimSpace(l[i+1:])
	}
	return strings.ReplaceAll(l, "\t", " ")
}

// isSaid reports whether l is something the command said, not the line
// capBuffer puts where it dropped the middle of the output.
func isSaid(l string) bool {
	return !strings.HasPrefix(l, "[… ") || !strings.HasSuffix(l, " bytes omitted …]")
}

// formatArgv writes argv the way a shell user would type it, quoting the
// elements that need it, so that "one argument with spaces" stays visibly
// one argument.
func formatArgv(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsFunc(a, needsQuote) {
			parts[i] = strconv.Quote(a)
		} else {
			parts[i] = a
		}
	}
	return strings.Join(parts, " ")
}

func needsQuote(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return false
	case strings.ContainsRune("-_./:=,+@%", r):
		return false
	}
	return true
}
