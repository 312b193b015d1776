package store

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Store is a state directory.
//
// Everything daneroll reads from it must have been written by daneroll's
// own user: the state directory and every directory below it must be owned
// by the effective user and not writable by group or others, keys must be
// 0600 and owned by the user, links and set IDs must be the ones daneroll
// makes. Anything else is refused with an [*UntrustedError] naming the path.
type Store struct {
	dir string
	now func() time.Time

	mu sync.Mutex // guards checked
	// checked holds the directories found trustworthy, so that each is
	// looked at once per process.
	checked map[string]bool
}

// Open prepares the state directory dir. A missing one is created 0700 (its
// missing parents 0755); an existing one is never changed, only checked.
func Open(dir string) (*Store, error) {
	if !filepath.IsAbs(dir) {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, err
		}
		dir = abs
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := createRoot(dir); err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
	}
	if err := checkRoot(dir); err != nil {
		return nil, stateDirError(err)
	}
	return &Store{dir: dir, now: time.Now}, nil
}

func stateDirError(err error) error {
	var ue *UntrustedError
	if errors.As(err, &ue) {
		return &UntrustedError{Path: ue.Path, Reason: "state directory " + ue.Reason, Advice: ue.Advice}
	}
	return fmt.Errorf("state directory: %w", err)
}

// OpenReadOnly opens an existing state directory without creating
// anything, for commands that only look (status).
//
// A missing directory is not an error: nothing has run yet, and a store
// that holds nothing says so.
func OpenReadOnly(dir string) (*Store, error) {
	if !filepath.IsAbs(dir) {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, err
		}
		dir = abs
	}
	if err := checkRoot(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, stateDirError(err)
	}
	return &Store{dir: dir, now: time.Now}, nil
}

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(parts ...string) string {
	return filepath.Join(append([]string{s.dir}, parts...)...)
}

// Key slots.
const (
	Current = "current"
	Next    = "next"
)

// KeyPath returns the file of a key slot.
func (s *Store) KeyPath(name, slot string) string {
	return s.path("keys", name, slot+".pem")
}

// readKeyFile reads a key slot's file, after checking the name and the
// directories on the way.
func (s *Store) readKeyFile(name, slot string) ([]byte, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if err := s.checkDirs(filepath.Join("keys", name)); err != nil {
		return nil, err
	}
	return ReadPrivate(s.KeyPath(name, slot))
}

// ReadKey reads a key slot. A missing key gives an error that matches
// os.ErrNotExist; a key file that is a symlink, is not owned by the
// effective user or is readable by others is refused.
func (s *Store) ReadKey(name, slot string) (crypto.Signer, error) {
	data, err := s.readKeyFile(name, slot)
	if err != nil {
		return nil, err
	}
	key, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.KeyPath(name, slot), err)
	}
	return key, nil
}

// WriteKey stores key in a slot, 0600 in a 0700 directory.
func (s *Store) WriteKey(name, slot string, key crypto.Signer) error {
	data, err := EncodeKey(key)
	if err != nil {
		return err
	}
	if err := validName(name); err != nil {
		return err
	}
	if err := s.mkdirs(filepath.Join("keys", name)); err != nil {
		return err
	}
	return WriteFile(s.KeyPath(name, slot), data, 0o600)
}

// RemoveKey deletes a key slot; a missing slot is not an error.
func (s *Store) RemoveKey(name, slot string) error {
	if err := s.checkDirs(filepath.Join("keys", name)); err != nil {
		return err
	}
	err := os.Remove(s.KeyPath(name, slot))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return syncDir(s.path("keys", name))
}

// EncodeKey writes a private key as PKCS #8 PEM.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey reads the first private key of a PEM file: PKCS #8, PKCS #1
// (RSA) or SEC 1 (EC), the forms certbot and openssl write.
func ParseKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no private key in PEM data")
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", strings.ToLower(b.Type), err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		}
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
}

// Set is one certificate set: a key and the certificate issued for it.
type Set struct {
	ID    string // the archive directory name, "0001", "0002", …
	Key   []byte // PEM private key
	Cert  []byte // PEM leaf certificate
	Chain []byte // PEM issuer certificates, leaf's issuer first
}

// CheckSet checks that a set's key parses and its certificate is for that
// key.
func CheckSet(set *Set) error {
	key, err := ParseKey(set.Key)
	if err != nil {
		return err
	}
	leaf, err := set.Leaf()
	if err != nil {
		return err
	}
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return errors.New("the certificate is not for the key")
	}
	return nil
}

// FullChain is the leaf followed by the chain.
func (s *Set) FullChain() []byte {
	return append(append([]byte{}, s.Cert...), s.Chain...)
}

// Leaf parses the leaf certificate.
func (s *Set) Leaf() (*x509.Certificate, error) {
	b, _ := pem.Decode(s.Cert)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no certificate in cert.pem")
	}
	return x509.ParseCertificate(b.Bytes)
}

// Certificates parses the full chain, leaf first.
func (s *Set) Certificates() ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := s.FullChain(); ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificates in set")
	}
	return out, nil
}

// The files of a set.
const (
	FilePrivKey   = "privkey.pem"
	FileCert      = "cert.pem"
	FileChain     = "chain.pem"
	FileFullChain = "fullchain.pem"
	FileCombined  = "combined.pem"
)

// LiveDir is the path services are configured with: STATE/live/NAME.
func (s *Store) LiveDir(name string) string { return s.path("live", name) }

func (s *Store) archiveDir(name string) string { return s.path("archive", name) }

// Install writes set into the archive under a new ID and returns it; it does
// not change what is live. The set appears complete or not at all.
func (s *Store) Install(name string, set *Set) (string, error) {
	if err := CheckSet(set); err != nil {
		return "", fmt.Errorf("install %s: %w", name, err)
	}
	if err := validName(name); err != nil {
		return "", err
	}
	adir := s.archiveDir(name)
	if err := s.mkdirs(filepath.Join("archive", name)); err != nil {
		return "", err
	}
	removeLeftovers(adir)
	ids, err := s.Sets(name)
	if err != nil {
		return "", err
	}
	id := NextSetID(ids)
	tmp, err := os.MkdirTemp(adir, ".new-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{FilePrivKey, set.Key, 0o600},
		{FileCert, set.Cert, 0o644},
		{FileChain, set.Chain, 0o644},
		{FileFullChain, set.FullChain(), 0o644},
		{FileCombined, append(append([]byte{}, set.Key...), set.FullChain()...), 0o600},
	}
	for _, f := range files {
		if err := WriteFile(filepath.Join(tmp, f.name), f.data, f.perm); err != nil {
			return "", err
		}
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, filepath.Join(adir, id)); err != nil {
		return "", fmt.Errorf("install %s: %w", name, err)
	}
	if err := syncDir(adir); err != nil {
		return "", err
	}
	set.ID = id
	return id, nil
}

// Sets lists the archived set IDs of name, oldest first.
func (s *Store) Sets(name string) ([]string, error) {
	if err := s.checkDirs(filepath.Join("archive", name)); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(s.archiveDir(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if ValidSetID(e.Name()) && e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	SortSetIDs(ids)
	return ids, nil
}

// Prefixes of the temporary directories in STATE/archive/NAME: a set being
// installed, and a set being removed.
const (
	installPrefix = ".new-"
	prunePrefix   = ".pruned-"
)

// removeLeftovers removes what an install or a prune killed half-way left
// in an archive directory: both hold private keys.
func removeLeftovers(adir string) {
	for _, prefix := range []string{installPrefix, prunePrefix} {
		stale, _ := filepath.Glob(filepath.Join(adir, prefix+"*"))
		for _, d := range stale {
			_ = os.RemoveAll(d)
		}
	}
}

// PruneSets removes the archived sets of name other than the newest keep
// and the protected ones, and returns the IDs it removed, oldest first.
// The live set is always protected; so should the caller protect the set
// a rollback would switch back to and any set a pending transaction names.
// keep < 1 keeps every set.
//
// Each set directory is renamed out of the archive's name space before its
// files go, and the rename is synced: a set is there completely or not at
// all, even when the removal is killed half-way. A set whose directory is
// not daneroll's (see [Store]) is refused, and nothing after it removed.
func (s *Store) PruneSets(name string, keep int, protect ...string) ([]string, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if keep < 1 {
		return nil, nil
	}
	ids, err := s.Sets(name)
	if err != nil || len(ids) <= keep {
		return nil, err
	}
	live, err := s.LiveID(name)
	if err != nil {
		return nil, fmt.Errorf("prune %s: %w", name, err)
	}
	keepIDs := map[string]bool{live: true}
	for _, id := range protect {
		keepIDs[id] = true
	}
	for _, id := range ids[len(ids)-keep:] {
		keepIDs[id] = true
	}
	adir := s.archiveDir(name)
	removeLeftovers(adir)
	var removed []string
	for _, id := range ids {
		if keepIDs[id] {
			continue
		}
		rel := filepath.Join("archive", name, id)
		if err := s.checkDirs(rel); err != nil {
			return removed, fmt.Errorf("prune %s: %w", name, err)
		}
		tmp := filepath.Join(adir, prunePrefix+id)
		if err := os.Rename(s.path(rel), tmp); err != nil {
			return removed, fmt.Errorf("prune %s: %w", name, err)
		}
		if err := syncDir(adir); err != nil {
			return removed, fmt.Errorf("prune %s: %w", name, err)
		}
		s.forget(s.path(rel))
		removed = append(removed, id)
		if err := os.RemoveAll(tmp); err != nil {
			return removed, fmt.Errorf("prune %s: set %s: %w", name, id, err)
		}
	}
	if len(removed) > 0 {
		if err := syncDir(adir); err != nil {
			return removed, fmt.Errorf("prune %s: %w", name, err)
		}
	}
	return removed, nil
}

// forget drops a removed directory from the ones found trustworthy: whatever
// appears at its path later is checked afresh.
func (s *Store) forget(dir string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.checked, dir)
}

// Switch makes the archived set id live for name in one atomic step: the
// symlink STATE/live/NAME is replaced by rename.
func (s *Store) Switch(name, id string) error {
	if err := validName(name); err != nil {
		return err
	}
	if !ValidSetID(id) {
		return fmt.Errorf("switch %s: %q is not a set ID", name, id)
	}
	if err := s.checkDirs(filepath.Join("archive", name, id)); err != nil {
		return err
	}
	if _, err := os.Lstat(filepath.Join(s.archiveDir(name), id, FileFullChain)); err != nil {
		return fmt.Errorf("switch %s to set %s: %w", name, id, err)
	}
	ldir := s.path("live")
	if err := s.mkdirs("live"); err != nil {
		return err
	}
	live := s.LiveDir(name)
	if fi, err := os.Lstat(live); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("switch %s: %s is not a symlink daneroll made; move it away", name, live)
	}
	tmp := filepath.Join(ldir, "."+name+".new")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Join("..", "archive", name, id), tmp); err != nil {
		return fmt.Errorf("switch %s: %w", name, err)
	}
	if err := os.Rename(tmp, live); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("switch %s: %w", name, err)
	}
	return syncDir(ldir)
}

// LiveID returns the ID of the live set, or "" when none is live. The link
// must be exactly the one Switch makes, ../archive/NAME/ID: a link anywhere
// else would make daneroll protect, and report, a key it does not serve.
func (s *Store) LiveID(name string) (string, error) {
	if err := validName(name); err != nil {
		return "", err
	}
	if err := s.checkDirs("live"); err != nil {
		return "", err
	}
	live := s.LiveDir(name)
	fi, err := os.Lstat(live)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if fi.Mode()&os.ModeSymlink == 0 {
		return "", &UntrustedError{Path: live, Reason: "is not the symlink daneroll makes", Advice: "move it away; daneroll switches sets by replacing a symlink"}
	}
	if err := trustOwner(live, fi, 0, ""); err != nil {
		return "", err
	}
	target, err := os.Readlink(live)
	if err != nil {
		return "", err
	}
	prefix := "../archive/" + name + "/"
	id, ok := strings.CutPrefix(target, prefix)
	if !ok || !ValidSetID(id) {
		return "", &UntrustedError{Path: live, Reason: fmt.Sprintf("points to %q, not to %sNNNN as daneroll links it", target, prefix),
			Advice: "check what changed it; daneroll renew --force re-links it to a set of its own"}
	}
	return id, nil
}

// Live reads the live set, or returns (nil, nil) when there is none. The
// files are read through one directory handle, so a concurrent switch
// cannot mix two sets.
func (s *Store) Live(name string) (*Set, error) {
	id, err := s.LiveID(name)
	if err != nil || id == "" {
		return nil, err
	}
	return s.Set(name, id)
}

// LiveLeaf returns the ID and the leaf certificate of the live set, reading
// nothing else (not its key): ("", nil, nil) when none is live.
func (s *Store) LiveLeaf(name string) (string, *x509.Certificate, error) {
	id, err := s.LiveID(name)
	if err != nil || id == "" {
		return "", nil, err
	}
	rel := filepath.Join("archive", name, id)
	if err := s.checkDirs(rel); err != nil {
		return "", nil, err
	}
	data, err := readTrusted(s.path(rel, FileCert), 0o022, maxKeyFile)
	if err != nil {
		return "", nil, fmt.Errorf("set %s/%s: %w", name, id, err)
	}
	leaf, err := (&Set{Cert: data}).Leaf()
	if err != nil {
		return "", nil, fmt.Errorf("set %s/%s: %w", name, id, err)
	}
	return id, leaf, nil
}

// Set reads an archived set. Its directory and files must be daneroll's
// (see [Store]); the key file must be private.
func (s *Store) Set(name, id string) (*Set, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if !ValidSetID(id) {
		return nil, fmt.Errorf("set %s/%q: not a set ID", name, id)
	}
	rel := filepath.Join("archive", name, id)
	if err := s.checkDirs(rel); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(s.path(rel)); err != nil {
		return nil, fmt.Errorf("set %s/%s: %w", name, id, err)
	}
	set := &Set{ID: id}
	for _, f := range []struct {
		name      string
		dst       *[]byte
		forbidden os.FileMode
	}{{FilePrivKey, &set.Key, 0o077}, {FileCert, &set.Cert, 0o022}, {FileChain, &set.Chain, 0o022}} {
		data, err := readTrusted(s.path(rel, f.name), f.forbidden, maxKeyFile)
		if err != nil {
			return nil, fmt.Errorf("set %s/%s: %w", name, id, err)
		}
		*f.dst = data
	}
	return set, nil
}

// ReadJSON reads STATE/rel into v; it reports false when the file does not
// exist. The file must be daneroll's (see [Store]) and of a sane size.
func (s *Store) ReadJSON(rel string, v any) (bool, error) {
	data, err := s.ReadJSONBytes(rel, v)
	return data != nil, err
}

// ReadJSONBytes is ReadJSON that also returns the file's bytes (nil when it
// does not exist), for a caller that writes only what changed (see
// EncodeJSON).
func (s *Store) ReadJSONBytes(rel string, v any) ([]byte, error) {
	if err := s.checkDirs(filepath.Dir(rel)); err != nil {
		return nil, err
	}
	data, err := readTrusted(s.path(rel), 0o022, maxStateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("%s: %w", s.path(rel), err)
	}
	return data, nil
}

// EncodeJSON is what WriteJSON writes for v: one line of JSON (`jq .` shows
// it indented). Not indented on disk: a run that changes nothing encodes
// every certificate's journal to see that it changed nothing, and indenting
// was most of that.
func EncodeJSON(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// WriteJSON writes v to STATE/rel atomically (0600, directories 0700).
func (s *Store) WriteJSON(rel string, v any) error {
	data, err := EncodeJSON(v)
	if err != nil {
		return err
	}
	return s.WriteBytes(rel, data)
}

// WriteBytes writes data to STATE/rel atomically (0600, directories 0700).
func (s *Store) WriteBytes(rel string, data []byte) error {
	if err := s.mkdirs(filepath.Dir(rel)); err != nil {
		return err
	}
	return WriteFile(s.path(rel), data, 0o600)
}

// Remove deletes STATE/rel durably; a missing file is not an error.
func (s *Store) Remove(rel string) error {
	if err := s.checkDirs(filepath.Dir(rel)); err != nil {
		return err
	}
	err := os.Remove(s.path(rel))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(s.path(rel)))
}

// JournalPath is the journal file of a certificate, relative to the state
// directory.
func JournalPath(name string) string { return filepath.Join("journal", name+".json") }

// AccountDir returns the directory of the ACME account for a directory URL
// and e-mail address, creating it 0700.
func (s *Store) AccountDir(directory, email string) (string, error) {
	host := directory
	if u, err := url.Parse(directory); err == nil && u.Host != "" {
		host = strings.ReplaceAll(u.Host, ":", "_")
	}
	if email == "" {
		email = "default"
	}
	rel := filepath.Join("accounts", pathElem(host), pathElem(email))
	if err := s.mkdirs(rel); err != nil {
		return "", err
	}
	return s.path(rel), nil
}

// pathElem makes s one harmless path element.
func pathElem(s string) string {
	e := url.PathEscape(s)
	if e == "." || e == ".." {
		e = strings.ReplaceAll(e, ".", "%2E")
	}
	return e
}
