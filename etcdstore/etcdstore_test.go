package etcdstore

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daneroll/daneroll/fleetkey"
	"github.com/daneroll/daneroll/internal/rig"
	"github.com/daneroll/daneroll/store"
)

// These tests run against a real etcd cluster of three members (Debian's
// etcd 3.4, started by internal/rig, with TLS and client certificates).
// TestStore shares one cluster between parallel subtests, each under its
// own prefix; TestAvailability kills a member and so has a cluster of its
// own.

// lockTTL is the lease of the tests' locks: short, so that expiry waits
// stay short.
const lockTTL = 2 * time.Second

type fixture struct {
	etcd *rig.Etcd
	key  *fleetkey.Key
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	e := rig.StartEtcd(t, rig.EtcdOptions{Members: 3})
	return &fixture{etcd: e, key: newFleetKey(t)}
}

func newFleetKey(t testing.TB) *fleetkey.Key {
	t.Helper()
	k, _, err := fleetkey.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// prefix isolates a test's keys from every other test's.
func prefix(t testing.TB) string { return "/t/" + t.Name() + "/" }

// open opens a Store for host under t's prefix; edit changes the options
// first. The store is closed when t ends.
func (f *fixture) open(t testing.TB, host string, edit ...func(*Options)) *Store {
	t.Helper()
	o := Options{
		Endpoints: f.etcd.Endpoints,
		TLS:       f.etcd.TLSConfig(),
		Prefix:    prefix(t),
		Key:       f.key,
		Host:      host,
		LockTTL:   lockTTL,
		Timeout:   10 * time.Second,
	}
	for _, e := range edit {
		e(&o)
	}
	s, err := Open(t.Context(), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	// Close revokes the lease; a test that already revoked or let it
	// expire gets an error here, which does not matter.
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func lock(t testing.TB, s *Store, name string) store.Unlocker {
	t.Helper()
	u, err := s.LockCert(t.Context(), name)
	if err != nil {
		t.Fatalf("LockCert(%s) on %s: %v", name, s.Host(), err)
	}
	return u
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func keyPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	p, err := store.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func certPEM(t testing.TB, key crypto.Signer, cn string) []byte {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(90 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// newSet makes a set of a new key and a self-signed certificate for it.
func newSet(t testing.TB) *store.Set {
	t.Helper()
	k := newKey(t)
	c := certPEM(t, k, "mx.example.test")
	return &store.Set{Key: keyPEM(t, k), Cert: c, Chain: c}
}

func sameKey(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// raw reads key straight from etcd (nil when it does not exist).
func raw(t testing.TB, s *Store, key string) []byte {
	t.Helper()
	kv, err := s.cli.get(t.Context(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if kv == nil {
		return nil
	}
	return kv.Value
}

// plant writes value at key straight into etcd, as someone with write
// access to etcd but no lock could.
func plant(t testing.TB, s *Store, key string, value []byte) {
	t.Helper()
	if err := s.cli.put(t.Context(), key, value, 0); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func count(t testing.TB, s *Store, pfx string) int64 {
	t.Helper()
	n, err := s.cli.count(t.Context(), pfx)
	if err != nil {
		t.Fatalf("count %s: %v", pfx, err)
	}
	return n
}

// freeze stops s's lease keep-alive without revoking the lease, as when
// the process is killed or frozen: the lease expires after its TTL, but s
// itself still believes it alive, so its next write goes to etcd and
// meets the fence there.
func freeze(s *Store) *session {
	s.sessMu.Lock()
	sess := s.sess
	s.sessMu.Unlock()
	sess.stop()
	<-sess.finished
	return sess
}

func lostLock(t testing.TB, what string, err error) {
	t.Helper()
	var lle *LostLockError
	if !errors.As(err, &lle) {
		t.Errorf("%s after the lock was lost: %v, want a *LostLockError", what, err)
	}
}

func TestStore(t *testing.T) {
	f := newFixture(t)
	t.Run("RoundTrip", func(t *testing.T) { t.Parallel(); testRoundTrip(t, f) })
	t.Run("Sealing", func(t *testing.T) { t.Parallel(); testSealing(t, f) })
	t.Run("Locks", func(t *testing.T) { t.Parallel(); testLocks(t, f) })
	t.Run("DeadHolder", func(t *testing.T) { t.Parallel(); testDeadHolder(t, f) })
	t.Run("AbandonedWait", func(t *testing.T) { t.Parallel(); testAbandonedWait(t, f) })
	t.Run("Fencing", func(t *testing.T) { t.Parallel(); testFencing(t, f) })
	t.Run("Members", func(t *testing.T) { t.Parallel(); testMembers(t, f) })
	t.Run("AwaitServed", func(t *testing.T) { t.Parallel(); testAwaitServed(t, f) })
	t.Run("WatchLive", func(t *testing.T) { t.Parallel(); testWatchLive(t, f) })
	t.Run("Alive", func(t *testing.T) { t.Parallel(); testAlive(t, f) })
	t.Run("Distrust", func(t *testing.T) { t.Parallel(); testDistrust(t, f) })
}

func testRoundTrip(t *testing.T, f *fixture) {
	s := f.open(t, "mx1")
	const name = "mail"
	u := lock(t, s, name)
	defer u.Unlock()

	// Journal.
	var j map[string]any
	if data, err := s.ReadJournal(name, &j); err != nil || data != nil {
		t.Fatalf("ReadJournal with none: %q, %v; want nil, nil", data, err)
	}
	if err := s.WriteJournal(name, []byte(`{"step":"publish","n":1}`)); err != nil {
		t.Fatalf("WriteJournal: %v", err)
	}
	if err := s.WriteJournal(name, []byte(`{"step":"confirm","n":2}`)); err != nil {
		t.Fatalf("WriteJournal: %v", err)
	}
	data, err := s.ReadJournal(name, &j)
	if err != nil || string(data) != `{"step":"confirm","n":2}` || j["step"] != "confirm" {
		t.Fatalf("ReadJournal: %q, %v, %v", data, j, err)
	}

	// Key slots.
	if _, err := s.ReadKey(name, store.Current); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadKey of an empty slot: %v, want os.ErrNotExist", err)
	}
	if _, err := s.KeyStamp(name, store.Next); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("KeyStamp of an empty slot: %v, want os.ErrNotExist", err)
	}
	k1, k2 := newKey(t), newKey(t)
	if err := s.WriteKey(name, store.Current, k1); err != nil {
		t.Fatalf("WriteKey: %v", err)
	}
	got, err := s.ReadKey(name, store.Current)
	if err != nil || !sameKey(got.Public(), k1.Public()) {
		t.Fatalf("ReadKey: %v, same key %v", err, err == nil && sameKey(got.Public(), k1.Public()))
	}
	pub, err := s.ReadPublicKey(name, store.Current)
	if err != nil || !sameKey(pub, k1.Public()) {
		t.Errorf("ReadPublicKey: %v", err)
	}
	st1, err := s.KeyStamp(name, store.Current)
	if err != nil {
		t.Fatalf("KeyStamp: %v", err)
	}
	if again, err := s.KeyStamp(name, store.Current); err != nil || again != st1 {
		t.Errorf("KeyStamp of an unchanged slot: %+v, %v; was %+v", again, err, st1)
	}
	if err := s.WriteKey(name, store.Current, k2); err != nil {
		t.Fatalf("WriteKey: %v", err)
	}
	if st2, err := s.KeyStamp(name, store.Current); err != nil || st2 == st1 {
		t.Errorf("KeyStamp after the key changed: %+v, %v; was %+v", st2, err, st1)
	}
	if got, err := s.ReadKey(name, store.Current); err != nil || !sameKey(got.Public(), k2.Public()) {
		t.Errorf("ReadKey after rewrite: %v", err)
	}
	if err := s.WriteKey(name, store.Next, k1); err != nil {
		t.Fatalf("WriteKey next: %v", err)
	}
	if err := s.RemoveKey(name, store.Next); err != nil {
		t.Fatalf("RemoveKey: %v", err)
	}
	if _, err := s.ReadKey(name, store.Next); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadKey after RemoveKey: %v, want os.ErrNotExist", err)
	}
	if _, err := s.KeyStamp(name, store.Next); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("KeyStamp after RemoveKey: %v, want os.ErrNotExist", err)
	}
	if _, err := s.ReadKey(name, store.Current); err != nil {
		t.Errorf("RemoveKey of next touched current: %v", err)
	}
	if err := s.WriteKey(name, "../current", k1); err == nil {
		t.Error("WriteKey to a bad slot: no error")
	}

	// Sets and live.
	if set, err := s.Live(name); set != nil || err != nil {
		t.Errorf("Live with none: %v, %v", set, err)
	}
	if id, st, err := s.LiveStamp(name); id != "" || st != (store.Stamp{}) || err != nil {
		t.Errorf("LiveStamp with none: %q, %+v, %v", id, st, err)
	}
	var sets []*store.Set
	for i := range 4 {
		set := newSet(t)
		id, err := s.Install(name, set)
		if want := []string{"0001", "0002", "0003", "0004"}[i]; err != nil || id != want {
			t.Fatalf("Install #%d: %q, %v; want %s", i+1, id, err, want)
		}
		sets = append(sets, set)
	}
	bad := newSet(t)
	bad.Cert = sets[0].Cert // not for bad.Key
	if _, err := s.Install(name, bad); err == nil {
		t.Error("Install of a set whose certificate is not for its key: no error")
	}
	ids, err := s.Sets(name)
	if err != nil || !slices.Equal(ids, []string{"0001", "0002", "0003", "0004"}) {
		t.Fatalf("Sets: %v, %v", ids, err)
	}
	for i, id := range ids {
		got, err := s.Set(name, id)
		if err != nil {
			t.Fatalf("Set %s: %v", id, err)
		}
		if got.ID != id || !bytes.Equal(got.Key, sets[i].Key) || !bytes.Equal(got.Cert, sets[i].Cert) || !bytes.Equal(got.Chain, sets[i].Chain) {
			t.Errorf("Set %s: not what was installed", id)
		}
	}
	if _, err := s.Set(name, "0009"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Set of a missing ID: %v, want os.ErrNotExist", err)
	}
	if _, err := s.Set(name, "../x"); err == nil {
		t.Error("Set with a bad ID: no error")
	}

	if err := s.Switch(name, "0002"); err != nil {
		t.Fatalf("Switch: %v", err)
	}
	id, rev, err := s.LiveRevision(name)
	if err != nil || id != "0002" || rev <= 0 {
		t.Fatalf("LiveRevision: %q, %d, %v", id, rev, err)
	}
	live, err := s.Live(name)
	if err != nil || live == nil || live.ID != "0002" || !bytes.Equal(live.Cert, sets[1].Cert) {
		t.Fatalf("Live: %v, %v", live, err)
	}
	if lid, leaf, err := s.LiveLeaf(name); err != nil || lid != "0002" || !sameKey(leaf.PublicKey, mustParseKey(t, sets[1].Key).Public()) {
		t.Errorf("LiveLeaf: %q, %v", lid, err)
	}
	lid, ls1, err := s.LiveStamp(name)
	if err != nil || lid != "0002" {
		t.Fatalf("LiveStamp: %q, %v", lid, err)
	}
	if err := s.Switch(name, "0007"); err == nil {
		t.Error("Switch to a missing set: no error")
	}
	if id, rev2, err := s.LiveRevision(name); err != nil || id != "0002" || rev2 != rev {
		t.Errorf("a failed Switch changed live: %q, %d (was %d), %v", id, rev2, rev, err)
	}
	if err := s.Switch(name, "../0001"); err == nil {
		t.Error("Switch to a bad ID: no error")
	}
	if err := s.Switch(name, "0004"); err != nil {
		t.Fatalf("Switch: %v", err)
	}
	if id, rev2, err := s.LiveRevision(name); err != nil || id != "0004" || rev2 <= rev {
		t.Errorf("LiveRevision after Switch: %q, %d (was %d), %v", id, rev2, rev, err)
	}
	if lid, ls2, err := s.LiveStamp(name); err != nil || lid != "0004" || ls2 == ls1 {
		t.Errorf("LiveStamp after Switch: %q, %+v (was %+v), %v", lid, ls2, ls1, err)
	}

	// Prune: keep the newest, protect 0002; 0001 and 0003 go.
	if removed, err := s.PruneSets(name, 0); err != nil || len(removed) != 0 {
		t.Errorf("PruneSets keep 0: %v, %v; want nothing removed", removed, err)
	}
	removed, err := s.PruneSets(name, 1, "0002")
	if err != nil || !slices.Equal(removed, []string{"0001", "0003"}) {
		t.Fatalf("PruneSets: %v, %v", removed, err)
	}
	if ids, err := s.Sets(name); err != nil || !slices.Equal(ids, []string{"0002", "0004"}) {
		t.Errorf("Sets after prune: %v, %v", ids, err)
	}
	// IDs go on after the newest, never reusing one.
	if id, err := s.Install(name, newSet(t)); err != nil || id != "0005" {
		t.Errorf("Install after prune: %q, %v; want 0005", id, err)
	}

	// Another certificate is separate.
	if ids, err := s.Sets("web"); err != nil || len(ids) != 0 {
		t.Errorf("Sets of another certificate: %v, %v", ids, err)
	}
	if err := s.WriteJournal("web", []byte(`{}`)); err == nil {
		t.Error("WriteJournal of a certificate not locked: no error")
	}
	if _, err := s.ReadKey("../mail", store.Current); err == nil {
		t.Error("ReadKey with a bad name: no error")
	}
}

func mustParseKey(t testing.TB, p []byte) crypto.Signer {
	t.Helper()
	k, err := store.ParseKey(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testSealing(t *testing.T, f *fixture) {
	s := f.open(t, "mx1")
	for _, name := range []string{"mail", "web"} {
		u := lock(t, s, name)
		defer u.Unlock()
	}
	k := newKey(t)
	if err := s.WriteKey("mail", store.Current, k); err != nil {
		t.Fatal(err)
	}
	pemKey := keyPEM(t, k)
	sealed := raw(t, s, s.KeyName("mail", store.Current))
	if len(sealed) == 0 {
		t.Fatal("no value at keys/current")
	}
	if bytes.Contains(sealed, pemKey) || bytes.Contains(sealed, []byte("PRIVATE KEY")) {
		t.Fatal("the key slot holds the private key in the clear")
	}

	set := newSet(t)
	id, err := s.Install("mail", set)
	if err != nil {
		t.Fatal(err)
	}
	rec := raw(t, s, s.setKey("mail", id))
	if bytes.Contains(rec, set.Key) || bytes.Contains(rec, []byte("PRIVATE KEY")) {
		t.Fatal("the set record holds the private key in the clear")
	}

	// The sealed key copied to another slot, to another certificate's
	// slot, or into a set does not open there.
	plant(t, s, s.KeyName("mail", store.Next), sealed)
	if _, err := s.ReadKey("mail", store.Next); !errors.Is(err, fleetkey.ErrWrongLabel) {
		t.Errorf("keys/current copied to keys/next: %v, want %v", err, fleetkey.ErrWrongLabel)
	}
	plant(t, s, s.KeyName("web", store.Current), sealed)
	if _, err := s.ReadKey("web", store.Current); !errors.Is(err, fleetkey.ErrWrongLabel) {
		t.Errorf("mail's key copied to web's slot: %v, want %v", err, fleetkey.ErrWrongLabel)
	}
	c := certPEM(t, k, "mx.example.test") // a certificate for k, so only the seal refuses
	moved, err := json.Marshal(setRecord{Cert: string(c), Chain: string(c), Key: sealed})
	if err != nil {
		t.Fatal(err)
	}
	plant(t, s, s.setKey("mail", "0002"), moved)
	if _, err := s.Set("mail", "0002"); !errors.Is(err, fleetkey.ErrWrongLabel) {
		t.Errorf("keys/current copied into a set: %v, want %v", err, fleetkey.ErrWrongLabel)
	}
	// The set's record copied to another ID does not open there either.
	plant(t, s, s.setKey("mail", "0003"), rec)
	if _, err := s.Set("mail", "0003"); !errors.Is(err, fleetkey.ErrWrongLabel) {
		t.Errorf("set %s copied to 0003: %v, want %v", id, err, fleetkey.ErrWrongLabel)
	}
	// Where it was sealed for, it opens.
	if _, err := s.ReadKey("mail", store.Current); err != nil {
		t.Errorf("ReadKey: %v", err)
	}
	if _, err := s.Set("mail", id); err != nil {
		t.Errorf("Set: %v", err)
	}

	// A store with another fleet key reads neither.
	other := f.open(t, "mx2", func(o *Options) { o.Key = newFleetKey(t) })
	if _, err := other.ReadKey("mail", store.Current); !errors.Is(err, fleetkey.ErrWrongKey) {
		t.Errorf("ReadKey with another fleet key: %v, want %v", err, fleetkey.ErrWrongKey)
	}
	if _, err := other.Set("mail", id); !errors.Is(err, fleetkey.ErrWrongKey) {
		t.Errorf("Set with another fleet key: %v, want %v", err, fleetkey.ErrWrongKey)
	}
}

func testLocks(t *testing.T, f *fixture) {
	s1 := f.open(t, "mx1")
	s2 := f.open(t, "mx2")
	const name = "mail"
	lockPfx := s1.certKey(name, "lock") + "/"

	u1 := lock(t, s1, name)
	var h holder
	if err := json.Unmarshal(raw(t, s1, s1.certKey(name, "holder")), &h); err != nil || h.Host != "mx1" || h.PID != os.Getpid() {
		t.Errorf("holder record: %+v, %v", h, err)
	}

	// The first keeps holding: the second waits for the lock's TTL (a
	// dead holder's lease would have expired by then), then names the
	// holder.
	start := time.Now()
	_, err := s2.LockCert(t.Context(), name)
	waited := time.Since(start)
	var le *store.LockedError
	if !errors.As(err, &le) {
		t.Fatalf("LockCert of a held lock: %v, want a *store.LockedError", err)
	}
	if le.Host != "mx1" || le.PID != os.Getpid() || le.Since.IsZero() || !strings.Contains(le.Path, "certs/mail/lock") {
		t.Errorf("LockedError: %+v", le)
	}
	if !strings.Contains(err.Error(), "mx1") {
		t.Errorf("LockedError does not name the holder's host: %v", err)
	}
	if waited < lockTTL || waited > lockTTL+5*time.Second {
		t.Errorf("LockCert gave up after %v; want about the lock's TTL (%v) plus a margin", waited, lockTTL)
	}
	// The waiter took its key back: it must not stand in the queue (and
	// hold the lock once the first lets go) after giving up.
	if n := count(t, s1, lockPfx); n != 1 {
		t.Errorf("%d keys under the lock after the waiter gave up, want 1 (the holder's)", n)
	}

	// A waiter whose context ends gives up at once, and takes its key
	// back too.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	start = time.Now()
	_, err = s2.LockCert(ctx, name)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("LockCert with a context that ends: %v after %v", err, time.Since(start))
	}
	if n := count(t, s1, lockPfx); n != 1 {
		t.Errorf("%d keys under the lock after a cancelled wait, want 1", n)
	}

	// The first lets go while the second waits: the second gets it at
	// once.
	type result struct {
		u   store.Unlocker
		err error
		at  time.Time
	}
	got := make(chan result, 1)
	go func() {
		u, err := s2.LockCert(t.Context(), name)
		got <- result{u, err, time.Now()}
	}()
	time.Sleep(500 * time.Millisecond)
	select {
	case r := <-got:
		t.Fatalf("second LockCert returned while the first held the lock: %v", r.err)
	default:
	}
	released := time.Now()
	if err := u1.Unlock(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	r := <-got
	if r.err != nil {
		t.Fatalf("LockCert after the holder let go: %v", r.err)
	}
	defer r.u.Unlock()
	if d := r.at.Sub(released); d > 2*time.Second {
		t.Errorf("the waiter got the lock %v after it was let go, want at once (it polls every 250 ms)", d)
	}
	if err := json.Unmarshal(raw(t, s1, s1.certKey(name, "holder")), &h); err != nil || h.Host != "mx2" {
		t.Errorf("holder record after the handover: %+v, %v", h, err)
	}
	// The first, without the lock, writes nothing; the second does.
	if err := s1.WriteJournal(name, []byte(`{"by":"mx1"}`)); err == nil {
		t.Error("WriteJournal after Unlock: no error")
	}
	if err := s2.WriteJournal(name, []byte(`{"by":"mx2"}`)); err != nil {
		t.Errorf("WriteJournal by the new holder: %v", err)
	}
	if j := raw(t, s1, s1.JournalName(name)); string(j) != `{"by":"mx2"}` {
		t.Errorf("journal: %s", j)
	}
	// Unlocking twice does not take the lock from the new holder.
	if err := u1.Unlock(); err != nil {
		t.Errorf("second Unlock: %v", err)
	}
	if err := s2.WriteJournal(name, []byte(`{"by":"mx2","n":2}`)); err != nil {
		t.Errorf("WriteJournal by the holder after the old one unlocked again: %v", err)
	}
}

// testDeadHolder: a holder that dies without giving the lock up (no
// revoke, no more keep-alives) frees it when its lease expires.
func testDeadHolder(t *testing.T, f *fixture) {
	s1 := f.open(t, "mx1")
	s2 := f.open(t, "mx2")
	const name = "mail"
	lock(t, s1, name)
	if err := s1.WriteJournal(name, []byte(`{"by":"mx1"}`)); err != nil {
		t.Fatal(err)
	}
	freeze(s1)
	frozen := time.Now()

	start := time.Now()
	u2, err := s2.LockCert(t.Context(), name)
	if err != nil {
		t.Fatalf("LockCert after the holder died: %v", err)
	}
	defer u2.Unlock()
	took := time.Since(start)
	// The lease outlives the last keep-alive (at most TTL/3 before the
	// freeze) by the TTL: the lock cannot be free before 2/3 of the TTL.
	if since := time.Since(frozen); since < lockTTL/2 {
		t.Errorf("the lock was free %v after the holder died, before its lease could expire", since)
	}
	t.Logf("the dead holder's lock was taken over after %v", took.Round(time.Millisecond))
	var h holder
	if err := json.Unmarshal(raw(t, s2, s2.certKey(name, "holder")), &h); err != nil || h.Host != "mx2" {
		t.Errorf("holder record: %+v, %v", h, err)
	}
	// The dead holder, back, still believes its session alive; its write
	// reaches etcd and is fenced there.
	lostLock(t, "WriteJournal", s1.WriteJournal(name, []byte(`{"by":"mx1","late":true}`)))
	if j := raw(t, s2, s2.JournalName(name)); string(j) != `{"by":"mx1"}` {
		t.Errorf("journal after the fenced write: %s", j)
	}
}

// hangingTxns makes etcd's transactions hang, while hang is set, until
// their request ends; everything else (the lease's keep-alives) goes
// through.
type hangingTxns struct {
	next    http.RoundTripper
	mu      sync.Mutex
	hang    bool
	hanging chan struct{} // gets one value per transaction made to hang
}

func (h *hangingTxns) RoundTrip(req *http.Request) (*http.Response, error) {
	h.mu.Lock()
	hang := h.hang && strings.HasSuffix(req.URL.Path, "/v3/kv/txn")
	h.mu.Unlock()
	if !hang {
		return h.next.RoundTrip(req)
	}
	select {
	case h.hanging <- struct{}{}:
	default:
	}
	<-req.Context().Done()
	return nil, req.Context().Err()
}

func (h *hangingTxns) set(hang bool) {
	h.mu.Lock()
	h.hang = hang
	h.mu.Unlock()
}

// testAbandonedWait: a LockCert that gives up while it asks etcd whether
// its turn came (its context ends, or etcd fails it) takes its key out of
// the lock's queue. Left there, on a lease this process keeps alive, the
// key would hold the lock once the holder let go, for a waiter that is no
// longer there: every other host would be locked out of the certificate
// until this process ended.
func testAbandonedWait(t *testing.T, f *fixture) {
	s1 := f.open(t, "mx1")
	s2 := f.open(t, "mx2")
	// Nothing runs on s2's client yet (its lease comes with its first
	// lock), so its transport can be swapped without a race.
	h := &hangingTxns{next: s2.cli.hc.Transport, hanging: make(chan struct{}, 1)}
	s2.cli.hc.Transport = h
	const name = "mail"
	lockPfx := s1.certKey(name, "lock") + "/"
	u1 := lock(t, s1, name)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s2.LockCert(ctx, name)
		done <- err
	}()
	// Once its key is queued, its next look at the queue hangs.
	deadline := time.Now().Add(5 * time.Second)
	for count(t, s1, lockPfx) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the waiter's key never showed up under the lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.set(true)
	select {
	case <-h.hanging:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter did not look at the queue again")
	}
	h.set(false)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("LockCert whose context ended while it asked etcd: %v, want context.Canceled", err)
	}
	if n := count(t, s1, lockPfx); n != 1 {
		t.Errorf("%d keys under the lock after the waiter gave up, want 1 (the holder's)", n)
	}
	// And so the lock passes on to a third host when the holder lets go.
	if err := u1.Unlock(); err != nil {
		t.Fatal(err)
	}
	s3 := f.open(t, "mx3")
	tctx, tcancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer tcancel()
	u3, err := s3.LockCert(tctx, name)
	if err != nil {
		t.Fatalf("LockCert after the holder let go: %v", err)
	}
	u3.Unlock()
}

func testFencing(t *testing.T, f *fixture) {
	s1 := f.open(t, "mx1")
	s2 := f.open(t, "mx2")
	const name = "mail"

	// Without the lock, nothing is written.
	if err := s1.WriteJournal(name, []byte(`{}`)); err == nil {
		t.Error("WriteJournal without the lock: no error")
	}
	if _, err := s1.Install(name, newSet(t)); err == nil {
		t.Error("Install without the lock: no error")
	}
	if raw(t, s1, s1.JournalName(name)) != nil || count(t, s1, s1.certKey(name, "sets")+"/") != 0 {
		t.Fatal("a write without the lock changed etcd")
	}

	lock(t, s1, name)
	k1 := newKey(t)
	if err := s1.WriteJournal(name, []byte(`{"by":"mx1"}`)); err != nil {
		t.Fatal(err)
	}
	if err := s1.WriteKey(name, store.Current, k1); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Install(name, newSet(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Install(name, newSet(t)); err != nil {
		t.Fatal(err)
	}
	if err := s1.Switch(name, "0001"); err != nil {
		t.Fatal(err)
	}
	if err := s1.Fence(name); err != nil {
		t.Errorf("Fence while holding the lock: %v", err)
	}
	if err := s2.Fence(name); err == nil {
		t.Error("Fence of a store that never took the lock: no error")
	}

	// s1's lease ends behind its back (as when it expires while s1 is
	// frozen): the keep-alive is stopped first so that s1 still thinks
	// its session alive and each write below is refused by etcd itself.
	sess := freeze(s1)
	if err := s1.cli.revoke(t.Context(), sess.id); err != nil {
		t.Fatal(err)
	}
	u2 := lock(t, s2, name)
	defer u2.Unlock()
	if err := s2.WriteJournal(name, []byte(`{"by":"mx2"}`)); err != nil {
		t.Fatal(err)
	}
	_, liveRev, err := s2.LiveRevision(name)
	if err != nil {
		t.Fatal(err)
	}

	lostLock(t, "Fence", s1.Fence(name))
	lostLock(t, "WriteJournal", s1.WriteJournal(name, []byte(`{"by":"mx1","late":true}`)))
	lostLock(t, "WriteKey", s1.WriteKey(name, store.Current, newKey(t)))
	lostLock(t, "WriteKey next", s1.WriteKey(name, store.Next, newKey(t)))
	lostLock(t, "RemoveKey", s1.RemoveKey(name, store.Current))
	_, err = s1.Install(name, newSet(t))
	lostLock(t, "Install", err)
	lostLock(t, "Switch", s1.Switch(name, "0002"))
	_, err = s1.PruneSets(name, 1)
	lostLock(t, "PruneSets", err)

	// Nothing changed.
	var j map[string]any
	if data, err := s2.ReadJournal(name, &j); err != nil || string(data) != `{"by":"mx2"}` {
		t.Errorf("journal: %s, %v", data, err)
	}
	if k, err := s2.ReadKey(name, store.Current); err != nil || !sameKey(k.Public(), k1.Public()) {
		t.Errorf("keys/current after fenced writes: %v", err)
	}
	if _, err := s2.ReadKey(name, store.Next); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("keys/next after a fenced write: %v, want none", err)
	}
	if ids, err := s2.Sets(name); err != nil || !slices.Equal(ids, []string{"0001", "0002"}) {
		t.Errorf("sets after fenced writes: %v, %v", ids, err)
	}
	if id, rev, err := s2.LiveRevision(name); err != nil || id != "0001" || rev != liveRev {
		t.Errorf("live after a fenced Switch: %q, %d (was %d), %v", id, rev, liveRev, err)
	}
	// Its unlock does not take the lock from the new holder.
	s1.locksMu.Lock()
	m1 := s1.locks[name]
	s1.locksMu.Unlock()
	if m1 == nil {
		t.Fatal("s1 forgot its lock")
	}
	if err := s1.unlock(name, m1); err != nil {
		t.Errorf("unlock of a lost lock: %v", err)
	}
	if err := s2.WriteJournal(name, []byte(`{"by":"mx2","n":2}`)); err != nil {
		t.Errorf("WriteJournal by the holder after the fenced one unlocked: %v", err)
	}
	var h holder
	if err := json.Unmarshal(raw(t, s2, s2.certKey(name, "holder")), &h); err != nil || h.Host != "mx2" {
		t.Errorf("holder record: %+v, %v", h, err)
	}

	// A process whose keep-alive runs learns that its lease is gone
	// (etcd answers TTL 0), refuses to write from then on, and a new
	// LockCert starts a new lease.
	s3 := f.open(t, "mx3")
	lock(t, s3, "web")
	s3.sessMu.Lock()
	sess3 := s3.sess
	s3.sessMu.Unlock()
	if err := s3.cli.revoke(t.Context(), sess3.id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess3.done:
	case <-time.After(lockTTL + time.Second):
		t.Fatal("the keep-alive did not notice that the lease was revoked")
	}
	lostLock(t, "WriteJournal on an ended session", s3.WriteJournal("web", []byte(`{"n":1}`)))
	u3 := lock(t, s3, "web")
	defer u3.Unlock()
	if err := s3.WriteJournal("web", []byte(`{"n":2}`)); err != nil {
		t.Errorf("WriteJournal after locking again on a new lease: %v", err)
	}
	if j := raw(t, s3, s3.JournalName("web")); string(j) != `{"n":2}` {
		t.Errorf("journal of web: %s", j)
	}
}

func testMembers(t *testing.T, f *fixture) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	a := f.open(t, "mxa", func(o *Options) { o.Now = func() time.Time { return t0 } })
	b := f.open(t, "mxb")
	c := f.open(t, "mxc")
	ctx := t.Context()
	for _, r := range []struct {
		s     *Store
		names []string
	}{{a, []string{"mail"}}, {b, []string{"mail", "web"}}, {c, []string{"mail"}}} {
		for _, name := range r.names {
			if err := r.s.Register(ctx, name, []string{"smtp://mx.example.test:25?connect=" + r.s.Host()}); err != nil {
				t.Fatalf("Register: %v", err)
			}
		}
	}
	ms, err := a.Members(ctx, "mail")
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, m := range ms {
		hosts = append(hosts, m.Host)
		if len(m.Endpoints) != 1 || !strings.HasSuffix(m.Endpoints[0], m.Host) {
			t.Errorf("member %s: endpoints %v", m.Host, m.Endpoints)
		}
	}
	if !slices.Equal(hosts, []string{"mxa", "mxb", "mxc"}) || !ms[0].Since.Equal(t0) {
		t.Fatalf("Members: %+v", ms)
	}
	// Registering again (an agent restarting) keeps Since.
	a2 := f.open(t, "mxa")
	if err := a2.Register(ctx, "mail", []string{"smtp://new"}); err != nil {
		t.Fatal(err)
	}
	if ms, err := a.Members(ctx, "mail"); err != nil || !ms[0].Since.Equal(t0) || ms[0].Endpoints[0] != "smtp://new" {
		t.Errorf("Members after a new Register: %+v, %v", ms, err)
	}

	for _, s := range []*Store{a, b, c} {
		// Host is the reporter's, whatever the report says.
		if err := s.PutReport(ctx, "mail", Report{Host: "someone-else", Set: "0001", LiveRevision: 7, Key: keyK1, OK: true, At: t0}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.PutReport(ctx, "web", Report{Set: "0003", OK: false, Error: "reload failed"}); err != nil {
		t.Fatal(err)
	}
	reps, err := a.Reports(ctx, "mail")
	if err != nil || len(reps) != 3 {
		t.Fatalf("Reports: %v, %v", reps, err)
	}
	for host, r := range reps {
		if r.Host != host || r.Set != "0001" || r.LiveRevision != 7 || !r.OK || !r.At.Equal(t0) {
			t.Errorf("report of %s: %+v", host, r)
		}
	}
	if reps, err := a.Reports(ctx, "web"); err != nil || reps["mxb"].Error != "reload failed" || reps["mxb"].OK {
		t.Errorf("Reports of web: %+v, %v", reps, err)
	}

	names, err := a.Leave(ctx, "mxb", false)
	if err != nil || !slices.Equal(names, []string{"mail", "web"}) {
		t.Fatalf("Leave: %v, %v; want [mail web]", names, err)
	}
	if ms, err := a.Members(ctx, "mail"); err != nil || len(ms) != 2 || ms[0].Host != "mxa" || ms[1].Host != "mxc" {
		t.Errorf("Members after Leave: %+v, %v", ms, err)
	}
	if ms, err := a.Members(ctx, "web"); err != nil || len(ms) != 0 {
		t.Errorf("Members of web after Leave: %+v, %v", ms, err)
	}
	if reps, err := a.Reports(ctx, "mail"); err != nil || len(reps) != 2 || reps["mxb"].Host != "" {
		t.Errorf("Reports after Leave: %+v, %v", reps, err)
	}
	if reps, err := a.Reports(ctx, "web"); err != nil || len(reps) != 0 {
		t.Errorf("Reports of web after Leave: %+v, %v", reps, err)
	}
	if names, err := a.Leave(ctx, "mxb", false); err != nil || len(names) != 0 {
		t.Errorf("Leave again: %v, %v", names, err)
	}
	// A host that is a prefix of another's name leaves alone.
	if names, err := a.Leave(ctx, "mx", false); err != nil || len(names) != 0 {
		t.Errorf("Leave of mx: %v, %v", names, err)
	}
	if _, err := a.Leave(ctx, "../mxa", false); err == nil {
		t.Error("Leave with a bad host: no error")
	}
}

// keyK1 and keyK2 are key IDs (SPKI digests) in reports.
var (
	keyK1 = strings.Repeat("1a", 32)
	keyK2 = strings.Repeat("2b", 32)
)

func testAwaitServed(t *testing.T, f *fixture) {
	co := f.open(t, "coord")
	ma := f.open(t, "mxa")
	mb := f.open(t, "mxb")
	ctx := t.Context()
	const name = "mail"
	lock(t, co, name)
	for range 2 {
		if _, err := co.Install(name, newSet(t)); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []*Store{ma, mb} {
		if err := m.Register(ctx, name, []string{"smtp://" + m.Host()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := co.Switch(name, "0001"); err != nil {
		t.Fatal(err)
	}
	_, rev1, err := co.LiveRevision(name)
	if err != nil {
		t.Fatal(err)
	}
	report := func(m *Store, rev int64, ok bool, msg string) {
		t.Helper()
		if err := m.PutReport(ctx, name, Report{Set: "0001", LiveRevision: rev, Key: keyK1, OK: ok, Error: msg, At: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}

	// (a) Every member served the set for this write of live.
	report(ma, rev1, true, "")
	report(mb, rev1, true, "")
	hosts, err := co.AwaitServed(ctx, name, "0001", keyK1, 5*time.Second, nil, nil)
	if err != nil || !slices.Equal(hosts, []string{"mxa", "mxb"}) {
		t.Fatalf("(a) AwaitServed: %v, %v", hosts, err)
	}
	// The same reports for another key do not count.
	_, err = co.AwaitServed(ctx, name, "0001", keyK2, 5*time.Second, nil, nil)
	var nse *NotServedError
	if !errors.As(err, &nse) || len(nse.Failed) != 2 {
		t.Errorf("AwaitServed for another key: %v, want both failed", err)
	}

	// (b) live written again: mxb's report is for the earlier write, so
	// mxb is silent until the timeout.
	if err := co.Switch(name, "0001"); err != nil {
		t.Fatal(err)
	}
	_, rev2, err := co.LiveRevision(name)
	if err != nil || rev2 <= rev1 {
		t.Fatalf("LiveRevision: %d (was %d), %v", rev2, rev1, err)
	}
	report(ma, rev2, true, "")
	var progress [][]string
	start := time.Now()
	hosts, err = co.AwaitServed(ctx, name, "0001", keyK1, time.Second, nil, func(w []string) { progress = append(progress, slices.Clone(w)) })
	waited := time.Since(start)
	if !errors.As(err, &nse) {
		t.Fatalf("(b) AwaitServed with a stale report: %v, want a *NotServedError", err)
	}
	if !slices.Equal(nse.Silent, []string{"mxb"}) || len(nse.Failed) != 0 || nse.Set != "0001" || nse.Name != name {
		t.Errorf("(b) NotServedError: %+v", nse)
	}
	if waited < time.Second || nse.Waited < time.Second {
		t.Errorf("(b) gave up after %v (Waited %v), before the timeout", waited, nse.Waited)
	}
	if !slices.Equal(hosts, []string{"mxa", "mxb"}) || len(progress) != 1 || !slices.Equal(progress[0], []string{"mxb"}) {
		t.Errorf("(b) hosts %v, progress %v", hosts, progress)
	}
	if !strings.Contains(err.Error(), "mxb") {
		t.Errorf("(b) error does not name the silent member: %v", err)
	}

	// A member in skip is not waited for (nor returned).
	start = time.Now()
	if hosts, err := co.AwaitServed(ctx, name, "0001", keyK1, 10*time.Second, []string{"mxb"}, nil); err != nil || !slices.Equal(hosts, []string{"mxa"}) || time.Since(start) > 2*time.Second {
		t.Errorf("AwaitServed skipping the silent member: %v, %v after %v", hosts, err, time.Since(start))
	}

	// mxb reports while the deploy waits: it returns then, not at the
	// timeout.
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = mb.PutReport(ctx, name, Report{Set: "0001", LiveRevision: rev2, Key: keyK1, OK: true})
	}()
	start = time.Now()
	if hosts, err := co.AwaitServed(ctx, name, "0001", keyK1, 10*time.Second, nil, nil); err != nil || len(hosts) != 2 || time.Since(start) > 3*time.Second {
		t.Errorf("AwaitServed with a late report: %v, %v after %v", hosts, err, time.Since(start))
	}

	// (c) A failure ends the wait at once.
	report(mb, rev2, false, "postfix reload: exit status 1")
	start = time.Now()
	_, err = co.AwaitServed(ctx, name, "0001", keyK1, 10*time.Second, nil, nil)
	if !errors.As(err, &nse) || nse.Failed["mxb"] != "postfix reload: exit status 1" || len(nse.Silent) != 0 {
		t.Errorf("(c) AwaitServed with a failure: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("(c) a failure ended the wait after %v, want at once", d)
	}

	// (d) Another run switches live while the deploy waits.
	report(mb, rev2, true, "")
	if err := co.Switch(name, "0001"); err != nil { // a new write: both silent now
		t.Fatal(err)
	}
	done := make(chan error, 1)
	start = time.Now()
	go func() {
		_, err := co.AwaitServed(ctx, name, "0001", keyK1, 10*time.Second, nil, nil)
		done <- err
	}()
	time.Sleep(400 * time.Millisecond)
	if err := co.Switch(name, "0002"); err != nil {
		t.Fatal(err)
	}
	err = <-done
	if err == nil || errors.As(err, &nse) || !strings.Contains(err.Error(), "0002") {
		t.Errorf("(d) AwaitServed after live changed: %v, want an error naming the new live set", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("(d) noticed the switch after %v", d)
	}
	// And at once when live is already another set.
	if _, err := co.AwaitServed(ctx, name, "0001", keyK1, 10*time.Second, nil, nil); err == nil || errors.As(err, &nse) {
		t.Errorf("AwaitServed for a set not live: %v", err)
	}

	// A context that ends stops the wait.
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := co.AwaitServed(cctx, name, "0002", keyK1, 10*time.Second, nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("AwaitServed with a context that ends: %v", err)
	}
}

func testWatchLive(t *testing.T, f *fixture) {
	co := f.open(t, "coord")
	agent := f.open(t, "mxa")
	for _, name := range []string{"mail", "www"} {
		lock(t, co, name)
		if _, err := co.Install(name, newSet(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := co.Install(name, newSet(t)); err != nil {
			t.Fatal(err)
		}
		if err := co.Switch(name, "0001"); err != nil {
			t.Fatal(err)
		}
	}

	// "sync" tells when the watcher has taken its first look, which
	// reports nothing.
	lock(t, co, "sync")
	if _, err := co.Install("sync", newSet(t)); err != nil {
		t.Fatal(err)
	}
	const every = 20 * time.Millisecond
	var mu sync.Mutex
	var calls []string
	changed := make(chan string, 64)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- agent.WatchLive(ctx, []string{"mail", "web", "www", "sync"}, every, func(name string) {
			mu.Lock()
			calls = append(calls, name)
			mu.Unlock()
			changed <- name
		})
	}()
	// Switch sync until a change of it is reported: the first look is
	// then behind us.
	deadline := time.Now().Add(5 * time.Second)
	for synced := false; !synced; {
		if time.Now().After(deadline) {
			t.Fatal("WatchLive never reported a change of sync")
		}
		if err := co.Switch("sync", "0001"); err != nil {
			t.Fatal(err)
		}
		select {
		case name := <-changed:
			synced = name == "sync"
		case <-time.After(5 * every):
		}
	}
	time.Sleep(5 * every) // a last report of sync, if one is on its way
	mu.Lock()
	if slices.ContainsFunc(calls, func(n string) bool { return n != "sync" }) {
		t.Errorf("WatchLive reported %v before anything but sync changed", calls)
	}
	calls = nil
	mu.Unlock()
	for len(changed) > 0 {
		<-changed
	}

	if err := co.Switch("mail", "0002"); err != nil {
		t.Fatal(err)
	}
	select {
	case name := <-changed:
		if name != "mail" {
			t.Errorf("WatchLive reported %s, want mail", name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchLive did not report the switch")
	}
	time.Sleep(10 * every)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchLive returned %v, want context.Canceled", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(calls, []string{"mail"}) {
		t.Errorf("WatchLive calls: %v, want [mail] once", calls)
	}

	if err := agent.WatchLive(t.Context(), []string{"../mail"}, every, func(string) {}); err == nil {
		t.Error("WatchLive with a bad name: no error")
	}

	// With a look an hour apart, only etcd's watch stream can tell of a
	// switch within seconds.
	streamed := make(chan string, 8)
	sctx, scancel := context.WithCancel(t.Context())
	defer scancel()
	go func() {
		_ = agent.WatchLive(sctx, []string{"www"}, time.Hour, func(name string) { streamed <- name })
	}()
	time.Sleep(500 * time.Millisecond) // its first look
	if err := co.Switch("www", "0002"); err != nil {
		t.Fatal(err)
	}
	select {
	case name := <-streamed:
		if name != "www" {
			t.Errorf("the stream reported %s, want www", name)
		}
	case <-time.After(5 * time.Second):
		t.Error("the watch stream did not report the switch of www")
	}
}

func testAlive(t *testing.T, f *fixture) {
	a := f.open(t, "mxa")
	b := f.open(t, "mxb")
	ctx := t.Context()
	if ok, err := b.IsAlive(ctx, "mxa"); err != nil || ok {
		t.Fatalf("IsAlive before Alive: %v, %v", ok, err)
	}
	if err := a.Alive(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.IsAlive(ctx, "mxa"); err != nil || !ok {
		t.Errorf("IsAlive after Alive: %v, %v", ok, err)
	}
	if ok, err := b.IsAlive(ctx, "mx"); err != nil || ok {
		t.Errorf("IsAlive of a host that is a prefix: %v, %v", ok, err)
	}
	// Alive again refreshes this agent's own key.
	if err := a.Alive(ctx); err != nil {
		t.Errorf("Alive again: %v", err)
	}
	// A second agent under the same member name waits out the first's
	// lease, then fails; the first keeps its name.
	twin := f.open(t, "mxa")
	start := time.Now()
	if err := twin.Alive(ctx); err == nil || !strings.Contains(err.Error(), "another agent runs as member mxa") {
		t.Errorf("a second agent as mxa: %v", err)
	}
	if d := time.Since(start); d < lockTTL {
		t.Errorf("the second agent gave up after %v, before the first's lease could expire (%v)", d, lockTTL)
	}
	// A running agent's member does not leave without force.
	if err := a.Register(ctx, "mail", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Leave(ctx, "mxa", false); !errors.Is(err, ErrAgentRuns) {
		t.Errorf("Leave of a member whose agent runs: %v", err)
	}
	if names, err := b.Leave(ctx, "mxa", true); err != nil || !slices.Equal(names, []string{"mail"}) {
		t.Errorf("Leave --force: %v, %v", names, err)
	}
	// Closing revokes the lease: the liveness key goes with it.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.IsAlive(ctx, "mxa"); err != nil || ok {
		t.Errorf("IsAlive after Close: %v, %v", ok, err)
	}
}

func testDistrust(t *testing.T, f *fixture) {
	s := f.open(t, "mx1")
	ctx := t.Context()
	const name = "mail"
	lock(t, s, name)
	set := newSet(t)
	if _, err := s.Install(name, set); err != nil {
		t.Fatal(err)
	}

	// A set record larger than daneroll ever writes. etcd refuses
	// requests over 1.5 MiB (--max-request-bytes), so the planted record
	// is 1.25 MiB: over the 1 MiB limit on sets.
	huge := make([]byte, maxSet+maxSet/4)
	for i := range huge {
		huge[i] = 'a'
	}
	plant(t, s, s.setKey(name, "0002"), huge)
	if _, err := s.Set(name, "0002"); err == nil || !strings.Contains(err.Error(), "more than daneroll ever writes") {
		t.Errorf("Set of a %d-byte record: %v", len(huge), err)
	}
	plant(t, s, s.certKey(name, "live"), []byte("0002"))
	if _, err := s.Live(name); err == nil {
		t.Error("Live of an oversized set: no error")
	}
	if _, _, err := s.LiveStamp(name); err == nil {
		t.Error("LiveStamp of an oversized set: no error")
	}
	plant(t, s, s.KeyName(name, store.Current), huge[:maxRecord+1])
	if _, err := s.ReadKey(name, store.Current); err == nil || !strings.Contains(err.Error(), "more than daneroll ever writes") {
		t.Errorf("ReadKey of an oversized slot: %v", err)
	}
	if _, err := s.KeyStamp(name, store.Current); err == nil {
		t.Error("KeyStamp of an oversized slot: no error")
	}

	// A set whose key is not its certificate's, though sealed right (by
	// someone holding the fleet key).
	other := newSet(t)
	sealed, err := f.key.Seal(s.setKey(name, "0003"), other.Key)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(setRecord{Cert: string(set.Cert), Chain: string(set.Chain), Key: sealed})
	plant(t, s, s.setKey(name, "0003"), rec)
	if _, err := s.Set(name, "0003"); err == nil || !strings.Contains(err.Error(), "not for the key") {
		t.Errorf("Set whose certificate is not for its key: %v", err)
	}
	plant(t, s, s.setKey(name, "0004"), []byte("{not json"))
	if _, err := s.Set(name, "0004"); err == nil {
		t.Error("Set of a record that is not JSON: no error")
	}

	// A live key naming no set ID.
	for _, v := range []string{"../x", "", "0001/../0002", "1e3", strings.Repeat("1", 65)} {
		plant(t, s, s.certKey(name, "live"), []byte(v))
		if id, _, err := s.LiveRevision(name); err == nil {
			t.Errorf("LiveRevision with live %q: %q, no error", v, id)
		}
		if set, err := s.Live(name); err == nil {
			t.Errorf("Live with live %q: %v, no error", v, set)
		}
	}

	// A journal that is not JSON.
	plant(t, s, s.JournalName(name), []byte("{"))
	var j map[string]any
	if _, err := s.ReadJournal(name, &j); err == nil {
		t.Error("ReadJournal of a damaged journal: no error")
	}

	// Member and report records: host field against key, size, key name.
	if err := s.Register(ctx, name, nil); err != nil {
		t.Fatal(err)
	}
	m, _ := json.Marshal(Member{Host: "mx1", Endpoints: []string{"smtp://evil"}})
	plant(t, s, s.certKey(name, "members", "mx2"), m)
	if _, err := s.Members(ctx, name); err == nil || !strings.Contains(err.Error(), "members/mx2") {
		t.Errorf("Members with a record whose host is not its key's: %v", err)
	}
	if _, err := s.AwaitServed(ctx, name, "0001", keyK1, time.Second, nil, nil); err == nil {
		t.Error("AwaitServed with a bad member record: no error")
	}
	r, _ := json.Marshal(Report{Host: "mx1", OK: true})
	plant(t, s, s.certKey(name, "reports", "mx2"), r)
	if _, err := s.Reports(ctx, name); err == nil {
		t.Error("Reports with a record whose host is not its key's: no error")
	}
	for _, bad := range []Report{{Host: "mx2", Set: "../0001"}, {Host: "mx2", Key: "K1"}, {Host: "mx2", LiveRevision: -1}} {
		r, _ := json.Marshal(bad)
		plant(t, s, s.certKey(name, "reports", "mx2"), r)
		if _, err := s.Reports(ctx, name); err == nil {
			t.Errorf("Reports with %+v: no error", bad)
		}
	}
	// A report's error text reaches status and logs: one line, bounded.
	r, _ = json.Marshal(Report{Host: "mx2", Error: "reload\n\x1b[31mfailed" + strings.Repeat("x", 4000)})
	plant(t, s, s.certKey(name, "reports", "mx2"), r)
	if reps, err := s.Reports(ctx, name); err != nil || strings.ContainsAny(reps["mx2"].Error, "\n\x1b") || len(reps["mx2"].Error) > maxReportError+4 {
		t.Errorf("a report's error text is not cleaned: %q, %v", reps["mx2"].Error, err)
	}
	for _, c := range []struct{ key, value string }{
		{s.certKey("web", "members", "a/b"), `{"host":"a/b"}`},
		{s.certKey("www", "members", "mx1"), `{"host":"mx1","endpoints":["` + strings.Repeat("x", maxRecord) + `"]}`},
	} {
		plant(t, s, c.key, []byte(c.value))
		n := strings.TrimPrefix(strings.TrimPrefix(c.key, s.prefix), "certs/")
		n, _, _ = strings.Cut(n, "/")
		if _, err := s.Members(ctx, n); err == nil {
			t.Errorf("Members with %s planted: no error", c.key)
		}
	}
}

// TestAvailability: with one of three etcd members down, the store reads
// and writes through the others.
func TestAvailability(t *testing.T) {
	f := newFixture(t)
	// A longer TTL than the other tests': the lease must outlive the
	// election that killing the leader may cause.
	s := f.open(t, "mx1", func(o *Options) { o.LockTTL = 10 * time.Second })
	const name = "mail"
	u := lock(t, s, name)
	defer u.Unlock()
	if err := s.WriteJournal(name, []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Install(name, newSet(t)); err != nil {
		t.Fatal(err)
	}
	s.cli.mu.Lock()
	first := s.cli.next
	s.cli.mu.Unlock()
	if first != 0 {
		t.Fatalf("the client answers through endpoint %d, want 0 before the kill", first)
	}

	f.etcd.Kill(0)
	// Member 0 may have been the leader. Until the survivors elected
	// another (about half a second here), a request that reaches a
	// follower still following the dead leader hangs until etcd's request
	// timeout (6 s) before the client tries again: that would test etcd's
	// timeouts, not the client's failover, and could let the 10 s lease
	// lapse. So wait for the survivors to be healthy first.
	wctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := f.etcd.WaitHealthy(wctx, 1, 2); err != nil {
		t.Fatalf("survivors: %v", err)
	}

	start := time.Now()
	var j map[string]any
	if data, err := s.ReadJournal(name, &j); err != nil || string(data) != `{"n":1}` {
		t.Fatalf("ReadJournal with member 0 down: %s, %v", data, err)
	}
	if err := s.WriteJournal(name, []byte(`{"n":2}`)); err != nil {
		t.Fatalf("WriteJournal with member 0 down: %v", err)
	}
	id, err := s.Install(name, newSet(t))
	if err != nil || id != "0002" {
		t.Fatalf("Install with member 0 down: %q, %v", id, err)
	}
	if err := s.Switch(name, id); err != nil {
		t.Fatalf("Switch with member 0 down: %v", err)
	}
	if live, err := s.Live(name); err != nil || live.ID != "0002" {
		t.Fatalf("Live with member 0 down: %v, %v", live, err)
	}
	t.Logf("five requests with member 0 down took %v", time.Since(start).Round(time.Millisecond))
	s.cli.mu.Lock()
	now := s.cli.next
	s.cli.mu.Unlock()
	if now == 0 {
		t.Error("the client still answers through the dead member")
	}
	// A new store opens with the first endpoint down, and locks.
	s2 := f.open(t, "mx2")
	if _, err := s2.LockCert(t.Context(), "web"); err != nil {
		t.Fatalf("LockCert with member 0 down: %v", err)
	}
	if err := s2.WriteJournal("web", []byte(`{}`)); err != nil {
		t.Fatalf("WriteJournal with member 0 down: %v", err)
	}

	f.etcd.Restart(0)
	if err := s.WriteJournal(name, []byte(`{"n":3}`)); err != nil {
		t.Fatalf("WriteJournal after the restart: %v", err)
	}
	if data, err := s2.ReadJournal(name, &j); err != nil || string(data) != `{"n":3}` {
		t.Fatalf("ReadJournal after the restart: %s, %v", data, err)
	}
}
