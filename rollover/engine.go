// Package rollover is daneroll's transactional renewal: for every
// certificate it decides what is due (first issuance, renewal, key change,
// publishing a next key, repairing records) and carries it out as one
// journaled transaction that drives the acme, dane and services packages:
//
//	plan → publish → confirm → obtain → hold → deploy → verify → promote → retire → confirm-retire
//
// The order for a new key runs while its hold does (the hold counts from
// the confirmation); the certificate is served only once the hold is over.
// Each step is written to the certificate's journal before it is taken, and
// every step is idempotent, so a run that is killed at any point is resumed
// by the next one. The order guarantees that a key is served only after its
// TLSA records have been served by every authoritative server for longer
// than any resolver may cache an older answer, and that records are removed
// only for keys that can no longer be served.
//
// # Key policies
//
//   - reuse: the key never changes; renewals touch no DNS (the records are
//     still checked and repaired if they went missing).
//   - rollover: a next key is always published beside the current one; at
//     rekey_after (or on request) the next key becomes current at once,
//     because its records have long been visible; a new next key is then
//     published and the old key's records retired.
//   - fresh: every renewal uses a new key, published and held before it is
//     served.
package rollover

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/store"
)

// Clock is the engine's time; tests replace it.
type Clock interface {
	Now() time.Time
	// Sleep waits d or until ctx ends.
	Sleep(ctx context.Context, d time.Duration) error
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// Sleep waits d or until ctx ends.
func (RealClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Reporter shows progress to the person running daneroll.
type Reporter interface {
	// Progress describes what is happening to a certificate now.
	Progress(cert, step, msg string)
	// Waiting announces a blocking wait until the given time; the returned
	// function is called when the wait is over.
	Waiting(cert, what string, until time.Time) (done func())
}

// ACMEClient is what the engine needs from the CA.
type ACMEClient interface {
	Obtain(ctx context.Context, req acme.Request) (*acme.Certificate, error)
	RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*acme.RenewalInfo, error)
}

// DNS is one configured publisher and the confirmer for its zones.
type DNS struct {
	Publisher dane.Publisher
	Confirmer *dane.Confirmer
}

// Options wire an Engine.
type Options struct {
	Config *config.Config
	// Backend keeps the state; nil means Local{Store}.
	Backend Backend
	Store   *store.Store
	Logger  *slog.Logger
	Clock   Clock
	// Reporter may be nil.
	Reporter Reporter
	// ACME makes the ACME client on first use.
	ACME func(ctx context.Context) (ACMEClient, error)
	// DNS maps publisher names to their publisher and confirmer.
	DNS map[string]*DNS
	// Reload runs a service's reload command.
	Reload func(ctx context.Context, argv []string, timeout time.Duration) error
	// Probe connects to an endpoint (retrying for a bounded time, since
	// reloads are asynchronous) until accept returns nil for the served
	// chain, and returns accept's last error otherwise.
	Probe func(ctx context.Context, endpoint string, accept func(chain []*x509.Certificate) error) error
	// LookupTLSA asks the validating resolver for the TLSA records at an
	// owner name, as a DANE client of the endpoint would.
	LookupTLSA func(ctx context.Context, owner string) (*dane.Lookup, error)
	// Failpoint, when set, is called just before ("before") and just after
	// ("after") every journal write. The crash tests use it to kill the
	// process at every step.
	Failpoint func(when string)
}

// Engine runs renewals.
type Engine struct {
	opts  Options
	cfg   *config.Config
	st    Backend
	log   *slog.Logger
	clock Clock
	rep   Reporter

	acmeMu sync.Mutex // guards acme
	acme   ACMEClient // made on first use
	// lookOnly is set for dry runs: nothing may be written, not even an
	// ACME account, so the CA is not asked at all. Set before a run's
	// goroutines start.
	lookOnly bool

	// work bounds the certificates doing work at once (network, CA,
	// files); a certificate that waits (a hold) gives its place up.
	work chan struct{}

	listenersMu sync.Mutex // guards listeners
	// listeners serializes the orders whose challenges are answered by a
	// standalone server on the same address (http01_listen,
	// tls_alpn01_listen): only one can listen at a time.
	listeners map[string]*sync.Mutex

	// mu guards a certificate's State and its journal write while lego
	// calls back (dns-01 records) from its own goroutines.
	mu sync.Mutex

	journalsMu sync.Mutex // guards journals
	// journals holds each certificate's journal as it is on disk, so that
	// a save that would write the same bytes writes nothing: a run with
	// nothing to do changes no file.
	journals map[string][]byte
}

// errLookOnly keeps a dry run away from the CA.
var errLookOnly = errors.New("a dry run does not contact the CA")

// New returns an engine.
func New(opts Options) *Engine {
	e := &Engine{opts: opts, cfg: opts.Config, st: opts.Backend, log: opts.Logger, clock: opts.Clock, rep: opts.Reporter}
	if e.st == nil && opts.Store != nil {
		e.st = Local{opts.Store}
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.clock == nil {
		e.clock = RealClock{}
	}
	if e.rep == nil {
		e.rep = quietReporter{}
	}
	n := DefaultConcurrency
	if e.cfg != nil && e.cfg.Concurrency > 0 {
		n = e.cfg.Concurrency
	}
	e.work = make(chan struct{}, n)
	return e
}

// DefaultConcurrency is how many certificates work at once when the
// configuration does not say.
const DefaultConcurrency = config.DefaultConcurrency

// busy waits for a place among the certificates doing work and returns the
// function that gives it up.
func (e *Engine) busy(ctx context.Context) (func(), error) {
	select {
	case e.work <- struct{}{}:
		return func() { <-e.work }, nil
	case <-ctx.Done():
		return func() {}, ctx.Err()
	}
}

// each runs fn for every certificate, several at a time, and returns the
// outcomes in the certificates' order. Each certificate is done under its
// own lock, so that two runs never work on the same one.
func (e *Engine) each(ctx context.Context, certs []*config.Certificate, lock bool, fn func(context.Context, *config.Certificate) Outcome) []Outcome {
	out := make([]Outcome, len(certs))
	var wg sync.WaitGroup
	for i, c := range certs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if lock {
				l, err := e.st.LockCert(ctx, c.Name)
				if err != nil {
					out[i] = Outcome{Name: c.Name, Action: "failed", Err: err}
					return
				}
				defer l.Unlock()
			}
			out[i] = fn(ctx, c)
		}()
	}
	wg.Wait()
	return out
}

// listener returns the lock of a standalone challenge server's address.
func (e *Engine) listener(addr string) *sync.Mutex {
	e.listenersMu.Lock()
	defer e.listenersMu.Unlock()
	if e.listeners == nil {
		e.listeners = map[string]*sync.Mutex{}
	}
	if e.listeners[addr] == nil {
		e.listeners[addr] = &sync.Mutex{}
	}
	return e.listeners[addr]
}

type quietReporter struct{}

func (quietReporter) Progress(string, string, string)                 {}
func (quietReporter) Waiting(string, string, time.Time) (done func()) { return func() {} }

// RenewOptions are the flags of `daneroll renew`.
type RenewOptions struct {
	Force  bool
	DryRun bool
	// NoWait saves the journal and returns instead of blocking on a wait.
	NoWait bool
}

// Outcome is what happened to one certificate in a run.
type Outcome struct {
	Name string
	// Action is what was done: "issued", "renewed", "rekeyed",
	// "published next key", "repaired", "nothing", "waiting", "would …".
	Action string
	// Detail explains, in one line.
	Detail string
	// ResumeAt is set when a wait was left for a later run (--no-wait).
	ResumeAt time.Time
	// Err is the failure, with what was rolled back.
	Err error
}

// ErrWaiting is returned inside an Outcome when --no-wait left a wait for a
// later run.
var ErrWaiting = errors.New("waiting")

// Renew runs every selected certificate (all when names is empty).
func (e *Engine) Renew(ctx context.Context, names []string, opts RenewOptions) ([]Outcome, error) {
	certs, err := e.select_(names)
	if err != nil {
		return nil, err
	}
	if opts.DryRun {
		e.lookOnly = true
		defer func() { e.lookOnly = false }()
		return e.each(ctx, certs, false, func(ctx context.Context, c *config.Certificate) Outcome {
			release, err := e.busy(ctx)
			defer release()
			if err != nil {
				return Outcome{Name: c.Name, Action: "failed", Err: err}
			}
			return e.dryRun(ctx, c, opts)
		}), nil
	}
	lock, err := e.st.LockShared()
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	return e.each(ctx, certs, true, func(ctx context.Context, c *config.Certificate) Outcome {
		return e.runOne(ctx, c, opts, "")
	}), nil
}

// Rekey starts a key rollover for one certificate now. With emergency the
// switch to the pre-published next key happens at once, and is refused when
// the next key's records have not been visible long enough.
func (e *Engine) Rekey(ctx context.Context, name string, emergency bool, opts RenewOptions) (Outcome, error) {
	certs, err := e.select_([]string{name})
	if err != nil {
		return Outcome{}, err
	}
	c := certs[0]
	lock, err := e.st.LockShared()
	if err != nil {
		return Outcome{}, err
	}
	defer lock.Unlock()
	clock, err := e.st.LockCert(ctx, c.Name)
	if err != nil {
		return Outcome{}, err
	}
	defer clock.Unlock()
	st, err := e.load(c)
	if err != nil {
		return Outcome{}, err
	}
	if st.Txn != nil {
		return Outcome{}, unfinished(c, st, "rekey")
	}
	if st.LiveSet == "" {
		return Outcome{}, fmt.Errorf("%s: no certificate has been issued yet; run daneroll renew %s", c.Name, c.Name)
	}
	if c.KeyPolicy == config.PolicyReuse {
		return Outcome{}, &HintError{
			Err:    fmt.Errorf("%s: key_policy is reuse, which never changes the key", c.Name),
			Advice: `set key_policy = "rollover" (or "fresh") to change keys`,
		}
	}
	if emergency {
		if c.KeyPolicy != config.PolicyRollover || st.Next == "" {
			return Outcome{}, &HintError{
				Err:    fmt.Errorf("%s: no pre-published next key to switch to", c.Name),
				Advice: "an emergency switch needs key_policy = \"rollover\"; run daneroll rekey " + c.Name + " for a normal key change",
			}
		}
		now := e.clock.Now()
		if at, ok := e.safeAt(c, st, st.Next); !ok || now.Before(at) {
			msg := "its records have not been confirmed on every authoritative server"
			if ok {
				msg = fmt.Sprintf("its records are not yet safe to rely on: resolvers may cache older answers until %s (%s from now)",
					at.UTC().Format(time.RFC3339), at.Sub(now).Round(time.Second))
			}
			return Outcome{}, &HintError{
				Err:    fmt.Errorf("%s: refusing an emergency switch to the next key: %s", c.Name, msg),
				Advice: "run daneroll rekey " + c.Name + " (without --emergency) to switch as soon as it is safe",
			}
		}
	}
	st.RekeyRequested = true
	if err := e.save(c, st); err != nil {
		return Outcome{}, err
	}
	return e.runOne(ctx, c, opts, "requested"), nil
}

func (e *Engine) select_(names []string) ([]*config.Certificate, error) {
	if len(names) == 0 {
		if len(e.cfg.Certificates) == 0 {
			return nil, &HintError{Err: fmt.Errorf("%s: no [[certificate]] configured", e.cfg.File),
				Advice: "see config.example.toml"}
		}
		return e.cfg.Certificates, nil
	}
	var out []*config.Certificate
	for _, n := range names {
		c := e.cfg.Certificate(n)
		if c == nil {
			var known []string
			for _, c := range e.cfg.Certificates {
				known = append(known, c.Name)
			}
			return nil, &HintError{Err: fmt.Errorf("no certificate named %q in %s", n, e.cfg.File),
				Advice: "configured: " + fmt.Sprint(known)}
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// unfinished refuses to start command while a transaction is pending.
func unfinished(c *config.Certificate, st *State, command string) error {
	return &HintError{
		Err:    fmt.Errorf("%s: unfinished work (%s, at step %s) comes first", c.Name, st.Txn.Kind, st.Txn.Step),
		Advice: "run daneroll renew " + c.Name + " to finish it, then " + command,
	}
}

// HintError is an error with advice for the user.
type HintError struct {
	Err    error
	Advice string
}

func (e *HintError) Error() string { return e.Err.Error() }
func (e *HintError) Unwrap() error { return e.Err }

// Hint is the advice.
func (e *HintError) Hint() string { return e.Advice }

// load reads a certificate's state, reconciled with the key files and the
// live set on disk (which win: they are what is served).
func (e *Engine) load(c *config.Certificate) (*State, error) {
	st := &State{Version: stateVersion}
	raw, err := e.st.ReadJournal(c.Name, st)
	if err != nil {
		return nil, fmt.Errorf("%s: journal: %w", c.Name, err)
	}
	e.remember(c.Name, raw)
	if st.Version > stateVersion {
		return nil, fmt.Errorf("%s: journal version %d is newer than this daneroll understands (%d)", c.Name, st.Version, stateVersion)
	}
	if err := st.validate(); err != nil {
		return nil, &HintError{
			Err:    fmt.Errorf("%s: journal %s: %w", c.Name, e.st.JournalName(c.Name), err),
			Advice: "daneroll did not write this; restore the file from a backup, or move it away to start the certificate's state afresh from its key files and live set",
		}
	}
	st.Version = stateVersion
	now := e.clock.Now()
	for _, slot := range []string{store.Current, store.Next} {
		id, typ, err := e.slotKey(c, st, slot, now)
		if err != nil {
			return nil, err
		}
		if slot == store.Current {
			st.Current, st.currentType = id, typ
		} else {
			st.Next = id
		}
	}
	if err := e.liveCert(c, st, now); err != nil {
		return nil, err
	}
	return st, nil
}

// slotKey returns the ID and type of the key in a slot ("" when there is
// none). A file whose stamp is the one noted in the journal is not read
// again; otherwise its public half is read (deciding needs no more; the
// private key is read where it is used) and noted.
func (e *Engine) slotKey(c *config.Certificate, st *State, slot string, now time.Time) (string, string, error) {
	stamp, err := e.st.KeyStamp(c.Name, slot)
	if errors.Is(err, os.ErrNotExist) {
		delete(st.Files, slot)
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", c.Name, err)
	}
	if n, ok := st.noted(slot, stamp); ok {
		return n.Key, n.Type, nil
	}
	pub, err := e.st.ReadPublicKey(c.Name, slot)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", c.Name, err)
	}
	ki, err := st.adopt(pub, now)
	if err != nil {
		return "", "", err
	}
	typ := acme.PublicKeyType(pub)
	st.note(slot, FileNote{Stamp: stamp, Key: ki.ID, Type: typ})
	return ki.ID, typ, nil
}

// restamp notes the files as a transaction leaves them, checking that each
// holds what the state says (the stamp is taken first: a change after it
// shows as another stamp next time).
func (e *Engine) restamp(c *config.Certificate, st *State) {
	for slot, want := range map[string]string{store.Current: st.Current, store.Next: st.Next} {
		delete(st.Files, slot)
		stamp, err := e.st.KeyStamp(c.Name, slot)
		if err != nil || want == "" {
			continue
		}
		pub, err := e.st.ReadPublicKey(c.Name, slot)
		if err != nil {
			continue
		}
		if id, _, err := keyID(pub); err == nil && id == want {
			st.note(slot, FileNote{Stamp: stamp, Key: id, Type: acme.PublicKeyType(pub)})
		}
	}
	delete(st.Files, "live")
	id, stamp, err := e.st.LiveStamp(c.Name)
	if err != nil || id == "" || id != st.LiveSet || st.Cert == nil {
		return
	}
	if id2, leaf, err := e.st.LiveLeaf(c.Name); err == nil && leaf != nil && id2 == id {
		if key, _, err := keyID(leaf.PublicKey); err == nil && key == st.Cert.Key {
			st.note("live", FileNote{Stamp: stamp, Key: key, Set: id})
		}
	}
}

// liveCert reconciles the journal with the live set: its ID and what its
// certificate says, read again only when its stamp changed.
func (e *Engine) liveCert(c *config.Certificate, st *State, now time.Time) error {
	id, stamp, err := e.st.LiveStamp(c.Name)
	if err != nil {
		return fmt.Errorf("%s: live set: %w", c.Name, err)
	}
	if id == "" {
		st.LiveSet, st.Cert = "", nil
		delete(st.Files, "live")
		return nil
	}
	if n, ok := st.noted("live", stamp); ok && n.Set == id && st.Cert != nil && st.Cert.Key == n.Key {
		st.LiveSet = id
		return nil
	}
	id, leaf, err := e.st.LiveLeaf(c.Name)
	if err != nil {
		return fmt.Errorf("%s: live set: %w", c.Name, err)
	}
	if leaf == nil {
		st.LiveSet, st.Cert = "", nil
		return nil
	}
	info, err := certInfoOf(leaf)
	if err != nil {
		return fmt.Errorf("%s: live set %s: %w", c.Name, id, err)
	}
	if _, err := st.adopt(leaf.PublicKey, now); err != nil {
		return err
	}
	st.LiveSet, st.Cert = id, info
	// The stamp taken before the read: if the file changed in between,
	// the next run reads it again.
	st.note("live", FileNote{Stamp: stamp, Key: info.Key, Set: id})
	return nil
}

func (e *Engine) save(c *config.Certificate, st *State) error {
	data, err := store.EncodeJSON(st)
	if err != nil {
		return fmt.Errorf("%s: journal: %w", c.Name, err)
	}
	if e.unchanged(c.Name, data) {
		return nil
	}
	if e.opts.Failpoint != nil {
		e.opts.Failpoint("before")
	}
	if err := e.st.WriteJournal(c.Name, data); err != nil {
		return fmt.Errorf("%s: journal: %w", c.Name, err)
	}
	e.remember(c.Name, data)
	if e.opts.Failpoint != nil {
		e.opts.Failpoint("after")
	}
	return nil
}

// remember notes the journal of name as it is on disk (nil: none).
func (e *Engine) remember(name string, data []byte) {
	e.journalsMu.Lock()
	defer e.journalsMu.Unlock()
	if e.journals == nil {
		e.journals = map[string][]byte{}
	}
	e.journals[name] = data
}

// unchanged reports whether data is the journal already on disk.
func (e *Engine) unchanged(name string, data []byte) bool {
	e.journalsMu.Lock()
	defer e.journalsMu.Unlock()
	on := e.journals[name]
	return on != nil && bytes.Equal(on, data)
}

func (e *Engine) acmeClient(ctx context.Context) (ACMEClient, error) {
	e.acmeMu.Lock()
	defer e.acmeMu.Unlock()
	if e.acme != nil {
		return e.acme, nil
	}
	if e.lookOnly {
		return nil, errLookOnly
	}
	c, err := e.opts.ACME(ctx)
	if err != nil {
		return nil, err
	}
	e.acme = c
	return c, nil
}
