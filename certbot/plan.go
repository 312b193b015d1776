package certbot

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/daneroll/daneroll/acme"
)

// PlanOptions say where daneroll keeps what an import writes.
type PlanOptions struct {
	// StateDir is daneroll's state directory (absolute).
	StateDir string
	// SecretsDir is where API token files are written (absolute).
	SecretsDir string
	// Now dates the configuration and finds expired certificates.
	Now time.Time
	// RekeyAfter is daneroll's default rekey_after, to say when a
	// rollover certificate's key would first change.
	RekeyAfter time.Duration
}

// Plan is what importing a tree writes: daneroll's configuration, the
// account and lineages to copy into the state directory, and secret files.
type Plan struct {
	// Config is the configuration file, commented.
	Config []byte
	// Directory is the [acme] directory URL, and Email the account's
	// address ("" when unknown).
	Directory, Email string
	// Account is the account to import (nil when none can be: daneroll
	// then registers one).
	Account *Account
	// Lineages are the lineages to import.
	Lineages []*Lineage
	// Secrets are files to write, mode 0600.
	Secrets []Secret
	// Notes are what needs a person, one line each, also marked TODO in
	// Config.
	Notes []string
	// Hooks are what became of certbot's hooks.
	Hooks []HookFate
}

// HookFate says what became of a certbot hook.
type HookFate struct {
	Lineage string
	Hook    Hook
	// File is the renewal configuration file that holds it.
	File string
	// Services are the services made from it; none when it was not
	// carried over.
	Services []string
}

// Label names the hook as certbot's options do: "deploy hook
// (renew_hook)", "post-hook", "pre_hook", …
func (h Hook) Label() string {
	switch h.Kind {
	case "renew_hook", "deploy_hook":
		return "deploy hook (renew_hook)"
	case "post_hook":
		return "post-hook"
	}
	return h.Kind
}

// Secret is a file holding a secret.
type Secret struct {
	Path string
	Data []byte
}

// Plan works out the daneroll configuration for t.
func (t *Tree) Plan(opts PlanOptions) (*Plan, error) {
	if len(t.Lineages) == 0 {
		if len(t.Skipped) > 0 {
			return nil, fmt.Errorf("%s: no lineage can be imported (%d skipped)", t.Dir, len(t.Skipped))
		}
		return nil, fmt.Errorf("%s: no certbot lineages (renewal/*.conf)", t.Dir)
	}
	p := &Plan{Lineages: t.Lineages}
	g := &gen{t: t, p: p, opts: opts, services: map[string]*Service{}, twins: map[string][]string{}}
	for _, l := range t.Lineages {
		k := namesKey(l.Domains)
		g.twins[k] = append(g.twins[k], l.Name)
	}
	g.chooseServer()
	for _, l := range t.Lineages {
		g.certificate(l)
	}
	for _, s := range t.Skipped {
		g.skipped(s)
	}
	g.write()
	return p, nil
}

type gen struct {
	t    *Tree
	p    *Plan
	opts PlanOptions

	publishers   []publisher
	services     map[string]*Service
	serviceOrder []string
	certs        strings.Builder
	manual       bool // a manual publisher is needed

	// twins are the lineages of each set of names (namesKey), in the
	// tree's order: certbot makes more than one with --duplicate or a
	// second certonly.
	twins map[string][]string
}

type publisher struct {
	name, token, file string
	from              []string
}

// chooseServer picks [acme] directory: the server most lineages renew
// from (the first lineage's on a tie), and its account most of them use.
func (g *gen) chooseServer() {
	count := map[string]int{}
	for _, l := range g.t.Lineages {
		count[l.Server]++
	}
	best := g.t.Lineages[0].Server
	for _, l := range g.t.Lineages {
		if count[l.Server] > count[best] {
			best = l.Server
		}
	}
	g.p.Directory = best
	uses := map[string]int{}
	for _, l := range g.t.Lineages {
		if l.Server == best && l.AccountID != "" {
			uses[l.AccountID]++
		}
	}
	var acct *Account
	for _, a := range g.t.Accounts {
		if a.Server == best && (acct == nil || uses[a.ID] > uses[acct.ID]) {
			acct = a
		}
	}
	switch {
	case acct == nil:
		g.note("no certbot account is named for %s: daneroll registers a new one at its first run", best)
	case acct.Err != nil:
		g.note("certbot's account %s cannot be imported (%v): daneroll registers a new one at its first run", acct.ID, acct.Err)
	default:
		g.p.Account = acct
		g.p.Email = acct.Email
	}
	if g.p.Email == "" {
		g.p.Email = g.t.Email
	}
}

func (g *gen) note(format string, args ...any) {
	g.p.Notes = append(g.p.Notes, fmt.Sprintf(format, args...))
}

func (g *gen) write() {
	var b strings.Builder
	o := g.opts
	comment(&b, fmt.Sprintf("daneroll configuration written by daneroll import-certbot from the certbot directory %s on %s.",
		g.t.Dir, o.Now.UTC().Format("2006-01-02")))
	b.WriteString("#\n")
	comment(&b, "The key and the certificate each lineage serves were copied into state_dir unchanged, "+
		"so every TLSA record published for them still matches: the import changed nothing in DNS. Before daneroll takes over from certbot:")
	item(&b, "1.", "read the TODO comments below, if any;")
	item(&b, "2.", "point each service at state_dir/live/NAME/ (the same files as "+filepath.Join(g.t.Dir, "live", "NAME")+"/ now) and reload it;")
	item(&b, "3.", "name the TLSA records you publish (tlsa and a publisher) so that daneroll checks them and keeps them in step when a key changes;")
	item(&b, "4.", "run daneroll status and daneroll renew --dry-run, then stop certbot (daneroll import-certbot --disable-certbot).")
	comment(&b, "Every option is described in config.example.toml.")
	fmt.Fprintf(&b, "\nstate_dir = %s\n", tomlString(o.StateDir))

	b.WriteString("\n[acme]\n")
	n := 0
	for _, l := range g.t.Lineages {
		if l.Server == g.p.Directory {
			n++
		}
	}
	comment(&b, fmt.Sprintf("The server certbot renews %s from.", plural(n, "lineage", "lineages")))
	fmt.Fprintf(&b, "directory = %s\n", tomlString(directoryName(g.p.Directory)))
	if a := g.p.Account; a != nil {
		comment(&b, fmt.Sprintf("certbot's account %s (%s) was imported: daneroll uses it and registers no new one.", a.URI, a.Dir))
	}
	switch {
	case g.p.Email != "":
		fmt.Fprintf(&b, "email = %s\n", tomlString(g.p.Email))
	default:
		comment(&b, "certbot keeps no copy of the account's e-mail address, so the account was imported without one. "+
			"Setting email here makes daneroll look for another account, and register it.")
		b.WriteString("# email = \"hostmaster@example.org\"\n")
	}
	comment(&b, "The account agreed to the CA's terms of service when certbot registered it.")
	b.WriteString("accept_tos = true\n")
	comment(&b, "Extra PEM roots for the ACME server's own HTTPS (a private CA; certbot took them from REQUESTS_CA_BUNDLE).")
	b.WriteString("ca_roots = []\n")

	if len(g.publishers) > 0 || g.manual {
		for _, pub := range g.publishers {
			fmt.Fprintf(&b, "\n[dns.publisher.%s]\n", tomlKey(pub.name))
			comment(&b, fmt.Sprintf("From certbot's dns-cloudflare credentials %s (%s); the token was copied into api_token_file.",
				strings.Join(pub.from, ", "), plural(len(pub.from), "file", "files")))
			b.WriteString("type = \"cloudflare\"\n")
			fmt.Fprintf(&b, "api_token_file = %s\n", tomlString(pub.file))
		}
		if g.manual {
			b.WriteString("\n[dns.publisher.manual]\n")
			comment(&b, "Prints the records to add or remove and waits until every authoritative server serves them. "+
				"TODO: replace it with a cloudflare or rfc2136 publisher (see config.example.toml) to automate dns-01.")
			b.WriteString("type = \"manual\"\n")
		}
	}
	b.WriteString(g.certs.String())
	for _, name := range g.serviceOrder {
		s := g.services[name]
		fmt.Fprintf(&b, "\n[service.%s]\n", tomlKey(name))
		comment(&b, "From "+strings.Join(s.From, "; ")+".")
		fmt.Fprintf(&b, "reload = %s\n", tomlArray(s.Reload))
		if s.Probe != "" {
			comment(&b, "A probe checks the served key after each deploy; a certificate with tlsa under key_policy rollover or fresh needs one.")
			fmt.Fprintf(&b, "# probe = [%s]\n", tomlString(s.Probe))
		}
	}
	g.p.Config = []byte(b.String())
}

// namesKey is the same for lineages of the same names, whatever their order
// and case.
func namesKey(domains []string) string {
	out := make([]string, len(domains))
	for i, s := range domains {
		out[i] = strings.ToLower(s)
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), " ")
}

// someOf names at most limit of names, saying how many more there are, with
// the verb that goes with them: "lineage a has", "lineages a, b and 3
// more have".
func someOf(names []string, limit int, one, many string) string {
	if len(names) == 1 {
		return one + " " + names[0] + " has"
	}
	if len(names) <= limit {
		return many + " " + strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1] + " have"
	}
	return fmt.Sprintf("%s %s and %d more have", many, strings.Join(names[:limit], ", "), len(names)-limit)
}

// directoryName writes certbot's default servers as daneroll's aliases.
func directoryName(url string) string {
	switch url {
	case LetsEncrypt:
		return "letsencrypt"
	case LetsEncryptStaging:
		return "letsencrypt-staging"
	}
	return url
}

func (g *gen) certificate(l *Lineage) {
	b := &g.certs
	o := g.opts
	todo := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		comment(b, "TODO: "+msg)
		g.note("%s: %s", l.Name, msg)
	}
	b.WriteString("\n[[certificate]]\n")
	desc := fmt.Sprintf("certbot lineage %s (%s): %s key %s…", l.Name, l.ConfFile, keyDesc(l.Key), spkiHex(l.Key.Public())[:16])
	switch {
	case l.Leaf.NotAfter.Before(o.Now):
		desc += fmt.Sprintf(", certificate expired on %s: daneroll's first renew renews it", l.Leaf.NotAfter.UTC().Format(time.RFC3339))
	default:
		desc += fmt.Sprintf(", certificate valid until %s", l.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	desc += fmt.Sprintf(" (archive version %d", l.Version)
	if l.SameKeyVersions > 0 {
		desc += fmt.Sprintf("; %s with the same key", plural(l.SameKeyVersions, "earlier certificate", "earlier certificates"))
	}
	if len(l.Older) > 0 {
		desc += fmt.Sprintf("; %s of earlier certificates, known to daneroll as retired so that records still published for them show as stale",
			plural(len(l.Older), "other key", "other keys"))
	}
	comment(b, desc+").")
	for _, w := range l.Warnings {
		comment(b, "Note: "+w+".")
	}
	if others := slices.DeleteFunc(slices.Clone(g.twins[namesKey(l.Domains)]), func(n string) bool { return n == l.Name }); len(others) > 0 {
		comment(b, fmt.Sprintf("Note: %s the same names (certbot made them with --duplicate or a second certonly); "+
			"if your services use only one, delete the others here.", someOf(others, 3, "lineage", "lineages")))
	}
	fmt.Fprintf(b, "name = %s\n", tomlString(l.Name))
	fmt.Fprintf(b, "domains = %s\n", tomlArray(l.Domains))
	if l.Server != g.p.Directory {
		comment(b, fmt.Sprintf("certbot renewed this lineage from %s; daneroll renews every certificate from [acme] directory, "+
			"so its first renew fetches a new certificate (same key) from there.", l.Server))
	}
	if kt := acme.KeyTypeOf(l.Key); kt != "" {
		fmt.Fprintf(b, "key_type = %s\n", tomlString(kt))
	} else {
		todo("certbot's key is %s, which daneroll cannot make: its first renew changes the key (to [acme] key_type). "+
			"List the TLSA names below first, so that the new key's records are published and held before it is served.", keyDesc(l.Key))
	}
	if l.ReuseKey {
		comment(b, "reuse_key = True: the same key at every renewal, as with certbot.")
		b.WriteString("key_policy = \"reuse\"\n")
	} else {
		rekey := l.Since.Add(o.RekeyAfter).UTC().Format("2006-01-02")
		comment(b, "certbot made a new key at every renewal (no reuse_key). daneroll's default policy, rollover, keeps this key "+
			"and publishes the next key's records long before serving it, so renewals no longer change the 3 1 1 record. "+
			fmt.Sprintf("This key would first change after rekey_after (%d days from %s, on %s): ", o.RekeyAfter/(24*time.Hour), l.Since.UTC().Format("2006-01-02"), rekey)+
			"list the TLSA names below before then, or records published for this key stop matching.")
		b.WriteString("key_policy = \"rollover\"\n")
	}
	if rb, ok := renewBefore(l.RenewBefore); ok && rb != "" {
		comment(b, fmt.Sprintf("renew_before_expiry = %s in certbot.", l.RenewBefore))
		fmt.Fprintf(b, "renew_before = %s\n", tomlString(rb))
	} else if !ok {
		comment(b, fmt.Sprintf("certbot's renew_before_expiry = %s has no daneroll form: daneroll renews in the CA's ARI window, else with a third of the lifetime left (renew_before).", visible(l.RenewBefore)))
	}
	g.challenge(l, todo)
	g.extras(l)
	names := g.hookServices(l)
	comment(b, "TLSA records published for this key still match. Name them, with the publisher that changes them, "+
		"so that daneroll checks them and keeps them in step when the key changes:")
	if !strings.Contains(b.String()[strings.LastIndex(b.String(), "[[certificate]]"):], "\npublisher = ") {
		b.WriteString("# publisher = \"NAME\"\n")
	}
	fmt.Fprintf(b, "# tlsa = %s\n", tomlArray(g.tlsaExample(l, names)))
	if len(names) > 0 {
		fmt.Fprintf(b, "services = %s\n", tomlArray(names))
	}
}

// tlsaExample suggests TLSA names: the ports of the services' probes, or
// SMTP's for a mail host name and HTTPS's for others.
func (g *gen) tlsaExample(l *Lineage, services []string) []string {
	host := strings.TrimPrefix(l.Domains[0], "*.")
	var out []string
	for _, name := range services {
		if p := g.services[name].Probe; p != "" {
			owner := "_" + p[strings.LastIndex(p, ":")+1:] + "._tcp." + host
			if !slices.Contains(out, owner) {
				out = append(out, owner)
			}
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, prefix := range []string{"mail.", "mx", "smtp", "mta"} {
		if strings.HasPrefix(host, prefix) {
			return []string{"_25._tcp." + host}
		}
	}
	return []string{"_443._tcp." + host}
}

// challenge writes how the certificate is validated, from certbot's
// authenticator.
func (g *gen) challenge(l *Lineage, todo func(string, ...any)) {
	b := &g.certs
	wildcard := slices.ContainsFunc(l.Domains, func(d string) bool { return strings.HasPrefix(d, "*.") })
	dnsManual := func(why string) {
		g.manual = true
		todo("%s; dns-01 goes through the manual publisher until you name another.", why)
		b.WriteString("challenge = \"dns-01\"\npublisher = \"manual\"\n")
	}
	switch a := l.Authenticator; {
	case a == "standalone":
		listen := net.JoinHostPort(l.HTTP01Address, strconv.Itoa(l.HTTP01Port))
		comment(b, fmt.Sprintf("certbot's standalone authenticator listened on %s.", listen))
		fmt.Fprintf(b, "challenge = \"http-01\"\nhttp01_listen = %s\n", tomlString(listen))
	case a == "webroot":
		g.webroot(l, todo)
	case a == "dns-cloudflare" || a == "certbot-dns-cloudflare:dns-cloudflare":
		if l.cloudflareErr != nil {
			dnsManual(fmt.Sprintf("certbot's dns-cloudflare credentials cannot be used (%v)", l.cloudflareErr))
			return
		}
		name := g.cloudflare(l)
		comment(b, fmt.Sprintf("certbot's dns-cloudflare authenticator, with %s.", l.CloudflareCredentials))
		fmt.Fprintf(b, "challenge = \"dns-01\"\npublisher = %s\n", tomlString(name))
	case a == "manual" && (wildcard || slices.Contains(l.PreferredChallenges, "dns-01") || slices.Contains(l.PreferredChallenges, "dns")):
		dnsManual("certbot's manual authenticator answered dns-01 (by hand, or through manual_auth_hook, which daneroll does not run)")
	case strings.HasPrefix(a, "dns-") || strings.Contains(a, ":dns-") || wildcard:
		dnsManual(fmt.Sprintf("certbot's %s authenticator has no daneroll counterpart", visible(a)))
	case a == "nginx" || a == "apache":
		todo("certbot's %s authenticator answered http-01 through %s, which daneroll cannot: set http01_webroot to a directory %s serves "+
			"/.well-known/acme-challenge/ from, or use dns-01 with a publisher (as written, daneroll listens on :80, where %s is).", a, a, a, a)
	default:
		todo("certbot's %s authenticator has no daneroll counterpart: choose http01_webroot, http01_listen, or dns-01 with a publisher "+
			"(as written, daneroll listens on :80 for http-01).", visible(a))
	}
}

func (g *gen) webroot(l *Lineage, todo func(string, ...any)) {
	b := &g.certs
	roots := map[string]string{}
	for _, e := range l.WebrootMap {
		roots[strings.ToLower(e.Domain)] = e.Path
	}
	var distinct []string
	missing := []string{}
	for _, d := range l.Domains {
		root, ok := roots[strings.ToLower(d)]
		if !ok && len(l.WebrootPath) > 0 {
			root, ok = l.WebrootPath[0], true
		}
		if !ok {
			missing = append(missing, d)
			continue
		}
		if !slices.Contains(distinct, root) {
			distinct = append(distinct, root)
		}
	}
	switch {
	case len(distinct) == 0:
		todo("certbot's webroot authenticator names no directory for %s: set http01_webroot (as written, daneroll listens on :80).", strings.Join(l.Domains, ", "))
		return
	case !filepath.IsAbs(distinct[0]):
		todo("certbot's webroot %s is not an absolute path: set http01_webroot.", visible(distinct[0]))
		return
	}
	comment(b, fmt.Sprintf("certbot's webroot authenticator wrote its tokens under %s.", distinct[0]))
	if len(distinct) > 1 || len(missing) > 0 {
		todo("certbot used several webroots (%s%s); daneroll writes every token under one: serve /.well-known/acme-challenge/ "+
			"of every name from it, or split the certificate.", strings.Join(distinct, ", "), missingText(missing))
	}
	fmt.Fprintf(b, "challenge = \"http-01\"\nhttp01_webroot = %s\n", tomlString(distinct[0]))
}

func missingText(missing []string) string {
	if len(missing) == 0 {
		return ""
	}
	return "; none for " + strings.Join(missing, ", ")
}

// cloudflare returns the publisher for l's token: one per distinct token.
func (g *gen) cloudflare(l *Lineage) string {
	for i, p := range g.publishers {
		if p.token == l.cloudflareToken {
			if !slices.Contains(p.from, l.CloudflareCredentials) {
				g.publishers[i].from = append(g.publishers[i].from, l.CloudflareCredentials)
			}
			return p.name
		}
	}
	name, file := "cloudflare", "cloudflare.token"
	if n := len(g.publishers); n > 0 {
		name, file = fmt.Sprintf("cloudflare-%d", n+1), fmt.Sprintf("cloudflare-%d.token", n+1)
	}
	path := filepath.Join(g.opts.SecretsDir, file)
	g.publishers = append(g.publishers, publisher{name: name, token: l.cloudflareToken, file: path, from: []string{l.CloudflareCredentials}})
	g.p.Secrets = append(g.p.Secrets, Secret{Path: path, Data: []byte(l.cloudflareToken + "\n")})
	return name
}

// extras writes comments for certbot settings daneroll has no use for.
func (g *gen) extras(l *Lineage) {
	b := &g.certs
	if !l.AutoRenew {
		comment(b, "certbot's autorenew = False: certbot never renewed this lineage on its own; daneroll renew does.")
	}
	for _, x := range []struct{ key, why string }{
		{"must_staple", "daneroll does not request OCSP must-staple"},
		{"allow_subset_of_names", "daneroll orders every name or none"},
	} {
		if v := l.Params.Get(x.key); v != nil && v.String() != "" && !strings.EqualFold(v.String(), "false") && v.String() != "None" {
			comment(b, fmt.Sprintf("certbot's %s = %s (%s:%d): %s.", x.key, visible(v.String()), l.ConfFile, v.Line, x.why))
		}
	}
	if v := l.Params.Get("preferred_chain"); v != nil && !v.List && v.String() != "" && v.String() != "None" {
		chain := v.String()
		if strings.TrimSpace(chain) == chain && !strings.ContainsFunc(chain, unicode.IsControl) {
			comment(b, "certbot's preferred_chain: the chain whose root has this name, when the CA offers it.")
			fmt.Fprintf(b, "preferred_chain = %s\n", tomlString(chain))
		} else {
			comment(b, fmt.Sprintf("certbot's preferred_chain = %s (%s:%d) is not a name daneroll takes.", visible(chain), l.ConfFile, v.Line))
		}
	}
}

// hookServices turns the lineage's reload hooks (and an nginx or apache
// installer, which reloads its server) into services, and keeps every
// other hook as a comment.
func (g *gen) hookServices(l *Lineage) []string {
	b := &g.certs
	var names []string
	add := func(rc reloadCmd, from string) string {
		name := rc.name
		for i := 2; ; i++ {
			s, ok := g.services[name]
			if !ok {
				s = &Service{Name: name, Reload: rc.argv, Probe: probeFor(rc.name, strings.TrimPrefix(l.Domains[0], "*."))}
				g.services[name] = s
				g.serviceOrder = append(g.serviceOrder, name)
			}
			if slices.Equal(s.Reload, rc.argv) {
				if !slices.Contains(s.From, from) {
					s.From = append(s.From, from)
				}
				break
			}
			name = fmt.Sprintf("%s-%d", rc.name, i)
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
		return name
	}
	for _, h := range l.Hooks {
		from := fmt.Sprintf("certbot's %s \"%s\" of %s", h.Label(), visible(h.Command), l.Name)
		fate := HookFate{Lineage: l.Name, Hook: h, File: l.ConfFile}
		switch h.Kind {
		case "renew_hook", "deploy_hook", "post_hook":
			if cmds, ok := reloads(h.Command); ok {
				for _, rc := range cmds {
					fate.Services = append(fate.Services, add(rc, from))
				}
				g.p.Hooks = append(g.p.Hooks, fate)
				continue
			}
			comment(b, fmt.Sprintf("certbot ran this %s through a shell (%s:%d); daneroll runs commands as argv arrays, never through a shell, "+
				"so it was not carried over. TODO: make what it does a [service.NAME] with reload = [...] and list it in services:", h.Label(), l.ConfFile, h.Line))
			g.note("%s: certbot's %s is not a plain reload command; it was not carried over", l.Name, h.Label())
		case "pre_hook":
			comment(b, fmt.Sprintf("certbot ran this pre-hook before each renewal (%s:%d); daneroll runs none (a standalone listener "+
				"must have its port free, a webroot needs no pause):", l.ConfFile, h.Line))
		default:
			comment(b, fmt.Sprintf("certbot's %s (%s:%d), which daneroll does not run:", h.Kind, l.ConfFile, h.Line))
		}
		for _, line := range strings.Split(h.Command, "\n") {
			fmt.Fprintf(b, "#   %s\n", visible(line))
		}
		g.p.Hooks = append(g.p.Hooks, fate)
	}
	switch l.Installer {
	case "nginx":
		add(reloadCmd{name: "nginx", argv: []string{"systemctl", "reload", "nginx"}}, "certbot's nginx installer of "+l.Name+", which reloaded nginx")
	case "apache":
		add(reloadCmd{name: "apache2", argv: []string{"systemctl", "reload", "apache2"}}, "certbot's apache installer of "+l.Name+", which reloaded apache2")
	}
	return names
}

// skipped writes a lineage that was not imported as a commented-out
// certificate: daneroll must not issue it anew (with a new key) unasked.
func (g *gen) skipped(s *Skipped) {
	b := &g.certs
	b.WriteString("\n# [[certificate]]\n")
	comment(b, fmt.Sprintf("TODO: certbot lineage %s was NOT imported: %v. certbot still renews it. Repair it with certbot, "+
		"then import it into a new state directory and merge, or let daneroll issue it anew (a new key: publish its TLSA records first).", s.Name, s.Err))
	fmt.Fprintf(b, "# name = %s\n", tomlString(s.Name))
	g.note("%s: not imported: %v", s.Name, s.Err)
}

var renewBeforeRE = regexp.MustCompile(`^([0-9]{1,4})(?:[ \t]*(days?|d|weeks?|w|hours?|h))?$`)

// renewBefore turns certbot's renew_before_expiry (parsedatetime text)
// into a daneroll duration: "" for certbot's default (30 days, which ARI
// or daneroll's own default replace), false when it has no simple form.
func renewBefore(s string) (string, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return "", true
	}
	m := renewBeforeRE.FindStringSubmatch(s)
	if m == nil {
		return "", false
	}
	n, _ := strconv.Atoi(m[1])
	unit := "d"
	switch {
	case strings.HasPrefix(m[2], "w"):
		unit = "w"
	case strings.HasPrefix(m[2], "h"):
		unit = "h"
	}
	if n == 0 {
		return "", false
	}
	if n == 30 && unit == "d" {
		return "", true
	}
	return strconv.Itoa(n) + unit, true
}

func keyDesc(key crypto.Signer) string {
	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	}
	return fmt.Sprintf("%T", key.Public())
}

// KeyDigest is the "3 1 1" digest of the lineage's key: SHA-256 of its
// SubjectPublicKeyInfo, in hex.
func (l *Lineage) KeyDigest() string { return spkiHex(l.Key.Public()) }

// spkiHex is a key's 3 1 1 digest.
func spkiHex(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return strings.Repeat("?", 64)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// comment writes text as "# " lines of at most 78 columns.
func comment(b *strings.Builder, text string) { wrap(b, "", "", text) }

// item writes a numbered item of a comment, with a hanging indent.
func item(b *strings.Builder, marker, text string) {
	wrap(b, "   "+marker+" ", strings.Repeat(" ", 4+utf8.RuneCountInString(marker)), text)
}

func wrap(b *strings.Builder, first, rest, text string) {
	const width = 76
	line, empty := first, true
	for _, w := range strings.Fields(visible(text)) {
		if !empty && utf8.RuneCountInString(line)+1+utf8.RuneCountInString(w) > width {
			b.WriteString("# " + line + "\n")
			line, empty = rest, true
		}
		if !empty {
			line += " "
		}
		line, empty = line+w, false
	}
	b.WriteString(strings.TrimRight("# "+line, " ") + "\n")
}

// visible keeps text from a file on one comment line.
func visible(s string) string { return escapeControls(s) }

// tomlString is a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		case r == utf8.RuneError:
			b.WriteString(`\uFFFD`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func tomlArray(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

var bareKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func tomlKey(k string) string {
	if bareKey.MatchString(k) {
		return k
	}
	return tomlString(k)
}
