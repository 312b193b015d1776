package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LockedError is returned by Lock when another process holds the lock.
type LockedError struct {
	Path  string
	PID   int       // 0 when the holder did not record it
	Since time.Time // zero when unknown
	Host  string    // the holder's host, in fleet mode; "" for this one
}

func (e *LockedError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "process " + strconv.Itoa(e.PID)
	}
	if e.Host != "" {
		who += " on " + e.Host
	}
	if !e.Since.IsZero() {
		who += " (since " + e.Since.UTC().Format(time.RFC3339) + ")"
	}
	return fmt.Sprintf("%s holds the lock %s", who, e.Path)
}

// Unlocker gives a lock up: a [*Lock], or a lock held elsewhere (etcd).
type Unlocker interface {
	Unlock() error
}

// Lock is a held process lock. The kernel releases it when the process
// ends, however it ends, so a killed daneroll never leaves a stale lock.
type Lock struct {
	f *os.File
}

// Lock takes the state directory's lock exclusively, without waiting: no
// other daneroll may change anything while it is held. A second daneroll
// gets a *LockedError naming the holder and must change nothing.
func (s *Store) Lock() (*Lock, error) {
	return s.lock("lock", syscall.LOCK_EX)
}

// LockShared takes the state directory's lock shared with other runs that
// work certificate by certificate (each certificate under its own LockCert),
// and excluded by an exclusive Lock.
func (s *Store) LockShared() (*Lock, error) {
	return s.lock("lock", syscall.LOCK_SH)
}

// LockCert takes certificate name's own lock, exclusively and without
// waiting: two runs may work on different certificates, never on the same
// one.
func (s *Store) LockCert(name string) (*Lock, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if err := s.mkdirs("locks"); err != nil {
		return nil, err
	}
	return s.lock(filepath.Join("locks", name), syscall.LOCK_EX)
}

func (s *Store) lock(rel string, how int) (*Lock, error) {
	path := s.path(rel)
	// Never through a symlink: someone who planted one would have daneroll
	// open whatever it points to.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, &UntrustedError{Path: path, Reason: "is a symlink; daneroll does not follow links inside its state directory",
				Advice: "remove it; daneroll creates its lock file itself"}
		}
		return nil, fmt.Errorf("lock: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &UntrustedError{Path: path, Reason: "is not a regular file", Advice: "remove it; daneroll creates its lock file itself"}
	}
	if err := trustOwner(path, fi, 0o022, "writable by group or others"); err != nil {
		f.Close()
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, holder(path, fi)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Nothing is written: the kernel knows who holds the lock (see
	// holder), and a run with nothing to do writes no file.
	return &Lock{f: f}, nil
}

// holder names the process holding the lock on the file fi describes, as
// /proc/locks lists it, and since when it runs. Where /proc says nothing,
// the error says "another process".
func holder(path string, fi os.FileInfo) *LockedError {
	le := &LockedError{Path: path}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return le
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return le
	}
	le.PID = lockHolder(string(locks), uint64(st.Dev), st.Ino)
	if le.PID > 0 {
		le.Since = processStart(le.PID)
	}
	return le
}

// lockHolder finds the pid of the FLOCK on device dev, inode ino in the
// text of /proc/locks: "1: FLOCK  ADVISORY  WRITE 4242 fe:00:9977967 0 EOF".
func lockHolder(locks string, dev, ino uint64) int {
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
	for _, line := range strings.Split(locks, "\n") {
		f := strings.Fields(line)
		// A lock someone waits for is listed with "->"; skip those.
		if len(f) < 6 || f[1] != "FLOCK" {
			continue
		}
		if f[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(f[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}

// processStart is when process pid started, from /proc; zero when unknown.
func processStart(pid int) time.Time {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing parenthesis. starttime is field 22, in clock
	// ticks (USER_HZ, 100 on Linux) since boot.
	rest := string(stat)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 20 {
		return time.Time{}
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64)
	if err != nil {
		return time.Time{}
	}
	boot := bootTime()
	if boot.IsZero() {
		return time.Time{}
	}
	return boot.Add(time.Duration(ticks) * time.Second / 100)
}

func bootTime() time.Time {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(n, 0)
			}
		}
	}
	return time.Time{}
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	// Closing the descriptor releases the flock.
	err := l.f.Close()
	l.f = nil
	return err
}
