package services

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func reloadError(t *testing.T, err error) *ReloadError {
	t.Helper()
	var re *ReloadError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v (%T), want a *ReloadError", err, err)
	}
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("message %q is not one line", err)
	}
	t.Logf("%v", err)
	return re
}

func TestReloadSucceeds(t *testing.T) {
	if err := Reload(context.Background(), []string{"true"}, 10*time.Second, nil); err != nil {
		t.Errorf("true: %v", err)
	}
}

func TestReloadExitStatusAndOutput(t *testing.T) {
	err := Reload(context.Background(), []string{"false"}, 10*time.Second, nil)
	if re := reloadError(t, err); re.ExitCode != 1 || re.Output != "" || err.Error() != "reload false: exit status 1" {
		t.Errorf("false: %q, exit code %d, output %q", err, re.ExitCode, re.Output)
	}

	err = Reload(context.Background(), []string{"sh", "-c", "echo oops; echo 'fatal: bad config' >&2; exit 3"}, 10*time.Second, nil)
	re := reloadError(t, err)
	if re.ExitCode != 3 || re.TimedOut {
		t.Errorf("exit code %d, timed out %v; want 3, false", re.ExitCode, re.TimedOut)
	}
	if re.Output != "oops\nfatal: bad config" {
		t.Errorf("output %q, want both streams in order", re.Output)
	}
	// The last line of the output usually says why; the message carries it.
	if want := `reload sh -c "echo oops; echo 'fatal: bad config' >&2; exit 3": exit status 3: fatal: bad config`; err.Error() != want {
		t.Errorf("message\n %s\nwant\n %s", err, want)
	}
}

func TestReloadTimeoutKillsTheGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	start := time.Now()
	// The shell starts a child of its own; killing only the shell would
	// leave the child running and holding the output pipe.
	err := Reload(context.Background(), []string{"sh", "-c", `sleep 60 & echo $! > "$1"; wait`, "sh", pidFile}, 500*time.Millisecond, nil)
	re := reloadError(t, err)
	if !re.TimedOut || re.ExitCode != -1 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timed out %v, exit code %d, errors.Is deadline %v", re.TimedOut, re.ExitCode, errors.Is(err, context.DeadlineExceeded))
	}
	if !strings.Contains(err.Error(), "timed out, killed") {
		t.Errorf("message %q does not say it timed out", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("a 500ms timeout held Reload for %v", d)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the command's child %d survived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid runs (a zombie waiting for its reaper does not).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // no /proc: trust kill(0)
	}
	// "pid (comm) S …": the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestReloadInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := filepath.Join(t.TempDir(), "started")
	go func() {
		// Cancel once the command runs, so that it is killed, not merely
		// never started.
		for {
			if _, err := os.Stat(started); err == nil || ctx.Err() != nil {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	err := Reload(ctx, []string{"sh", "-c", `: > "$1"; exec sleep 60`, "sh", started}, time.Minute, nil)
	re := reloadError(t, err)
	if re.TimedOut || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("err = %v, timed out %v; want interrupted, errors.Is context.Canceled", err, re.TimedOut)
	}
}

func TestReloadMissingProgram(t *testing.T) {
	err := Reload(context.Background(), []string{"daneroll-no-such-reload-command", "reload"}, 10*time.Second, nil)
	if re := reloadError(t, err); re.ExitCode != -1 || !strings.Contains(err.Error(), `program "daneroll-no-such-reload-command" not found in $PATH`) {
		t.Errorf("err = %v", err)
	}
	err = Reload(context.Background(), []string{"/nonexistent/postfix", "reload"}, 10*time.Second, nil)
	if re := reloadError(t, err); re.ExitCode != -1 || !strings.Contains(err.Error(), `cannot run "/nonexistent/postfix": no such file or directory`) {
		t.Errorf("err = %v", err)
	}
	err = Reload(context.Background(), nil, 10*time.Second, nil)
	if err == nil || !strings.Contains(err.Error(), "empty command") {
		t.Errorf("empty argv: %v", err)
	}
}

func TestReloadArgvIsNotSplitNorShellInterpreted(t *testing.T) {
	// One argument with spaces stays one argument.
	check := `[ $# -eq 1 ] && [ "$1" = "a b  c" ] || { echo "got $# arguments: $*"; exit 1; }`
	if err := Reload(context.Background(), []string{"sh", "-c", check, "sh", "a b  c"}, 10*time.Second, nil); err != nil {
		t.Error(err)
	}
	// Shell syntax in an argument is just text: through a shell, "; false"
	// would make this fail.
	if err := Reload(context.Background(), []string{"true", "; false"}, 10*time.Second, nil); err != nil {
		t.Errorf("argument was interpreted by a shell: %v", err)
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "file with spaces")
	if err := Reload(context.Background(), []string{"touch", target}, 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); err != nil {
		t.Errorf("argument was split: %v", err)
	}
	// And the message shows where arguments begin and end.
	err := Reload(context.Background(), []string{"sh", "-c", "exit 2", "x y"}, 10*time.Second, nil)
	if !strings.HasPrefix(err.Error(), `reload sh -c "exit 2" "x y": exit status 2`) {
		t.Errorf("message %q", err)
	}
}

func TestReloadTrimsOutput(t *testing.T) {
	script := `i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done; echo "the real error" >&2; exit 1`
	err := Reload(context.Background(), []string{"sh", "-c", script}, 30*time.Second, nil)
	re := reloadError(t, err)
	if len(re.Output) > outputHead+outputTail+100 {
		t.Errorf("output is %d bytes, want it trimmed", len(re.Output))
	}
	for _, want := range []string{"line 0\n", "line 2999\n", "bytes omitted", "the real error"} {
		if !strings.Contains(re.Output, want) {
			t.Errorf("trimmed output lacks %q", want)
		}
	}
	if !strings.HasSuffix(err.Error(), ": exit status 1: the real error") {
		t.Errorf("message %q", err)
	}
}

func TestReloadLogsOutputAtDebug(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := Reload(context.Background(), []string{"echo", "configuration reloaded"}, 10*time.Second, log); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "configuration reloaded") {
		t.Errorf("log %q lacks the output at debug level", out)
	}
	buf.Reset()
	quiet := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := Reload(context.Background(), []string{"echo", "configuration reloaded"}, 10*time.Second, quiet); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Errorf("a successful reload logged %q above debug level", buf.String())
	}
}

// TestReloadBackgroundDaemon: an init script's "restart" may leave a daemon
// holding the output pipe. The reload succeeded; Reload must say so, and
// not wait for the daemon.
func TestReloadBackgroundDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the pipe grace period")
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	start := time.Now()
	err := Reload(context.Background(), []string{"sh", "-c", `sleep 60 & echo $! > "$1"; echo started`, "sh", pidFile}, time.Minute, nil)
	if data, rerr := os.ReadFile(pidFile); rerr == nil {
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(data))); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err != nil {
		t.Errorf("err = %v, want success", err)
	}
	if d := time.Since(start); d > pipeGrace+15*time.Second {
		t.Errorf("Reload waited %v for a background process", d)
	}
}

func TestCapBufferKeepsHeadAndTail(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 10, outputHead, outputHead + 1, outputHead + outputTail, outputHead + outputTail + 1, 50000} {
		data := make([]byte, size)
		for i := range data {
			data[i] = 'a' + byte(rng.IntN(26))
		}
		var c capBuffer
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(2*outputTail))
			c.Write(rest[:n])
			rest = rest[n:]
		}
		want := string(data)
		if size > outputHead+outputTail {
			want = string(data[:outputHead]) + "\n[… " + strconv.Itoa(size-outputHead-outputTail) + " bytes omitted …]\n" + string(data[size-outputTail:])
		}
		if got := c.String(); got != want {
			t.Errorf("size %d: kept %d bytes, want head and tail (%d bytes)", size, len(got), len(want))
		}
	}
}
