package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// UntrustedError is a file or directory in the state directory that
// daneroll refuses to use: another user could have written it, or it is not
// what daneroll writes there (a symlink, a device, a file in a directory's
// place).
type UntrustedError struct {
	Path   string
	Reason string
	// Advice is the command that fixes it, when there is one.
	Advice string
}

func (e *UntrustedError) Error() string { return e.Path + ": " + e.Reason }

// Hint says how to fix it.
func (e *UntrustedError) Hint() string { return e.Advice }

// Limits on what is read from the state directory: far above anything
// daneroll writes, low enough that a planted file cannot exhaust memory.
const (
	maxStateFile = 16 << 20 // journals, accounts
	maxKeyFile   = 1 << 20  // keys, certificates, sets
)

// ownerOf returns the uid of fi's owner.
func ownerOf(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// trustDir checks that fi, the Lstat (or, for the state directory itself,
// Stat) of path, is a directory that only daneroll's user can change.
func trustDir(path string, fi fs.FileInfo) error {
	if fi.Mode()&fs.ModeSymlink != 0 {
		return &UntrustedError{Path: path, Reason: "is a symlink; daneroll does not follow links inside its state directory",
			Advice: "replace it with a directory or remove it"}
	}
	if !fi.IsDir() {
		return &UntrustedError{Path: path, Reason: "is not a directory", Advice: "move it away"}
	}
	return trustOwner(path, fi, 0o022, "writable by group or others")
}

// trustOwner checks that fi is owned by the effective user and has none of
// the permission bits in forbidden.
// effectiveUID is os.Geteuid, asked once: the checks ask for every file,
// and daneroll never changes its user.
var effectiveUID = sync.OnceValue(os.Geteuid)

func trustOwner(path string, fi fs.FileInfo, forbidden fs.FileMode, what string) error {
	euid := effectiveUID()
	if uid, ok := ownerOf(fi); ok && uid != euid {
		return &UntrustedError{Path: path,
			Reason: fmt.Sprintf("owned by uid %d, not by the user daneroll runs as (uid %d); refusing what another user could have written", uid, euid),
			Advice: fmt.Sprintf("check who put it there; if it is yours: chown %d %s", euid, path)}
	}
	if perm := fi.Mode().Perm(); perm&forbidden != 0 {
		return &UntrustedError{Path: path, Reason: fmt.Sprintf("%s (mode %04o)", what, perm),
			Advice: fmt.Sprintf("chmod %s %s", chmodFix(forbidden), path)}
	}
	return nil
}

func chmodFix(forbidden fs.FileMode) string {
	if forbidden == 0o077 {
		return "600"
	}
	return "go-w"
}

// readTrusted reads a regular file without following a symlink, after
// checking that it belongs to daneroll's user and has none of the
// permission bits in forbidden, and that it is at most limit bytes long.
func readTrusted(path string, forbidden fs.FileMode, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, &UntrustedError{Path: path, Reason: "is a symlink; daneroll does not follow links inside its state directory",
				Advice: "replace it with the file itself or remove it"}
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &UntrustedError{Path: path, Reason: "is not a regular file", Advice: "move it away"}
	}
	what := "writable by group or others"
	if forbidden == 0o077 {
		what = "readable or writable by group or others"
	}
	if err := trustOwner(path, fi, forbidden, what); err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, &UntrustedError{Path: path, Reason: fmt.Sprintf("is %d bytes, more than daneroll ever writes there (%d)", fi.Size(), limit)}
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, &UntrustedError{Path: path, Reason: fmt.Sprintf("grew beyond %d bytes while being read", limit)}
	}
	return data, nil
}

// ReadPrivate reads a private key file of daneroll's: it must be a regular
// file (not a symlink), owned by the effective user and readable by nobody
// else (mode 0600 or stricter).
func ReadPrivate(path string) ([]byte, error) {
	return readTrusted(path, 0o077, maxKeyFile)
}

// ReadState reads a file daneroll wrote into its state directory that is
// not secret (a journal, an account's registration): it must be a regular
// file owned by the effective user and not writable by others.
func ReadState(path string) ([]byte, error) {
	return readTrusted(path, 0o022, maxStateFile)
}

// setID matches the archive set IDs daneroll makes: "0001", "0002", …
var setID = regexp.MustCompile(`^[0-9]{1,9}$`)

// ValidSetID reports whether id is an archive set ID daneroll could have
// made. IDs read from the journal or a link go into paths: nothing else may.
func ValidSetID(id string) bool { return setID.MatchString(id) }

// SortSetIDs sorts valid set IDs numerically: "10000" comes after "9999".
func SortSetIDs(ids []string) {
	sort.Slice(ids, func(i, j int) bool {
		a, _ := strconv.Atoi(ids[i])
		b, _ := strconv.Atoi(ids[j])
		return a < b
	})
}

// NextSetID is the ID after the last of ids, sorted: "0001" for none.
func NextSetID(ids []string) string {
	next := 1
	if len(ids) > 0 {
		last, _ := strconv.Atoi(ids[len(ids)-1])
		next = last + 1
	}
	return fmt.Sprintf("%04d", next)
}

// CheckName refuses a certificate name that could leave its directory, or
// its etcd key.
func CheckName(name string) error { return validName(name) }

// validName keeps certificate names (checked by the configuration too) from
// ever leaving their directory.
func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return fmt.Errorf("bad certificate name %q", name)
	}
	return nil
}

// checkRoot checks the state directory itself, following a symlink to it
// (an operator may keep the state on another disk).
func checkRoot(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return &UntrustedError{Path: dir, Reason: "is not a directory", Advice: "set state_dir to a directory"}
	}
	return trustOwner(dir, fi, 0o022, "writable by group or others")
}

// createRoot makes a missing state directory 0700. Its missing parents are
// made 0755, like any system directory; existing ones are never changed.
func createRoot(dir string) error {
	var missing []string
	for d := dir; ; {
		_, err := os.Lstat(d)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		parent := filepath.Dir(d)
		if parent == d {
			break
		}
		d = parent
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		perm := fs.FileMode(0o755)
		if i == 0 {
			perm = 0o700
		}
		if err := os.Mkdir(d, perm); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		} else if err == nil {
			// Exactly the mode asked for, whatever the umask: daneroll
			// made this directory.
			if err := os.Chmod(d, perm); err != nil {
				return err
			}
		}
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// mkdirs makes sure STATE/rel exists as a chain of trusted directories,
// creating the missing ones 0700.
func (s *Store) mkdirs(rel string) error {
	return s.walkDirs(rel, true)
}

// checkDirs checks the existing directories of the chain STATE/rel,
// creating nothing. A missing directory is not an error: reading from it
// then finds nothing.
func (s *Store) checkDirs(rel string) error {
	return s.walkDirs(rel, false)
}

func (s *Store) walkDirs(rel string, create bool) error {
	if rel == "" || rel == "." {
		return nil
	}
	d := s.dir
	for _, part := range strings.Split(filepath.ToSlash(rel), "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("state directory: bad path %q", rel)
		}
		d = filepath.Join(d, part)
		if s.trusted(d) {
			continue
		}
		fi, err := os.Lstat(d)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			if err := syncDir(filepath.Dir(d)); err != nil {
				return err
			}
			if fi, err = os.Lstat(d); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil:
			return err
		}
		if err := trustDir(d, fi); err != nil {
			return err
		}
		s.markTrusted(d)
	}
	return nil
}

func (s *Store) trusted(dir string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checked[dir]
}

func (s *Store) markTrusted(dir string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.checked == nil {
		s.checked = map[string]bool{}
	}
	s.checked[dir] = true
}
