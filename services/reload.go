package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"time"
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

// ReloadError is the error of a reload command that could not start, failed
// or timed out.
type ReloadError struct {
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
	b.WriteString("reload ")
	b.WriteString(formatArgv(e.Argv))
	b.WriteString(": ")
	b.WriteString(e.reason())
	if last := lastLine(e.Output); last != "" {
		b.WriteString(": ")
		b.WriteString(last)
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

// Reload runs argv (never through a shell, never split on spaces) with a
// timeout (DefaultReloadTimeout when timeout <= 0). Standard input is empty,
// so a command that prompts fails instead of hanging. On timeout or when ctx
// ends, the command and every process it started in its process group are
// killed. On failure the error is a *ReloadError that carries the exit
// status and the command's combined output; the output of successful runs is
// logged at debug level.
func Reload(ctx context.Context, argv []string, timeout time.Duration, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("reload: empty command")
	}
	if timeout <= 0 {
		timeout = DefaultReloadTimeout
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	out := &capBuffer{}
	cmd := exec.CommandContext(tctx, argv[0], argv[1:]...)
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
		log.Debug("reload: command exited, a background process kept its output open",
			"argv", argv, "elapsed", elapsed)
		err = nil
	}
	if err == nil {
		log.Debug("reload: done", "argv", argv, "elapsed", elapsed, "output", out.String())
		return nil
	}
	rerr := &ReloadError{Argv: argv, ExitCode: -1, Output: out.String(), Err: err}
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
	log.Debug("reload: failed", "argv", argv, "elapsed", elapsed, "error", rerr.reason(), "output", rerr.Output)
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

// lastLine returns the last non-empty line of output, cleaned for a one-line
// error message: the line that usually says what went wrong.
func lastLine(output string) string {
	lines := strings.Split(output, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return clean(l, 200)
		}
	}
	return ""
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

// clean makes text from a command or a remote server safe to put in a
// one-line message: control characters (terminal escapes included) become
// '?', invalid UTF-8 is replaced, and the result is cut at max runes.
func clean(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if n == max {
			b.WriteString("…")
			break
		}
		if r < 0x20 || r == 0x7f || (0x80 <= r && r < 0xa0) {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}
