package store

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// installN installs n sets for name and returns their IDs.
func installN(t *testing.T, s *Store, name string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id, err := s.Install(name, newSet(t, newKey(t), int64(100+i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func TestPruneSetsKeepsNewestAndProtected(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	installN(t, s, "mail", 6)
	if err := s.Switch("mail", "0003"); err != nil {
		t.Fatal(err)
	}
	// keep 0 (and below) keeps everything.
	for _, keep := range []int{0, -1} {
		if removed, err := s.PruneSets("mail", keep); err != nil || removed != nil {
			t.Fatalf("keep %d removed %v, %v", keep, removed, err)
		}
	}
	// The newest two, the live set and the protected one stay.
	removed, err := s.PruneSets("mail", 2, "0002", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"0001", "0004"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	ids, err := s.Sets("mail")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"0002", "0003", "0005", "0006"}; !slices.Equal(ids, want) {
		t.Errorf("sets left %v, want %v", ids, want)
	}
	for _, id := range ids {
		if _, err := s.Set("mail", id); err != nil {
			t.Errorf("set %s after the prune: %v", id, err)
		}
	}
	for _, id := range removed {
		if _, err := os.Lstat(filepath.Join(s.Dir(), "archive", "mail", id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("set %s still there: %v", id, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(s.Dir(), "archive", "mail"))
	if len(entries) != len(ids) {
		t.Errorf("archive holds %d entries, want the %d sets: %v", len(entries), len(ids), entries)
	}
	if live, _ := s.LiveID("mail"); live != "0003" {
		t.Errorf("live set %q", live)
	}
	// A second prune with nothing beyond the limit removes nothing, and
	// IDs are never reused.
	if removed, err := s.PruneSets("mail", 2, "0002"); err != nil || len(removed) != 0 {
		t.Errorf("second prune removed %v, %v", removed, err)
	}
	if id, err := s.Install("mail", newSet(t, newKey(t), 200)); err != nil || id != "0007" {
		t.Errorf("install after the prune: %q, %v", id, err)
	}
	// Other certificates' archives are not touched.
	installN(t, s, "web", 3)
	if ids, _ := s.Sets("web"); len(ids) != 3 {
		t.Errorf("web sets %v", ids)
	}
}

func TestPruneSetsNumericOrder(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	installN(t, s, "mail", 1)
	adir := filepath.Join(s.Dir(), "archive", "mail")
	if err := os.Rename(filepath.Join(adir, "0001"), filepath.Join(adir, "9998")); err != nil {
		t.Fatal(err)
	}
	if ids := installN(t, s, "mail", 3); !slices.Equal(ids, []string{"9999", "10000", "10001"}) {
		t.Fatalf("installed %v", ids)
	}
	if err := s.Switch("mail", "9999"); err != nil {
		t.Fatal(err)
	}
	// Newest is 10001, not 9999: sorted as text the prune would keep
	// 9999 as "newest" and remove 10001.
	removed, err := s.PruneSets("mail", 1, "9998")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{"10000"}) {
		t.Errorf("removed %v, want [10000]", removed)
	}
	if ids, _ := s.Sets("mail"); !slices.Equal(ids, []string{"9998", "9999", "10001"}) {
		t.Errorf("left %v", ids)
	}
}

func TestPruneSetsRefusesWhatIsNotDaneroll(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	installN(t, s, "mail", 4)
	if err := s.Switch("mail", "0004"); err != nil {
		t.Fatal(err)
	}
	adir := filepath.Join(dir, "archive", "mail")
	// A set directory others can write to is not daneroll's: the prune
	// stops there and removes nothing after it.
	if err := os.Chmod(filepath.Join(adir, "0002"), 0o777); err != nil {
		t.Fatal(err)
	}
	// A symlink named like a set is not a set: it is left alone, and so
	// is what it points to.
	outside := t.TempDir()
	keep := filepath.Join(outside, "privkey.pem")
	if err := os.WriteFile(keep, []byte("not daneroll's"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(adir, "0000")); err != nil {
		t.Fatal(err)
	}
	// What a prune killed half-way left is removed.
	leftover := filepath.Join(adir, prunePrefix+"0009")
	if err := os.MkdirAll(leftover, 0o700); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir) // nothing checked yet
	if err != nil {
		t.Fatal(err)
	}
	removed, err := s2.PruneSets("mail", 1)
	var ue *UntrustedError
	if !errors.As(err, &ue) || ue.Path != filepath.Join(adir, "0002") {
		t.Fatalf("err = %v, want the group-writable set refused", err)
	}
	if !slices.Equal(removed, []string{"0001"}) {
		t.Errorf("removed %v, want only the set before the refused one", removed)
	}
	for _, id := range []string{"0002", "0003", "0004"} {
		if _, err := os.Lstat(filepath.Join(adir, id)); err != nil {
			t.Errorf("set %s: %v", id, err)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a file behind a symlink was touched: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(adir, "0000")); err != nil {
		t.Errorf("the symlink was removed: %v", err)
	}
	if _, err := os.Lstat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover of an interrupted prune still there: %v", err)
	}
}

func TestPruneSetsBadName(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "..", "a/b"} {
		if _, err := s.PruneSets(name, 2); err == nil {
			t.Errorf("PruneSets(%q) accepted", name)
		}
	}
}
