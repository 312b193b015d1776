package rollover

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/daneroll/daneroll/store"
)

// A run with nothing to do rewrites no journal (it used to write each one,
// two fsyncs and a rename per certificate, on every run).
func TestNothingDueWritesNoJournal(t *testing.T) {
	for _, policy := range []string{"reuse", "rollover"} {
		t.Run(policy, func(t *testing.T) {
			w := newWorld(t, worldOptions{policy: policy})
			w.mustRenew(w.engine(nil), RenewOptions{}, "issued")
			path := filepath.Join(w.cfg.StateDir, store.JournalPath("mail"))
			before := inode(t, path)
			w.mustRenew(w.engine(nil), RenewOptions{}, "nothing")
			w.mustRenew(w.engine(nil), RenewOptions{}, "nothing")
			if after := inode(t, path); after != before {
				t.Errorf("a run with nothing to do replaced the journal (inode %d → %d)", before, after)
			}
		})
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}
