package loopback

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/daneroll/daneroll/config"
)

// Publisher names in the configuration.
const (
	// PublisherRFC2136 sends TSIG-signed RFC 2136 updates to the primary.
	PublisherRFC2136 = "ns"
	// PublisherCloudflare goes through the Cloudflare fake, mirrored to
	// the servers.
	PublisherCloudflare = "cf"
)

// ConfigOptions shape the daneroll configuration of a world. Both
// publishers confirm on every server of the world; the resolver is the
// world's; every certificate uses dns-01.
type ConfigOptions struct {
	// Certificates are the [[certificate]] tables; default one, "mail".
	Certificates []CertificateOptions
	// Reload is every service's reload argv; default kill -HUP to this
	// process, which reloads the services of every world in it.
	Reload []string
	// Publisher is the certificates' publisher unless they name their
	// own: PublisherRFC2136 (the default) or PublisherCloudflare, which
	// needs Options.Cloudflare with Mirror.
	Publisher string
	// TopLevel are more top-level keys, one per line, such as
	// "concurrency = 8".
	TopLevel string
}

// CertificateOptions shape one [[certificate]]. Its services are the
// world's services of Cert Name; its TLSA owners, theirs.
type CertificateOptions struct {
	// Name is the certificate's name; default "mail".
	Name string
	// Domains default to NAME.example.test.
	Domains []string
	// Policy is its key_policy; default "rollover".
	Policy string
	// TTL is its tlsa_ttl in seconds; default 1.
	TTL int
	// Publisher overrides ConfigOptions.Publisher.
	Publisher string
	// Extra are more keys of the table, one per line, such as
	// "keep_sets = 2".
	Extra string
}

// writeConfig writes the configuration and loads it.
func (w *World) writeConfig(o ConfigOptions) error {
	if w.Pebble == nil {
		return errors.New("a configuration needs Options.Pebble")
	}
	if o.Reload == nil {
		o.Reload = []string{"kill", "-HUP", strconv.Itoa(os.Getpid())}
	}
	if o.Publisher == "" {
		o.Publisher = PublisherRFC2136
	}
	if len(o.Certificates) == 0 {
		o.Certificates = []CertificateOptions{{}}
	}
	w.TSIGSecretFile = filepath.Join(w.Dir, "tsig.secret")
	if err := os.WriteFile(w.TSIGSecretFile, []byte(w.TSIGSecret+"\n"), 0o600); err != nil {
		return err
	}
	ns := w.DNS.Addrs()
	var b strings.Builder
	fmt.Fprintf(&b, `# A daneroll configuration for a world on 127.0.0.1 (internal/loopback).
state_dir = %q
%s
[acme]
directory = %q
email = "hostmaster@example.test"
accept_tos = true
ca_roots = [%q]

[dns]
resolver = %q
confirm_timeout = "1m"

[dns.publisher.%s]
type = "rfc2136"
server = %q
tsig_name = %q
tsig_algorithm = "hmac-sha256"
tsig_secret_file = %q
nameservers = [%s]
`, w.StateDir, o.TopLevel, w.Pebble.Directory, w.Pebble.RootsFile, w.Resolver.Addr(),
		PublisherRFC2136, w.DNS.Primary(), TSIGKey, w.TSIGSecretFile, QuoteAll(ns))
	if w.Mirror != nil {
		tokenFile := filepath.Join(w.Dir, "cloudflare.token")
		if err := os.WriteFile(tokenFile, []byte(w.CloudflareToken+"\n"), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(&b, `
[dns.publisher.%s]
type = "cloudflare"
api_token_file = %q
api_url = %q
nameservers = [%s]
`, PublisherCloudflare, tokenFile, w.Cloudflare.URL, QuoteAll(ns))
	}
	for _, c := range o.Certificates {
		if c.Name == "" {
			c.Name = "mail"
		}
		if c.Domains == nil {
			c.Domains = []string{c.Name + "." + strings.TrimSuffix(Zone, ".")}
		}
		if c.Policy == "" {
			c.Policy = "rollover"
		}
		if c.TTL == 0 {
			c.TTL = 1
		}
		if c.Publisher == "" {
			c.Publisher = o.Publisher
		}
		if c.Publisher == PublisherCloudflare && w.Mirror == nil {
			return fmt.Errorf("certificate %s: publisher %q needs Options.Cloudflare with Mirror", c.Name, c.Publisher)
		}
		var owners, services []string
		for _, s := range w.Services {
			if s.Cert == c.Name {
				owners = append(owners, strings.TrimSuffix(s.Owner(), "."))
				services = append(services, s.Name)
			}
		}
		fmt.Fprintf(&b, `
[[certificate]]
name = %q
domains = [%s]
challenge = "dns-01"
publisher = %q
key_policy = %q
tlsa = [%s]
tlsa_ttl = %d
services = [%s]
%s`, c.Name, QuoteAll(c.Domains), c.Publisher, c.Policy, QuoteAll(owners), c.TTL, QuoteAll(services), c.Extra)
	}
	for _, s := range w.Services {
		fmt.Fprintf(&b, `
[service.%s]
reload = [%s]
reload_timeout = "10s"
probe = [%q]
`, s.Name, QuoteAll(o.Reload), s.Endpoint())
	}
	w.ConfigFile = filepath.Join(w.Dir, "daneroll.toml")
	if err := os.WriteFile(w.ConfigFile, []byte(b.String()), 0o600); err != nil {
		return err
	}
	var err error
	w.Config, err = config.Load(w.ConfigFile)
	return err
}

// QuoteAll quotes each of ss as TOML (and Go) does and joins them with
// ", ", for an array in a configuration.
func QuoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
