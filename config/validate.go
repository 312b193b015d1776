package config

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"

	"github.com/daneroll/daneroll/internal/smallfile"

	"github.com/daneroll/daneroll/services"
)

// validator fills in defaults and collects every problem it finds.
type validator struct {
	cfg      *Config
	dir      string // relative paths are taken from here
	errs     Errors
	warnings []*Error
	// invalid are the certificates with errors of their own, which checks
	// across tables skip.
	invalid []*Certificate
}

func (v *validator) fail(path, hint, format string, args ...any) {
	v.errs = append(v.errs, v.problem(path, hint, format, args...))
}

func (v *validator) warn(path, hint, format string, args ...any) {
	v.warnings = append(v.warnings, v.problem(path, hint, format, args...))
}

func (v *validator) problem(path, hint, format string, args ...any) *Error {
	return &Error{
		File:       v.cfg.File,
		Line:       v.line(path),
		Msg:        fmt.Sprintf(format, args...),
		Suggestion: hint,
	}
}

// line finds the line of path, else of its nearest enclosing table.
func (v *validator) line(path string) int {
	for q := path; q != ""; {
		if l := v.cfg.pos.line(q); l > 0 {
			return l
		}
		i := strings.LastIndexByte(q, '.')
		if i < 0 {
			return 0
		}
		q = q[:i]
	}
	return 0
}

func (v *validator) abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(v.dir, p)
}

func (v *validator) run() {
	c := v.cfg
	if c.StateDir == "" {
		c.StateDir = DefaultState
	}
	c.StateDir = v.abs(c.StateDir)
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Concurrency < 1 || c.Concurrency > 64 {
		v.fail("concurrency", "", "concurrency: %d is outside 1 to 64", c.Concurrency)
	}
	v.acme()
	v.dns()
	v.services()
	v.certificates()
	v.probesAndHolds()
	v.monitoring()
	v.store()
}

// store checks [store].
func (v *validator) store() {
	st := &v.cfg.Store
	etcdKeys := map[string]bool{"endpoints": len(st.Endpoints) > 0, "ca_file": st.CAFile != "", "cert_file": st.CertFile != "",
		"key_file": st.KeyFile != "", "prefix": st.Prefix != "", "fleet_key_file": st.FleetKeyFile != "", "host": st.Host != "",
		"lock_ttl": st.LockTTL.Duration != 0, "report_timeout": st.ReportTimeout.Duration != 0}
	switch st.Type {
	case "", StoreLocal:
		st.Type = StoreLocal
		for _, k := range sortedKeys(etcdKeys) {
			if etcdKeys[k] {
				v.fail("store."+k, `set type = "etcd" for fleet mode`, "store: %s applies only to type %q", k, StoreEtcd)
			}
		}
		return
	case StoreEtcd:
	default:
		v.fail("store.type", "", "store: unknown type %q (want local or etcd)", st.Type)
		return
	}
	if len(st.Endpoints) == 0 {
		v.fail("store", "", "store: type etcd needs endpoints (etcd's client URLs, https://host:2379)")
	}
	for _, ep := range st.Endpoints {
		u, err := url.Parse(ep)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil:
			v.fail("store.endpoints", "", "store: endpoint %q is not https://host:port", ep)
		case u.Scheme == "http" && !isLoopback(u.Hostname()):
			v.fail("store.endpoints", "use https with ca_file, cert_file and key_file",
				"store: endpoint %q would send the fleet's state, and the client's requests, in clear over the network", ep)
		}
	}
	schemes := map[string]bool{}
	for _, ep := range st.Endpoints {
		if u, err := url.Parse(ep); err == nil {
			schemes[u.Scheme] = true
		}
	}
	switch {
	case len(schemes) > 1:
		v.fail("store.endpoints", "", "store: endpoints mix http and https: one cluster, one scheme")
	case schemes["https"] && st.CAFile == "":
		v.fail("store", "name the CA that signed etcd's server certificates (etcd's --trusted-ca-file)",
			"store: https endpoints need ca_file: any public CA could vouch for etcd otherwise")
	}
	for key, file := range map[string]*string{"ca_file": &st.CAFile, "cert_file": &st.CertFile} {
		if *file == "" {
			continue
		}
		*file = v.abs(*file)
		v.pemCerts("store."+key, *file)
	}
	if (st.CertFile == "") != (st.KeyFile == "") {
		v.fail("store", "", "store: cert_file and key_file go together (the client certificate and its key)")
	}
	if st.KeyFile != "" {
		v.secretFile("store.key_file", "store: key_file", &st.KeyFile)
	}
	if st.FleetKeyFile == "" {
		v.fail("store", "make one with daneroll fleet-key --out FILE and copy it to every member",
			"store: type etcd needs fleet_key_file (the age identity that seals private keys)")
	} else {
		v.secretFile("store.fleet_key_file", "store: fleet_key_file", &st.FleetKeyFile)
	}
	if st.Prefix == "" {
		st.Prefix = DefaultStorePrefix
	}
	if !strings.HasPrefix(st.Prefix, "/") || !strings.HasSuffix(st.Prefix, "/") || strings.Contains(st.Prefix, "//") || !printableASCII(st.Prefix) {
		v.fail("store.prefix", "", "store: prefix %q must start and end with / (such as %q)", st.Prefix, DefaultStorePrefix)
	}
	if st.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			v.fail("store", "set host", "store: no host given, and the host name is unknown: %v", err)
		}
		// The whole name: short names repeat across sites, and two
		// hosts under one member name would answer for each other.
		st.Host = strings.TrimSuffix(h, ".")
	}
	if !certName.MatchString(st.Host) || len(st.Host) > 63 {
		v.fail("store.host", "", "store: host %q is not a name of letters, digits, '.', '_' and '-' (at most 63)", st.Host)
	}
	if st.LockTTL.Duration == 0 {
		st.LockTTL.Duration = DefaultLockTTL
	}
	if st.LockTTL.Duration < 5*time.Second || st.LockTTL.Duration > 5*time.Minute {
		v.fail("store.lock_ttl", "", "store: lock_ttl %s is outside 5s to 5m", FormatDuration(st.LockTTL.Duration))
	}
	if st.ReportTimeout.Duration == 0 {
		st.ReportTimeout.Duration = DefaultReportTimeout
	}
	if st.ReportTimeout.Duration < 5*time.Second || st.ReportTimeout.Duration > 24*time.Hour {
		v.fail("store.report_timeout", "", "store: report_timeout %s is outside 5s to 24h", FormatDuration(st.ReportTimeout.Duration))
	}
}

func printableASCII(s string) bool {
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// monitoring checks [metrics] and [notify].
func (v *validator) monitoring() {
	m := &v.cfg.Metrics
	if m.Textfile != "" {
		m.Textfile = v.abs(m.Textfile)
		if fi, err := os.Stat(filepath.Dir(m.Textfile)); err != nil || !fi.IsDir() {
			v.warn("metrics.textfile", "create it, or point textfile at node_exporter's --collector.textfile.directory",
				"metrics.textfile: the directory %s does not exist: no metrics are written until it does", filepath.Dir(m.Textfile))
		}
	}
	n := &v.cfg.Notify
	if len(n.Command) > 0 {
		if strings.TrimSpace(n.Command[0]) == "" {
			v.fail("notify.command", "", "notify.command: empty command")
		} else if len(n.Command) == 1 && strings.ContainsAny(n.Command[0], " \t") {
			v.fail("notify.command", fmt.Sprintf("write it as an array: command = %s", argvHint(n.Command[0])),
				"notify.command: %q is one word with spaces; commands are never split on spaces", n.Command[0])
		}
	}
	if n.Timeout.Duration == 0 {
		n.Timeout.Duration = time.Minute
	}
	if n.StuckAfter.Duration == 0 {
		n.StuckAfter.Duration = DefaultStuckAfter
	}
}

func (v *validator) acme() {
	a := &v.cfg.ACME
	switch {
	case a.Directory == "":
		a.Directory = directoryAliases["letsencrypt"]
	case directoryAliases[a.Directory] != "":
		a.Directory = directoryAliases[a.Directory]
	default:
		u, err := url.Parse(a.Directory)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			v.fail("acme.directory", `use "letsencrypt", "letsencrypt-staging" or the https URL of an ACME directory`,
				"acme.directory: %q is neither a known alias nor an https URL", a.Directory)
		}
	}
	if a.Email != "" && (!strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, "/\\ \t") || strings.HasPrefix(a.Email, ".")) {
		v.fail("acme.email", "", "acme.email: %q is not an e-mail address", a.Email)
	}
	for i, root := range a.CARoots {
		a.CARoots[i] = v.abs(root)
		v.pemCerts("acme.ca_roots", a.CARoots[i])
	}
	if a.KeyType == "" {
		a.KeyType = DefaultKey
	}
	v.keyType("acme.key_type", "acme.key_type", a.KeyType)
	v.eab(a)
	v.preferredChain("acme.preferred_chain", "acme.preferred_chain", a.PreferredChain)
}

// eab checks the External Account Binding: a key ID and a MAC key go
// together. The key itself is not read here; only its file is checked, like
// every secret's.
func (v *validator) eab(a *ACME) {
	hasKey := a.EABHMACKeyFile != "" || a.EABHMACKeyEnv != ""
	switch {
	case a.EABKID != "" && hasKey:
		if strings.ContainsFunc(a.EABKID, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
			v.fail("acme.eab_kid", "copy the key ID exactly as the CA shows it", "acme.eab_kid: %q holds spaces or control characters", a.EABKID)
		}
		v.secret("acme", "acme", "eab_hmac_key", &a.EABHMACKeyFile, a.EABHMACKeyEnv)
	case a.EABKID != "":
		v.fail("acme.eab_kid", "the CA hands out both: the key ID goes in eab_kid, the HMAC key in a file named by eab_hmac_key_file (or eab_hmac_key_env)",
			"acme: eab_kid is set without eab_hmac_key_file (or eab_hmac_key_env)")
	case hasKey:
		key := "acme.eab_hmac_key_file"
		if a.EABHMACKeyFile == "" {
			key = "acme.eab_hmac_key_env"
		}
		v.fail(key, "the CA hands out both: the key ID goes in eab_kid, the HMAC key in a file named by eab_hmac_key_file (or eab_hmac_key_env)",
			"acme: %s is set without eab_kid", lastKey(key))
	default:
		ca := requiresEAB(a.Directory)
		if ca == "" {
			break
		}
		// A warning, not an error: an account registered earlier needs
		// no binding.
		hint := "set eab_kid and eab_hmac_key_file to the External Account Binding credentials from the CA"
		switch ca {
		case "ZeroSSL":
			hint += " (ZeroSSL's dashboard, Developer section; daneroll does not register by e-mail through ZeroSSL's own API)"
		case "Google Trust Services":
			hint += " (gcloud publicca external-account-keys create)"
		}
		v.warn("acme.directory", hint,
			"acme.directory: %s registers a new account only with External Account Binding, and eab_kid is not set", ca)
	}
}

// preferredChain checks a chain name: a common name, compared as it is.
func (v *validator) preferredChain(path, label, name string) {
	if name != "" && (strings.TrimSpace(name) != name || strings.ContainsFunc(name, unicode.IsControl)) {
		v.fail(path, `the issuer's common name exactly, e.g. "ISRG Root X1"`, "%s: %q has surrounding spaces or control characters", label, name)
	}
}

func (v *validator) keyType(path, label, kt string) {
	if !slices.Contains(KeyTypes, kt) {
		v.fail(path, "", "%s: unknown key type %q (want one of %s)", label, kt, strings.Join(KeyTypes, ", "))
	}
}

func (v *validator) pemCerts(path, file string) {
	data, err := smallfile.Read(file, MaxPEMFile)
	if err != nil {
		v.fail(path, "", "%s: cannot read %s: %v", lastKey(path), file, unwrapPath(err))
		return
	}
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				v.fail(path, "", "%s: %s: bad certificate: %v", lastKey(path), file, err)
				return
			}
			n++
		}
	}
	if n == 0 {
		v.fail(path, "", "%s: %s holds no PEM certificate", lastKey(path), file)
	}
}

var tsigAlgorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// TSIGAlgorithm maps a configured algorithm name to its DNS name.
func TSIGAlgorithm(name string) string { return tsigAlgorithms[name] }

func (v *validator) dns() {
	d := &v.cfg.DNS
	if d.Resolver != "" {
		d.Resolver = v.hostPort("dns.resolver", "dns.resolver", d.Resolver, "53")
	}
	if d.HoldFactor == 0 {
		d.HoldFactor = DefaultHoldX
	}
	if math.IsNaN(d.HoldFactor) || d.HoldFactor < 2 || d.HoldFactor > 100 {
		v.fail("dns.hold_factor", "a resolver may hold an answer for its whole TTL after fetching it just before the change: wait at least twice the TTL",
			"dns.hold_factor: %v is outside 2 to 100", d.HoldFactor)
	}
	if d.ConfirmTimeout.Duration == 0 {
		d.ConfirmTimeout.Duration = time.Hour
	}
	if d.MaxHold.Duration == 0 {
		d.MaxHold.Duration = DefaultMaxHold
	}
	if d.MaxHold.Duration < time.Second {
		v.fail("dns.max_hold", "", "dns.max_hold: %s is too short to hold anything", FormatDuration(d.MaxHold.Duration))
	}
	for _, name := range sortedKeys(d.Publishers) {
		p := d.Publishers[name]
		p.Name = name
		v.publisher(p)
	}
}

func (v *validator) publisher(p *Publisher) {
	path := "dns.publisher." + p.Name
	label := fmt.Sprintf("publisher %q", p.Name)
	only := func(typ string, keys map[string]bool) {
		for k, set := range keys {
			if set {
				v.fail(path+"."+k, "", "%s: %s applies only to type %q", label, k, typ)
			}
		}
	}
	cfKeys := map[string]bool{"api_token_file": p.APITokenFile != "", "api_token_env": p.APITokenEnv != "", "api_url": p.APIURL != ""}
	tsigKeys := map[string]bool{"server": p.Server != "", "tsig_name": p.TSIGName != "", "tsig_algorithm": p.TSIGAlgorithm != "",
		"tsig_secret_file": p.TSIGSecretFile != "", "tsig_secret_env": p.TSIGSecretEnv != ""}
	switch p.Type {
	case PublisherCloudflare:
		only(PublisherRFC2136, tsigKeys)
		v.secret(path, label, "api_token", &p.APITokenFile, p.APITokenEnv)
		if p.APIURL == "" {
			p.APIURL = "https://api.cloudflare.com/client/v4"
		} else if u, err := url.Parse(p.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.fail(path+".api_url", "", "%s: api_url %q is not an http(s) URL", label, p.APIURL)
		} else if u.Scheme == "http" && !isLoopback(u.Hostname()) {
			v.fail(path+".api_url", "use an https URL; plain http is accepted only on loopback, for tests",
				"%s: api_url %q would send the API token in clear over the network", label, p.APIURL)
		}
	case PublisherRFC2136:
		only(PublisherCloudflare, cfKeys)
		if p.Server == "" {
			v.fail(path, "", "%s: type rfc2136 needs server (host:port of the primary that takes updates)", label)
		} else {
			p.Server = v.hostPort(path+".server", label+": server", p.Server, "53")
		}
		if p.TSIGName == "" {
			v.fail(path, "without TSIG anyone who reaches the server could change the zone",
				"%s: type rfc2136 needs tsig_name", label)
		} else {
			p.TSIGName = dns.Fqdn(p.TSIGName)
		}
		if p.TSIGAlgorithm == "" {
			p.TSIGAlgorithm = "hmac-sha256"
		}
		if tsigAlgorithms[p.TSIGAlgorithm] == "" {
			v.fail(path+".tsig_algorithm", "", "%s: unknown tsig_algorithm %q (want hmac-sha256, hmac-sha512 or, for old servers, hmac-sha1)",
				label, p.TSIGAlgorithm)
		}
		v.secret(path, label, "tsig_secret", &p.TSIGSecretFile, p.TSIGSecretEnv)
	case PublisherManual:
		only(PublisherCloudflare, cfKeys)
		only(PublisherRFC2136, tsigKeys)
	case "":
		v.fail(path, "", "%s: missing type (cloudflare, rfc2136 or manual)", label)
	default:
		v.fail(path+".type", "", "%s: unknown type %q (want cloudflare, rfc2136 or manual)", label, p.Type)
	}
	for i, ns := range p.Nameservers {
		p.Nameservers[i] = v.hostPort(path+".nameservers", label+": nameservers", ns, "53")
	}
}

// secret checks that exactly one of NAME_file and NAME_env is set, that the
// file can be read, belongs to root or daneroll's user and is readable by
// nobody else, or that the variable is set. It never reads the secret into
// the configuration.
func (v *validator) secret(path, label, name string, file *string, env string) {
	switch {
	case *file != "" && env != "":
		v.fail(path+"."+name+"_env", "", "%s: set %s_file or %s_env, not both", label, name, name)
	case *file == "" && env == "":
		v.fail(path, "", "%s: missing %s_file (or %s_env naming an environment variable)", label, name, name)
	case env != "":
		if os.Getenv(env) == "" {
			v.fail(path+"."+name+"_env", "", "%s: environment variable %s is not set", label, env)
		}
	default:
		v.secretFile(path+"."+name+"_file", label+": "+name+"_file", file)
	}
}

// secretFile checks a file that holds a secret: it can be read, belongs to
// root or daneroll's user, is readable by nobody else and is not larger
// than a secret can be. *file is made absolute.
func (v *validator) secretFile(key, label string, file *string) {
	*file = v.abs(*file)
	fi, err := os.Stat(*file)
	if err != nil {
		v.fail(key, "", "%s: %s: %v", label, *file, unwrapPath(err))
		return
	}
	if !fi.Mode().IsRegular() {
		v.fail(key, "", "%s: %s is not a regular file", label, *file)
		return
	}
	if uid, ok := fileOwner(fi); ok && uid != 0 && uid != os.Geteuid() {
		v.fail(key, fmt.Sprintf("chown %d %s", os.Geteuid(), *file), "%s: %s is owned by uid %d, not by root or the user daneroll runs as (uid %d)",
			label, *file, uid, os.Geteuid())
		return
	}
	if fi.Size() > MaxSecretFile {
		v.fail(key, "", "%s: %s is %d bytes, more than a secret can be (%d KiB)", label, *file, fi.Size(), MaxSecretFile>>10)
		return
	}
	if fi.Mode().Perm()&0o077 != 0 {
		v.fail(key, fmt.Sprintf("chmod 600 %s", *file), "%s: %s is readable or writable by group or others (mode %04o)",
			label, *file, fi.Mode().Perm())
		return
	}
	f, err := os.Open(*file)
	if err != nil {
		v.fail(key, "", "%s: %v", label, err)
		return
	}
	f.Close()
}

func (v *validator) hostPort(path, label, hp, defPort string) string {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		// no port given
		host, port = strings.Trim(hp, "[]"), defPort
	}
	n, err := strconv.Atoi(port)
	if host == "" || err != nil || n < 1 || n > 65535 || strings.ContainsAny(host, " /") {
		v.fail(path, "", "%s: %q is not host:port", label, hp)
		return hp
	}
	return net.JoinHostPort(host, port)
}

// probeSchemes maps probe URL schemes to their default ports.
var probeSchemes = map[string]string{
	"smtp": "25", "submission": "587", "smtps": "465",
	"imap": "143", "imaps": "993", "pop3": "110", "pop3s": "995",
	"tls": "443", "https": "443",
}

// ProbeDefaultPort returns the default port of a probe scheme, or "".
func ProbeDefaultPort(scheme string) string { return probeSchemes[scheme] }

func (v *validator) services() {
	for _, name := range sortedKeys(v.cfg.Services) {
		s := v.cfg.Services[name]
		s.Name = name
		path := "service." + name
		label := fmt.Sprintf("service %q", name)
		if len(s.Reload) == 0 && len(s.Probe) == 0 {
			v.fail(path, "", "%s: needs reload (a command as an argv array) or probe", label)
		}
		if len(s.Reload) > 0 && strings.TrimSpace(s.Reload[0]) == "" {
			v.fail(path+".reload", "", "%s: reload: empty command", label)
		}
		if len(s.Reload) == 1 && strings.ContainsAny(s.Reload[0], " \t") {
			v.fail(path+".reload", fmt.Sprintf("write it as an array: reload = %s", argvHint(s.Reload[0])),
				"%s: reload: %q is one word with spaces; commands are never split on spaces", label, s.Reload[0])
		}
		if s.ReloadTimeout.Duration == 0 {
			s.ReloadTimeout.Duration = time.Minute
		}
		for i, p := range s.Probe {
			ascii, err := checkProbe(p)
			if err != nil {
				v.fail(path+".probe", "", "%s: probe %q: %v", label, p, err)
				continue
			}
			s.Probe[i] = ascii
		}
		v.cfg.Services[name] = s
	}
}

func argvHint(s string) string {
	var q []string
	for _, f := range strings.Fields(s) {
		q = append(q, strconv.Quote(f))
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// checkProbe checks a probe URL as the probe itself will read it, and
// returns it with an internationalized host name in its A-label form.
func checkProbe(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if u.Host == "" && u.Opaque != "" || !strings.Contains(raw, "://") {
		return "", fmt.Errorf("no scheme: write it as smtp://HOST:PORT, imaps://HOST, tls://HOST:PORT …")
	}
	if probeSchemes[u.Scheme] == "" {
		return "", fmt.Errorf("unknown scheme %q (want smtp, submission, smtps, imap, imaps, pop3, pop3s, tls or https)", u.Scheme)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("bad port %q", p)
		}
	}
	if host := u.Hostname(); !isASCII(host) {
		a, err := toASCII(host)
		if err != nil {
			return "", err
		}
		if p := u.Port(); p != "" {
			a = net.JoinHostPort(a, p)
		}
		u.Host = a
		raw = u.String()
	}
	// What the probe itself refuses (query parameters, a path, user
	// information) is refused here, before any deploy depends on it.
	if _, err := services.ParseEndpoint(raw); err != nil {
		return "", errors.New(strings.TrimPrefix(err.Error(), fmt.Sprintf("endpoint %q: ", raw)))
	}
	return raw, nil
}

var (
	certName  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	tlsaOwner = regexp.MustCompile(`^_([0-9]{1,5})\._(tcp|udp|sctp)\.(.+)$`)
)

func (v *validator) certificates() {
	c := v.cfg
	seen := map[string]int{}
	for i, cert := range c.Certificates {
		cert.index = i
		if cert.Name == "" && len(cert.Domains) > 0 {
			cert.Name = strings.TrimPrefix(strings.ToLower(strings.TrimSuffix(cert.Domains[0], ".")), "*.")
			if a, err := toASCII(cert.Name); err == nil && !isASCII(cert.Name) {
				cert.Name = a
			}
		}
		before := len(v.errs)
		v.certificate(cert)
		if len(v.errs) > before {
			v.invalid = append(v.invalid, cert)
		}
		if first, dup := seen[cert.Name]; dup && cert.Name != "" {
			v.fail(certPath(i, "name"), "", "certificate %q: duplicate name (also at line %d)", cert.Name, v.line(certPath(first, "name")))
		} else {
			seen[cert.Name] = i
		}
	}
}

func (v *validator) certificate(cert *Certificate) {
	c := v.cfg
	p := func(key string) string { return certPath(cert.index, key) }
	label := fmt.Sprintf("certificate %q", cert.Name)
	if cert.Name == "" {
		label = fmt.Sprintf("certificate #%d", cert.index+1)
	}
	if cert.Name != "" && !certName.MatchString(cert.Name) {
		v.fail(p("name"), "", "%s: name may hold only letters, digits, '.', '-' and '_'", label)
	}
	if len(cert.Domains) == 0 {
		v.fail(p("domains"), `e.g. domains = ["mail.example.org"]`, "%s: domains is empty", label)
	}
	wildcard := false
	for i, d := range cert.Domains {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		name := strings.TrimPrefix(d, "*.")
		wildcard = wildcard || name != d
		// The CA and DNS know internationalized names by their A-labels
		// (xn--…); so does every comparison daneroll makes.
		if !isASCII(name) {
			a, err := toASCII(name)
			if err != nil {
				v.fail(p("domains"), "", "%s: %q: %v", label, d, err)
				continue
			}
			d = strings.TrimSuffix(d, name) + a
			name = a
		}
		cert.Domains[i] = d
		if _, ok := dns.IsDomainName(name); !ok || !strings.Contains(name, ".") || strings.Contains(name, "*") {
			v.fail(p("domains"), "", "%s: %q is not a domain name", label, d)
		}
	}

	if cert.Challenge == "" {
		cert.Challenge = ChallengeHTTP01
		if cert.Publisher != "" {
			cert.Challenge = ChallengeDNS01
		}
	}
	switch cert.Challenge {
	case ChallengeHTTP01:
		if cert.HTTP01Listen != "" && cert.HTTP01Webroot != "" {
			v.fail(p("http01_webroot"), "", "%s: set http01_listen or http01_webroot, not both", label)
		}
		if cert.HTTP01Listen == "" && cert.HTTP01Webroot == "" {
			cert.HTTP01Listen = ":80"
		}
		if cert.HTTP01Listen != "" {
			cert.HTTP01Listen = v.listen(p("http01_listen"), label+": http01_listen", cert.HTTP01Listen)
		}
		cert.HTTP01Webroot = v.abs(cert.HTTP01Webroot)
		if cert.TLSALPN01Listen != "" {
			v.fail(p("tls_alpn01_listen"), "", "%s: tls_alpn01_listen applies only to challenge = \"tls-alpn-01\"", label)
		}
	case ChallengeTLSALPN01:
		if cert.TLSALPN01Listen == "" {
			cert.TLSALPN01Listen = ":443"
		}
		cert.TLSALPN01Listen = v.listen(p("tls_alpn01_listen"), label+": tls_alpn01_listen", cert.TLSALPN01Listen)
		if cert.HTTP01Listen != "" || cert.HTTP01Webroot != "" {
			v.fail(p("http01_listen"), "", "%s: http01_* keys apply only to challenge = \"http-01\"", label)
		}
	case ChallengeDNS01:
		if cert.Publisher == "" {
			v.fail(p("challenge"), "name one of the [dns.publisher.NAME] tables", "%s: dns-01 needs publisher", label)
		}
		if cert.HTTP01Listen != "" || cert.HTTP01Webroot != "" || cert.TLSALPN01Listen != "" {
			v.fail(p("challenge"), "", "%s: http01_* and tls_alpn01_listen do not apply to dns-01", label)
		}
	default:
		v.fail(p("challenge"), "", "%s: unknown challenge %q (want http-01, tls-alpn-01 or dns-01)", label, cert.Challenge)
	}
	if wildcard && cert.Challenge != ChallengeDNS01 {
		v.fail(p("domains"), "", "%s: wildcard names need challenge = \"dns-01\"", label)
	}
	if cert.Publisher != "" && c.DNS.Publishers[cert.Publisher] == nil {
		v.fail(p("publisher"), definedHint("[dns.publisher.NAME]", sortedKeys(c.DNS.Publishers)),
			"%s: publisher %q is not defined", label, cert.Publisher)
	}

	if cert.KeyType == "" {
		cert.KeyType = c.ACME.KeyType
	} else {
		v.keyType(p("key_type"), label+": key_type", cert.KeyType)
	}
	if cert.Profile == "" {
		cert.Profile = c.ACME.Profile
	}
	if cert.RenewBefore.Duration == 0 {
		cert.RenewBefore = c.ACME.RenewBefore
	}
	if cert.PreferredChain == "" {
		cert.PreferredChain = c.ACME.PreferredChain
	} else {
		v.preferredChain(p("preferred_chain"), label+": preferred_chain", cert.PreferredChain)
	}
	switch {
	case cert.KeepSets < 0:
		v.fail(p("keep_sets"), "0 keeps every set", "%s: keep_sets %d is negative", label, cert.KeepSets)
	case cert.KeepSets == 1:
		v.fail(p("keep_sets"), "set 0 to keep every set, or 2 or more: the set served before the live one is what a failed deploy switches back to",
			"%s: keep_sets = 1 would remove the set to roll back to", label)
	}

	if cert.KeyPolicy == "" {
		cert.KeyPolicy = DefaultPolicy
	}
	switch cert.KeyPolicy {
	case PolicyRollover:
		if cert.RekeyAfter.Duration == 0 {
			cert.RekeyAfter.Duration = DefaultRekey
		}
		if cert.RekeyAfter.Duration < 24*time.Hour {
			v.fail(p("rekey_after"), "", "%s: rekey_after %s is shorter than a day", label, FormatDuration(cert.RekeyAfter.Duration))
		}
	case PolicyReuse, PolicyFresh:
		if cert.RekeyAfter.Duration != 0 {
			v.fail(p("rekey_after"), "", "%s: rekey_after applies only to key_policy = \"rollover\"", label)
		}
	default:
		v.fail(p("key_policy"), "", "%s: unknown key_policy %q (want reuse, rollover or fresh)", label, cert.KeyPolicy)
	}

	if len(cert.TLSA) > 0 && cert.Publisher == "" {
		v.fail(p("tlsa"), `add publisher = "NAME" (type manual prints the changes for you to make)`,
			"%s: tlsa records need a publisher", label)
	}
	for i, owner := range cert.TLSA {
		owner = strings.ToLower(strings.TrimSuffix(owner, "."))
		cert.TLSA[i] = owner
		m := tlsaOwner.FindStringSubmatch(owner)
		if m == nil {
			v.fail(p("tlsa"), `e.g. "_25._tcp.mail.example.org"`, "%s: tlsa name %q is not _PORT._PROTO.HOST", label, owner)
			continue
		}
		if port, _ := strconv.Atoi(m[1]); port < 1 || port > 65535 {
			v.fail(p("tlsa"), "", "%s: tlsa name %q: bad port %s", label, owner, m[1])
		}
		host := m[3]
		if !isASCII(host) {
			a, err := toASCII(host)
			if err != nil {
				v.fail(p("tlsa"), "", "%s: tlsa name %q: %v", label, owner, err)
				continue
			}
			host = a
			cert.TLSA[i] = "_" + m[1] + "._" + m[2] + "." + a
		}
		if strings.Contains(host, "*") {
			v.fail(p("tlsa"), "name each host: a DANE client looks up _PORT._tcp.HOST for the host it connects to",
				"%s: tlsa name %q: wildcards are not managed", label, owner)
			continue
		}
		if _, ok := dns.IsDomainName(host); !ok {
			v.fail(p("tlsa"), "", "%s: tlsa name %q: bad host name", label, owner)
		}
	}
	switch cert.StaleRecords {
	case "":
		cert.StaleRecords = StaleKeep
	case StaleKeep, StaleRemove:
	default:
		v.fail(p("stale_records"), "", "%s: unknown stale_records %q (want keep or remove)", label, cert.StaleRecords)
	}
	if cert.TLSATTL == 0 {
		cert.TLSATTL = DefaultTTL
	}
	if cert.TLSATTL < 1 || cert.TLSATTL > 7*86400 {
		v.fail(p("tlsa_ttl"), "", "%s: tlsa_ttl %d is out of range (1 to 604800 seconds)", label, cert.TLSATTL)
	} else if pub := c.DNS.Publishers[cert.Publisher]; pub != nil && pub.Type == PublisherCloudflare && len(cert.TLSA) > 0 &&
		(cert.TLSATTL < 30 || cert.TLSATTL > 86400) {
		v.fail(p("tlsa_ttl"), "Cloudflare takes 60 to 86400 seconds (30 to 59 only on Enterprise zones)",
			"%s: tlsa_ttl %d is outside what Cloudflare accepts", label, cert.TLSATTL)
	}
	if len(cert.TLSAParams) == 0 {
		cert.TLSAParams = []string{"3 1 1"}
	}
	for _, tp := range cert.TLSAParams {
		if err := checkTLSAParams(tp); err != nil {
			v.fail(p("tlsa_params"), "daneroll manages DANE-EE SPKI records: \"3 1 1\" (or \"3 1 2\")", "%s: tlsa_params %q: %v", label, tp, err)
		}
	}

	for _, s := range cert.Services {
		if _, ok := c.Services[s]; !ok {
			v.fail(p("services"), definedHint("[service.NAME]", sortedKeys(c.Services)), "%s: service %q is not defined", label, s)
		}
	}
}

// probesAndHolds checks what ties certificates to services: every probe's
// TLSA owner should be one the certificate publishes (a DANE client looks
// there, and verify judges the endpoint by it); a key change must be
// checked by a probe before the old key's records go; and the certificate's
// own records must not ask for a hold longer than max_hold.
func (v *validator) probesAndHolds() {
	c := v.cfg
	for _, cert := range c.Certificates {
		if len(cert.TLSA) == 0 || slices.Contains(v.invalid, cert) {
			continue // no records, or errors that come first
		}
		label := fmt.Sprintf("certificate %q", cert.Name)
		probes := 0
		for _, name := range cert.Services {
			svc, ok := c.Services[name]
			if !ok {
				continue
			}
			for _, raw := range svc.Probe {
				ep, err := services.ParseEndpoint(raw)
				if err != nil {
					continue // reported already
				}
				probes++
				owner := ep.TLSAOwner()
				if owner == "" {
					v.warn("service."+name+".probe", "name the host in the URL and dial the address with ?connect=ADDRESS",
						"service %q: probe %q names an IP address, which has no TLSA records: %s's records are not checked there", name, raw, label)
					continue
				}
				if !slices.Contains(cert.TLSA, strings.TrimSuffix(owner, ".")) {
					v.warn("service."+name+".probe", fmt.Sprintf("add %q to the certificate's tlsa, or correct the probe's host or port", strings.TrimSuffix(owner, ".")),
						"service %q: probe %q is looked up at %s, which is not among %s's tlsa names (%s): DANE clients of that endpoint find no records daneroll manages",
						name, raw, strings.TrimSuffix(owner, "."), label, strings.Join(cert.TLSA, ", "))
				}
			}
		}
		if probes == 0 && cert.KeyPolicy != PolicyReuse && !cert.AllowUnverifiedDeploy {
			v.fail(certPath(cert.index, "key_policy"), `add probe = ["smtp://HOST:25"] (or imaps://, https://…) to one of its services, or set allow_unverified_deploy = true to accept the risk`,
				"%s: key_policy %q changes the served key, but no service of it has a probe: the old key's records would be retired without checking that the new key is served", label, cert.KeyPolicy)
		}
		if hold := time.Duration(c.DNS.HoldFactor * float64(cert.TLSATTL) * float64(time.Second)); hold > c.DNS.MaxHold.Duration {
			v.fail(certPath(cert.index, "tlsa_ttl"), "lower tlsa_ttl, or raise [dns] max_hold",
				"%s: tlsa_ttl %d × hold_factor %v asks for a hold of %s, longer than max_hold (%s)",
				label, cert.TLSATTL, c.DNS.HoldFactor, FormatDuration(hold), FormatDuration(c.DNS.MaxHold.Duration))
		}
	}
}

// isLoopback reports whether host is a loopback name or address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// toASCII converts an internationalized host name to its A-labels.
func toASCII(name string) (string, error) {
	a, err := idna.Lookup.ToASCII(name)
	if err != nil {
		return "", fmt.Errorf("not a valid internationalized domain name: %v", err)
	}
	return strings.ToLower(a), nil
}

// fileOwner returns the uid of fi's owner.
func fileOwner(fi os.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// checkTLSAParams accepts "3 1 M": records for the end-entity key, the only
// digest that is known before the certificate is issued and that stays the
// same across renewals with the same key.
func checkTLSAParams(s string) error {
	f := strings.Fields(s)
	if len(f) != 3 {
		return fmt.Errorf("want three numbers, usage selector matching")
	}
	n := make([]int, 3)
	for i, x := range f {
		v, err := strconv.Atoi(x)
		if err != nil {
			return fmt.Errorf("%q is not a number", x)
		}
		n[i] = v
	}
	if n[0] != 3 {
		return fmt.Errorf("usage %d: only 3 (DANE-EE) is managed; CA pins (0, 2) break when the CA rotates intermediates", n[0])
	}
	if n[1] != 1 {
		return fmt.Errorf("selector %d: only 1 (SPKI) is managed; a full-certificate digest changes with every renewal", n[1])
	}
	if n[2] < 0 || n[2] > 2 {
		return fmt.Errorf("matching type %d: want 0 (full), 1 (SHA-256) or 2 (SHA-512)", n[2])
	}
	return nil
}

// ParseTLSAParams returns the three numbers of a validated "3 1 1" triple.
func ParseTLSAParams(s string) (usage, selector, matching uint8) {
	f := strings.Fields(s)
	u, _ := strconv.Atoi(f[0])
	sel, _ := strconv.Atoi(f[1])
	m, _ := strconv.Atoi(f[2])
	return uint8(u), uint8(sel), uint8(m)
}

func (v *validator) listen(path, label, addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		v.fail(path, `e.g. ":80" or "127.0.0.1:8080"`, "%s: %q is not [host]:port", label, addr)
	}
	return addr
}

func definedHint(table string, names []string) string {
	if len(names) == 0 {
		return "define it in a " + table + " table"
	}
	return "defined: " + strings.Join(names, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func lastKey(path string) string {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[i+1:]
	}
	return path
}

func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
