package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/certbot"
	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/rollover"
	"github.com/daneroll/daneroll/store"
)

// testHostEnv points import-certbot at a stand-in for the host's cron
// files, crontab and systemctl (see certbot.HostUnder), for tests: they
// must never read or change this machine's schedule.
const testHostEnv = "DANEROLL_TEST_HOST"

func (c *cli) importCertbot(ctx context.Context, args []string) int {
	host := certbot.SystemHost()
	if dir := os.Getenv(testHostEnv); dir != "" {
		host = certbot.HostUnder(dir)
	}
	return c.importCertbotOn(ctx, args, host)
}

// importRun is one import: what it read and decided, and where it writes.
type importRun struct {
	c       *cli
	msg     io.Writer // the report: stdout, unless the configuration goes there
	tree    *certbot.Tree
	plan    *certbot.Plan
	st      *store.Store
	out     string
	disable bool
	held    []string // lineages the state directory held already
}

func (c *cli) importCertbotOn(ctx context.Context, args []string, host *certbot.Host) int {
	fs := c.flagSet("import-certbot")
	out := fs.String("out", "", "write the configuration to FILE instead of stdout")
	stateDir := fs.String("state-dir", config.DefaultState, "daneroll's state directory")
	disable := fs.Bool("disable-certbot", false, "disable certbot's timer and cron lines")
	pos, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) > 1 {
		return c.usageError("import-certbot takes one certbot directory")
	}
	dir := certbot.DefaultDir
	if len(pos) == 1 {
		dir = pos[0]
	}
	r := &importRun{c: c, msg: c.stderr, disable: *disable}
	if *out != "" {
		r.msg = c.stdout
		abs, err := filepath.Abs(*out)
		if err != nil {
			return c.fail(err)
		}
		r.out = abs
	}
	if err := r.prepare(dir, *stateDir); err != nil {
		return c.fail(err)
	}
	lock, err := r.st.Lock()
	if err != nil {
		return c.fail(lockHint(err))
	}
	defer lock.Unlock()
	if err := r.checkState(); err != nil {
		return c.fail(err)
	}
	if err := r.write(); err != nil {
		return c.fail(err)
	}
	return r.certbotStillRuns(ctx, host)
}

// prepare reads the certbot directory and works out the configuration;
// nothing is written yet.
func (r *importRun) prepare(dir, stateDir string) error {
	tree, err := certbot.Read(dir)
	if err != nil {
		return err
	}
	r.tree = tree
	for _, s := range tree.Skipped {
		fmt.Fprintf(r.c.stderr, "daneroll: warning: %s: not imported: %v\n", s.Name, s.Err)
	}
	stateAbs, err := filepath.Abs(stateDir)
	if err != nil {
		return err
	}
	secrets := stateAbs
	if r.out != "" {
		secrets = filepath.Dir(r.out)
	}
	r.plan, err = tree.Plan(certbot.PlanOptions{StateDir: stateAbs, SecretsDir: secrets, Now: time.Now(), RekeyAfter: config.DefaultRekey})
	if err != nil {
		return err
	}
	if r.disable && len(tree.Skipped) > 0 {
		names := make([]string, len(tree.Skipped))
		for i, s := range tree.Skipped {
			names[i] = s.Name
		}
		return &rollover.HintError{
			Err: fmt.Errorf("certbot lineages %s cannot be imported, so certbot must keep renewing them: nothing was changed",
				strings.Join(names, ", ")),
			Advice: "repair or delete them with certbot, then import again"}
	}
	if r.out != "" && !r.disable {
		if _, err := os.Lstat(r.out); err == nil {
			return errOutExists(r.out)
		}
	}
	for _, s := range r.plan.Secrets {
		if data, err := os.ReadFile(s.Path); err == nil && !bytes.Equal(data, s.Data) {
			return &rollover.HintError{Err: fmt.Errorf("%s exists and holds another token: nothing was changed", s.Path),
				Advice: "move it away, or write the configuration elsewhere with --out"}
		}
	}
	r.st, err = store.Open(stateAbs)
	return err
}

// checkState refuses a state directory that holds a lineage already,
// unless --disable-certbot asks only to finish a migration.
func (r *importRun) checkState() error {
	for _, l := range r.plan.Lineages {
		held, err := holds(r.st, l.Name)
		if err != nil {
			return err
		}
		if held {
			r.held = append(r.held, l.Name)
		}
	}
	switch {
	case len(r.held) == 0:
	case !r.disable:
		return &rollover.HintError{
			Err:    fmt.Errorf("%s: %s: %w: nothing was imported", r.st.Dir(), strings.Join(r.held, ", "), rollover.ErrAlreadyImported),
			Advice: "import into another --state-dir; to only stop certbot after an import, run daneroll import-certbot --disable-certbot"}
	case len(r.held) == len(r.plan.Lineages):
		// Every lineage was imported before: this run only disables
		// certbot, and writes no configuration.
		return nil
	}
	if r.out != "" {
		if _, err := os.Lstat(r.out); err == nil {
			return errOutExists(r.out)
		}
		if fi, err := os.Stat(filepath.Dir(r.out)); err != nil || !fi.IsDir() {
			return fmt.Errorf("--out %s: the directory %s does not exist", r.out, filepath.Dir(r.out))
		}
	}
	return nil
}

func errOutExists(out string) error {
	return &rollover.HintError{Err: fmt.Errorf("%s exists: import-certbot does not overwrite a configuration; nothing was imported", out),
		Advice: "name another file with --out, or move it away"}
}

// holds says whether the state directory has anything of certificate name.
func holds(st *store.Store, name string) (bool, error) {
	ids, err := st.Sets(name)
	if err != nil || len(ids) > 0 {
		return len(ids) > 0, err
	}
	var j map[string]any
	if ok, err := st.ReadJSON(store.JournalPath(name), &j); err != nil || ok {
		return ok, err
	}
	if _, err := os.Lstat(st.KeyPath(name, store.Current)); err == nil {
		return true, nil
	}
	return false, nil
}

// write writes the secrets, the account, the lineages and the
// configuration, and says what it did.
func (r *importRun) write() error {
	if len(r.held) == len(r.plan.Lineages) {
		r.msg = r.c.stdout // no configuration goes there
		fmt.Fprintf(r.msg, "every lineage is in %s already (%s): nothing imported, no configuration written\n", r.st.Dir(), strings.Join(r.held, ", "))
		r.warnChanged()
		return nil
	}
	for _, s := range r.plan.Secrets {
		if err := store.WriteFile(s.Path, s.Data, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(r.msg, "wrote %s (mode 0600)\n", s.Path)
	}
	cfg, err := config.Parse(r.configName(), string(r.plan.Config))
	if err != nil {
		return fmt.Errorf("the configuration made from %s does not load (a daneroll bug): %w", r.tree.Dir, err)
	}
	for _, w := range cfg.Warnings {
		r.c.printWarning(w)
	}
	if a := r.plan.Account; a != nil {
		dir, err := r.st.AccountDir(cfg.ACME.Directory, cfg.ACME.Email)
		if err != nil {
			return err
		}
		if err := acme.ImportAccount(dir, cfg.ACME.Email, a.Key, a.URI); err != nil {
			return err
		}
		fmt.Fprintf(r.msg, "imported certbot's ACME account %s (%s): no new account is registered\n", a.URI, filepath.Join(r.tree.Dir, a.Dir))
	}
	now := time.Now()
	for _, l := range r.plan.Lineages {
		if slices.Contains(r.held, l.Name) {
			fmt.Fprintf(r.msg, "%s: in %s already, not imported again\n", l.Name, r.st.Dir())
			continue
		}
		err := rollover.Import(r.st, rollover.Lineage{
			Name: l.Name, Key: l.Key, Cert: l.Cert, Chain: l.Chain, Directory: l.Server, Since: l.Since, Older: l.Older,
		}, now)
		if err != nil {
			return fmt.Errorf("%s: %w", l.Name, err)
		}
		fmt.Fprintf(r.msg, "%s: imported %s\n", l.Name, importedText(l, now))
	}
	for _, l := range r.plan.Lineages {
		for _, w := range l.Warnings {
			fmt.Fprintf(r.c.stderr, "daneroll: warning: %s: %s\n", l.Name, w)
		}
	}
	r.warnChanged()
	if r.out == "" {
		if _, err := r.c.stdout.Write(r.plan.Config); err != nil {
			return err
		}
	} else {
		if err := store.WriteFile(r.out, r.plan.Config, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(r.msg, "wrote %s\n", r.out)
	}
	for _, n := range r.plan.Notes {
		fmt.Fprintf(r.c.stderr, "daneroll: warning: %s\n", n)
	}
	return nil
}

// printWarning prints a configuration warning and its hint.
func (c *cli) printWarning(w *config.Error) {
	fmt.Fprintf(c.stderr, "daneroll: warning: %s\n", w)
	if w.Hint() != "" {
		fmt.Fprintf(c.stderr, "daneroll: hint: %s\n", w.Hint())
	}
}

func (r *importRun) configName() string {
	if r.out != "" {
		return r.out
	}
	return "(stdout)"
}

// warnChanged says which lineages held already serve something other than
// certbot's live files: daneroll or certbot renewed them since the import.
func (r *importRun) warnChanged() {
	for _, l := range r.plan.Lineages {
		if !slices.Contains(r.held, l.Name) {
			continue
		}
		set, err := r.st.Live(l.Name)
		if err != nil || set == nil || !bytes.Equal(set.Cert, l.Cert) {
			fmt.Fprintf(r.msg, "%s: certbot's live certificate (serial %x) is not the one daneroll serves: one of them renewed it since the import\n",
				l.Name, l.Leaf.SerialNumber)
		}
	}
}

// importedText describes an imported lineage's key and certificate.
func importedText(l *certbot.Lineage, now time.Time) string {
	s := fmt.Sprintf("key %s…, certificate valid until %s", l.KeyDigest()[:16], l.Leaf.NotAfter.UTC().Format(time.RFC3339))
	if l.Leaf.NotAfter.Before(now) {
		s = fmt.Sprintf("key %s…, certificate expired on %s", l.KeyDigest()[:16], l.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if n := len(l.Older); n > 0 {
		s += fmt.Sprintf("; %d earlier key(s) known as retired", n)
	}
	return s
}

// certbotStillRuns lists what runs certbot on this host and, with
// --disable-certbot, disables it.
func (r *importRun) certbotStillRuns(ctx context.Context, host *certbot.Host) int {
	found, errs := host.Find(ctx)
	for _, err := range errs {
		fmt.Fprintf(r.c.stderr, "daneroll: warning: looking for what runs certbot: %v\n", err)
	}
	var changeable, listed []certbot.Finding
	for _, f := range found {
		if f.Kind == "script" {
			listed = append(listed, f)
		} else {
			changeable = append(changeable, f)
		}
	}
	if !r.disable {
		switch {
		case len(changeable) > 0:
			fmt.Fprintln(r.msg, "still runs certbot:")
			for _, f := range changeable {
				fmt.Fprintf(r.msg, "  %s: %s\n", f.Where, f.What)
			}
		default:
			fmt.Fprintln(r.msg, "no systemd timer, cron file or crontab line runs certbot")
		}
		r.hooks()
		r.listOnly(listed)
		if len(changeable) > 0 {
			fmt.Fprintln(r.c.stderr, "daneroll: hint: once daneroll status and daneroll renew --dry-run are happy, stop them: daneroll import-certbot --disable-certbot")
		}
		return 0
	}
	changes, err := host.Disable(ctx, changeable)
	if len(changes) > 0 {
		fmt.Fprintln(r.msg, "disabled certbot:")
		for _, ch := range changes {
			fmt.Fprintf(r.msg, "  %s: %s\n", ch.Where, ch.What)
		}
	} else if err == nil {
		fmt.Fprintln(r.msg, "no systemd timer, cron file or crontab line runs certbot: nothing to disable")
	}
	r.hooks()
	r.listOnly(listed)
	if err != nil {
		return r.c.fail(fmt.Errorf("disabling certbot: %w", err))
	}
	return 0
}

// hooks says what becomes of the commands certbot runs around renewals.
func (r *importRun) hooks() {
	if len(r.plan.Hooks) == 0 && len(r.tree.HookScripts) == 0 {
		return
	}
	fmt.Fprintln(r.msg, "certbot's hooks:")
	for _, h := range r.plan.Hooks {
		fate := "not carried over: see the TODO in the configuration"
		switch {
		case len(h.Services) > 0:
			fate = "daneroll reloads " + strings.Join(h.Services, ", ") + " instead"
		case h.Hook.Kind == "pre_hook":
			fate = "daneroll runs none before a renewal"
		case h.Hook.Kind != "renew_hook" && h.Hook.Kind != "deploy_hook" && h.Hook.Kind != "post_hook":
			fate = "daneroll does not run it"
		}
		fmt.Fprintf(r.msg, "  %s:%d: %s %q: %s\n", h.File, h.Hook.Line, h.Hook.Label(), h.Hook.Command, fate)
	}
	for _, script := range r.tree.HookScripts {
		fmt.Fprintf(r.msg, "  %s: certbot runs it around each renewal; daneroll does not\n", script)
	}
}

func (r *importRun) listOnly(listed []certbot.Finding) {
	if len(listed) == 0 {
		return
	}
	fmt.Fprintln(r.msg, "not changed (look at them yourself):")
	for _, f := range listed {
		fmt.Fprintf(r.msg, "  %s: %s\n", f.Where, f.What)
	}
}
