// Package config reads and validates daneroll's TOML configuration.
//
// # Strictness
//
// Every mistake a user can make in the file is an error at load time, before
// anything touches the network or the disk: unknown keys, values of the wrong
// type, bad durations, unknown key types, duplicate certificate names,
// references to undefined publishers or services, empty domain lists, secret
// files that are missing, unreadable, readable by others or owned by another
// user, a configuration file others can change, probes that check no record.
// Each error is one line that names the file, the line and the key:
//
//	/etc/daneroll/daneroll.toml:14: certificate "mail": rekey_after: bad duration "180x": unknown unit "x" (want w, d, h, m, s or ms)
//
// Problems that do not stop daneroll, such as a probe whose TLSA owner the
// certificate does not publish, are kept in [Config.Warnings], with their
// file and line too.
//
// # Defaults
//
// Load fills in the defaults documented in config.example.toml, so that the
// rest of daneroll never has to ask whether a value was set.
package config

import (
	"time"
)

// Paths used when no -c flag is given.
const (
	EnvConfig    = "DANEROLL_CONFIG"
	DefaultPath  = "/etc/daneroll/daneroll.toml"
	DefaultState = "/var/lib/daneroll"
	DefaultTTL   = 300
	DefaultRekey = 180 * 24 * time.Hour
	DefaultHoldX = 2.0
	// DefaultMaxHold is the longest hold daneroll waits before serving a
	// new key unless max_hold says otherwise: a week, twice the longest
	// TTL daneroll believes (see dane.MaxCacheTTL) being two.
	DefaultMaxHold = 7 * 24 * time.Hour
	DefaultKey     = "ec256"
	DefaultPolicy  = PolicyRollover
)

// Key policies.
const (
	PolicyReuse    = "reuse"
	PolicyRollover = "rollover"
	PolicyFresh    = "fresh"
)

// What the retire step does with stale records.
const (
	StaleKeep   = "keep"
	StaleRemove = "remove"
)

// Challenge types.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
	ChallengeDNS01     = "dns-01"
)

// Publisher types.
const (
	PublisherCloudflare = "cloudflare"
	PublisherRFC2136    = "rfc2136"
	PublisherManual     = "manual"
)

// Directory aliases accepted in acme.directory. Read only: validation looks
// names up here and nothing writes to it.
var directoryAliases = map[string]string{
	"letsencrypt":         "https://acme-v02.api.letsencrypt.org/directory",
	"letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
	"zerossl":             "https://acme.zerossl.com/v2/DV90",
	"google":              "https://dv.acme-v02.api.pki.goog/directory",
	"google-staging":      "https://dv.acme-v02.test-api.pki.goog/directory",
}

// requiresEAB names the CA behind a directory URL that registers no
// account without External Account Binding, or "".
func requiresEAB(directory string) string {
	switch directory {
	case directoryAliases["zerossl"]:
		return "ZeroSSL"
	case directoryAliases["google"], directoryAliases["google-staging"]:
		return "Google Trust Services"
	case "https://acme.sectigo.com/v2/DV", "https://acme.sectigo.com/v2/OV", "https://acme.sectigo.com/v2/EV":
		return "Sectigo"
	}
	return ""
}

// KeyTypes lists the accepted values of key_type, in the order the docs give.
var KeyTypes = []string{"ec256", "ec384", "rsa2048", "rsa3072", "rsa4096"}

// Config is a loaded, validated configuration. Paths in it are absolute.
type Config struct {
	// File is the path the configuration was read from.
	File string `toml:"-"`

	StateDir string `toml:"state_dir"`
	// Concurrency is how many certificates do work at once (waits do not
	// count).
	Concurrency  int                `toml:"concurrency"`
	ACME         ACME               `toml:"acme"`
	DNS          DNS                `toml:"dns"`
	Certificates []*Certificate     `toml:"certificate"`
	Services     map[string]Service `toml:"service"`
	Metrics      Metrics            `toml:"metrics"`
	Notify       Notify             `toml:"notify"`
	Store        Store              `toml:"store"`

	// Warnings are problems that do not stop daneroll but that the
	// operator should see, each with its file and line.
	Warnings []*Error `toml:"-"`

	// pos maps a key path to the line that set it, for later messages.
	pos positions
}

// ACME configures the certificate authority and the account.
type ACME struct {
	// Directory is an alias ("letsencrypt", "letsencrypt-staging",
	// "zerossl", "google", "google-staging") or a URL; after Load it is
	// always the URL.
	Directory string   `toml:"directory"`
	Email     string   `toml:"email"`
	AcceptTOS bool     `toml:"accept_tos"`
	CARoots   []string `toml:"ca_roots"`
	Profile   string   `toml:"profile"`
	KeyType   string   `toml:"key_type"`
	// RenewBefore is the default for certificates without ARI and without
	// their own renew_before; zero means one third of the lifetime.
	RenewBefore Duration `toml:"renew_before"`
	// EABKID and the MAC key bind a new account to the operator's account
	// at the CA (External Account Binding, RFC 8555 §7.3.4), for CAs that
	// require it. The key stays in its file or environment variable until
	// an account is registered: the configuration holds only where it is.
	EABKID         string `toml:"eab_kid"`
	EABHMACKeyFile string `toml:"eab_hmac_key_file"`
	EABHMACKeyEnv  string `toml:"eab_hmac_key_env"`
	// PreferredChain picks, among the chains the CA offers, the one whose
	// top certificate is issued by this common name (certbot's
	// --preferred-chain); the default for certificates without their own.
	PreferredChain string `toml:"preferred_chain"`
}

// DNS configures publishers and the checks that follow a change.
type DNS struct {
	// Resolver is a validating resolver (host:port) for DANE checks; empty
	// means the first name server of /etc/resolv.conf.
	Resolver string `toml:"resolver"`
	// HoldFactor multiplies the largest TTL a resolver may hold to give the
	// hold time after confirmation (RFC 7671 §8.4 asks for at least 2).
	HoldFactor float64 `toml:"hold_factor"`
	// ConfirmTimeout bounds how long daneroll polls authoritative servers,
	// and every single round of questions to them.
	ConfirmTimeout Duration `toml:"confirm_timeout"`
	// MaxHold is the longest hold daneroll accepts; a longer one (from TTLs
	// in DNS answers) is refused with an error instead of waited for.
	MaxHold Duration `toml:"max_hold"`
	// Publishers by name.
	Publishers map[string]*Publisher `toml:"publisher"`
}

// Publisher is one way of changing DNS records.
type Publisher struct {
	Name string `toml:"-"`
	Type string `toml:"type"`

	// cloudflare
	APITokenFile string `toml:"api_token_file"`
	APITokenEnv  string `toml:"api_token_env"`
	APIURL       string `toml:"api_url"`

	// rfc2136
	Server         string `toml:"server"`
	TSIGName       string `toml:"tsig_name"`
	TSIGAlgorithm  string `toml:"tsig_algorithm"`
	TSIGSecretFile string `toml:"tsig_secret_file"`
	TSIGSecretEnv  string `toml:"tsig_secret_env"`

	// Nameservers, when set, are asked to confirm changes instead of the
	// zone's discovered NS set (hidden primaries, test rigs on other ports).
	Nameservers []string `toml:"nameservers"`
}

// Certificate is one certificate lineage.
type Certificate struct {
	Name            string   `toml:"name"`
	Domains         []string `toml:"domains"`
	Challenge       string   `toml:"challenge"`
	Publisher       string   `toml:"publisher"`
	HTTP01Listen    string   `toml:"http01_listen"`
	HTTP01Webroot   string   `toml:"http01_webroot"`
	TLSALPN01Listen string   `toml:"tls_alpn01_listen"`
	KeyType         string   `toml:"key_type"`
	Profile         string   `toml:"profile"`
	KeyPolicy       string   `toml:"key_policy"`
	RekeyAfter      Duration `toml:"rekey_after"`
	RenewBefore     Duration `toml:"renew_before"`
	TLSA            []string `toml:"tlsa"`
	TLSATTL         int      `toml:"tlsa_ttl"`
	// TLSAParams are the "usage selector matching" triples published for
	// every key, "3 1 1" unless set.
	TLSAParams []string `toml:"tlsa_params"`
	Services   []string `toml:"services"`
	// StaleRecords says what the retire step of a renewal does with stale
	// records (of keys daneroll will not serve, at owners it manages):
	// "keep" (the default) leaves them to `daneroll prune`, "remove"
	// prunes them there, after the same probes.
	StaleRecords string `toml:"stale_records"`
	// AllowUnverifiedDeploy accepts a key change that no probe checks:
	// retire then removes the old key's records on faith.
	AllowUnverifiedDeploy bool `toml:"allow_unverified_deploy"`
	// PreferredChain overrides [acme] preferred_chain.
	PreferredChain string `toml:"preferred_chain"`
	// KeepSets is how many archived sets to keep, newest first; the live
	// set and the one before it are kept whatever it says. Zero keeps
	// every set, as certbot does.
	KeepSets int `toml:"keep_sets"`

	index int // position among [[certificate]] tables, for messages
}

// Service is something that serves a certificate and must reload it.
type Service struct {
	Name string `toml:"-"`
	// Reload is an argv, run without a shell.
	Reload        []string `toml:"reload"`
	ReloadTimeout Duration `toml:"reload_timeout"`
	// Probe lists endpoints (smtp://host:25, imaps://host:993, …) whose
	// served chain must match after a deploy.
	Probe []string `toml:"probe"`
}

// Metrics configures the Prometheus text file written after every renew,
// status and check.
type Metrics struct {
	// Textfile is the file node_exporter's textfile collector reads; ""
	// writes none.
	Textfile string `toml:"textfile"`
}

// Notify configures the command run after a run that needs a person.
type Notify struct {
	// Command is an argv, run without a shell, with a JSON summary on
	// stdin and a subject in DANEROLL_SUBJECT; empty runs nothing.
	Command []string `toml:"command"`
	Timeout Duration `toml:"timeout"`
	// StuckAfter is how long a transaction may stay pending beyond its
	// planned waits before it counts as stuck.
	StuckAfter Duration `toml:"stuck_after"`
}

// Store types.
const (
	StoreLocal = "local"
	StoreEtcd  = "etcd"
)

// Store says where the certificates' state lives: in state_dir alone
// ("local", the default), or in etcd, shared by the members of a fleet
// (docs/fleet.md). In fleet mode state_dir keeps what is local to a host:
// the sets its agent installed, its ACME account, its locks.
type Store struct {
	Type string `toml:"type"`
	// Endpoints are etcd's client URLs, https unless on loopback.
	Endpoints []string `toml:"endpoints"`
	// CAFile verifies etcd's servers; CertFile and KeyFile are this
	// member's client certificate and its key (a secret: 0600).
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// Prefix is where the fleet's keys start in etcd: "/daneroll/".
	Prefix string `toml:"prefix"`
	// FleetKeyFile is the age identity every member holds; private keys
	// are sealed to it before they go to etcd.
	FleetKeyFile string `toml:"fleet_key_file"`
	// Host is this member's name among the fleet's; default the host
	// name.
	Host string `toml:"host"`
	// LockTTL is how long a certificate's lock outlives a coordinator
	// that died holding it.
	LockTTL Duration `toml:"lock_ttl"`
	// ReportTimeout is how long a deploy waits for every member to report
	// the new key served before it rolls the fleet back.
	ReportTimeout Duration `toml:"report_timeout"`
}

// Fleet reports whether the state is in etcd.
func (s *Store) Fleet() bool { return s.Type == StoreEtcd }

// Defaults of [store].
const (
	DefaultStorePrefix   = "/daneroll/"
	DefaultLockTTL       = 15 * time.Second
	DefaultReportTimeout = 5 * time.Minute
)

// DefaultConcurrency is Concurrency unless set: enough to overlap the
// network round trips of a few orders, few enough for any CA's limits.
const DefaultConcurrency = 4

// DefaultStuckAfter is Notify.StuckAfter unless set.
const DefaultStuckAfter = 24 * time.Hour

// SecretEnvs names the environment variables the configuration reads
// secrets from: the commands daneroll runs get its environment without
// them.
func (c *Config) SecretEnvs() []string {
	var names []string
	if c.ACME.EABHMACKeyEnv != "" {
		names = append(names, c.ACME.EABHMACKeyEnv)
	}
	for _, p := range c.DNS.Publishers {
		for _, n := range []string{p.APITokenEnv, p.TSIGSecretEnv} {
			if n != "" {
				names = append(names, n)
			}
		}
	}
	return names
}

// Certificate returns the certificate called name, or nil.
func (c *Config) Certificate(name string) *Certificate {
	for _, cert := range c.Certificates {
		if cert.Name == name {
			return cert
		}
	}
	return nil
}

// Where returns "file:line" for the key path (e.g. "acme.accept_tos" or
// "certificate.2.domains"), or just the file when the line is not known. It
// lets later stages (ToS refusal, a bad secret) point at the line to fix.
func (c *Config) Where(path string) string {
	return c.pos.where(c.File, path)
}

// WhereCert is Where for a key of this certificate's table.
func (c *Config) WhereCert(cert *Certificate, key string) string {
	return c.pos.where(c.File, certPath(cert.index, key))
}
