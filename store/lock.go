package store

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LockedError is returned by Lock when another process holds the lock.
type LockedError struct {
	Path  string
	PID   int       // 0 when the holder did not record it
	Since time.Time // zero when unknown
}

func (e *LockedError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "process " + strconv.Itoa(e.PID)
	}
	if !e.Since.IsZero() {
		who += " (since " + e.Since.UTC().Format(time.RFC3339) + ")"
	}
	return fmt.Sprintf("%s holds the lock %s", who, e.Path)
}

// Lock is a held process lock. The kernel releases it when the process
// ends, however it ends, so a killed daneroll never leaves a stale lock.
type Lock struct {
	f *os.File
}

// Lock takes the state directory's lock without waiting. A second daneroll
// gets a *LockedError naming the holder and must change nothing.
func (s *Store) Lock() (*Lock, error) {
	path := s.path("lock")
	// Never through a symlink: someone who planted one would have daneroll
	// truncate whatever it points to.
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
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, readHolder(path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Record who holds it, for the message the next process prints.
	info := fmt.Sprintf("%d %s\n", os.Getpid(), s.now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(info), 0)
	}
	return &Lock{f: f}, nil
}

func readHolder(path string) *LockedError {
	le := &LockedError{Path: path}
	data, err := readTrusted(path, 0o022, 4096)
	if err != nil {
		return le
	}
	f := strings.Fields(string(data))
	if len(f) > 0 {
		le.PID, _ = strconv.Atoi(f[0])
	}
	if len(f) > 1 {
		le.Since, _ = time.Parse(time.RFC3339, f[1])
	}
	return le
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	// Closing the descriptor releases the flock; the pid stays in the file
	// but nobody reads it unless the lock is held.
	err := l.f.Close()
	l.f = nil
	return err
}
