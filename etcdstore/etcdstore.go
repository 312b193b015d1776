// Package etcdstore keeps a fleet's certificate state in etcd: the
// [rollover.Backend] of fleet mode, and the members and reports that the
// agents on every host write and a deploy waits for.
//
// # Layout
//
// Under the prefix, for certificate NAME (docs/fleet.md):
//
//	certs/NAME/journal        the journal (JSON)
//	certs/NAME/keys/SLOT      a key slot, sealed to the fleet key
//	certs/NAME/sets/ID        an archive set (JSON; its key sealed)
//	certs/NAME/live           the ID of the set the fleet serves
//	certs/NAME/lock/…         etcd's lock, on this process's lease
//	certs/NAME/holder         who holds the lock (on the same lease)
//	certs/NAME/members/HOST   a member serving NAME
//	certs/NAME/reports/HOST   what that member serves
//	hosts/HOST/alive          present while HOST's agent runs
//
// # Fencing
//
// Every write for a certificate is one etcd transaction that succeeds only
// while this process still owns the certificate's lock. A process whose
// lease expired (killed, frozen, cut off for longer than the lock's TTL)
// gets a [*LostLockError] and can change nothing more.
//
// # Trust
//
// What is in etcd was written by other members, or by whoever else can
// write there: sealed keys unseal only at the key they were sealed for,
// a set's certificate must be for its key, sizes are bounded, and the
// journal is validated by its reader as a local one is.
package etcdstore

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/daneroll/daneroll/fleetkey"
	"github.com/daneroll/daneroll/store"
)

// Options open a Store.
type Options struct {
	// Endpoints are etcd's client URLs.
	Endpoints []string
	// TLS authenticates etcd's servers and this member to them; nil for
	// plain http (loopback only, the configuration says).
	TLS *tls.Config
	// Prefix starts every key: "/daneroll/".
	Prefix string
	// Key seals private keys.
	Key *fleetkey.Key
	// Host is this member's name.
	Host string
	// LockTTL is the lease of this process's locks.
	LockTTL time.Duration
	// Timeout bounds each request to etcd; default 10 s.
	Timeout time.Duration
	Logger  *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Limits on what is read from etcd.
const (
	// etcd refuses requests over 1.5 MiB (--max-request-bytes).
	maxJournal = 1 << 20
	maxSet     = 1 << 20
	maxRecord  = 64 << 10
)

// Store is a fleet's state in etcd.
type Store struct {
	cli     *client
	prefix  string
	key     *fleetkey.Key
	host    string
	lockTTL time.Duration
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time

	sessMu sync.Mutex // guards sess
	// sess holds the lease of this process's locks and liveness key,
	// made on first use.
	sess *session

	locksMu sync.Mutex // guards locks
	// locks are the certificates' locks this process holds, by name.
	locks map[string]*mutex
}

// Open connects to etcd and checks that it answers.
func Open(ctx context.Context, o Options) (*Store, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	if o.Key == nil {
		return nil, errors.New("etcd: no fleet key")
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.LockTTL < time.Second {
		o.LockTTL = 15 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Store{cli: newClient(o.Endpoints, o.TLS, o.Timeout), prefix: o.Prefix, key: o.Key, host: o.Host,
		lockTTL: o.LockTTL, timeout: o.Timeout, log: o.Logger, now: o.Now, locks: map[string]*mutex{}}
	// One read proves the endpoints, the TLS and the permissions.
	cctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if _, err := s.cli.count(cctx, s.prefix+"hosts/"); err != nil {
		s.cli.close()
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(o.Endpoints, ", "), err)
	}
	return s, nil
}

// Close gives up this process's locks (by revoking its lease) and
// disconnects.
func (s *Store) Close() error {
	s.sessMu.Lock()
	sess := s.sess
	s.sess = nil
	s.sessMu.Unlock()
	var err error
	if sess != nil {
		err = sess.close(s.cli, s.timeout)
	}
	s.cli.close()
	return err
}

// Host is this member's name.
func (s *Store) Host() string { return s.host }

func (s *Store) certKey(name string, parts ...string) string {
	return s.prefix + "certs/" + name + "/" + strings.Join(parts, "/")
}

func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.timeout)
}

// session is this process's lease, kept alive while it runs.
func (s *Store) session() (*session, error) {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.sess != nil {
		if s.sess.alive() {
			return s.sess, nil
		}
		// The lease expired: whatever was held on it is gone.
		s.sess = nil
	}
	sess, err := newSession(s.cli, s.lockTTL, s.timeout)
	if err != nil {
		return nil, err
	}
	s.sess = sess
	return sess, nil
}

// LostLockError is a write refused because this process no longer owns
// the certificate's lock.
type LostLockError struct {
	Name string
}

func (e *LostLockError) Error() string {
	return fmt.Sprintf("etcd: lost the lock of certificate %s (this run was stopped or cut off from etcd for longer than lock_ttl, and another may have taken over): it changes nothing more", e.Name)
}

type holder struct {
	Host  string    `json:"host"`
	PID   int       `json:"pid"`
	Since time.Time `json:"since"`
}

// LockShared is nothing in etcd: runs exclude each other certificate by
// certificate.
func (s *Store) LockShared() (store.Unlocker, error) { return nopUnlocker{}, nil }

type nopUnlocker struct{}

func (nopUnlocker) Unlock() error { return nil }

// LockCert takes certificate name's lock. A lock held by a process that
// died is free when its lease expires: LockCert waits that long (the lock's
// TTL) for it, and no longer; a lock still held then is a
// *store.LockedError naming the holder.
func (s *Store) LockCert(ctx context.Context, name string) (store.Unlocker, error) {
	if err := store.CheckName(name); err != nil {
		return nil, err
	}
	sess, err := s.session()
	if err != nil {
		return nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, s.timeout)
	m, won, err := s.tryLock(tctx, s.certKey(name, "lock")+"/", sess)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("etcd: lock %s: %w", name, err)
	}
	// A holder that died frees the lock when its lease expires.
	deadline := time.Now().Add(s.lockTTL + 2*time.Second)
	for !won {
		if time.Now().After(deadline) {
			le := s.lockedError(name)
			rctx, cancel := s.ctx()
			_ = s.release(rctx, m)
			cancel()
			return nil, le
		}
		select {
		case <-ctx.Done():
			rctx, cancel := s.ctx()
			_ = s.release(rctx, m)
			cancel()
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		tctx, cancel := context.WithTimeout(ctx, s.timeout)
		won, err = s.first(tctx, m)
		cancel()
		if err != nil {
			// Take the key out of the queue (when the lease still
			// holds it): left there, it would take the lock when the
			// holder lets go, for nobody, until this process ends.
			rctx, cancel := s.ctx()
			_ = s.release(rctx, m)
			cancel()
			return nil, fmt.Errorf("etcd: lock %s: %w", name, err)
		}
	}
	s.locksMu.Lock()
	s.locks[name] = m
	s.locksMu.Unlock()
	h, _ := json.Marshal(holder{Host: s.host, PID: os.Getpid(), Since: s.now().UTC()})
	if err := s.write(name, nil, opPut(s.certKey(name, "holder"), h, sess.id)); err != nil {
		s.unlock(name, m)
		return nil, err
	}
	return unlocker(func() error { return s.unlock(name, m) }), nil
}

type unlocker func() error

func (u unlocker) Unlock() error { return u() }

func (s *Store) unlock(name string, m *mutex) error {
	s.locksMu.Lock()
	if s.locks[name] == m {
		delete(s.locks, name)
	}
	s.locksMu.Unlock()
	ctx, cancel := s.ctx()
	defer cancel()
	// The holder record goes with the lock, in one transaction that only
	// an owner can make.
	if err := s.release(ctx, m, s.certKey(name, "holder")); err != nil {
		return fmt.Errorf("etcd: unlock %s: %w", name, err)
	}
	return nil
}

func (s *Store) lockedError(name string) error {
	le := &store.LockedError{Path: s.certKey(name, "lock")}
	ctx, cancel := s.ctx()
	defer cancel()
	if kv, err := s.cli.get(ctx, s.certKey(name, "holder")); err == nil && kv != nil && len(kv.Value) <= maxRecord {
		var h holder
		if json.Unmarshal(kv.Value, &h) == nil {
			le.Host, le.PID, le.Since = h.Host, h.PID, h.Since
		}
	}
	return le
}

// write commits ops for certificate name if this process still owns its
// lock and every cmp holds. A failed cmp is errConflict.
func (s *Store) write(name string, cmps []cmp, ops ...op) error {
	s.locksMu.Lock()
	m := s.locks[name]
	s.locksMu.Unlock()
	if m == nil {
		return fmt.Errorf("etcd: %s: written without its lock", name)
	}
	if !m.sess.alive() {
		return &LostLockError{Name: name}
	}
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.txn(ctx, append([]cmp{m.owns()}, cmps...), ops, []op{opGet(m.key)})
	if err != nil {
		return fmt.Errorf("etcd: %s: %w", name, err)
	}
	if resp.Succeeded {
		return nil
	}
	if len(resp.Responses) != 1 || resp.Responses[0].Range == nil {
		return fmt.Errorf("etcd: %s: an answer without the lock's key", name)
	}
	if kvs := resp.Responses[0].Range.Kvs; len(kvs) != 1 || int64(kvs[0].CreateRevision) != m.rev {
		return &LostLockError{Name: name}
	}
	return errConflict
}

// Fence fails with *LostLockError when this process no longer holds
// certificate name's lock: a write of nothing, fenced like every write.
func (s *Store) Fence(name string) error { return s.write(name, nil) }

var errConflict = errors.New("etcd: changed by someone else")

// get reads one key: nil, 0 when it does not exist.
func (s *Store) get(key string, limit int) ([]byte, int64, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	kv, err := s.cli.get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("etcd: %s: %w", key, err)
	}
	if kv == nil {
		return nil, 0, nil
	}
	if len(kv.Value) > limit {
		return nil, 0, fmt.Errorf("etcd: %s: %d bytes, more than daneroll ever writes there (%d)", key, len(kv.Value), limit)
	}
	if kv.Value == nil {
		kv.Value = []byte{}
	}
	return kv.Value, int64(kv.ModRevision), nil
}

// ReadJournal decodes certificate name's journal into v.
func (s *Store) ReadJournal(name string, v any) ([]byte, error) {
	if err := store.CheckName(name); err != nil {
		return nil, err
	}
	data, _, err := s.get(s.certKey(name, "journal"), maxJournal)
	if err != nil || data == nil {
		return nil, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("%s: %w", s.JournalName(name), err)
	}
	return data, nil
}

// WriteJournal replaces certificate name's journal.
func (s *Store) WriteJournal(name string, data []byte) error {
	if len(data) > maxJournal {
		return fmt.Errorf("%s: journal of %d bytes", name, len(data))
	}
	return s.write(name, nil, opPut(s.certKey(name, "journal"), data, 0))
}

// JournalName is the journal's key.
func (s *Store) JournalName(name string) string { return s.certKey(name, "journal") }

// KeyName is a key slot's key.
func (s *Store) KeyName(name, slot string) string { return s.certKey(name, "keys", slot) }

// LiveName says where this host's services find the live set: its
// agent installs it in state_dir.
func (s *Store) LiveName(name string) string {
	return s.certKey(name, "live") + " (each member's agent installs it in its state_dir/live/" + name + ")"
}

func checkSlot(slot string) error {
	if slot != store.Current && slot != store.Next {
		return fmt.Errorf("bad key slot %q", slot)
	}
	return nil
}

// KeyStamp identifies what a key slot holds by its etcd revision.
func (s *Store) KeyStamp(name, slot string) (store.Stamp, error) {
	if err := errors.Join(store.CheckName(name), checkSlot(slot)); err != nil {
		return store.Stamp{}, err
	}
	data, rev, err := s.get(s.KeyName(name, slot), maxRecord)
	if err != nil {
		return store.Stamp{}, err
	}
	if data == nil {
		return store.Stamp{}, &fs.PathError{Op: "read", Path: s.KeyName(name, slot), Err: fs.ErrNotExist}
	}
	return store.Stamp{Ino: uint64(rev), Size: int64(len(data))}, nil
}

// ReadKey unseals a key slot.
func (s *Store) ReadKey(name, slot string) (crypto.Signer, error) {
	if err := errors.Join(store.CheckName(name), checkSlot(slot)); err != nil {
		return nil, err
	}
	k := s.KeyName(name, slot)
	data, _, err := s.get(k, maxRecord)
	if err != nil {
		return nil, err
	}
	if data == nil {
		return nil, &fs.PathError{Op: "read", Path: k, Err: fs.ErrNotExist}
	}
	pemKey, err := s.key.Open(k, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	key, err := store.ParseKey(pemKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	return key, nil
}

// ReadPublicKey is ReadKey's public half.
func (s *Store) ReadPublicKey(name, slot string) (crypto.PublicKey, error) {
	key, err := s.ReadKey(name, slot)
	if err != nil {
		return nil, err
	}
	return key.Public(), nil
}

// WriteKey seals key into a slot.
func (s *Store) WriteKey(name, slot string, key crypto.Signer) error {
	if err := errors.Join(store.CheckName(name), checkSlot(slot)); err != nil {
		return err
	}
	pemKey, err := store.EncodeKey(key)
	if err != nil {
		return err
	}
	k := s.KeyName(name, slot)
	sealed, err := s.key.Seal(k, pemKey)
	if err != nil {
		return err
	}
	return s.write(name, nil, opPut(k, sealed, 0))
}

// RemoveKey empties a slot.
func (s *Store) RemoveKey(name, slot string) error {
	if err := errors.Join(store.CheckName(name), checkSlot(slot)); err != nil {
		return err
	}
	return s.write(name, nil, opDelete(s.KeyName(name, slot)))
}

// setRecord is an archive set in etcd.
type setRecord struct {
	Cert  string `json:"cert"`
	Chain string `json:"chain"`
	// Key is sealed.
	Key []byte `json:"key"`
}

func (s *Store) setKey(name, id string) string { return s.certKey(name, "sets", id) }

// Sets lists the IDs of certificate name's sets, oldest first.
func (s *Store) Sets(name string) ([]string, error) {
	if err := store.CheckName(name); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	pfx := s.certKey(name, "sets") + "/"
	kvs, err := s.cli.list(ctx, pfx, true)
	if err != nil {
		return nil, fmt.Errorf("etcd: %s: %w", pfx, err)
	}
	var ids []string
	for _, kv := range kvs {
		if id := strings.TrimPrefix(string(kv.Key), pfx); store.ValidSetID(id) {
			ids = append(ids, id)
		}
	}
	store.SortSetIDs(ids)
	return ids, nil
}

// Install archives a new set, its key sealed, and returns its ID.
func (s *Store) Install(name string, set *store.Set) (string, error) {
	if err := store.CheckSet(set); err != nil {
		return "", fmt.Errorf("install %s: %w", name, err)
	}
	for range 5 {
		ids, err := s.Sets(name)
		if err != nil {
			return "", err
		}
		id := store.NextSetID(ids)
		k := s.setKey(name, id)
		sealed, err := s.key.Seal(k, set.Key)
		if err != nil {
			return "", err
		}
		rec, err := json.Marshal(setRecord{Cert: string(set.Cert), Chain: string(set.Chain), Key: sealed})
		if err != nil {
			return "", err
		}
		if len(rec) > maxSet {
			return "", fmt.Errorf("install %s: a set of %d bytes", name, len(rec))
		}
		err = s.write(name, []cmp{createdAt(k, 0)}, opPut(k, rec, 0))
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return "", err
		}
		return id, nil
	}
	return "", fmt.Errorf("install %s: the set IDs keep changing under this run", name)
}

// Set reads an archived set and unseals its key.
func (s *Store) Set(name, id string) (*store.Set, error) {
	if err := store.CheckName(name); err != nil {
		return nil, err
	}
	if !store.ValidSetID(id) {
		return nil, fmt.Errorf("set %s/%q: not a set ID", name, id)
	}
	set, _, err := s.readSet(name, id)
	return set, err
}

func (s *Store) readSet(name, id string) (*store.Set, int64, error) {
	k := s.setKey(name, id)
	data, rev, err := s.get(k, maxSet)
	if err != nil {
		return nil, 0, err
	}
	if data == nil {
		return nil, 0, &fs.PathError{Op: "read", Path: k, Err: fs.ErrNotExist}
	}
	var rec setRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", k, err)
	}
	pemKey, err := s.key.Open(k, rec.Key)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", k, err)
	}
	set := &store.Set{ID: id, Key: pemKey, Cert: []byte(rec.Cert), Chain: []byte(rec.Chain)}
	if err := store.CheckSet(set); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", k, err)
	}
	return set, rev, nil
}

// PruneSets removes all but the newest keep sets and those in protect.
func (s *Store) PruneSets(name string, keep int, protect ...string) ([]string, error) {
	if keep <= 0 {
		return nil, nil
	}
	ids, err := s.Sets(name)
	if err != nil {
		return nil, err
	}
	var removed []string
	for i, id := range ids {
		if i >= len(ids)-keep || slices.Contains(protect, id) {
			continue
		}
		if err := s.write(name, nil, opDelete(s.setKey(name, id))); err != nil {
			return removed, err
		}
		removed = append(removed, id)
	}
	return removed, nil
}

// Switch makes set id the one the fleet serves: the agents install it.
func (s *Store) Switch(name, id string) error {
	if err := store.CheckName(name); err != nil {
		return err
	}
	if !store.ValidSetID(id) {
		return fmt.Errorf("switch %s: %q is not a set ID", name, id)
	}
	err := s.write(name, []cmp{exists(s.setKey(name, id))}, opPut(s.certKey(name, "live"), []byte(id), 0))
	if errors.Is(err, errConflict) {
		return fmt.Errorf("switch %s: no set %s", name, id)
	}
	return err
}

// LiveRevision returns the live set's ID and the revision of the write
// that made it live ("", 0 when none is).
func (s *Store) LiveRevision(name string) (string, int64, error) {
	if err := store.CheckName(name); err != nil {
		return "", 0, err
	}
	data, rev, err := s.get(s.certKey(name, "live"), 64)
	if err != nil || data == nil {
		return "", 0, err
	}
	id := string(data)
	if !store.ValidSetID(id) {
		return "", 0, fmt.Errorf("%s: %q is not a set ID", s.certKey(name, "live"), id)
	}
	return id, rev, nil
}

// Live reads the set the fleet serves (nil when none is).
func (s *Store) Live(name string) (*store.Set, error) {
	id, _, err := s.LiveRevision(name)
	if err != nil || id == "" {
		return nil, err
	}
	return s.Set(name, id)
}

// LiveLeaf is the live set's ID and certificate.
func (s *Store) LiveLeaf(name string) (string, *x509.Certificate, error) {
	set, err := s.Live(name)
	if err != nil || set == nil {
		return "", nil, err
	}
	leaf, err := set.Leaf()
	return set.ID, leaf, err
}

// LiveStamp identifies the live set by the revisions of live and of the
// set.
func (s *Store) LiveStamp(name string) (string, store.Stamp, error) {
	id, rev, err := s.LiveRevision(name)
	if err != nil || id == "" {
		return "", store.Stamp{}, err
	}
	data, setRev, err := s.get(s.setKey(name, id), maxSet)
	if err != nil {
		return "", store.Stamp{}, err
	}
	if data == nil {
		return "", store.Stamp{}, fmt.Errorf("%s names set %s, which is not there", s.certKey(name, "live"), id)
	}
	return id, store.Stamp{Ino: uint64(setRev), Size: int64(len(data)), Mtime: rev}, nil
}
