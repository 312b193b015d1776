package services

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
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
	if err := Reload(context.Background(), []string{"true"}, ReloadOptions{Timeout: 10 * time.Second}); err != nil {
		t.Errorf("true: %v", err)
	}
}

func TestReloadExitStatusAndOutput(t *testing.T) {
	err := Reload(context.Background(), []string{"false"}, ReloadOptions{Timeout: 10 * time.Second})
	if re := reloadError(t, err); re.ExitCode != 1 || re.Output != "" || err.Error() != "reload false: exit status 1" {
		t.Errorf("false: %q, exit code %d, output %q", err, re.ExitCode, re.Output)
	}

	err = Reload(context.Background(), []string{"sh", "-c", "echo oops; echo 'fatal: bad config' >&2; exit 3"}, ReloadOptions{Timeout: 10 * time.Second})
	re := reloadError(t, err)
	if re.ExitCode != 3 || re.TimedOut {
		t.Errorf("exit code %d, timed out %v; want 3, false", re.ExitCode, re.TimedOut)
	}
	if re.Output != "oops\nfatal: bad config" {
		t.Errorf("output %q, want both streams in order", re.Output)
	}
	// The first and the last lines of the output say why; the message
	// carries both.
	if want := `reload sh -c "echo oops; echo 'fatal: bad config' >&2; exit 3": exit status 3: oops / fatal: bad config`; err.Error() != want {
		t.Errorf("message\n %s\nwant\n %s", err, want)
	}
}

func TestReloadTimeoutKillsTheGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	start := time.Now()
	// The shell starts a child of its own; killing only the shell would
	// leave the child running and holding the output pipe.
	err := Reload(context.Background(), []string{"sh", "-c", `sleep 60 & echo $! > "$1"; wait`, "sh", pidFile}, ReloadOptions{Timeout: 500 * time.Millisecond})
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
	err := Reload(ctx, []string{"sh", "-c", `: > "$1"; exec sleep 60`, "sh", started}, ReloadOptions{Timeout: time.Minute})
	re := reloadError(t, err)
	if re.TimedOut || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("err = %v, timed out %v; want interrupted, errors.Is context.Canceled", err, re.TimedOut)
	}
}

func TestReloadMissingProgram(t *testing.T) {
	err := Reload(context.Background(), []string{"daneroll-no-such-reload-command", "reload"}, ReloadOptions{Timeout: 10 * time.Second})
	if re := reloadError(t, err); re.ExitCode != -1 || !strings.Contains(err.Error(), `program "daneroll-no-such-reload-command" not found in $PATH`) {
		t.Errorf("err = %v", err)
	}
	err = Reload(context.Background(), []string{"/nonexistent/postfix", "reload"}, ReloadOptions{Timeout: 10 * time.Second})
	if re := reloadError(t, err); re.ExitCode != -1 || !strings.Contains(err.Error(), `cannot run "/nonexistent/postfix": no such file or directory`) {
		t.Errorf("err = %v", err)
	}
	err = Reload(context.Background(), nil, ReloadOptions{Timeout: 10 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "empty command") {
		t.Errorf("empty argv: %v", err)
	}
}

func TestReloadArgvIsNotSplitNorShellInterpreted(t *testing.T) {
	// One argument with spaces stays one argument.
	check := `[ $# -eq 1 ] && [ "$1" = "a b  c" ] || { echo "got $# arguments: $*"; exit 1; }`
	if err := Reload(context.Background(), []string{"sh", "-c", check, "sh", "a b  c"}, ReloadOptions{Timeout: 10 * time.Second}); err != nil {
		t.Error(err)
	}
	// Shell syntax in an argument is just text: through a shell, "; false"
	// would make this fail.
	if err := Reload(context.Background(), []string{"true", "; false"}, ReloadOptions{Timeout: 10 * time.Second}); err != nil {
		t.Errorf("argument was interpreted by a shell: %v", err)
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "file with spaces")
	if err := Reload(context.Background(), []string{"touch", target}, ReloadOptions{Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); err != nil {
		t.Errorf("argument was split: %v", err)
	}
	// And the message shows where arguments begin and end.
	err := Reload(context.Background(), []string{"sh", "-c", "exit 2", "x y"}, ReloadOptions{Timeout: 10 * time.Second})
	if !strings.HasPrefix(err.Error(), `reload sh -c "exit 2" "x y": exit status 2`) {
		t.Errorf("message %q", err)
	}
}

func TestReloadTrimsOutput(t *testing.T) {
	script := `i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done; echo "the real error" >&2; exit 1`
	err := Reload(context.Background(), []string{"sh", "-c", script}, ReloadOptions{Timeout: 30 * time.Second})
	re := reloadError(t, err)
	if len(re.Output) > outputHead+outputTail+100 {
		t.Errorf("output is %d bytes, want it trimmed", len(re.Output))
	}
	for _, want := range []string{"line 0\n", "line 2999\n", "bytes omitted", "the real error"} {
		if !strings.Contains(re.Output, want) {
			t.Errorf("trimmed output lacks %q", want)
		}
	}
	if !strings.HasSuffix(err.Error(), ": exit status 1: line 0 … the real error") {
		t.Errorf("message %q", err)
	}
}

func TestReloadLogsOutputAtDebug(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := Reload(context.Background(), []string{"echo", "configuration reloaded"}, ReloadOptions{Timeout: 10 * time.Second, Logger: log}); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "configuration reloaded") {
		t.Errorf("log %q lacks the output at debug level", out)
	}
	buf.Reset()
	quiet := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := Reload(context.Background(), []string{"echo", "configuration reloaded"}, ReloadOptions{Timeout: 10 * time.Second, Logger: quiet}); err != nil {
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
	err := Reload(context.Background(), []string{"sh", "-c", `sleep 60 & echo $! > "$1"; echo started`, "sh", pidFile}, ReloadOptions{Timeout: time.Minute})
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

func TestReloadEnvKeepsSecretsOut(t *testing.T) {
	const secret = "s3cr3t-4a7f0c"
	t.Setenv("DANEROLL_TEST_SECRET", secret)
	t.Setenv("DANEROLL_TEST_KEPT", "kept-value")
	// The command fails so that its output comes back in the error.
	script := `env; echo "secret=${DANEROLL_TEST_SECRET-unset}"; exit 1`
	run := func(env []string) (*ReloadError, string) {
		t.Helper()
		var log bytes.Buffer
		err := Reload(context.Background(), []string{"sh", "-c", script}, ReloadOptions{
			Timeout: 10 * time.Second,
			Env:     env,
			Logger:  slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		return reloadError(t, err), err.Error() + "\n" + log.String()
	}

	re, said := run(EnvWithout(os.Environ(), "DANEROLL_TEST_SECRET"))
	for _, where := range []string{re.Output, said} {
		if strings.Contains(where, secret) || strings.Contains(where, "DANEROLL_TEST_SECRET=") {
			t.Errorf("the command saw the secret:\n%s", where)
		}
	}
	if !strings.Contains(re.Output, "secret=unset") || !strings.Contains(re.Output, "DANEROLL_TEST_KEPT=kept-value") {
		t.Errorf("output %q: want the secret unset and the rest of the environment kept", re.Output)
	}

	// The test would see a leak: a nil Env inherits everything.
	if re, _ := run(nil); !strings.Contains(re.Output, "secret="+secret) {
		t.Errorf("with Env nil the command did not inherit the environment: %q", re.Output)
	}

	// Env is the whole environment, not additions to daneroll's.
	err := Reload(context.Background(), []string{"sh", "-c", `echo "secret=${DANEROLL_TEST_SECRET-unset} kept=${DANEROLL_TEST_KEPT-unset} only=$ONLY"; exit 1`},
		ReloadOptions{Timeout: 10 * time.Second, Env: []string{"ONLY=this"}})
	if re := reloadError(t, err); re.Output != "secret=unset kept=unset only=this" {
		t.Errorf("output %q, want only the given environment", re.Output)
	}
}

func TestEnvWithout(t *testing.T) {
	environ := []string{"A=1", "SECRET=x", "SECRET_2=y", "PATH=/bin", "SECRET=again", "NOVALUE", "secret=lower", "B==2", "=C:=C:\\"}
	got := EnvWithout(environ, "SECRET", "NOVALUE", "", "ABSENT")
	want := []string{"A=1", "SECRET_2=y", "PATH=/bin", "secret=lower", "B==2", "=C:=C:\\"}
	if runtime.GOOS == "windows" {
		want = slices.DeleteFunc(want, func(kv string) bool { return kv == "secret=lower" })
	}
	if !slices.Equal(got, want) {
		t.Errorf("EnvWithout = %q, want %q", got, want)
	}
	if got := EnvWithout(environ); !slices.Equal(got, environ) {
		t.Errorf("EnvWithout with no names = %q, want the input", got)
	} else if got[0] = "changed"; environ[0] != "A=1" {
		t.Error("EnvWithout returned its input, not a copy")
	}
	// Never nil: as ReloadOptions.Env, nil would mean "inherit everything".
	for _, in := range [][]string{nil, {}, {"SECRET=x"}} {
		if got := EnvWithout(in, "SECRET"); got == nil || len(got) != 0 {
			t.Errorf("EnvWithout(%q) = %#v, want an empty, non-nil slice", in, got)
		}
	}
}

func TestReloadErrorQuotesHeadAndTail(t *testing.T) {
	const prefix = "reload postfix reload: exit status 1"
	tests := []struct {
		name, output, want string
	}{
		{"no output", "", ""},
		{"blank output", " \n\t\n", ""},
		{"one line", "postfix: fatal: bad config", ": postfix: fatal: bad config"},
		{"one line among blanks", "\n\n  only line  \n\n", ": only line"},
		{"two lines", "first\nsecond", ": first / second"},
		{"two lines and blank ones", "\nfirst\n\n \nsecond\n\n", ": first / second"},
		{"CRLF", "first\r\nsecond\r\n", ": first / second"},
		{"the same line twice", "again\nagain\n", ": again"},
		{"systemctl", "Job for postfix.service failed because the control process exited with error code.\n" +
			`See "systemctl status postfix.service" and "journalctl -xeu postfix.service" for details.` + "\n",
			`: Job for postfix.service failed because the control process exited with error code. / See "systemctl status postfix.service" and "journalctl -xeu postfix.service" for details.`},
		{"cause first, generic last",
			"/usr/sbin/postconf: fatal: /etc/postfix/main.cf, line 27: missing '=' after attribute name: \"smtpd_tls_cert_fil\"\n" +
				"postfix/postfix-script: warning: not owned by root: /etc/postfix/main.cf\n" +
				"postfix/postfix-script: warning: group or other writable: /etc/postfix/main.cf\n\n" +
				"postfix/postfix-script: fatal: the Postfix mail system is not running\n",
			": /usr/sbin/postconf: fatal: /etc/postfix/main.cf, line 27: missing '=' after attribute name: \"smtpd_tls_cert_fil\"" +
				" … postfix/postfix-script: fatal: the Postfix mail system is not running"},
		{"trimmed output", "starting\n[… 5000 bytes omitted …]\nthe real error", ": starting … the real error"},
		{"trimmed output without a head", "[… 5000 bytes omitted …]\nthe real error", ": the real error"},
		{"control characters", "\x1b[31merror\x1b[0m: bad\x07 \u202eevil\u2028x\nend\ttab\x00", ": ?[31merror?[0m: bad? ?evil?x / end tab?"},
		{"progress meter", "reloading\n10%\r50%\r100%\rdone\n", ": reloading / done"},
		{"invalid UTF-8", "bad \xff\xfe byte", ": bad \uFFFD byte"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &ReloadError{Argv: []string{"postfix", "reload"}, ExitCode: 1, Output: tt.output, Err: errors.New("exit status 1")}
			if got := e.Error(); got != prefix+tt.want {
				t.Errorf("Error() =\n %q\nwant\n %q", got, prefix+tt.want)
			}
		})
	}
}

func TestReloadErrorLongLines(t *testing.T) {
	head := strings.Repeat("é", 1000)
	tail := strings.Repeat("z", 100000)
	e := &ReloadError{Argv: []string{"x"}, Output: head + "\nmiddle\n" + tail, Err: errors.New("exit status 1")}
	msg := e.Error()
	if want := "reload x: exit status 1: " + strings.Repeat("é", gistLine) + "…" + gistGap + strings.Repeat("z", gistLine) + "…"; msg != want {
		t.Errorf("message %q, want both lines cut at %d runes", msg, gistLine)
	}
	if n := utf8.RuneCountInString(msg); n > 2*gistLine+50 {
		t.Errorf("message is %d runes long", n)
	}
}

// TestReloadErrorCauseFirst runs a command that says why it failed first
// and ends with a generic line, as postfix and systemctl do.
func TestReloadErrorCauseFirst(t *testing.T) {
	script := `echo "fatal: /etc/postfix/main.cf, line 3: bad" >&2; i=0; while [ $i -lt 20 ]; do echo "chatter $i"; i=$((i+1)); done; echo "reload failed"; exit 1`
	err := Reload(context.Background(), []string{"sh", "-c", script}, ReloadOptions{Timeout: 10 * time.Second})
	re := reloadError(t, err)
	if !strings.HasSuffix(err.Error(), ": exit status 1: fatal: /etc/postfix/main.cf, line 3: bad … reload failed") {
		t.Errorf("message %q lacks the first and the last line", err)
	}
	if strings.Count(re.Output, "\n") != 21 || !strings.Contains(re.Output, "chatter 19") {
		t.Errorf("Output %q is not the whole output", re.Output)
	}
}
