package rollover

import (
	"context"
	"crypto"
	"crypto/x509"
	"path/filepath"

	"github.com/daneroll/daneroll/store"
)

// Backend keeps the certificates' state: each one's journal, its key slots,
// its archive sets and which set is live. [Local] keeps them in state_dir;
// package etcdstore keeps a fleet's in etcd (docs/fleet.md).
//
// Every write for a certificate is made under its lock (LockCert); a
// backend may refuse a write whose lock it no longer holds.
type Backend interface {
	// LockShared is taken for a whole run that works certificate by
	// certificate, and excludes runs that need everything to themselves.
	LockShared() (store.Unlocker, error)
	// LockCert takes one certificate's lock; a lock another run holds is
	// a *store.LockedError.
	LockCert(ctx context.Context, name string) (store.Unlocker, error)
	// Fence fails when this run no longer holds name's lock: it comes
	// before each change that the backend cannot make conditional on the
	// lock itself (deleting a TLSA record). A local lock cannot be lost.
	Fence(name string) error

	// ReadJournal decodes name's journal into v and returns its bytes, or
	// nil when there is none.
	ReadJournal(name string, v any) ([]byte, error)
	// WriteJournal replaces name's journal.
	WriteJournal(name string, data []byte) error
	// JournalName says where the journal is, for messages.
	JournalName(name string) string

	// KeyStamp identifies what a key slot holds without reading it: the
	// same stamp means the same key. A missing key matches
	// os.ErrNotExist.
	KeyStamp(name, slot string) (store.Stamp, error)
	ReadPublicKey(name, slot string) (crypto.PublicKey, error)
	ReadKey(name, slot string) (crypto.Signer, error)
	WriteKey(name, slot string, key crypto.Signer) error
	RemoveKey(name, slot string) error
	// KeyName says where a key slot is, for messages.
	KeyName(name, slot string) string

	// Install archives a new set and returns its ID; Set reads one.
	Install(name string, set *store.Set) (string, error)
	Set(name, id string) (*store.Set, error)
	// PruneSets removes all but the newest keep sets, never those in
	// protect, and returns the IDs removed.
	PruneSets(name string, keep int, protect ...string) ([]string, error)

	// Switch makes set id the live one.
	Switch(name, id string) error
	// Live reads the live set (nil when none is); LiveLeaf only its
	// certificate; LiveStamp identifies it without reading it.
	Live(name string) (*store.Set, error)
	LiveLeaf(name string) (string, *x509.Certificate, error)
	LiveStamp(name string) (string, store.Stamp, error)
	// LiveName says where the services find the live set, for messages.
	LiveName(name string) string
}

// Local is the Backend of one host: state_dir.
type Local struct {
	*store.Store
}

var _ Backend = Local{}

func (l Local) LockShared() (store.Unlocker, error) { return l.Store.LockShared() }

func (l Local) LockCert(_ context.Context, name string) (store.Unlocker, error) {
	return l.Store.LockCert(name)
}

func (Local) Fence(string) error { return nil }

func (l Local) ReadJournal(name string, v any) ([]byte, error) {
	return l.ReadJSONBytes(store.JournalPath(name), v)
}

func (l Local) WriteJournal(name string, data []byte) error {
	return l.WriteBytes(store.JournalPath(name), data)
}

func (l Local) JournalName(name string) string {
	return filepath.Join(l.Dir(), store.JournalPath(name))
}

func (l Local) KeyName(name, slot string) string { return l.KeyPath(name, slot) }

func (l Local) LiveName(name string) string { return l.LiveDir(name) }
