package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobody is a uid that is not the test's; chown needs root.
const nobody = 65534

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another user")
	}
}

func wantUntrusted(t *testing.T, err error, path, reason string) {
	t.Helper()
	var ue *UntrustedError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v, want an UntrustedError about %s", err, path)
	}
	if ue.Path != path || !strings.Contains(ue.Reason, reason) {
		t.Errorf("err = %q (path %s), want path %s and %q", err, ue.Path, path, reason)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
}

// The first run must not change the permissions of directories it did not
// create: with state_dir = /var/lib/daneroll, /var/lib stays as it was.
func TestOpenLeavesExistingParentsAlone(t *testing.T) {
	base := t.TempDir()
	varlib := filepath.Join(base, "varlib")
	tmp := filepath.Join(base, "tmp")
	for dir, mode := range map[string]os.FileMode{varlib: 0o755, tmp: 0o777 | os.ModeSticky} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, state := range []string{filepath.Join(varlib, "daneroll"), filepath.Join(tmp, "a", "b", "daneroll")} {
		s, err := Open(state)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WriteKey("mail", Current, newKey(t)); err != nil {
			t.Fatal(err)
		}
		if m := mode(t, state); m != 0o700 {
			t.Errorf("%s: mode %o, want 0700", state, m)
		}
	}
	if fi, _ := os.Stat(varlib); fi.Mode() != os.ModeDir|0o755 {
		t.Errorf("existing parent changed to %v", fi.Mode())
	}
	if fi, _ := os.Stat(tmp); fi.Mode() != os.ModeDir|os.ModeSticky|0o777 {
		t.Errorf("sticky parent changed to %v", fi.Mode())
	}
	// Missing parents are made like any system directory.
	for _, d := range []string{filepath.Join(tmp, "a"), filepath.Join(tmp, "a", "b")} {
		if m := mode(t, d); m != 0o755 {
			t.Errorf("created parent %s: mode %o, want 0755", d, m)
		}
	}
}

func TestOpenRefusesAStateDirOthersCanChange(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(state, 0o775)
	for _, open := range []func(string) (*Store, error){Open, OpenReadOnly} {
		_, err := open(state)
		wantUntrusted(t, err, state, "writable by group or others (mode 0775)")
	}
	if m := mode(t, state); m != 0o775 {
		t.Errorf("Open changed the mode of an existing state directory to %o", m)
	}
	needRoot(t)
	os.Chmod(state, 0o700)
	if err := os.Chown(state, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	_, err := Open(state)
	wantUntrusted(t, err, state, "owned by uid 65534")
}

func TestSubdirectoriesMustBeTrusted(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteKey("mail", Current, newKey(t)); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(s.Dir(), "keys", "mail")
	os.Chmod(keys, 0o777)
	s2, _ := Open(s.Dir()) // a new process: nothing checked yet
	_, err = s2.ReadKey("mail", Current)
	wantUntrusted(t, err, keys, "writable by group or others")
	if err := s2.WriteKey("mail", Next, newKey(t)); err == nil {
		t.Error("wrote a key into a world-writable directory")
	}
	os.Chmod(keys, 0o700)

	// A directory replaced by a symlink to elsewhere.
	elsewhere := t.TempDir()
	os.Rename(keys, keys+".moved")
	if err := os.Symlink(elsewhere, keys); err != nil {
		t.Fatal(err)
	}
	s3, _ := Open(s.Dir())
	_, err = s3.ReadKey("mail", Current)
	wantUntrusted(t, err, keys, "is a symlink")
}

func TestLockDoesNotFollowASymlink(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(s.Dir(), "lock")
	if err := os.Symlink(victim, lock); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock()
	if err == nil {
		l.Unlock()
	}
	wantUntrusted(t, err, lock, "is a symlink")
	if data, _ := os.ReadFile(victim); string(data) != "precious\n" {
		t.Errorf("the lock truncated the symlink's target: %q", data)
	}
	os.Remove(lock)
	if err := syscall.Mkfifo(lock, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Lock() // must not block on the FIFO
	wantUntrusted(t, err, lock, "not a regular file")
}

func TestKeysMustBeDaneroll(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteKey("mail", Current, newKey(t)); err != nil {
		t.Fatal(err)
	}
	path := s.KeyPath("mail", Current)
	if _, err := s.ReadKey("mail", Current); err != nil {
		t.Fatal(err)
	}

	os.Chmod(path, 0o644)
	_, err = s.ReadKey("mail", Current)
	wantUntrusted(t, err, path, "readable or writable by group or others (mode 0644)")
	os.Chmod(path, 0o600)

	// A key someone else placed, through a symlink.
	planted := filepath.Join(t.TempDir(), "planted.pem")
	data, _ := EncodeKey(newKey(t))
	os.WriteFile(planted, data, 0o600)
	os.Rename(path, path+".orig")
	os.Symlink(planted, path)
	_, err = s.ReadKey("mail", Current)
	wantUntrusted(t, err, path, "is a symlink")
	os.Remove(path)
	os.Rename(path+".orig", path)

	needRoot(t)
	os.Chown(path, nobody, nobody)
	_, err = s.ReadKey("mail", Current)
	wantUntrusted(t, err, path, "owned by uid 65534")
}

func TestSetIDsAndLiveLinkAreChecked(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Install("mail", newSet(t, newKey(t), 1))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"../../../../etc", "..", "", "0001/..", "1e3", "-1", "0x10"} {
		if _, err := s.Set("mail", bad); err == nil {
			t.Errorf("Set(%q) succeeded", bad)
		}
		if err := s.Switch("mail", bad); err == nil {
			t.Errorf("Switch(%q) succeeded", bad)
		}
	}
	if err := s.Switch("mail", id); err != nil {
		t.Fatal(err)
	}
	// Another certificate's set, and the right name in another directory:
	// only the last element matched before.
	other, err := s.Install("other", newSet(t, newKey(t), 2))
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	os.MkdirAll(filepath.Join(elsewhere, "archive", "mail", id), 0o700)
	live := s.LiveDir("mail")
	for _, target := range []string{
		filepath.Join("..", "archive", "other", other),
		filepath.Join(elsewhere, "archive", "mail", id),
		"../archive/mail/../other/" + other,
		"../archive/mail/" + id + "/",
	} {
		os.Remove(live)
		if err := os.Symlink(target, live); err != nil {
			t.Fatal(err)
		}
		_, err := s.LiveID("mail")
		wantUntrusted(t, err, live, "points to")
		if set, err := s.Live("mail"); err == nil {
			t.Errorf("Live through %s = set %s", target, set.ID)
		}
	}
	os.Remove(live)
	os.Mkdir(live, 0o700)
	_, err = s.LiveID("mail")
	wantUntrusted(t, err, live, "not the symlink")
}

func TestJournalFilesMustBeDaneroll(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteJSON(JournalPath("mail"), map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.Dir(), JournalPath("mail"))
	os.Chmod(path, 0o666)
	var v map[string]int
	_, err = s.ReadJSON(JournalPath("mail"), &v)
	wantUntrusted(t, err, path, "writable by group or others")
	os.Chmod(path, 0o600)

	// A huge file is refused before it is read into memory.
	f, _ := os.OpenFile(path, os.O_WRONLY, 0)
	f.Truncate(maxStateFile + 1)
	f.Close()
	_, err = s.ReadJSON(JournalPath("mail"), &v)
	wantUntrusted(t, err, path, "more than daneroll ever writes")
}
