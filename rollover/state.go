package rollover

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/store"
)

// stateVersion is written into every journal; a journal from a newer
// daneroll is refused rather than misread.
const stateVersion = 1

// State is everything daneroll remembers about one certificate, kept in
// STATE/journal/NAME.json and written atomically before every externally
// visible step.
type State struct {
	Version int `json:"version"`

	// Keys is every key daneroll has managed for this certificate, so that
	// records of retired keys are recognised as ours and removed.
	Keys []*KeyInfo `json:"keys"`
	// Current and Next are the IDs of keys/NAME/current.pem and next.pem.
	Current string `json:"current,omitempty"`
	Next    string `json:"next,omitempty"`
	// CurrentSince is when the current key was first served.
	CurrentSince time.Time `json:"current_since,omitzero"`

	// LiveSet is the archive set being served.
	LiveSet string    `json:"live_set,omitempty"`
	Cert    *CertInfo `json:"cert,omitempty"`
	// Issuers maps archive set IDs to the ACME directory that issued
	// them: "replaces" names a certificate only to the CA that issued it.
	Issuers map[string]string `json:"issuers,omitempty"`
	// Owners are the TLSA owner names daneroll has published records at
	// for this certificate, so that the records left at one the
	// configuration no longer names are found and pruned.
	Owners []string `json:"owners,omitempty"`

	Renewal *Renewal `json:"renewal,omitempty"`

	// RekeyRequested is set by `daneroll rekey` and cleared by the
	// rollover it starts.
	RekeyRequested bool `json:"rekey_requested,omitempty"`

	// Txn is the transaction in progress, nil when none is.
	Txn *Txn `json:"txn,omitempty"`

	// LastFailure describes the last transaction that was rolled back.
	LastFailure string `json:"last_failure,omitempty"`

	// Files notes what the key files and the live certificate held when
	// last read, by their stamps ("current", "next", "live"): a file whose
	// stamp is unchanged is not read again.
	Files map[string]FileNote `json:"files,omitempty"`

	// currentType is the current key's type ("ec256", …), from its file.
	currentType string
}

// FileNote is what a file held at a stamp: a key slot's key (and its
// type), or the live set's ID and its leaf's key.
type FileNote struct {
	store.Stamp
	Key  string `json:"key"`
	Type string `json:"type,omitempty"`
	Set  string `json:"set,omitempty"`
}

// KeyInfo is one key.
type KeyInfo struct {
	ID      string    `json:"id"`   // hex SHA-256 of the SPKI: the "3 1 1" digest
	SPKI    []byte    `json:"spki"` // DER SubjectPublicKeyInfo
	Created time.Time `json:"created"`
	// SafeAt maps a TLSA owner name to the time from which no resolver can
	// still hold an answer for that name that lacks this key's records:
	// confirmation on every authoritative server plus the hold.
	SafeAt map[string]time.Time `json:"safe_at,omitempty"`
	// Served is when the key was first served, Retired when its records
	// were removed.
	Served  time.Time `json:"served,omitzero"`
	Retired time.Time `json:"retired,omitzero"`
	// Imported marks a key daneroll found in another tool's history (an
	// older certbot certificate) and never served or published itself:
	// records for it are stale, but removed only by a prune that has
	// checked that no endpoint serves the key.
	Imported bool `json:"imported,omitempty"`
}

// CertInfo describes the live certificate.
type CertInfo struct {
	Serial    string    `json:"serial"`
	Domains   []string  `json:"domains"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Issuer    string    `json:"issuer"`
	Key       string    `json:"key"`
}

// Renewal is the renewal schedule.
type Renewal struct {
	// Serial is the certificate the schedule is for.
	Serial string    `json:"serial"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
	// Window is the CA's ARI window the time was picked from.
	Window *acme.Window `json:"window,omitempty"`
	// NextCheck is when to ask the CA for renewal information again.
	NextCheck time.Time `json:"next_check,omitzero"`
}

// Transaction kinds.
const (
	KindIssue       = "issue"        // first certificate
	KindRenew       = "renew"        // same key, new certificate
	KindRekey       = "rekey"        // the served key changes
	KindPublishNext = "publish-next" // publish a new next key's records
	KindRepair      = "repair"       // re-publish records that went missing
	KindPrune       = "prune"        // remove stale records, after probing
)

// Steps, in order. A transaction records the step it is about to take (or
// is taking) before it takes it, so a killed run redoes it on resume; every
// step is idempotent.
const (
	StepPlan    = "plan"
	StepPublish = "publish"
	StepConfirm = "confirm"
	StepHold    = "hold"
	StepObtain  = "obtain"
	StepDeploy  = "deploy"
	StepVerify  = "verify"
	StepPromote = "promote"
	StepRetire  = "retire"
	StepCleanup = "confirm-retire"
	StepDone    = "done"
)

// Txn is a transaction in progress.
type Txn struct {
	Kind    string    `json:"kind"`
	Step    string    `json:"step"`
	Reason  string    `json:"reason"`
	Started time.Time `json:"started"`
	// Target is the key to be served when the transaction ends; Previous
	// the key served when it began ("" when none was).
	Target   string `json:"target"`
	Previous string `json:"previous,omitempty"`
	// HoldTTL is the largest TTL (seconds) a resolver may hold from before
	// the publish step: old RRset TTLs and, where the RRset was absent,
	// the negative TTL.
	HoldTTL uint32 `json:"hold_ttl,omitempty"`
	// ConfirmedAt is when every authoritative server served the change.
	ConfirmedAt time.Time `json:"confirmed_at,omitzero"`
	// PrevSet and NewSet are archive set IDs (before deploy, obtained).
	PrevSet string `json:"prev_set,omitempty"`
	NewSet  string `json:"new_set,omitempty"`
	// Retired are the key IDs whose records the retire step removes.
	Retired []string `json:"retired,omitempty"`
	// RetireChanged is set when the retire step added or removed records,
	// which the step after it then confirms.
	RetireChanged bool `json:"retire_changed,omitempty"`
	// Prune are the stale records (zone-file lines) that the retire step
	// deletes after a prune (or, with stale_records = "remove", a renewal)
	// checked that no endpoint serves a key they match.
	Prune []string `json:"prune,omitempty"`
	// Challenges are the dns-01 TXT records (zone-file lines) published
	// for the order and not yet removed: written before each is added, so
	// that the run after a kill removes what the killed one left.
	Challenges []string `json:"challenges,omitempty"`
	// Error is what stopped the last attempt at Step, and ErrorAt when;
	// both are cleared when the step succeeds.
	Error   string    `json:"error,omitempty"`
	ErrorAt time.Time `json:"error_at,omitzero"`
}

// keyID is the hex SHA-256 of a public key's SPKI, the digest of its
// "3 1 1" record.
func keyID(pub crypto.PublicKey) (string, []byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", nil, err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), der, nil
}

// key returns the KeyInfo with the given ID, or nil.
func (s *State) key(id string) *KeyInfo {
	for _, k := range s.Keys {
		if k.ID == id {
			return k
		}
	}
	return nil
}

// adopt records a key, once.
func (s *State) adopt(pub crypto.PublicKey, now time.Time) (*KeyInfo, error) {
	id, der, err := keyID(pub)
	if err != nil {
		return nil, err
	}
	if k := s.key(id); k != nil {
		return k, nil
	}
	k := &KeyInfo{ID: id, SPKI: der, Created: now}
	s.Keys = append(s.Keys, k)
	return k, nil
}

// protectedKeys are the keys that are served or may be soon: their records
// must never be deleted.
func (s *State) protectedKeys() []string {
	var ids []string
	for _, id := range []string{s.Current, s.Next, s.servedKey()} {
		if id != "" && !contains(ids, id) {
			ids = append(ids, id)
		}
	}
	// The key a transaction is about to serve. (The key it replaces is the
	// served key until the switch, and nothing deletes records between the
	// switch and the verify that may switch back.)
	if s.Txn != nil && s.Txn.Target != "" && !contains(ids, s.Txn.Target) {
		ids = append(ids, s.Txn.Target)
	}
	return ids
}

// servedKey is the key of the live set.
func (s *State) servedKey() string {
	if s.Cert == nil {
		return ""
	}
	return s.Cert.Key
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// certInfo describes a set's leaf.
func certInfo(set *store.Set) (*CertInfo, error) {
	leaf, err := set.Leaf()
	if err != nil {
		return nil, err
	}
	return certInfoOf(leaf)
}

func certInfoOf(leaf *x509.Certificate) (*CertInfo, error) {
	id, _, err := keyID(leaf.PublicKey)
	if err != nil {
		return nil, err
	}
	return &CertInfo{
		Serial:    fmt.Sprintf("%x", leaf.SerialNumber),
		Domains:   leaf.DNSNames,
		NotBefore: leaf.NotBefore.UTC(),
		NotAfter:  leaf.NotAfter.UTC(),
		Issuer:    leaf.Issuer.CommonName,
		Key:       id,
	}, nil
}

// tlsaOwnerName matches the owner names daneroll publishes at,
// "_25._tcp.mail.example.org.".
var tlsaOwnerName = regexp.MustCompile(`^_[0-9]{1,5}\._(tcp|udp|sctp)(\.[a-z0-9_-]{1,63})+\.$`)

// isKeyID reports whether id looks like a keyID: 64 lower-case hex digits.
func isKeyID(id string) bool {
	if len(id) != sha256.Size*2 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

var kinds = []string{KindIssue, KindRenew, KindRekey, KindPublishNext, KindRepair, KindPrune}

// validate checks a journal read from disk. daneroll wrote it, but a file
// in the state directory is input like any other: what is wrong with it is
// one line of error, never a panic or a path outside the state directory.
func (s *State) validate() error {
	known := map[string]bool{}
	for i, k := range s.Keys {
		if k == nil {
			return fmt.Errorf("keys[%d] is null", i)
		}
		if !isKeyID(k.ID) {
			return fmt.Errorf("keys[%d]: id %q is not a SHA-256 digest in hex", i, k.ID)
		}
		// The digest ties each key to its ID; the SPKI itself is parsed
		// where a key is used, not on every load of every journal.
		if len(k.SPKI) == 0 {
			return fmt.Errorf("keys[%d]: spki is empty", i)
		}
		if sum := sha256.Sum256(k.SPKI); !bytes.Equal(sum[:], mustHex(k.ID)) {
			return fmt.Errorf("keys[%d]: id %s is not the digest of its spki", i, short(k.ID))
		}
		if known[k.ID] {
			return fmt.Errorf("keys[%d]: key %s is listed twice", i, short(k.ID))
		}
		known[k.ID] = true
	}
	for field, id := range map[string]string{"current": s.Current, "next": s.Next} {
		if id != "" && !isKeyID(id) {
			return fmt.Errorf("%s: %q is not a key id", field, id)
		}
	}
	if s.LiveSet != "" && !store.ValidSetID(s.LiveSet) {
		return fmt.Errorf("live_set: %q is not a set id", s.LiveSet)
	}
	for slot, n := range s.Files {
		switch {
		case slot != "current" && slot != "next" && slot != "live":
			return fmt.Errorf("files: unknown file %q", slot)
		case !isKeyID(n.Key):
			return fmt.Errorf("files.%s: %q is not a key id", slot, n.Key)
		case slot == "live" && !store.ValidSetID(n.Set):
			return fmt.Errorf("files.live: %q is not a set id", n.Set)
		}
	}
	for i, o := range s.Owners {
		if !tlsaOwnerName.MatchString(o) {
			return fmt.Errorf("owners[%d]: %q is not a TLSA owner name", i, o)
		}
	}
	for id := range s.Issuers {
		if !store.ValidSetID(id) {
			return fmt.Errorf("issuers: %q is not a set id", id)
		}
	}
	if s.Cert != nil && s.Cert.Key != "" && !isKeyID(s.Cert.Key) {
		return fmt.Errorf("cert.key: %q is not a key id", s.Cert.Key)
	}
	if s.Renewal != nil && s.Renewal.Window != nil && s.Renewal.Window.End.Before(s.Renewal.Window.Start) {
		return errors.New("renewal.window ends before it starts")
	}
	t := s.Txn
	if t == nil {
		return nil
	}
	if !slices.Contains(kinds, t.Kind) {
		return fmt.Errorf("txn.kind: unknown kind %q", t.Kind)
	}
	if !slices.Contains(sequence(t.Kind, true), t.Step) {
		return fmt.Errorf("txn.step: %q is not a step of a %s transaction", t.Step, t.Kind)
	}
	if t.Target != "" && !known[t.Target] {
		return fmt.Errorf("txn.target: %q is not one of the journal's keys", t.Target)
	}
	if t.Previous != "" && !isKeyID(t.Previous) {
		return fmt.Errorf("txn.previous: %q is not a key id", t.Previous)
	}
	for field, id := range map[string]string{"txn.prev_set": t.PrevSet, "txn.new_set": t.NewSet} {
		if id != "" && !store.ValidSetID(id) {
			return fmt.Errorf("%s: %q is not a set id", field, id)
		}
	}
	for i, id := range t.Retired {
		if !isKeyID(id) {
			return fmt.Errorf("txn.retired[%d]: %q is not a key id", i, id)
		}
	}
	for i, line := range t.Prune {
		rr, err := prunedRecord(line)
		if err != nil {
			return fmt.Errorf("txn.prune[%d]: %v", i, err)
		}
		if !tlsaOwnerName.MatchString(rr.Hdr.Name) {
			return fmt.Errorf("txn.prune[%d]: %q is not at a TLSA owner name", i, rr.Hdr.Name)
		}
	}
	for i, line := range t.Challenges {
		if _, err := challengeRecord(line); err != nil {
			return fmt.Errorf("txn.challenges[%d]: %v", i, err)
		}
	}
	return nil
}

// challengeRecord reads a journaled dns-01 record. Only TXT records at an
// _acme-challenge name are accepted: the next run deletes them.
func challengeRecord(line string) (*dns.TXT, error) {
	rr, err := dns.NewRR(line)
	if err != nil {
		return nil, fmt.Errorf("not a record: %q", line)
	}
	txt, ok := rr.(*dns.TXT)
	if !ok || !strings.HasPrefix(strings.ToLower(txt.Hdr.Name), "_acme-challenge.") {
		return nil, fmt.Errorf("%q is not an _acme-challenge TXT record", line)
	}
	return txt, nil
}

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}

// issuedElsewhere reports whether set id is known to come from an ACME
// directory other than dir, and which.
func (s *State) issuedElsewhere(id, dir string) (string, bool) {
	issuer, ok := s.Issuers[id]
	return issuer, ok && issuer != dir
}

func (s *State) setIssuer(id, dir string) {
	if s.Issuers == nil {
		s.Issuers = map[string]string{}
	}
	s.Issuers[id] = dir
}

// forgetSets drops what the journal knows of archive sets that were
// removed (keep_sets).
func (s *State) forgetSets(ids []string) {
	for _, id := range ids {
		delete(s.Issuers, id)
	}
	if len(s.Issuers) == 0 {
		s.Issuers = nil
	}
}

// noted returns what the file at slot held, when its stamp is the one
// noted and the key is one the journal knows.
func (s *State) noted(slot string, stamp store.Stamp) (FileNote, bool) {
	n, ok := s.Files[slot]
	if !ok || n.Stamp != stamp || s.key(n.Key) == nil {
		return FileNote{}, false
	}
	return n, true
}

func (s *State) note(slot string, n FileNote) {
	if s.Files == nil {
		s.Files = map[string]FileNote{}
	}
	s.Files[slot] = n
}
