// Package fleetkey seals the secrets a fleet keeps in etcd (private keys,
// above all) with the fleet key, an age identity file that every member
// holds, so that nothing secret leaves a host in the clear. See
// docs/fleet.md.
//
// # Sealed text
//
// A sealed text is an age file in age's binary format (not armored),
// encrypted with filippo.io/age to the fleet key's X25519 recipient, with
// exactly one recipient stanza. age does all of the cryptography; this
// package adds no primitive of its own.
//
// age has no associated data, so what a secret is for goes inside the
// encrypted text, in front of the secret, with a MAC:
//
//	daneroll-sealed v2\n
//	LABEL\n
//	MAC\n
//	DATA
//
// age encrypts to a public key: anyone who knows the recipient (age1…,
// which is not secret) can make an age file for it. The MAC proves that
// a holder of the fleet key sealed the text: it is HMAC-SHA256 of LABEL, a
// zero byte and DATA, in hex, under a key derived with HKDF-SHA256 from
// the identity itself. Without it, whoever can write to etcd could seal a
// private key of their own for a member to serve.
//
// LABEL names where the sealed text is stored ("certs/mail/keys/next",
// "certs/mail/sets/0002"); [Key.Open] unseals only for the same label, so a
// sealed key that someone with write access to etcd copies to another place
// does not unseal there. A label is 1 to [MaxLabel] printable ASCII
// characters, without spaces. Anyone holding the fleet key can read a
// sealed text with the age tool: `age -d -i fleet.key` prints the two
// header lines, then the data.
//
// [Key.Open] tells apart the ways a sealed text can fail to open:
// [ErrWrongLabel] (sealed for another place), [ErrWrongKey] (sealed to
// another fleet key), [ErrForged] (sealed to the fleet key by someone who
// does not hold it) and [ErrDamaged] (cut short, altered, not made by
// [Key.Seal] or larger than [MaxSealed]). age's X25519 stanzas do not name
// their recipient, so a stanza that is damaged where the file key is
// wrapped looks like one made for another key: [ErrWrongKey] means "no
// stanza opens with this key".
//
// # The key file
//
// The fleet key file is what age-keygen writes (and [Generate] makes):
// comment lines starting with '#', blank lines and one
// AGE-SECRET-KEY-1… line. [Load] reads it like daneroll reads its own
// private keys: a regular file, not a symlink, owned by the effective user
// or root, readable by nobody else, at most 64 KiB. Its errors name the
// file and never quote what it holds.
package fleetkey

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"
)

// Limits.
const (
	// MaxSealed is the largest sealed text Open reads. Seal never makes a
	// larger one.
	MaxSealed = 1 << 20
	// MaxData is the most Seal accepts: its sealed text, header and age's
	// overhead included, is always under MaxSealed.
	MaxData = MaxSealed - 64<<10
	// MaxLabel is the longest label, in bytes.
	MaxLabel = 256
	// maxKeyFile is the largest fleet key file Load reads: age-keygen
	// writes about 190 bytes.
	maxKeyFile = 64 << 10
)

// sealedHeader starts every sealed plaintext; the label and a newline
// follow it.
const sealedHeader = "daneroll-sealed v2\n"

// macInfo is the HKDF info of the MAC key.
const macInfo = "daneroll fleetkey seal MAC v2"

// Why Open failed; test with errors.Is.
var (
	// ErrWrongLabel: the text was sealed with this key, for another label.
	ErrWrongLabel = errors.New("sealed for another place")
	// ErrWrongKey: no recipient stanza opens with this key: the text was
	// sealed to another fleet key (or that stanza is damaged).
	ErrWrongKey = errors.New("not sealed to this fleet key")
	// ErrForged: sealed to the fleet key's public key, but not by a
	// holder of the fleet key (its MAC does not verify).
	ErrForged = errors.New("not sealed by a holder of the fleet key")
	// ErrDamaged: not a sealed text this package makes, or one that was
	// cut short, altered or grew beyond MaxSealed.
	ErrDamaged = errors.New("damaged")
	// ErrBadLabel: the label given to Seal or Open is empty, too long, or
	// holds a character outside printable ASCII (a space, a newline).
	ErrBadLabel = errors.New("bad label")
	// ErrTooLarge: Seal was given more than MaxData bytes.
	ErrTooLarge = errors.New("too large to seal")
)

// Key is a fleet's age identity: every member holds the same file. A Key
// is safe for concurrent use.
type Key struct {
	id        *age.X25519Identity
	recipient *age.X25519Recipient
	// macKey authenticates sealed texts; derived from id.
	macKey []byte
}

func newKey(id *age.X25519Identity) *Key {
	mk, err := hkdf.Key(sha256.New, []byte(id.String()), nil, macInfo, sha256.Size)
	if err != nil {
		// Only a key length beyond HKDF's limit fails.
		panic("fleetkey: hkdf: " + err.Error())
	}
	return &Key{id: id, recipient: id.Recipient(), macKey: mk}
}

// mac is the hex MAC of data sealed for label.
func (k *Key) mac(label string, data []byte) []byte {
	h := hmac.New(sha256.New, k.macKey)
	h.Write([]byte(label))
	h.Write([]byte{0})
	h.Write(data)
	return []byte(hex.EncodeToString(h.Sum(nil)))
}

// Recipient is the public key, "age1…".
func (k *Key) Recipient() string { return k.recipient.String() }

// String names the key by its public key, so that printing a Key never
// shows the secret.
func (k *Key) String() string { return "fleet key " + k.Recipient() }

// GoString is String, for %#v.
func (k *Key) GoString() string { return k.String() }

// Generate makes a new identity and returns it with the content of its key
// file, in age-keygen's format: "# created: RFC3339\n# public key:
// age1…\nAGE-SECRET-KEY-1…\n". The file is to be written 0600.
func Generate(now time.Time) (*Key, []byte, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, nil, fmt.Errorf("fleetkey: generate: %w", err)
	}
	k := newKey(id)
	file := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", now.Format(time.RFC3339), k.Recipient(), id.String())
	return k, []byte(file), nil
}

// checkLabel returns an error wrapping ErrBadLabel unless label is 1 to
// MaxLabel bytes of printable ASCII without spaces.
func checkLabel(label string) error {
	if label == "" {
		return fmt.Errorf("empty label: %w", ErrBadLabel)
	}
	if len(label) > MaxLabel {
		return fmt.Errorf("label of %d bytes, more than %d: %w", len(label), MaxLabel, ErrBadLabel)
	}
	for i := 0; i < len(label); i++ {
		if c := label[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("label %q: byte %d is a space, a control character or not ASCII: %w", label, i, ErrBadLabel)
		}
	}
	return nil
}

// Seal encrypts plaintext (at most MaxData bytes) to the fleet key,
// binding it to label, where the sealed text is stored (such as
// "certs/mail/keys/next"): only Open with the same label unseals it.
func (k *Key) Seal(label string, plaintext []byte) ([]byte, error) {
	if err := checkLabel(label); err != nil {
		return nil, fmt.Errorf("fleetkey: seal: %w", err)
	}
	if len(plaintext) > MaxData {
		return nil, fmt.Errorf("fleetkey: seal %s: %d bytes, more than %d: %w", label, len(plaintext), MaxData, ErrTooLarge)
	}
	var out bytes.Buffer
	w, err := age.Encrypt(&out, k.recipient)
	if err != nil {
		return nil, fmt.Errorf("fleetkey: seal %s: %w", label, err)
	}
	for _, part := range [][]byte{[]byte(sealedHeader), []byte(label), {'\n'}, k.mac(label, plaintext), {'\n'}, plaintext} {
		if _, err := w.Write(part); err != nil {
			return nil, fmt.Errorf("fleetkey: seal %s: %w", label, err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("fleetkey: seal %s: %w", label, err)
	}
	return out.Bytes(), nil
}

// errStanzas is what onlyStanza returns for a header Seal cannot have
// written.
var errStanzas = errors.New("not one X25519 recipient stanza")

// onlyStanza is the fleet key as an age.Identity that refuses a header
// with anything but the one X25519 stanza Seal writes, so that a header
// with extra stanzas is damaged, not "another key's", and a planted one
// with thousands of stanzas costs one X25519 operation, not thousands.
type onlyStanza struct{ id *age.X25519Identity }

func (o onlyStanza) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	if len(stanzas) != 1 || stanzas[0].Type != "X25519" {
		return nil, errStanzas
	}
	return o.id.Unwrap(stanzas)
}

// Open decrypts what Seal made for the same label. Its errors wrap
// ErrWrongLabel, ErrWrongKey, ErrForged, ErrDamaged or (for label itself)
// ErrBadLabel; they are one line and quote nothing of the sealed text but,
// after it is authenticated, the label it was sealed for.
func (k *Key) Open(label string, sealed []byte) ([]byte, error) {
	if err := checkLabel(label); err != nil {
		return nil, fmt.Errorf("fleetkey: open: %w", err)
	}
	damaged := func(why string) error {
		return fmt.Errorf("fleetkey: open %s: %w: %s", label, ErrDamaged, why)
	}
	if len(sealed) > MaxSealed {
		return nil, damaged(fmt.Sprintf("%d bytes, more than %d", len(sealed), MaxSealed))
	}
	r, err := age.Decrypt(bytes.NewReader(sealed), onlyStanza{k.id})
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		switch {
		case errors.As(err, &nomatch):
			return nil, fmt.Errorf("fleetkey: open %s: %w (%s)", label, ErrWrongKey, k.Recipient())
		case errors.Is(err, errStanzas):
			return nil, damaged("its header has not one X25519 recipient stanza")
		default:
			// age's own message may quote the input: leave it out.
			return nil, damaged("not an age file, or its header is altered")
		}
	}
	// The plaintext is shorter than the sealed text, so this only bounds
	// what a bug could make.
	plain, err := io.ReadAll(io.LimitReader(r, MaxSealed))
	if err != nil {
		return nil, damaged("its content is cut short or altered")
	}
	rest, ok := bytes.CutPrefix(plain, []byte(sealedHeader))
	if !ok {
		return nil, damaged("not sealed by daneroll (no v2 header)")
	}
	got, data, ok := bytes.Cut(rest, []byte{'\n'})
	if !ok || checkLabel(string(got)) != nil {
		return nil, damaged("bad label line")
	}
	mac, data, ok := bytes.Cut(data, []byte{'\n'})
	if !ok || len(mac) != 2*sha256.Size {
		return nil, damaged("bad MAC line")
	}
	if !hmac.Equal(mac, k.mac(string(got), data)) {
		return nil, fmt.Errorf("fleetkey: open %s: %w", label, ErrForged)
	}
	if string(got) != label {
		return nil, fmt.Errorf("fleetkey: open %s: %w (%s)", label, ErrWrongLabel, got)
	}
	if len(data) > MaxData {
		return nil, damaged(fmt.Sprintf("holds %d bytes, more than %d", len(data), MaxData))
	}
	return data, nil
}

// LoadError is a fleet key file Load refuses.
type LoadError struct {
	Path   string
	Reason string
	// Advice is how to fix it, when there is something to say.
	Advice string
	// Err is the underlying error, if any (from opening the file).
	Err error
}

func (e *LoadError) Error() string { return "fleetkey: " + e.Path + ": " + e.Reason }

// Unwrap returns the underlying error.
func (e *LoadError) Unwrap() error { return e.Err }

// Hint says how to fix it.
func (e *LoadError) Hint() string { return e.Advice }

// Load reads the fleet key file at path: a regular file (not a symlink,
// not a FIFO), owned by the effective user or root, with no permission
// bits for group or others, at most 64 KiB, holding exactly one
// AGE-SECRET-KEY-1… line among comments ('#') and blank lines. Its errors
// are *LoadError.
func Load(path string) (*Key, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	id, err := parseKeyFile(path, data)
	if err != nil {
		return nil, err
	}
	return newKey(id), nil
}

func readKeyFile(path string) ([]byte, error) {
	refuse := func(reason, advice string) error {
		return &LoadError{Path: path, Reason: reason, Advice: advice}
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		var reason string
		var pe *fs.PathError
		if errors.As(err, &pe) {
			reason = pe.Err.Error()
		} else {
			reason = err.Error()
		}
		e := &LoadError{Path: path, Reason: reason, Err: err}
		switch {
		case errors.Is(err, syscall.ELOOP):
			e.Reason = "is a symlink; daneroll does not follow a link to its fleet key"
			e.Advice = "name the file itself, or replace the link with the file"
		case errors.Is(err, fs.ErrNotExist):
			e.Advice = "every member needs the fleet's key file: copy it from another member (a new fleet makes one with age-keygen)"
		}
		return nil, e
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, &LoadError{Path: path, Reason: "stat: " + err.Error(), Err: err}
	}
	switch mode := fi.Mode(); {
	case mode.IsDir():
		return nil, refuse("is a directory, not an age identity file", "")
	case !mode.IsRegular():
		return nil, refuse(fmt.Sprintf("is not a regular file (%s)", kind(mode)), "name the age identity file itself")
	}
	euid := os.Geteuid()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != euid && st.Uid != 0 {
		return nil, refuse(fmt.Sprintf("owned by uid %d, not by the user daneroll runs as (uid %d) or root; refusing a key another user could have written", st.Uid, euid),
			fmt.Sprintf("check who put it there; if it is yours: chown %d %s", euid, shellQuote(path)))
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, refuse(fmt.Sprintf("readable or writable by group or others (mode %04o); a fleet key must be private", perm),
			"chmod 600 "+shellQuote(path))
	}
	if fi.Size() > maxKeyFile {
		return nil, refuse(fmt.Sprintf("is %d bytes, more than an age identity file ever is (%d KiB at most)", fi.Size(), maxKeyFile>>10), "")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, &LoadError{Path: path, Reason: "read: " + err.Error(), Err: err}
	}
	if len(data) > maxKeyFile {
		return nil, refuse(fmt.Sprintf("grew beyond %d KiB while being read", maxKeyFile>>10), "")
	}
	return data, nil
}

// kind names what a file that is not regular is.
func kind(mode fs.FileMode) string {
	switch {
	case mode&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case mode&fs.ModeSocket != 0:
		return "a socket"
	case mode&fs.ModeCharDevice != 0:
		return "a character device"
	case mode&fs.ModeDevice != 0:
		return "a device"
	}
	return mode.Type().String()
}

// parseKeyFile finds the one X25519 identity in a key file. Its errors say
// which line is wrong, never what it holds.
func parseKeyFile(path string, data []byte) (*age.X25519Identity, error) {
	refuse := func(reason, advice string) error {
		return &LoadError{Path: path, Reason: reason, Advice: advice}
	}
	var id *age.X25519Identity
	found := 0
	for n, line := range strings.Split(string(data), "\n") {
		n++ // lines count from 1
		line = strings.TrimSpace(line)
		upper := strings.ToUpper(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(upper, "AGE-SECRET-KEY-PQ-1"):
			return nil, refuse(fmt.Sprintf("line %d is a post-quantum (hybrid) identity; the fleet key is an X25519 one", n),
				"make the fleet key with age-keygen without -pq")
		case strings.HasPrefix(upper, "AGE-PLUGIN-"):
			return nil, refuse(fmt.Sprintf("line %d is a plugin identity; the fleet key is an X25519 one", n), "")
		case strings.HasPrefix(upper, "AGE-SECRET-KEY-1"):
			found++
			if found > 1 {
				continue
			}
			parsed, err := age.ParseX25519Identity(line)
			if err != nil {
				// err may quote part of the key: leave it out.
				return nil, refuse(fmt.Sprintf("line %d is not a valid age identity (a typo or a cut?)", n), "")
			}
			id = parsed
		case strings.HasPrefix(strings.ToLower(line), "age1"):
			return nil, refuse(fmt.Sprintf("line %d is a public key (a recipient); the fleet key file holds the secret identity", n),
				"name the file age-keygen wrote, not the recipients file")
		default:
			return nil, refuse(fmt.Sprintf("line %d is neither a comment nor an age identity", n), "")
		}
	}
	switch {
	case found == 0:
		return nil, refuse("holds no age identity", "make the fleet key with age-keygen, or copy the fleet's from another member")
	case found > 1:
		return nil, refuse(fmt.Sprintf("holds %d identities; a fleet key file holds exactly one", found),
			"keep only the fleet's identity in it")
	}
	return id, nil
}

// shellQuote quotes path for a command in a hint, when it needs it.
func shellQuote(path string) string {
	if path != "" && strings.Trim(path, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+,:@%") == "" {
		return path
	}
	return "'" + strings.ReplaceAll(path, "'", `'\''`) + "'"
}
