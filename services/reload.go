// Package services reloads the programs that serve certificates and probes
// them over the network to read the chain they serve.
//
// # Reloads
//
// [Reload] runs a command given as an argv array — never through a shell,
// never split on spaces — with a timeout, and returns its output when it
// fails.
//
// # Probes
//
// [Probe] connects to an endpoint such as smtp://mail.example.org:25,
// speaks the protocol's STARTTLS dialogue where the scheme calls for it
// (SMTP, IMAP, POP3), completes a TLS handshake without PKIX verification —
// DANE verification is the caller's — and returns the chain the server sent.
// [ProbeUntil] retries, because reloads are asynchronous.
package services

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// ReloadError is a reload command that failed.
type ReloadError struct {
	Argv []string
	// ExitCode is -1 when the command did not run to an exit (not found,
	// killed on timeout).
	ExitCode int
	Output   string // combined stdout and stderr, trimmed
	Err      error
}

func (e *ReloadError) Error() string {
	cmd := strings.Join(e.Argv, " ")
	msg := fmt.Sprintf("%s: %v", cmd, e.Err)
	if e.Output != "" {
		msg += ": " + oneLine(e.Output)
	}
	return msg
}

func (e *ReloadError) Unwrap() error { return e.Err }

// maxOutput bounds how much of a command's output is kept.
const maxOutput = 4 << 10

// Reload runs argv with a timeout. The process group is killed when the
// timeout passes, so a command that forks cannot outlive it.
func Reload(ctx context.Context, argv []string, timeout time.Duration, log *slog.Logger) error {
	if len(argv) == 0 || argv[0] == "" {
		return &ReloadError{Argv: argv, ExitCode: -1, Err: errors.New("empty command")}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	output := strings.TrimSpace(out.String())
	if len(output) > maxOutput {
		output = output[:maxOutput] + "…"
	}
	if err == nil {
		log.Debug("reload ran", "cmd", strings.Join(argv, " "), "output", output)
		return nil
	}
	re := &ReloadError{Argv: argv, ExitCode: -1, Output: output, Err: err}
	var ee *exec.ExitError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		re.Err = fmt.Errorf("killed after %s", timeout)
	case errors.As(err, &ee):
		re.ExitCode = ee.ExitCode()
		re.Err = fmt.Errorf("exit status %d", ee.ExitCode())
	case errors.Is(err, exec.ErrNotFound):
		re.Err = errors.New("command not found")
	}
	return re
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " ")
}
