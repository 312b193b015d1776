// Package acme obtains certificates over ACME with lego, always for a key
// the caller chooses, so that daneroll decides when a key changes.
//
// # Accounts
//
// One account per directory URL and e-mail address, stored under the state
// directory (accounts/HOST/EMAIL/key.pem 0600 and account.json). A new
// account is registered only when the configuration accepts the CA's terms
// of service; otherwise [NewClient] returns a [*TOSError] carrying their URL.
// CAs such as ZeroSSL and Google Trust Services register an account only
// with External Account Binding ([EAB]); the MAC key is read only then.
//
// # Issuance
//
// [Client.Obtain] runs one order for a set of names with a caller-supplied
// key, an optional ACME profile and, for renewals, the certificate it
// replaces (RFC 9773 "replaces"). Challenges are solved by lego's standalone
// http-01 and tls-alpn-01 servers, a webroot, or dns-01 through a
// [TXTPublisher] (daneroll's DNS publishers, so that one publisher serves
// both challenges and TLSA records).
//
// # Renewal timing
//
// [Client.RenewalInfo] asks the CA for its suggested renewal window (ARI);
// [Schedule] picks a time in it, or falls back to renew_before.
package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/acme/api"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/registration"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/internal/smallfile"
	"github.com/daneroll/daneroll/store"
)

// Options configure a Client.
type Options struct {
	// Directory is the URL of the ACME directory.
	Directory string
	Email     string
	AcceptTOS bool
	// CARoots are PEM files of extra roots trusted for the ACME server's
	// HTTPS, added to the system pool.
	CARoots []string
	// AccountDir holds the account key and registration.
	AccountDir string
	// HTTPClient overrides the client built from CARoots (tests).
	HTTPClient *http.Client
	UserAgent  string
	Logger     *slog.Logger
	// EAB binds a new account to one at the CA; nil when the CA needs
	// none. An account registered earlier is used without it.
	EAB *EAB
	// PreferredChain is the default of Request.PreferredChain.
	PreferredChain string
}

// EAB is External Account Binding (RFC 8555 §7.3.4): the key ID and MAC key
// a CA hands out so that a new ACME account is tied to an account there.
type EAB struct {
	KID string
	// HMACKey returns the MAC key as the CA hands it out: base64url,
	// standard base64 accepted too. It is called only when an account is
	// registered, so the secret is read only when it is needed.
	HMACKey func() (string, error)
}

// EABKeyError is an External Account Binding MAC key that could not be read
// or decoded. It never carries the key.
type EABKeyError struct{ Err error }

func (e *EABKeyError) Error() string {
	return "acme: external account binding: hmac key: " + e.Err.Error()
}

// Unwrap gives the reason.
func (e *EABKeyError) Unwrap() error { return e.Err }

// Hint tells the user what to change.
func (e *EABKeyError) Hint() string {
	return "put the HMAC key exactly as the CA shows it (base64url) into the file named by eab_hmac_key_file (or the variable named by eab_hmac_key_env)"
}

// decodeMACKey decodes an EAB MAC key. CAs hand it out base64url without
// padding; padded and standard base64 (a key pasted through other tools)
// mean the same bytes. The error never quotes the key.
func decodeMACKey(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if s == "" {
		return nil, errors.New("empty")
	}
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64url (nor base64)")
}

// Client talks to one ACME server with one account.
type Client struct {
	lego    *lego.Client
	config  *lego.Config // the HTTP client and user agent the orders use
	account *account
	log     *slog.Logger
	dir     string
	// preferredChain is the chain asked for when a request names none.
	preferredChain string

	coreMu sync.Mutex // guards core
	// core runs the orders, concurrently (see order).
	core *api.Core
}

// TOSError is returned when a new account would have to accept terms of
// service that the configuration has not accepted.
type TOSError struct {
	URL string // may be empty when the CA does not publish one
}

func (e *TOSError) Error() string {
	if e.URL == "" {
		return "the CA requires accepting its terms of service"
	}
	return "the CA requires accepting its terms of service: " + e.URL
}

// Hint tells the user what to change.
func (e *TOSError) Hint() string {
	return "read them, then set accept_tos = true in [acme]"
}

// NewClient loads or creates the account and, if needed, registers it.
func NewClient(ctx context.Context, opts Options) (*Client, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hc := opts.HTTPClient
	if hc == nil {
		var err error
		if hc, err = httpClient(opts.CARoots); err != nil {
			return nil, err
		}
	}
	acct, err := loadAccount(opts.AccountDir, opts.Email)
	if err != nil {
		return nil, err
	}
	cfg := lego.NewConfig(acct)
	cfg.CADirURL = opts.Directory
	cfg.HTTPClient = hc
	cfg.UserAgent = opts.UserAgent
	lc, err := lego.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("acme: directory %s: %w", opts.Directory, unwrapURL(err))
	}
	c := &Client{lego: lc, config: cfg, account: acct, log: log, dir: opts.Directory, preferredChain: opts.PreferredChain}
	if acct.Registration == nil {
		if !opts.AcceptTOS {
			return nil, &TOSError{URL: lc.GetServerMetadata().TermsOfService}
		}
		reg, err := register(ctx, lc, opts.EAB)
		if err != nil {
			return nil, err
		}
		acct.Registration = reg
		if err := acct.save(); err != nil {
			return nil, err
		}
		log.Info("registered ACME account", "directory", opts.Directory, "account", reg.Location)
	}
	return c, nil
}

// register makes a new account, bound to the CA's account when eab is set.
func register(ctx context.Context, lc *lego.Client, eab *EAB) (*legoacme.ExtendedAccount, error) {
	if eab == nil {
		reg, err := lc.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
		if err != nil {
			return nil, fmt.Errorf("acme: register account: %w", describe(err))
		}
		return reg, nil
	}
	if eab.HMACKey == nil {
		return nil, &EABKeyError{Err: errors.New("not configured")}
	}
	raw, err := eab.HMACKey()
	if err != nil {
		return nil, &EABKeyError{Err: err}
	}
	mac, err := decodeMACKey(raw)
	if err != nil {
		return nil, &EABKeyError{Err: err}
	}
	// lego takes the key encoded; handing it the one encoding it decodes
	// first spares it guessing.
	reg, err := lc.Registration.RegisterWithExternalAccountBinding(ctx, registration.RegisterEABOptions{
		TermsOfServiceAgreed: true,
		Kid:                  eab.KID,
		HmacEncoded:          base64.RawURLEncoding.EncodeToString(mac),
	})
	if err != nil {
		err = describe(err)
		var p *Problem
		if errors.As(err, &p) {
			p.binding = true
		}
		return nil, fmt.Errorf("acme: register account with external account binding (key ID %q): %w", eab.KID, err)
	}
	return reg, nil
}

// maxCARoots bounds a ca_roots file, as the configuration's validation does.
const maxCARoots = config.MaxPEMFile

// httpClient trusts the system roots plus the given PEM files.
func httpClient(roots []string) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range roots {
		data, err := smallfile.Read(f, maxCARoots)
		if err != nil {
			return nil, fmt.Errorf("acme: ca_roots: %w", err)
		}
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("acme: ca_roots: no certificates in %s", f)
		}
	}
	return &http.Client{
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		},
	}, nil
}

// account implements lego's registration.User.
type account struct {
	Email        string                    `json:"email"`
	Registration *legoacme.ExtendedAccount `json:"registration"`

	key crypto.Signer
	dir string
}

func (a *account) GetEmail() string                           { return a.Email }
func (a *account) GetRegistration() *legoacme.ExtendedAccount { return a.Registration }
func (a *account) GetPrivateKey() crypto.Signer               { return a.key }

const (
	accountKeyFile  = "key.pem"
	accountJSONFile = "account.json"
)

// loadAccount reads the account in dir, creating its key if there is none.
// The key is written before any registration so that a retry after a
// failure registers the same key.
func loadAccount(dir, email string) (*account, error) {
	a := &account{Email: email, dir: dir}
	keyPath := filepath.Join(dir, accountKeyFile)
	data, err := store.ReadPrivate(keyPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		pemKey, err := store.EncodeKey(k)
		if err != nil {
			return nil, err
		}
		if err := store.WriteFile(keyPath, pemKey, 0o600); err != nil {
			return nil, fmt.Errorf("acme: account key: %w", err)
		}
		a.key = k
	case err != nil:
		return nil, fmt.Errorf("acme: account key: %w", err)
	default:
		if a.key, err = store.ParseKey(data); err != nil {
			return nil, fmt.Errorf("acme: account key %s: %w", keyPath, err)
		}
	}
	data, err = store.ReadState(filepath.Join(dir, accountJSONFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("acme: account: %w", err)
	default:
		var saved account
		if err := json.Unmarshal(data, &saved); err != nil {
			return nil, fmt.Errorf("acme: account %s: %w", filepath.Join(dir, accountJSONFile), err)
		}
		if saved.Registration != nil && saved.Registration.Location != "" {
			a.Registration = saved.Registration
		}
	}
	return a, nil
}

func (a *account) save() error {
	data, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	return store.WriteFile(filepath.Join(a.dir, accountJSONFile), append(data, '\n'), 0o600)
}

// GenerateKey makes a new certificate key of a configured type.
func GenerateKey(keyType string) (crypto.Signer, error) {
	kt, err := certcrypto.ToKeyType(keyType)
	if err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	return certcrypto.GeneratePrivateKey(kt)
}

// PublicKeyType names the configured key type of a public key ("ec256",
// …), or "".
func PublicKeyType(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ec256"
		case elliptic.P384():
			return "ec384"
		}
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return "rsa2048"
		case 3072:
			return "rsa3072"
		case 4096:
			return "rsa4096"
		}
	}
	return ""
}

// KeyTypeOf names the configured key type a key has ("ec256", …), or "".
func KeyTypeOf(key crypto.Signer) string {
	return PublicKeyType(key.Public())
}

func unwrapURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			var ne *net.OpError
			if errors.As(inner, &ne) {
				return ne
			}
		}
	}
	return err
}
