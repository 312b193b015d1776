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
			before := fileID(t, path)
			w.mustRenew(w.engine(nil), RenewOptions{}, "nothing")
			w.mustRenew(w.engine(nil), RenewOptions{}, "nothing")
			if after := fileID(t, path); after != before {
				t.Errorf("a run with nothing to do replaced the journal (%v → %v)", before, after)
			}
		})
	}
}

// fileID tells a file from its replacement: inode numbers are reused, a
// change time to the nanosecond is not.
func fileID(t *testing.T, path string) [3]int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return [3]int64{int64(st.Ino), st.Ctim.Sec, st.Ctim.Nsec}
}
