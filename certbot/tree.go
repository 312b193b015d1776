// Package certbot reads what certbot keeps in its configuration directory
// (/etc/letsencrypt) so that daneroll can take over from it without
// changing a served key or a published TLSA record: the lineages
// (renewal/NAME.conf, the live/NAME links and the archive/NAME versions
// they point to), the ACME accounts and the settings certbot renews with.
// It writes a daneroll configuration from them ([Tree.Plan]), and finds and
// disables what still runs certbot on the host ([Host]).
//
// Nothing here writes to the certbot directory. Its contents are not
// trusted more than they must be: every file is read through an [os.Root]
// (no link leads out of the directory), files are size-bounded, the only
// links followed are the live/NAME/*.pem links certbot makes to
// ../../archive/NAME/*N.pem, and every problem is one line naming the file
// (and the line, in configuration files).
package certbot

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/daneroll/daneroll/internal/smallfile"
	"github.com/daneroll/daneroll/store"
)

// DefaultDir is where certbot keeps its configuration.
const DefaultDir = "/etc/letsencrypt"

// Certbot's default ACME server, and the ACME v1 URL it reads as that.
const (
	LetsEncrypt        = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStaging = "https://acme-staging-v02.api.letsencrypt.org/directory"
	letsEncryptV1      = "https://acme-v01.api.letsencrypt.org/directory"
)

// Bounds on what is read from the tree: real files are a few KiB.
const (
	maxConfFile = 256 << 10
	maxPEMFile  = 1 << 20
	maxJSONFile = 64 << 10
	maxVersions = 10000
)

// Tree is what a certbot configuration directory holds for daneroll.
type Tree struct {
	// Dir is the directory, absolute.
	Dir string
	// Lineages are the lineages that can be imported, by name.
	Lineages []*Lineage
	// Skipped are the lineages that cannot be, each with why.
	Skipped []*Skipped
	// Accounts are the accounts the lineages name, in the order first
	// named.
	Accounts []*Account
	// Email is the address in the directory's cli.ini, if any: certbot
	// 0.x kept none with the account.
	Email string
	// HookScripts are the executables in renewal-hooks/{pre,deploy,post},
	// which certbot runs around every renewal.
	HookScripts []string
}

// Lineage is one certificate certbot manages.
type Lineage struct {
	// Name is the lineage's name: renewal/NAME.conf, live/NAME.
	Name string
	// ConfFile is the renewal configuration file.
	ConfFile string
	// Params is its [renewalparams] section.
	Params *Conf

	// Server is the ACME directory URL certbot renews from.
	Server string
	// AccountID names the account under accounts/SERVER/.
	AccountID string
	// Authenticator and Installer are certbot's plugins for the lineage.
	Authenticator, Installer string
	// ReuseKey is reuse_key = True.
	ReuseKey bool
	// AutoRenew is false when certbot does not renew it on its own.
	AutoRenew bool
	// HTTP01Address and HTTP01Port are the standalone plugin's listener.
	HTTP01Address string
	HTTP01Port    int
	// WebrootPath and WebrootMap are the webroot plugin's settings.
	WebrootPath []string
	WebrootMap  []WebrootEntry
	// CloudflareCredentials is the dns-cloudflare plugin's INI file.
	CloudflareCredentials string
	// cloudflareToken is the API token in it (a secret: never shown), or
	// cloudflareErr why there is none.
	cloudflareToken string
	cloudflareErr   error
	// configDir is the config_dir the file names, which paths in it
	// start with.
	configDir string
	// PreferredChallenges is pref_challs ("dns-01", "http-01").
	PreferredChallenges []string
	// Hooks are the shell commands certbot runs for the lineage.
	Hooks []Hook
	// RenewBefore is renew_before_expiry ("30 days"), when set.
	RenewBefore string

	// Version is the archive version live/NAME points at.
	Version int
	// Key, Cert and Chain are what live/NAME serves: the private key,
	// the leaf (PEM, as in cert.pem) and its issuers (PEM, such that
	// Cert + Chain is fullchain.pem).
	Key         crypto.Signer
	Cert, Chain []byte
	Leaf        *x509.Certificate
	// Domains are the certificate's names, its common name first, as
	// certbot lists them.
	Domains []string
	// Since is the earliest notBefore of the lineage's certificates for
	// Key.
	Since time.Time
	// Older are the keys of the lineage's other archive versions, each
	// once, without Key.
	Older []crypto.PublicKey
	// SameKeyVersions counts the other versions with Key.
	SameKeyVersions int
	// Warnings are problems that do not stop the import.
	Warnings []string
}

// WebrootEntry is one domain of webroot_map.
type WebrootEntry struct{ Domain, Path string }

// Hook is a command certbot runs through a shell for a lineage.
type Hook struct {
	// Kind is the renewal configuration key: renew_hook (certbot's
	// --deploy-hook), pre_hook, post_hook, manual_auth_hook, …
	Kind    string
	Command string
	// Line is its line in the renewal configuration file.
	Line int
}

// Skipped is a lineage that cannot be imported.
type Skipped struct {
	Name string
	Err  error
}

// Account is an ACME account certbot registered.
type Account struct {
	// Server is the ACME directory URL; ID the account's directory name.
	Server, ID string
	// Dir is the account's directory, relative to the tree.
	Dir string
	// Key is the account key; URI the account's URL at the CA.
	Key crypto.Signer
	URI string
	// Email is the contact address from regr.json, which certbot before
	// 1.x kept; "" when unknown.
	Email string
	// Err says why the account cannot be used (Key and URI are then
	// unset).
	Err error
}

// Read reads the certbot configuration directory dir. Problems with one
// lineage skip it (see [Tree.Skipped]); Read fails only when dir is not a
// certbot directory at all.
func Read(dir string) (*Tree, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("certbot directory: %w", err)
	}
	defer root.Close()
	r := &reader{root: root, dir: abs}
	t := &Tree{Dir: abs}
	if fi, err := root.Lstat("renewal"); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s: no renewal/ directory: not a certbot configuration directory", abs)
	}
	names, err := r.readDir("renewal")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		name, ok := strings.CutSuffix(n, ".conf")
		if !ok {
			continue // certbot reads only *.conf
		}
		l, err := r.lineage(name)
		if err != nil {
			t.Skipped = append(t.Skipped, &Skipped{Name: name, Err: err})
			continue
		}
		t.Lineages = append(t.Lineages, l)
	}
	// By name, not by file name: "a-0001.conf" sorts before "a.conf".
	sort.Slice(t.Lineages, func(i, j int) bool { return t.Lineages[i].Name < t.Lineages[j].Name })
	seen := map[string]bool{}
	for _, l := range t.Lineages {
		if key := l.Server + " " + l.AccountID; !seen[key] && l.AccountID != "" {
			seen[key] = true
			t.Accounts = append(t.Accounts, r.account(l.Server, l.AccountID))
		}
	}
	t.Email = r.cliEmail()
	t.HookScripts = r.hookScripts()
	return t, nil
}

// reader reads files inside the tree.
type reader struct {
	root *os.Root
	dir  string
}

// path names rel (slash-separated, relative to the tree) for messages.
func (r *reader) path(rel string) string { return filepath.Join(r.dir, filepath.FromSlash(rel)) }

func (r *reader) readDir(rel string) ([]string, error) {
	f, err := r.root.Open(rel)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.path(rel), unwrapPath(err))
	}
	defer f.Close()
	entries, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.path(rel), unwrapPath(err))
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// readFile reads a regular file of at most limit bytes. No link is
// followed at its last element; a link in a parent directory is followed
// only inside the tree (os.Root).
func (r *reader) readFile(rel string, limit int64) ([]byte, error) {
	fi, err := r.root.Lstat(rel)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.path(rel), unwrapPath(err))
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s: is a symbolic link, which certbot does not make there", r.path(rel))
	}
	f, err := r.root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.path(rel), unwrapPath(err))
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("%s: %w", r.path(rel), unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", r.path(rel))
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.path(rel), unwrapPath(err))
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d KiB, which no file certbot writes there is", r.path(rel), limit>>10)
	}
	return data, nil
}

// nameRE is what daneroll accepts as a certificate name (see config).
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func (r *reader) lineage(name string) (*Lineage, error) {
	confRel := "renewal/" + name + ".conf"
	if !nameRE.MatchString(name) || len(name) > 200 {
		return nil, fmt.Errorf("%s: the lineage name %s is not one daneroll can use (letters, digits, '.', '-', '_')", r.path(confRel), quoteForError(name))
	}
	data, err := r.readFile(confRel, maxConfFile)
	if err != nil {
		return nil, err
	}
	conf, err := ParseConf(r.path(confRel), data)
	if err != nil {
		return nil, err
	}
	l, err := renewalParams(r.path(confRel), conf)
	if err != nil {
		return nil, err
	}
	l.Name = name
	if err := r.live(l); err != nil {
		return nil, err
	}
	if l.CloudflareCredentials != "" {
		l.cloudflareToken, l.cloudflareErr = r.cloudflareToken(l)
	}
	return l, nil
}

// renewalParams reads the settings of a renewal configuration file, as
// certbot's renewal does (certbot/_internal/renewal.py).
func renewalParams(file string, conf *Conf) (*Lineage, error) {
	l := &Lineage{ConfFile: file, AutoRenew: true, HTTP01Port: 80}
	rp := conf.Section("renewalparams")
	if rp == nil {
		return nil, fmt.Errorf("%s: no [renewalparams] section, which certbot needs too", file)
	}
	l.Params = rp
	bad := func(v *Value, format string, args ...any) error {
		return &ConfError{File: file, Line: v.Line, Msg: v.Key + ": " + fmt.Sprintf(format, args...)}
	}
	// str is a plain value: certbot's "None" is no value, a list is an
	// error (certbot would fail on it).
	str := func(key string) (string, *Value, error) {
		v := rp.Get(key)
		if v == nil {
			return "", nil, nil
		}
		if v.List {
			return "", v, bad(v, "a list where certbot expects one value")
		}
		if v.Items[0] == "None" {
			return "", v, nil
		}
		return v.Items[0], v, nil
	}
	boolean := func(key string, def bool) (bool, error) {
		s, v, err := str(key)
		if err != nil || v == nil {
			return def, err
		}
		switch strings.ToLower(s) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return def, bad(v, "%s is neither True nor False", quoteForError(s))
	}
	var err error
	var v *Value
	if l.Authenticator, v, err = str("authenticator"); err != nil {
		return nil, err
	} else if v == nil || l.Authenticator == "" {
		return nil, fmt.Errorf("%s: [renewalparams] names no authenticator, which certbot needs too", file)
	}
	if l.Installer, _, err = str("installer"); err != nil {
		return nil, err
	}
	if l.Server, v, err = str("server"); err != nil {
		return nil, err
	}
	switch l.Server {
	case "":
		l.Server = LetsEncrypt
	case letsEncryptV1:
		l.Server = LetsEncrypt // certbot does the same
	}
	if u, perr := url.Parse(l.Server); perr != nil || u.Scheme != "https" || u.Host == "" || u.User != nil ||
		strings.Contains(u.Path, "..") || strings.Contains(u.Host, "/") || u.RawQuery != "" || u.Fragment != "" {
		line := 0
		if v != nil {
			line = v.Line
		}
		return nil, &ConfError{File: file, Line: line, Msg: "server: " + quoteForError(l.Server) + " is not an https URL of an ACME directory"}
	}
	if l.AccountID, v, err = str("account"); err != nil {
		return nil, err
	} else if l.AccountID != "" && !accountID(l.AccountID) {
		return nil, bad(v, "%s is not a certbot account ID", quoteForError(l.AccountID))
	}
	if l.ReuseKey, err = boolean("reuse_key", false); err != nil {
		return nil, err
	}
	if l.AutoRenew, err = boolean("autorenew", true); err != nil {
		return nil, err
	}
	if l.HTTP01Address, _, err = str("http01_address"); err != nil {
		return nil, err
	}
	if s, v, err := str("http01_port"); err != nil {
		return nil, err
	} else if s != "" {
		n, perr := strconv.Atoi(s)
		if perr != nil || n < 1 || n > 65535 {
			return nil, bad(v, "%s is not a port", quoteForError(s))
		}
		l.HTTP01Port = n
	}
	if v := rp.Get("webroot_path"); v != nil {
		for _, p := range v.Items {
			if p != "" && p != "None" {
				l.WebrootPath = append(l.WebrootPath, p)
			}
		}
	}
	if wm := rp.Section("webroot_map"); wm != nil {
		for _, v := range wm.Values {
			if v.List {
				return nil, bad(v, "a list where certbot expects one directory")
			}
			l.WebrootMap = append(l.WebrootMap, WebrootEntry{Domain: v.Key, Path: v.Items[0]})
		}
	}
	for _, key := range []string{"dns_cloudflare_credentials", "certbot_dns_cloudflare:dns_cloudflare_credentials"} {
		if s, _, err := str(key); err != nil {
			return nil, err
		} else if s != "" && l.CloudflareCredentials == "" {
			l.CloudflareCredentials = s
		}
	}
	if v := rp.Get("pref_challs"); v != nil {
		for _, c := range v.Items {
			for _, c := range strings.Split(c, ",") {
				if c = strings.TrimSpace(c); c != "" {
					l.PreferredChallenges = append(l.PreferredChallenges, c)
				}
			}
		}
	}
	for _, kind := range []string{"pre_hook", "renew_hook", "deploy_hook", "post_hook", "manual_auth_hook", "manual_cleanup_hook"} {
		s, v, err := str(kind)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(s) != "" {
			l.Hooks = append(l.Hooks, Hook{Kind: kind, Command: s, Line: v.Line})
		}
	}
	if l.configDir, _, err = str("config_dir"); err != nil {
		return nil, err
	}
	if v := conf.Get("renew_before_expiry"); v != nil {
		l.RenewBefore = v.String()
	}
	return l, nil
}

// accountID reports whether id is an account directory name certbot makes
// (an MD5 in hex) or any other that is one harmless path element. (Not a
// regular expression: {1,128} costs most of a millisecond to compile, at
// every daneroll command's start.)
func accountID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range []byte(id) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// liveFile matches the archive files live/NAME/*.pem link to.
var liveFile = regexp.MustCompile(`^(cert|chain|fullchain|privkey)([1-9][0-9]{0,8})\.pem$`)

// live reads the files live/NAME serves and the keys of the lineage's
// other archive versions.
func (r *reader) live(l *Lineage) error {
	version := 0
	files := map[string][]byte{}
	for _, kind := range []string{"cert", "chain", "fullchain", "privkey"} {
		link := "live/" + l.Name + "/" + kind + ".pem"
		fi, err := r.root.Lstat(link)
		if err != nil {
			return fmt.Errorf("%s: %w", r.path(link), unwrapPath(err))
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return fmt.Errorf("%s: not the link to ../../archive/%s/ that certbot makes", r.path(link), l.Name)
		}
		target, err := r.root.Readlink(link)
		if err != nil {
			return fmt.Errorf("%s: %w", r.path(link), unwrapPath(err))
		}
		file, ok := strings.CutPrefix(path.Clean(path.Join("live", l.Name, target)), "archive/"+l.Name+"/")
		m := liveFile.FindStringSubmatch(file)
		if filepath.IsAbs(target) || !ok || m == nil || m[1] != kind {
			return fmt.Errorf("%s: points to %s, not to ../../archive/%s/%sN.pem as certbot links it", r.path(link), quoteForError(target), l.Name, kind)
		}
		n, _ := strconv.Atoi(m[2])
		if version != 0 && n != version {
			return fmt.Errorf("%s: points to version %d, the other live files to version %d", r.path(link), n, version)
		}
		version = n
		rel := "archive/" + l.Name + "/" + file
		if err := r.archiveDir(l.Name); err != nil {
			return err
		}
		data, err := r.readFile(rel, maxPEMFile)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: points to %s, which does not exist", r.path(link), r.path(rel))
		}
		if err != nil {
			return err
		}
		files[kind] = data
	}
	l.Version = version
	key, err := store.ParseKey(files["privkey"])
	if err != nil {
		return fmt.Errorf("%s: %w", r.path(fmt.Sprintf("archive/%s/privkey%d.pem", l.Name, version)), err)
	}
	certFile := r.path(fmt.Sprintf("archive/%s/cert%d.pem", l.Name, version))
	leaf, err := parseLeaf(files["cert"])
	if err != nil {
		return fmt.Errorf("%s: %w", certFile, err)
	}
	if !samePublic(leaf.PublicKey, key.Public()) {
		return fmt.Errorf("%s: not the certificate of privkey%d.pem", certFile, version)
	}
	if len(leaf.IPAddresses) > 0 || len(leaf.EmailAddresses) > 0 || len(leaf.URIs) > 0 {
		return fmt.Errorf("%s: names IP addresses, e-mail addresses or URIs, which daneroll does not manage", certFile)
	}
	l.Key, l.Leaf, l.Cert = key, leaf, files["cert"]
	l.Domains = certNames(leaf)
	if len(l.Domains) == 0 {
		return fmt.Errorf("%s: names no domain", certFile)
	}
	// daneroll writes fullchain.pem as cert.pem + chain.pem: keep the
	// file services read (fullchain) identical if chain.pem disagrees.
	chain, ok := bytes.CutPrefix(files["fullchain"], files["cert"])
	if !ok {
		return fmt.Errorf("%s: does not start with cert%d.pem", r.path(fmt.Sprintf("archive/%s/fullchain%d.pem", l.Name, version)), version)
	}
	l.Chain = chain
	if !bytes.Equal(chain, files["chain"]) {
		l.Warnings = append(l.Warnings, fmt.Sprintf("chain%d.pem is not the rest of fullchain%d.pem; daneroll's chain.pem will be (fullchain.pem stays the same)", version, version))
	}
	return r.older(l)
}

func (r *reader) archiveDir(name string) error {
	for _, rel := range []string{"archive", "archive/" + name} {
		fi, err := r.root.Lstat(rel)
		if err != nil {
			return fmt.Errorf("%s: %w", r.path(rel), unwrapPath(err))
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s: not a directory", r.path(rel))
		}
	}
	return nil
}

// older reads the keys of the archive versions other than the live one:
// from certN.pem, or privkeyN.pem when there is no certificate.
func (r *reader) older(l *Lineage) error {
	dir := "archive/" + l.Name
	names, err := r.readDir(dir)
	if err != nil {
		return err
	}
	versions := map[int]map[string]bool{}
	for _, n := range names {
		m := liveFile.FindStringSubmatch(n)
		if m == nil {
			continue
		}
		v, _ := strconv.Atoi(m[2])
		if versions[v] == nil {
			versions[v] = map[string]bool{}
		}
		versions[v][m[1]] = true
	}
	if len(versions) > maxVersions {
		return fmt.Errorf("%s: %d versions, more than certbot makes in centuries", r.path(dir), len(versions))
	}
	order := make([]int, 0, len(versions))
	for v := range versions {
		order = append(order, v)
	}
	slices.Sort(order)
	l.Since = l.Leaf.NotBefore
	cur := l.Key.Public()
	for _, v := range order {
		if v == l.Version {
			continue
		}
		var (
			pub  crypto.PublicKey
			leaf *x509.Certificate
			why  error
		)
		if versions[v]["cert"] {
			rel := fmt.Sprintf("%s/cert%d.pem", dir, v)
			data, err := r.readFile(rel, maxPEMFile)
			if err == nil {
				if leaf, err = parseLeaf(data); err != nil {
					err = fmt.Errorf("%s: %w", r.path(rel), err)
				}
			}
			if err == nil {
				pub = leaf.PublicKey
			}
			why = err
		}
		if pub == nil && versions[v]["privkey"] {
			rel := fmt.Sprintf("%s/privkey%d.pem", dir, v)
			data, err := r.readFile(rel, maxPEMFile)
			if err == nil {
				var k crypto.Signer
				if k, err = store.ParseKey(data); err != nil {
					err = fmt.Errorf("%s: %w", r.path(rel), err)
				} else {
					pub = k.Public()
				}
			}
			if why == nil {
				why = err
			}
		}
		if pub == nil {
			if why == nil {
				why = fmt.Errorf("%s: version %d has neither cert%d.pem nor privkey%d.pem", r.path(dir), v, v, v)
			}
			l.Warnings = append(l.Warnings, fmt.Sprintf("%v: its key is not known as an earlier key", why))
			continue
		}
		if samePublic(pub, cur) {
			l.SameKeyVersions++
			if leaf != nil && leaf.NotBefore.Before(l.Since) {
				l.Since = leaf.NotBefore
			}
			continue
		}
		if !slices.ContainsFunc(l.Older, func(k crypto.PublicKey) bool { return samePublic(k, pub) }) {
			l.Older = append(l.Older, pub)
		}
	}
	return nil
}

// account reads accounts/SERVER/ID as certbot's AccountFileStorage does,
// including its fallback from Let's Encrypt's v2 servers to the v1
// directories that older certbots registered in.
func (r *reader) account(server, id string) *Account {
	a := &Account{Server: server, ID: id}
	u, err := url.Parse(server)
	if err != nil {
		a.Err = err
		return a
	}
	dirs := []string{path.Join("accounts", u.Host, u.Path, id)}
	switch server {
	case LetsEncrypt:
		dirs = append(dirs, path.Join("accounts", "acme-v01.api.letsencrypt.org/directory", id))
	case LetsEncryptStaging:
		dirs = append(dirs, path.Join("accounts", "acme-staging.api.letsencrypt.org/directory", id))
	}
	var firstErr error
	for _, d := range dirs {
		if !strings.HasPrefix(d, "accounts/") {
			continue
		}
		key, uri, email, err := r.readAccount(d)
		if err == nil {
			a.Dir, a.Key, a.URI, a.Email = d, key, uri, email
			return a
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	a.Err = firstErr
	return a
}

func (r *reader) readAccount(dir string) (crypto.Signer, string, string, error) {
	data, err := r.readFile(dir+"/private_key.json", maxJSONFile)
	if err != nil {
		return nil, "", "", err
	}
	key, err := parseJWK(data)
	if err != nil {
		return nil, "", "", fmt.Errorf("%s: %w", r.path(dir+"/private_key.json"), err)
	}
	data, err = r.readFile(dir+"/regr.json", maxJSONFile)
	if err != nil {
		return nil, "", "", err
	}
	var regr struct {
		URI  string `json:"uri"`
		Body struct {
			Contact []string `json:"contact"`
		} `json:"body"`
	}
	if err := json.Unmarshal(data, &regr); err != nil {
		return nil, "", "", fmt.Errorf("%s: %w", r.path(dir+"/regr.json"), err)
	}
	if u, err := url.Parse(regr.URI); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, "", "", fmt.Errorf("%s: uri %s is not the https URL of an account", r.path(dir+"/regr.json"), quoteForError(regr.URI))
	}
	email := ""
	for _, c := range regr.Body.Contact {
		if e, ok := strings.CutPrefix(c, "mailto:"); ok && email == "" && plainEmail(e) {
			email = e
		}
	}
	return key, regr.URI, email, nil
}

// readOutside reads a file the renewal configuration names by its path:
// inside the tree when the path is under the config_dir it was written
// with (the tree may have been copied elsewhere), else where it says.
func (r *reader) readOutside(l *Lineage, file string, limit int64) ([]byte, string, error) {
	if !filepath.IsAbs(file) {
		return nil, file, fmt.Errorf("%s: not an absolute path", quoteForError(file))
	}
	file = filepath.Clean(file)
	for _, base := range []string{l.configDir, r.dir} {
		if base == "" || !filepath.IsAbs(base) {
			continue
		}
		if rel, err := filepath.Rel(filepath.Clean(base), file); err == nil && filepath.IsLocal(rel) {
			data, err := r.readFile(filepath.ToSlash(rel), limit)
			return data, r.path(filepath.ToSlash(rel)), err
		}
	}
	data, err := smallfile.Read(file, limit)
	return data, file, err
}

// cloudflareToken reads the API token from the dns-cloudflare plugin's
// credentials file (configobj syntax, as the plugin reads it).
func (r *reader) cloudflareToken(l *Lineage) (string, error) {
	data, file, err := r.readOutside(l, l.CloudflareCredentials, maxConfFile)
	if err != nil {
		return "", fmt.Errorf("dns_cloudflare_credentials: %w", err)
	}
	conf, err := ParseConf(file, data)
	if err != nil {
		// The line is not quoted: it may hold the token.
		var ce *ConfError
		if errors.As(err, &ce) {
			return "", &ConfError{File: file, Line: ce.Line, Msg: "cannot read the line (not shown: it may hold a secret)"}
		}
		return "", err
	}
	get := func(key string) *Value {
		if v := conf.Get("dns_cloudflare_" + key); v != nil {
			return v
		}
		return conf.Get("certbot_dns_cloudflare:dns_cloudflare_" + key)
	}
	v := get("api_token")
	if v == nil {
		if get("api_key") != nil {
			return "", fmt.Errorf("%s: holds the global API key, not an API token: daneroll needs a token with Zone:Read and DNS:Edit", file)
		}
		return "", fmt.Errorf("%s: no dns_cloudflare_api_token", file)
	}
	token := v.String()
	if v.List || token == "" || strings.ContainsFunc(token, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", &ConfError{File: file, Line: v.Line, Msg: "dns_cloudflare_api_token: not a token"}
	}
	return token, nil
}

// cliEmail reads "email = ADDRESS" from the tree's cli.ini (configargparse:
// "key = value", "key: value" or "key value"; "#" and ";" start comments).
func (r *reader) cliEmail() string {
	data, err := r.readFile("cli.ini", maxConfFile)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		i := strings.IndexAny(line, ":= \t")
		if i < 0 || line[:i] != "email" {
			continue
		}
		v := strings.TrimLeft(line[i:], ":= \t")
		if j := strings.IndexAny(v, " \t"); j >= 0 {
			v = v[:j]
		}
		if plainEmail(v) {
			return v
		}
	}
	return ""
}

// hookScripts lists the executables certbot runs from renewal-hooks/.
func (r *reader) hookScripts() []string {
	var out []string
	for _, kind := range []string{"pre", "deploy", "post"} {
		dir := "renewal-hooks/" + kind
		names, err := r.readDir(dir)
		if err != nil {
			continue
		}
		for _, n := range names {
			fi, err := r.root.Lstat(dir + "/" + n)
			if err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				out = append(out, r.path(dir+"/"+n))
			}
		}
	}
	return out
}

func plainEmail(e string) bool {
	return len(e) < 255 && strings.Count(e, "@") == 1 && !strings.HasPrefix(e, "@") && !strings.HasSuffix(e, "@") &&
		!strings.ContainsFunc(e, func(r rune) bool { return r <= ' ' || r == 0x7f || strings.ContainsRune(`"\/<>,;`, r) })
}

// parseLeaf reads the first certificate of a PEM file.
func parseLeaf(data []byte) (*x509.Certificate, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PEM certificate")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// certNames lists a certificate's names as certbot does: the common name,
// then the other subject alternative names.
func certNames(c *x509.Certificate) []string {
	var out []string
	if cn := c.Subject.CommonName; cn != "" {
		out = append(out, cn)
	}
	for _, n := range c.DNSNames {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func samePublic(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}
