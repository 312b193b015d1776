// Package rig runs real BIND 9, unbound and postfix daemons on loopback for
// integration tests.
//
// Every daemon runs in its own temporary directory on 127.0.0.1 (or another
// 127/8 address) and a free high port, in its own process group, and is killed
// by t.Cleanup even when the test fails. A daemon also receives SIGKILL when
// the test binary dies, so a crashed or timed-out test leaves nothing behind.
//
// The Start functions skip the test under "go test -short" and when a needed
// program is missing; with DANEROLL_REQUIRE_RIG=1 a missing program fails the
// test instead, so CI cannot pass by skipping everything.
package rig

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireEnv names the environment variable that turns a missing daemon
// from a skip into a failure.
const RequireEnv = "DANEROLL_REQUIRE_RIG"

// startTimeout bounds how long a daemon may take to become ready. Starts take
// well under a second here; the margin is for a loaded 2-core CI machine.
const startTimeout = 30 * time.Second

// integration skips t under -short: these tests start real daemons.
func integration(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("rig: integration test (starts real daemons): skipped under -short")
	}
}

// unavailable skips t, or fails it when RequireEnv is set, because the rig
// cannot run here.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := "rig: " + fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (%s=1: not skipping)", msg, RequireEnv)
	}
	t.Skip(msg)
}

// lookBinary returns the absolute path of program name, which the Debian
// package debPkg provides, or skips/fails t.
func lookBinary(t testing.TB, name, debPkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
		return p
	}
	// A test's PATH may lack the sbin directories where Debian installs
	// named, unbound and postfix.
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	unavailable(t, "%s not found: install the Debian package %s", name, debPkg)
	return ""
}

// needRoot skips/fails t unless the test runs as root; what says why root is
// needed.
func needRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "%s needs root (CI runs as root)", what)
	}
}

// process is one daemon started by the rig, leader of its own process group.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once cmd.Wait has returned
	waitErr error         // written before done is closed
	guard   *exec.Cmd     // kills the group when the test binary dies
	guardW  *os.File      // the guard's stdin: only this process holds it open
	stop    sync.Once
}

// startProcess starts argv in a new session (and so a new process group) with
// stdout and stderr appended to logPath. A file, not a pipe, receives the
// output so that grandchildren holding it open cannot block Wait.
func startProcess(name, logPath string, argv, extraEnv []string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	defer logFile.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// A session of its own makes the daemon a process group leader, so one
		// kill(-pid) reaches every process it spawns, and postfix's master,
		// which insists on leading its session, accepts it.
		Setsid: true,
		// Kill the daemon when the test binary dies without running cleanups
		// (test timeout panic, SIGKILL). The kernel drops this setting when
		// a daemon changes credentials, as postfix's master does, hence the
		// guard below.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start %s: %w", name, argv[0], err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := p.startGuard(); err != nil {
		p.terminate()
		return nil, err
	}
	return p, nil
}

// startGuard starts a shell that waits for EOF on a pipe whose write end
// only the test binary holds, then kills the daemon's process group: when
// the test binary dies in any way, the kernel closes the pipe. The guard
// leads its own session so that signals for the daemon's group miss it.
func (p *process) startGuard() error {
	r, w, err := os.Pipe() // close-on-exec: no other child inherits w
	if err != nil {
		return fmt.Errorf("%s: guard: %w", p.name, err)
	}
	defer r.Close()
	guard := exec.Command("/bin/sh", "-c", `read _; kill -9 -"$1"`, "rig-guard", strconv.Itoa(p.cmd.Process.Pid))
	guard.Stdin = r
	guard.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := guard.Start(); err != nil {
		w.Close()
		return fmt.Errorf("%s: guard: %w", p.name, err)
	}
	p.guard, p.guardW = guard, w
	return nil
}

// exited reports whether the daemon has exited, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// terminate stops the whole process group: SIGTERM, a grace period, then
// SIGKILL for whatever is left (postfix children outlive their master for a
// moment). The group id stays reserved while any member lives; once the
// group is empty the final kill finds nobody (ESRCH) unless the pid space
// wrapped around within these seconds.
func (p *process) terminate() {
	p.stop.Do(func() {
		if p.guard != nil {
			// The guard goes first: closing its pipe would kill the group
			// at once, without the grace period.
			_ = p.guard.Process.Kill()
			_ = p.guard.Wait()
			p.guardW.Close()
		}
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
		}
	})
}

// log returns the daemon's output so far (at most the last 16 KiB).
func (p *process) log() string { return readTail(p.logPath, 16<<10) }

// readTail returns up to the last n bytes of the file at path.
func readTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	off := fi.Size() - n
	if off < 0 {
		off = 0
	}
	buf := make([]byte, fi.Size()-off)
	k, _ := f.ReadAt(buf, off)
	return string(buf[:k])
}

// errRetry marks a start that failed because the chosen port was taken
// between choosing and binding it; the caller retries with another port.
var errRetry = errors.New("port taken, retry")

// startAttempts bounds the retries after a lost port race.
const startAttempts = 4

// freePort returns a port on 127.0.0.1 that is currently free for both TCP
// and UDP (DNS servers need both).
func freePort() (int, error) {
	var lastErr error
	for range 20 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err != nil {
			lastErr = err
			continue
		}
		pc.Close()
		return port, nil
	}
	return 0, fmt.Errorf("free port: no port free for both tcp and udp: %w", lastErr)
}

// permanent wraps an error that ends a poll at once: waiting longer cannot
// help (the daemon died).
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// poll calls check every interval until it returns nil or a permanent error,
// or ctx ends; it then returns check's last error.
func poll(ctx context.Context, interval time.Duration, check func() error) error {
	for {
		err := check()
		if err == nil {
			return nil
		}
		var pe permanent
		if errors.As(err, &pe) {
			return pe.err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}

// tempDir returns a fresh directory for one daemon. The directory and the
// per-test directory above it are made world-searchable because postfix
// daemons drop root and must still reach their queue below it.
func tempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("rig: %v", err)
		}
	}
	return dir
}

// writeFile writes data to path or fails t.
func writeFile(t testing.TB, path, data string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), perm); err != nil {
		t.Fatalf("rig: %v", err)
	}
}

// writeConfig writes a postfix configuration file dated a minute back:
// postfix stalls for up to two seconds on a main.cf modified within the last
// second or so, waiting for the editor to finish.
func writeConfig(t testing.TB, path, data string) {
	t.Helper()
	writeFile(t, path, data, 0o644)
	past := time.Now().Add(-time.Minute)
	if err := os.Chtimes(path, past, past); err != nil {
		t.Fatalf("rig: %v", err)
	}
}

// run runs argv to completion and returns its combined output.
func run(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", filepath.Base(argv[0]), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Program returns the absolute path of program name from the Debian package
// debPkg, or skips t (fails it with DANEROLL_REQUIRE_RIG=1) when it is
// missing. It starts nothing, so it runs under -short too.
func Program(t testing.TB, name, debPkg string) string {
	t.Helper()
	return lookBinary(t, name, debPkg)
}

// CopyTree copies a directory with its modes and symlinks (a certbot
// tree, a fake host), for a test to change its own copy.
func CopyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case fi.IsDir():
			return os.MkdirAll(target, fi.Mode().Perm())
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, fi.Mode().Perm())
		}
	})
}
