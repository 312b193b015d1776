package store

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLockHolderFromProcLocks(t *testing.T) {
	locks := "1: POSIX  ADVISORY  WRITE 77 fe:00:9977967 0 EOF\n" +
		"2: FLOCK  ADVISORY  WRITE 4242 fe:00:9977967 0 EOF\n" +
		"2: -> FLOCK  ADVISORY  WRITE 5151 fe:00:9977967 0 EOF\n" +
		"3: FLOCK  ADVISORY  WRITE 99 08:01:9977967 0 EOF\n"
	dev := uint64(254 << 8) // major 0xfe, minor 0
	if pid := lockHolder(locks, dev, 9977967); pid != 4242 {
		t.Errorf("holder = %d, want 4242 (the flock on that device and inode, not a waiter)", pid)
	}
	if pid := lockHolder(locks, dev, 1); pid != 0 {
		t.Errorf("holder of an unlocked inode = %d", pid)
	}
}

// Taking the lock writes nothing: a run with nothing to do changes no file.
// Who holds it comes from the kernel.
func TestLockWritesNothing(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	path := filepath.Join(s.Dir(), "lock")
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("lock file: %v, size %d", err, fi.Size())
	}
	_, err = s.Lock()
	le, ok := err.(*LockedError)
	if !ok || le.PID != os.Getpid() {
		t.Fatalf("second lock: %v", err)
	}
	if time.Since(le.Since) < 0 || time.Since(le.Since) > time.Hour {
		t.Errorf("holder since %v, want this test process's start", le.Since)
	}
}
