// Package store owns daneroll's state directory: atomic file writes, the
// process lock, certificate keys, the live and archived certificate sets and
// the per-certificate journal.
//
// # Layout
//
//	STATE/lock                         one daneroll at a time (flock), holds the pid
//	STATE/keys/NAME/current.pem        the key in use
//	STATE/keys/NAME/next.pem           the pre-generated next key (rollover, fresh)
//	STATE/archive/NAME/NNNN/           every certificate set ever deployed
//	STATE/live/NAME -> ../archive/NAME/NNNN   the set being served
//	STATE/journal/NAME.json            the certificate's state and pending transaction
//	STATE/accounts/HOST/EMAIL/         ACME accounts
//
// A set directory holds privkey.pem, cert.pem, chain.pem and fullchain.pem,
// the layout certbot users' service configurations expect, plus combined.pem
// (key, certificate and chain in one file, for servers that can read them
// from one file and so can never pair a key with the wrong certificate).
//
// # Atomicity
//
// Every file is written to a temporary name in its directory, synced,
// renamed over the target and the directory synced: a reader sees the old
// file or the new one, never half of one. A set is written completely under
// a temporary directory name before it is renamed into the archive, and the
// live symlink is replaced by rename, so the switch between sets is one
// atomic step. Keys are 0600 in 0700 directories.
package store

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile writes data to path atomically with the given permissions: a
// temporary file in the same directory is written, chmod-ed, synced and
// renamed over path, then the directory is synced.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	return syncDir(dir)
}

// syncDir makes a rename or a new entry in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
