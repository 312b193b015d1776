package rollover

import (
	"crypto"
	"errors"
	"fmt"
	"time"

	"github.com/daneroll/daneroll/store"
)

// Lineage is a certificate's state brought in from another tool (a certbot
// lineage): the key and certificate served now and the keys served before.
type Lineage struct {
	// Name is the certificate's name in the configuration.
	Name string
	// Key is the key being served; Cert and Chain (PEM) its certificate
	// and the issuers, leaf's issuer first.
	Key         crypto.Signer
	Cert, Chain []byte
	// Directory is the ACME directory that issued Cert, when known.
	Directory string
	// Since is when Key was first served (the oldest certificate of the
	// lineage with it); zero means now.
	Since time.Time
	// Older are the keys of the lineage's earlier certificates that it no
	// longer serves: records still published for them are stale, and
	// daneroll knows them as its own retired keys.
	Older []crypto.PublicKey
}

// ErrAlreadyImported is returned by Import for a certificate the store
// already holds.
var ErrAlreadyImported = errors.New("the state directory already holds this certificate")

// Import writes l into the store as if daneroll had issued it: the key as
// the current key, the certificate as the first archive set and the live
// one, and a journal that knows the older keys as retired. Nothing in DNS
// changes: the served key stays the same, so do the records for it.
func Import(st *store.Store, l Lineage, now time.Time) (err error) {
	if ids, err := st.Sets(l.Name); err != nil {
		return err
	} else if len(ids) > 0 {
		return fmt.Errorf("%s: %w (archive sets %v)", l.Name, ErrAlreadyImported, ids)
	}
	var j State
	if ok, err := st.ReadJSON(store.JournalPath(l.Name), &j); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("%s: %w (a journal exists)", l.Name, ErrAlreadyImported)
	}
	if _, err := st.ReadKey(l.Name, store.Current); err == nil {
		return fmt.Errorf("%s: %w (a current key exists)", l.Name, ErrAlreadyImported)
	}
	keyPEM, err := store.EncodeKey(l.Key)
	if err != nil {
		return err
	}
	set := &store.Set{Key: keyPEM, Cert: l.Cert, Chain: l.Chain}
	id, err := st.Install(l.Name, set)
	if err != nil {
		return err
	}
	info, err := certInfo(set)
	if err != nil {
		return err
	}
	since := l.Since
	if since.IsZero() {
		since = now
	}
	s := &State{Version: stateVersion, LiveSet: id, Cert: info, CurrentSince: since.UTC()}
	cur, err := s.adopt(l.Key.Public(), now)
	if err != nil {
		return err
	}
	cur.Served = since.UTC()
	s.Current = cur.ID
	if l.Directory != "" {
		s.setIssuer(id, l.Directory)
	}
	for _, pub := range l.Older {
		k, err := s.adopt(pub, now)
		if err != nil {
			return err
		}
		if k.ID != cur.ID {
			k.Imported = true
		}
	}
	if err := st.WriteKey(l.Name, store.Current, l.Key); err != nil {
		return err
	}
	if err := st.WriteJSON(store.JournalPath(l.Name), s); err != nil {
		return err
	}
	return st.Switch(l.Name, id)
}
