package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// daneroll runs the real binary with the demo's configuration, showing
// each line of its output (stdout and stderr, as they come) stamped with
// the time since the step began. It returns the output and an error when
// the command does not exit 0.
func (d *demo) daneroll(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{"-c", d.w.cfgFile}, args...)
	d.con.say("$ daneroll %s", strings.Join(argv, " "))
	cmd := exec.CommandContext(ctx, d.bin, argv...)
	// On Ctrl-C the terminal signals daneroll too; when the demo is
	// stopped some other way, daneroll still gets the same chance to save
	// its journal and stop cleanly.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Dir = d.w.dir
	// Nothing from the caller's environment may change the run: no other
	// configuration, no test failpoint.
	cmd.Env = append(os.Environ(), "DANEROLL_CONFIG=", "DANEROLL_FAILPOINT=")
	lw := &lineWriter{emit: func(line string) { d.con.stamped("| ", line) }}
	cmd.Stdout, cmd.Stderr = lw, lw
	start := time.Now()
	err := cmd.Run()
	lw.flush()
	took := time.Since(start)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			d.con.say("exit %d after %s", ee.ExitCode(), seconds(took))
			return lw.String(), fmt.Errorf("daneroll %s: exit %d", strings.Join(args, " "), ee.ExitCode())
		}
		return lw.String(), fmt.Errorf("daneroll %s: %w", strings.Join(args, " "), err)
	}
	d.con.say("exit 0 after %s", seconds(took))
	return lw.String(), nil
}

// lineWriter passes whole lines to emit and keeps everything written.
type lineWriter struct {
	mu   sync.Mutex // guards buf and all; exec may write from two goroutines
	buf  []byte
	all  bytes.Buffer
	emit func(string)
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(strings.TrimRight(string(l.buf[:i]), "\r"))
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

// flush emits a last line that had no newline.
func (l *lineWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(string(l.buf))
		l.buf = nil
	}
}

func (l *lineWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// interrupted reports whether err comes from Ctrl-C or SIGTERM.
func interrupted(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, context.Canceled)
}
