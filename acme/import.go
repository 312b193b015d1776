package acme

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	legoacme "github.com/go-acme/lego/v5/acme"

	"github.com/daneroll/daneroll/store"
)

// ImportAccount stores an account registered by another ACME client (a
// certbot account: its key and its URL at the CA) in dir, where
// [NewClient] finds it, so that no new account is registered. The key and
// the registration are each written atomically, the key first.
//
// An account already in dir is kept when it is this one (same key, same
// URL) and refused otherwise: replacing it would orphan the account
// daneroll used so far.
func ImportAccount(dir, email string, key crypto.Signer, location string) error {
	if u, err := url.Parse(location); err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("acme: import account: %q is not the https URL of an account", location)
	}
	keyPEM, err := store.EncodeKey(key)
	if err != nil {
		return fmt.Errorf("acme: import account: %w", err)
	}
	keyPath, jsonPath := filepath.Join(dir, accountKeyFile), filepath.Join(dir, accountJSONFile)
	haveKey := false
	switch data, err := store.ReadPrivate(keyPath); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("acme: import account: %w", err)
	default:
		old, err := store.ParseKey(data)
		if err != nil {
			return fmt.Errorf("acme: import account: %s: %w", keyPath, err)
		}
		if !samePublicKey(old.Public(), key.Public()) {
			return fmt.Errorf("acme: import account: %s holds another account's key", dir)
		}
		haveKey = true
	}
	switch data, err := store.ReadState(jsonPath); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("acme: import account: %w", err)
	default:
		var saved account
		if err := json.Unmarshal(data, &saved); err != nil {
			return fmt.Errorf("acme: import account: %s: %w", jsonPath, err)
		}
		if saved.Registration != nil && saved.Registration.Location != "" {
			if saved.Registration.Location != location {
				return fmt.Errorf("acme: import account: %s holds account %s, not %s", dir, saved.Registration.Location, location)
			}
			if haveKey {
				return nil // imported before
			}
		}
	}
	if !haveKey {
		if err := store.WriteFile(keyPath, keyPEM, 0o600); err != nil {
			return fmt.Errorf("acme: import account: %w", err)
		}
	}
	a := &account{
		Email: email,
		Registration: &legoacme.ExtendedAccount{
			Account:  legoacme.Account{Status: "valid", Contact: contact(email)},
			Location: location,
		},
		dir: dir,
	}
	if err := a.save(); err != nil {
		return fmt.Errorf("acme: import account: %w", err)
	}
	return nil
}

func contact(email string) []string {
	if email == "" {
		return nil
	}
	return []string{"mailto:" + email}
}
