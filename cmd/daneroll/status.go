package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/internal/smallfile"
	"github.com/daneroll/daneroll/rollover"
	"github.com/daneroll/daneroll/store"
)

func (c *cli) status(ctx context.Context, args []string) int {
	fs := c.flagSet("status")
	asJSON := fs.Bool("json", false, "print JSON")
	names, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	start := time.Now()
	eng, cfg, err := c.lookingEngine()
	if err != nil {
		return c.fail(err)
	}
	all, err := eng.Status(ctx, names)
	if err != nil {
		return c.fail(err)
	}
	// Exit 2 when something needs a person (see the README).
	code = 0
	for _, s := range all {
		if len(s.Attention) > 0 {
			code = 2
		}
	}
	c.afterRun(ctx, cfg, eng, rollover.Run{Command: "status", Took: time.Since(start), OK: true, At: time.Now(), Statuses: all, WithDNS: true}, names)
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(all); err != nil {
			return c.fail(err)
		}
		return code
	}
	for i, s := range all {
		if i > 0 {
			fmt.Fprintln(c.stdout)
		}
		printStatus(c, s)
	}
	return code
}

// lookingEngine is an engine for commands that only look: it creates no
// state directory and takes no lock.
func (c *cli) lookingEngine() (*rollover.Engine, *config.Config, error) {
	return c.lookingEngineWith(rollover.Wiring{Logger: c.log, Version: version()})
}

// lookingEngineReporting is lookingEngine with progress lines on stdout,
// for dry runs that say what they would do.
func (c *cli) lookingEngineReporting() (*rollover.Engine, *config.Config, error) {
	return c.lookingEngineWith(rollover.Wiring{Logger: c.log, Version: version(), Reporter: newReporter(c.stdout)})
}

func (c *cli) lookingEngineWith(w rollover.Wiring) (*rollover.Engine, *config.Config, error) {
	cfg, err := c.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	st, err := store.OpenReadOnly(cfg.StateDir)
	if err != nil {
		return nil, nil, err
	}
	if w.Backend, err = c.backend(cfg); err != nil {
		return nil, nil, err
	}
	eng, err := rollover.BuildWithStore(cfg, st, w)
	return eng, cfg, err
}

func printStatus(c *cli, s rollover.CertStatus) {
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	fmt.Fprintf(tw, "%s\t(%s)\n", s.Name, strings.Join(s.Domains, ", "))
	row("key policy", s.KeyPolicy)
	row("current key", orDash(s.Key))
	if s.NextKey != "" {
		row("next key", s.NextKey)
	}
	if s.Served != "" && s.Served != s.Key {
		row("served key", s.Served)
	}
	if s.Serial != "" {
		row("certificate", fmt.Sprintf("serial %s, not after %s (%s left)", s.Serial, s.NotAfter.UTC().Format(time.RFC3339), left(s.NotAfter)))
	} else {
		row("certificate", "none yet")
	}
	if !s.RenewAt.IsZero() {
		row("next renewal", fmt.Sprintf("%s, %s", s.RenewAt.UTC().Format(time.RFC3339), s.RenewReason))
	} else if s.RenewReason != "" {
		row("next renewal", s.RenewReason)
	}
	if !s.RekeyAt.IsZero() {
		row("next key change", s.RekeyAt.UTC().Format(time.RFC3339))
	}
	if s.Pending != nil {
		row("pending", fmt.Sprintf("%s at step %s (%s), started %s", s.Pending.Kind, s.Pending.Step, oneLine(s.Pending.Reason), s.Pending.Started.UTC().Format(time.RFC3339)))
		if s.Pending.Error != "" {
			row("stopped by", fmt.Sprintf("%s (%s)", oneLine(s.Pending.Error), s.Pending.ErrorAt.UTC().Format(time.RFC3339)))
		}
	}
	if s.LastFailure != "" {
		row("last failure", oneLine(s.LastFailure))
	}
	for _, o := range s.TLSA {
		signed := "signed"
		switch {
		case o.SignedUnknown:
			signed = "signing unknown: no authoritative server answered"
		case !o.Signed:
			signed = "NOT signed"
		}
		if o.Validated != nil && *o.Validated {
			signed += ", validated by the resolver"
		}
		servers := fmt.Sprintf("%d authoritative servers", o.Servers)
		if o.Servers == 1 {
			servers = "1 authoritative server"
		}
		row("tlsa", fmt.Sprintf("%s (%s, %s)", strings.TrimSuffix(o.Owner, "."), signed, servers))
		for _, r := range o.Records {
			rd := r.Record[strings.Index(r.Record, "TLSA ")+5:]
			row("", fmt.Sprintf("  %-7s %s  visible on %d/%d", r.Key, rd, r.Visible, o.Servers))
		}
		staleRows(row, o)
	}
	for _, m := range s.Members {
		row("member", memberRow(m))
	}
	for _, o := range s.Former {
		row("former tlsa", strings.TrimSuffix(o.Owner, ".")+" (no longer configured)")
		staleRows(row, o)
	}
	for _, w := range s.Warnings {
		row("warning", oneLine(w))
	}
	printAttention(row, s)
	tw.Flush()
}

// memberRow is one fleet member's last report.
func memberRow(m rollover.MemberStatus) string {
	switch {
	case m.At.IsZero():
		return m.Host + ": no report yet"
	case !m.OK:
		return fmt.Sprintf("%s: FAILED on set %s (%s): %s", m.Host, m.Set, m.At.UTC().Format(time.RFC3339), oneLine(m.Error))
	}
	what := "serves"
	if !m.Current {
		what = "serves an older set,"
	}
	agent := ""
	if !m.Agent {
		agent = "; its agent is NOT running"
	}
	return fmt.Sprintf("%s: %s set %s, key %.16s… (%s)%s", m.Host, what, m.Set, m.Key, m.At.UTC().Format(time.RFC3339), agent)
}

// oneLine keeps a multi-line message (joined errors) in its table cell.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(s), "\n", " | ")), " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func left(t time.Time) string {
	d := time.Until(t)
	if d < 0 {
		return "expired"
	}
	days := int(d.Hours()) / 24
	if days > 0 {
		return fmt.Sprintf("%dd", days)
	}
	return d.Round(time.Minute).String()
}

func (c *cli) tlsa(ctx context.Context, args []string) int {
	fs := c.flagSet("tlsa")
	certFile := fs.String("cert", "", "certificate, chain or key file")
	usage := fs.Uint("usage", 3, "certificate usage (0-3)")
	selector := fs.Uint("selector", 1, "selector (0 full certificate, 1 SPKI)")
	matching := fs.Uint("matching", 1, "matching type (0 full, 1 SHA-256, 2 SHA-512)")
	owner := fs.String("name", "", "owner name, e.g. _25._tcp.mail.example.org")
	names, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	if *certFile != "" {
		if len(names) > 0 {
			return c.usageError("tlsa --cert takes no certificate names")
		}
		return c.tlsaForFile(*certFile, *usage, *selector, *matching, *owner)
	}
	eng, _, err := c.lookingEngine()
	if err != nil {
		return c.fail(err)
	}
	all, err := eng.WantedRecords(names)
	if err != nil {
		return c.fail(err)
	}
	// What is wrong with what is published goes to stderr, so that stdout
	// stays records.
	if statuses, err := eng.Status(ctx, names); err == nil {
		for _, s := range statuses {
			for _, w := range s.Warnings {
				fmt.Fprintf(c.stderr, "daneroll: warning: %s: %s\n", s.Name, w)
			}
		}
	}
	for _, cr := range all {
		fmt.Fprintf(c.stdout, "; %s\n", cr.Name)
		if cr.Note != "" {
			fmt.Fprintf(c.stdout, "; %s\n", cr.Note)
		}
		for _, l := range cr.Lines {
			fmt.Fprintln(c.stdout, l)
		}
	}
	return 0
}

func (c *cli) tlsaForFile(file string, usage, selector, matching uint, owner string) int {
	if usage > 3 || selector > 1 || matching > 2 {
		return c.usageError("--usage must be 0-3, --selector 0-1, --matching 0-2")
	}
	data, err := smallfile.Read(file, config.MaxPEMFile)
	if err != nil {
		return c.fail(err)
	}
	chain, pub, err := dane.ReadPEM(data)
	if err != nil {
		return c.fail(fmt.Errorf("%s: %w", file, err))
	}
	var t dane.TLSA
	switch {
	case len(chain) > 0:
		// Usages 0 and 2 name a CA: use the top of the chain given.
		cert := chain[0]
		if (usage == 0 || usage == 2) && len(chain) > 1 {
			cert = chain[len(chain)-1]
		}
		t, err = dane.Compute(cert, uint8(usage), uint8(selector), uint8(matching))
	case selector == 0:
		err = fmt.Errorf("%s holds a key, not a certificate: selector 0 needs a certificate", file)
	default:
		t, err = dane.ComputeKey(pub, uint8(usage), uint8(matching))
	}
	if err != nil {
		return c.fail(err)
	}
	if owner == "" {
		fmt.Fprintln(c.stdout, t.String())
	} else {
		fmt.Fprintln(c.stdout, dane.ZoneLine(dns.Fqdn(owner), 0, t))
	}
	return 0
}

// staleRows prints an owner's stale records, each with why, and its error.
func staleRows(row func(k, v string), o rollover.OwnerStatus) {
	for _, x := range o.Stale {
		rd := x.Record[strings.Index(x.Record, "TLSA ")+5:]
		row("", fmt.Sprintf("  stale   %s  (%s; daneroll prune removes it)", rd, x.Why))
	}
	if o.Error != "" {
		row("", "  error: "+oneLine(o.Error))
	}
}

func printAttention(row func(k, v string), s rollover.CertStatus) {
	for _, a := range s.Attention {
		row("ATTENTION", oneLine(a))
	}
}
