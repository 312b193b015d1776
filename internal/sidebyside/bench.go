package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/daneroll/daneroll/internal/pebbletest"
)

// bench is one side-by-side run: the working directory, the programs, and
// what was measured.
type bench struct {
	o        options
	dir      string // the working directory, $W in the commands shown
	progress io.Writer
	certbot  string
	daneroll string
	spawn    string // internal/sidebyside/spawn, which starts and measures each command
	pebble   *pebbletest.Pebble
	port     int      // the http-01 port of both standalone authenticators
	env      []string // the children's environment
	seq      int      // numbers the files that keep each command's output

	versions    []string
	rows        []row
	notes       []string
	setupCmds   []string // how the trees were made, for the commands shown
	firstImport sample   // daneroll's first run after the largest import
	floor       sample   // /bin/true, started by spawn
	writes      []string // what the no-op runs wrote, by size
}

// row is one operation, measured with both tools.
type row struct {
	op string
	// issued is the number of certificates an issuing row obtained in
	// each run, shown per second.
	issued            int
	certbot, daneroll result
}

// result is the measured runs of one command.
type result struct {
	samples []sample
	// sum makes the result the total of the runs, not their median:
	// certbot issuing, one process per certificate.
	sum bool
	cmd string // as shown, with $W for the working directory
}

// sample is one whole process.
type sample struct {
	wall time.Duration
	// rss is the process's peak resident set size (KiB), from wait4's
	// rusage: the largest of the process and the children it waited for.
	rss int64
}

// pair is one set of certificates, as certbot and daneroll each keep it.
type pair struct {
	n        int
	certbot  string // certbot's base: config/, work/ and logs/ below it
	daneroll string // daneroll.toml and state/
}

func (p pair) certbotConfig() string  { return filepath.Join(p.certbot, "config") }
func (p pair) danerollConfig() string { return filepath.Join(p.daneroll, "daneroll.toml") }
func (p pair) state() string          { return filepath.Join(p.daneroll, "state") }

// setup builds daneroll and Pebble and starts Pebble.
func setup(ctx context.Context, o options, progress io.Writer) (*bench, error) {
	certbot, err := exec.LookPath(o.certbot)
	if err != nil {
		return nil, fmt.Errorf("certbot: %v (Debian's package certbot; scripts/test-deps installs it)", err)
	}
	if _, err := os.Stat(filepath.Join("cmd", "daneroll")); err != nil {
		return nil, errors.New("run from the top of daneroll's source tree (make bench does)")
	}
	dir, err := os.MkdirTemp("", "daneroll-sidebyside-")
	if err != nil {
		return nil, err
	}
	b := &bench{o: o, dir: dir, progress: progress, certbot: certbot,
		daneroll: filepath.Join(dir, "bin", "daneroll"), spawn: filepath.Join(dir, "bin", "spawn")}
	b.env = childEnv(os.Environ())
	fail := func(err error) (*bench, error) {
		b.close()
		return nil, err
	}
	for _, d := range []string{"bin", "out", "host"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return fail(err)
		}
	}
	b.logf("working in %s; building daneroll and Pebble", dir)
	for bin, pkg := range map[string]string{b.daneroll: "./cmd/daneroll", b.spawn: "./internal/sidebyside/spawn"} {
		// As make build builds it: static, no cgo (see the Makefile).
		build := exec.CommandContext(ctx, "go", "build", "-buildvcs=auto", "-o", bin, pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fail(fmt.Errorf("build %s: %v\n%s", pkg, err, out))
		}
	}
	// What spawn adds to every measurement: the time to start a process
	// that does nothing, and its memory as the floor of every peak RSS.
	for range 5 {
		s, _, err := b.exec(ctx, "true", []string{"/bin/true"}, b.env)
		if err != nil {
			return fail(err)
		}
		if b.floor.wall == 0 || s.wall < b.floor.wall {
			b.floor.wall = s.wall
		}
		b.floor.rss = max(b.floor.rss, s.rss)
	}
	pebbleBin, err := pebbletest.Build(filepath.Join(dir, "bin"))
	if err != nil {
		return fail(err)
	}
	if b.port, err = pebbletest.FreePort(); err != nil {
		return fail(err)
	}
	// AlwaysValid: Pebble never connects for a challenge, so neither tool
	// waits for validation; both still run their standalone http-01
	// listener on this port, as they would for real.
	b.pebble, err = pebbletest.Start(ctx, pebbletest.Options{
		Dir: filepath.Join(dir, "pebble"), Binary: pebbleBin, AlwaysValid: true, HTTPPort: b.port,
	})
	if err != nil {
		return fail(err)
	}
	b.versions = append(b.versions, firstLine(b.output(ctx, certbot, "--version")), firstLine(b.output(ctx, b.daneroll, "version")))
	if v := firstLine(b.output(ctx, "go", "list", "-m", "-f", "Pebble {{.Version}}", "github.com/letsencrypt/pebble/v2")); v != "" {
		b.versions = append(b.versions, v)
	}
	return b, nil
}

// childEnv is the environment of the programs measured: this one's,
// without what would point them at another configuration or make daneroll
// log for journald.
func childEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return strings.HasPrefix(name, "DANEROLL_") || name == "JOURNAL_STREAM" || name == "INVOCATION_ID" ||
			name == "REQUESTS_CA_BUNDLE" || name == "CURL_CA_BUNDLE" || name == "SSL_CERT_FILE"
	})
}

func (b *bench) close() {
	if b.pebble != nil {
		b.pebble.Close()
	}
	if b.o.keep {
		b.logf("kept %s", b.dir)
		return
	}
	os.RemoveAll(b.dir)
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "sidebyside: "+format+"\n", args...)
}

// output runs a short command outside the measurements and returns what it
// printed, or "" when it failed.
func (b *bench) output(ctx context.Context, argv ...string) string {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = b.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return ""
	}
	return string(out)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// all runs every step. The lineages of the no-op, status and forced
// renewal steps are cloned from the ones certbot issued, so issuing comes
// first; the forced renewal changes its trees, so it comes last.
func (b *bench) all(ctx context.Context) error {
	if err := b.issue(ctx); err != nil {
		return err
	}
	pairs := map[int]pair{}
	for _, n := range slices.Concat(b.o.noop, []int{b.o.status, b.o.force}) {
		if _, ok := pairs[n]; ok {
			continue
		}
		p, err := b.prepare(ctx, n)
		if err != nil {
			return err
		}
		pairs[n] = p
	}
	for _, n := range b.o.noop {
		if err := b.noop(ctx, pairs[n], n == slices.Max(b.o.noop)); err != nil {
			return err
		}
	}
	if err := b.status(ctx, pairs[b.o.status]); err != nil {
		return err
	}
	if err := b.force(ctx, pairs[b.o.force]); err != nil {
		return err
	}
	return b.startup(ctx)
}

// domain is the name of the i-th issued certificate (both tools issue
// the same names).
func domain(i int) string { return fmt.Sprintf("n%04d.sidebyside.test", i+1) }

// cloneName is the name of the i-th cloned lineage.
func cloneName(i int) string { return fmt.Sprintf("c%04d.sidebyside.test", i+1) }

// certbotArgv is a certbot command that keeps everything under base and
// reads no configuration file of the host's.
func (b *bench) certbotArgv(base string, args ...string) []string {
	return slices.Concat([]string{b.certbot}, args, []string{
		"--non-interactive", "--agree-tos", "-m", "bench@example.test", "--server", b.pebble.Directory,
		"--config", os.DevNull, "--config-dir", filepath.Join(base, "config"),
		"--work-dir", filepath.Join(base, "work"), "--logs-dir", filepath.Join(base, "logs"),
	})
}

// certbotEnv makes certbot trust Pebble's HTTPS listener.
func (b *bench) certbotEnv() []string {
	return append(slices.Clone(b.env), "REQUESTS_CA_BUNDLE="+b.pebble.RootsFile)
}

// issue measures issuing: certbot certonly once per certificate (certbot
// obtains one lineage per process), daneroll renew once for all of them.
func (b *bench) issue(ctx context.Context) error {
	n := b.o.issue
	base := filepath.Join(b.dir, "certbot-issue")
	var cb result
	b.logf("certbot: issuing %d certificates, one certbot certonly each", n)
	for i := range n {
		argv := b.certbotArgv(base, "certonly", "--standalone", "--http-01-address", "127.0.0.1",
			"--http-01-port", strconv.Itoa(b.port), "--reuse-key", "-d", domain(i))
		s, _, err := b.exec(ctx, "certbot certonly "+domain(i), argv, b.certbotEnv())
		if err != nil {
			return err
		}
		cb.samples = append(cb.samples, s)
		if i == 0 {
			cb.cmd = b.show(argv, "REQUESTS_CA_BUNDLE="+b.pebble.RootsFile) + "   # one process per certificate"
		}
		if (i+1)%10 == 0 || i+1 == n {
			b.logf("certbot: %d/%d issued, %s so far", i+1, n, fmtDuration(total(cb.samples)))
		}
	}

	names := make([]string, n)
	for i := range names {
		names[i] = domain(i)
	}
	// Each run starts from nothing (a new state directory, so a new ACME
	// account too, as certbot's first certonly registered one).
	var dr result
	var argv []string
	for run := range b.o.issueRuns {
		dir := filepath.Join(b.dir, fmt.Sprintf("daneroll-issue-%d", run+1))
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		cfg := filepath.Join(dir, "daneroll.toml")
		conf := danerollConfig(filepath.Join(dir, "state"), b.pebble.Directory, b.pebble.RootsFile, "bench@example.test", b.port, names, names)
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			return err
		}
		argv = []string{b.daneroll, "-c", cfg, "renew"}
		s, out, err := b.exec(ctx, fmt.Sprintf("daneroll renew, issuing %d (%d/%d)", n, run+1, b.o.issueRuns), argv, b.env)
		if err != nil {
			return err
		}
		if got := count(out, `(?m)^\S+: issued: `); got != n {
			return fmt.Errorf("daneroll renew issued %d certificates, not %d; see %s", got, n, out)
		}
		dr.samples = append(dr.samples, s)
	}
	b.logf("daneroll: issuing %d in one daneroll renew: median %s of %d, peak RSS %s", n, fmtDuration(median(dr.samples)), b.o.issueRuns, fmtKiB(peak(dr.samples)))
	dr.cmd = b.show(argv) + "   # one run, " + strconv.Itoa(n) + " new [[certificate]] tables"
	cb.sum = true
	b.rows = append(b.rows, row{op: fmt.Sprintf("issuing %d", n), issued: n, certbot: cb, daneroll: dr})
	b.notes = append(b.notes, fmt.Sprintf("Issuing: certbot needs a process per certificate: the total of one run of %d processes (the median process took %s). "+
		"daneroll issues them in one `renew` (%s, each from an empty state directory and a new account), with its default concurrency (4) and, like certbot here, "+
		"one standalone http-01 listener on one port, `key_policy = \"reuse\"`, no TLSA.",
		n, fmtDuration(median(cb.samples)), runsOf(b.o.issueRuns)))
	return nil
}

// danerollConfig is daneroll's configuration for certificates names[i]
// with domains[i]: validated like certbot's (http-01, one standalone
// listener), reusing their keys like certbot's --reuse-key, with no TLSA
// records (the certbot side has none). Without an e-mail address daneroll
// uses the account the state directory has (certbot's, after an import).
func danerollConfig(state, directory, roots, email string, port int, names, domains []string) string {
	var s strings.Builder
	fmt.Fprintf(&s, "state_dir = %q\n\n[acme]\ndirectory = %q\n", state, directory)
	if email != "" {
		fmt.Fprintf(&s, "email = %q\n", email)
	}
	fmt.Fprintf(&s, "accept_tos = true\nca_roots = [%q]\n", roots)
	listen := "127.0.0.1:" + strconv.Itoa(port)
	for i, name := range names {
		fmt.Fprintf(&s, "\n[[certificate]]\nname = %q\ndomains = [%q]\nchallenge = \"http-01\"\nhttp01_listen = %q\nkey_policy = \"reuse\"\n",
			name, domains[i], listen)
	}
	return s.String()
}

// prepare makes n certbot lineages by cloning the issued ones, and
// daneroll's copy of them with import-certbot: the same keys and
// certificates, so both tools decide on the same expiry dates.
func (b *bench) prepare(ctx context.Context, n int) (pair, error) {
	p := pair{n: n, certbot: filepath.Join(b.dir, fmt.Sprintf("certbot-%d", n)), daneroll: filepath.Join(b.dir, fmt.Sprintf("daneroll-%d", n))}
	b.logf("%d lineages: cloning certbot's, importing them into daneroll", n)
	from, err := cloneLineages(filepath.Join(b.dir, "certbot-issue", "config"), p.certbotConfig(), n, cloneName)
	if err != nil {
		return p, err
	}
	if err := os.Mkdir(p.daneroll, 0o700); err != nil {
		return p, err
	}
	imported := filepath.Join(p.daneroll, "imported.toml")
	argv := []string{b.daneroll, "import-certbot", "--state-dir", p.state(), "--out", imported, p.certbotConfig()}
	// DANEROLL_TEST_HOST points the search for what still runs certbot at
	// an empty directory instead of this machine's timers and crontabs.
	if _, _, err := b.exec(ctx, fmt.Sprintf("daneroll import-certbot %d", n), argv, append(slices.Clone(b.env), "DANEROLL_TEST_HOST="+filepath.Join(b.dir, "host"))); err != nil {
		return p, err
	}
	if len(b.setupCmds) == 0 {
		b.setupCmds = append(b.setupCmds, b.show(argv))
	}
	// The configuration is written here rather than taken from the import:
	// clones share their certificates' names, and the import writes a note
	// in every lineage about each other one with the same names (n²
	// comments). Certificate i is the clone of lineage from[i], which
	// certbot named after its domain.
	names := make([]string, n)
	for i := range names {
		names[i] = cloneName(i)
	}
	conf := danerollConfig(p.state(), b.pebble.Directory, b.pebble.RootsFile, "", b.port, names, from)
	return p, os.WriteFile(p.danerollConfig(), []byte(conf), 0o600)
}

// noop measures renew runs with nothing due, and whether they write.
func (b *bench) noop(ctx context.Context, p pair, largest bool) error {
	cbArgv := b.certbotArgv(p.certbot, "renew", "--no-random-sleep-on-renew")
	drArgv := []string{b.daneroll, "-c", p.danerollConfig(), "renew"}
	if _, _, err := b.exec(ctx, fmt.Sprintf("certbot renew %d (warm-up)", p.n), cbArgv, b.certbotEnv()); err != nil {
		return err
	}
	first, _, err := b.exec(ctx, fmt.Sprintf("daneroll renew %d (warm-up)", p.n), drArgv, b.env)
	if err != nil {
		return err
	}
	if largest {
		b.firstImport = first
	}
	cbBefore, err := stamps(p.certbotConfig())
	if err != nil {
		return err
	}
	drBefore, err := stamps(p.state())
	if err != nil {
		return err
	}
	cb, out, err := b.repeat(ctx, fmt.Sprintf("certbot renew, %d lineages", p.n), b.o.runs, cbArgv, b.certbotEnv())
	if err != nil {
		return err
	}
	if !strings.Contains(readFile(out), "No renewals were attempted.") {
		return fmt.Errorf("certbot renew renewed something; see %s", out)
	}
	dr, out, err := b.repeat(ctx, fmt.Sprintf("daneroll renew, %d certificates", p.n), b.o.runs, drArgv, b.env)
	if err != nil {
		return err
	}
	if got := count(out, `(?m)^\S+: nothing due; `); got != p.n {
		return fmt.Errorf("daneroll renew: %d of %d certificates with nothing due; see %s", got, p.n, out)
	}
	cbAfter, err := stamps(p.certbotConfig())
	if err != nil {
		return err
	}
	drAfter, err := stamps(p.state())
	if err != nil {
		return err
	}
	cb.cmd = b.show(cbArgv, "REQUESTS_CA_BUNDLE="+b.pebble.RootsFile)
	dr.cmd = b.show(drArgv)
	b.rows = append(b.rows, row{op: fmt.Sprintf("no-op renew, %d", p.n), certbot: cb, daneroll: dr})
	b.writes = append(b.writes, fmt.Sprintf("of %d: %s; certbot's configuration directory: %s",
		p.n, describeChanges(diffStamps(drBefore, drAfter)), describeChanges(diffStamps(cbBefore, cbAfter))))
	return nil
}

// status measures listing the certificates.
func (b *bench) status(ctx context.Context, p pair) error {
	cbArgv := b.certbotArgv(p.certbot, "certificates")
	drArgv := []string{b.daneroll, "-c", p.danerollConfig(), "status"}
	if _, _, err := b.exec(ctx, fmt.Sprintf("certbot certificates %d (warm-up)", p.n), cbArgv, b.certbotEnv()); err != nil {
		return err
	}
	if _, _, err := b.exec(ctx, fmt.Sprintf("daneroll status %d (warm-up)", p.n), drArgv, b.env); err != nil {
		return err
	}
	cb, _, err := b.repeat(ctx, fmt.Sprintf("certbot certificates, %d lineages", p.n), b.o.runs, cbArgv, b.certbotEnv())
	if err != nil {
		return err
	}
	dr, _, err := b.repeat(ctx, fmt.Sprintf("daneroll status, %d certificates", p.n), b.o.runs, drArgv, b.env)
	if err != nil {
		return err
	}
	cb.cmd = b.show(cbArgv, "REQUESTS_CA_BUNDLE="+b.pebble.RootsFile)
	dr.cmd = b.show(drArgv)
	b.rows = append(b.rows, row{op: fmt.Sprintf("status, %d", p.n), certbot: cb, daneroll: dr})
	return nil
}

// force measures a renewal of every certificate, due or not.
func (b *bench) force(ctx context.Context, p pair) error {
	cbArgv := b.certbotArgv(p.certbot, "renew", "--force-renewal", "--no-random-sleep-on-renew")
	drArgv := []string{b.daneroll, "-c", p.danerollConfig(), "renew", "--force"}
	cb, _, err := b.repeat(ctx, fmt.Sprintf("certbot renew --force-renewal, %d lineages", p.n), b.o.forceRuns, cbArgv, b.certbotEnv())
	if err != nil {
		return err
	}
	dr, out, err := b.repeat(ctx, fmt.Sprintf("daneroll renew --force, %d certificates", p.n), b.o.forceRuns, drArgv, b.env)
	if err != nil {
		return err
	}
	if got := count(out, `(?m)^\S+: renewed: `); got != p.n {
		return fmt.Errorf("daneroll renew --force renewed %d of %d certificates; see %s", got, p.n, out)
	}
	cb.cmd = b.show(cbArgv, "REQUESTS_CA_BUNDLE="+b.pebble.RootsFile)
	dr.cmd = b.show(drArgv)
	b.rows = append(b.rows, row{op: fmt.Sprintf("forced renewal, %d", p.n), certbot: cb, daneroll: dr})
	return nil
}

// startup measures starting and exiting, the floor under every command.
func (b *bench) startup(ctx context.Context) error {
	cbArgv := []string{b.certbot, "--version"}
	drArgv := []string{b.daneroll, "version"}
	cb, _, err := b.repeat(ctx, "certbot --version", b.o.runs, cbArgv, b.env)
	if err != nil {
		return err
	}
	dr, _, err := b.repeat(ctx, "daneroll version", b.o.runs, drArgv, b.env)
	if err != nil {
		return err
	}
	cb.cmd, dr.cmd = b.show(cbArgv), b.show(drArgv)
	b.rows = append(b.rows, row{op: "start and exit (version)", certbot: cb, daneroll: dr})
	return nil
}

// repeat runs a command n times and returns the runs and the last one's
// output file.
func (b *bench) repeat(ctx context.Context, label string, n int, argv, env []string) (result, string, error) {
	var r result
	var out string
	for i := range n {
		s, o, err := b.exec(ctx, fmt.Sprintf("%s (%d/%d)", label, i+1, n), argv, env)
		if err != nil {
			return r, "", err
		}
		r.samples = append(r.samples, s)
		out = o
	}
	b.logf("%s: median %s of %d, peak RSS %s", label, fmtDuration(median(r.samples)), n, fmtKiB(peak(r.samples)))
	return r, out, nil
}

// exec runs one whole process, its output into a file of the working
// directory, and measures it. spawn starts it, measures its wall time and
// reports its peak RSS (see internal/sidebyside/spawn for why not here).
func (b *bench) exec(ctx context.Context, label string, argv, env []string) (sample, string, error) {
	b.seq++
	out := filepath.Join(b.dir, "out", fmt.Sprintf("%04d-%s.txt", b.seq, slug(label)))
	cmd := exec.CommandContext(ctx, b.spawn, append([]string{out, b.dir}, argv...)...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	report, err := cmd.Output()
	if ctx.Err() != nil {
		return sample{}, "", ctx.Err()
	}
	if err != nil {
		return sample{}, "", fmt.Errorf("%s: spawn: %v: %s", label, err, stderr.Bytes())
	}
	var ns, rss int64
	var code int
	if _, err := fmt.Sscan(string(report), &ns, &rss, &code); err != nil {
		return sample{}, "", fmt.Errorf("%s: spawn said %q: %v", label, report, err)
	}
	if code != 0 {
		return sample{}, "", fmt.Errorf("%s: exit status %d\n%s\n(output in %s; run with -keep to keep it)", label, code, tail(out, 30), out)
	}
	return sample{wall: time.Duration(ns), rss: rss}, out, nil
}

// show is a command as the report prints it: $W for the working directory,
// with the environment variables it needs in front.
func (b *bench) show(argv []string, env ...string) string {
	var parts []string
	for _, s := range slices.Concat(env, argv) {
		s = strings.ReplaceAll(s, b.dir, "$W")
		if s == b.pebble.Directory {
			s = "$PEBBLE"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func readFile(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

// count is how many times the pattern matches a file.
func count(path, pattern string) int {
	return len(regexp.MustCompile(pattern).FindAllStringIndex(readFile(path), -1))
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	lines := strings.Split(strings.TrimRight(readFile(path), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// slug makes a label into a file name.
func slug(s string) string {
	return strings.Trim(regexp.MustCompile(`[^A-Za-z0-9.]+`).ReplaceAllString(s, "-"), "-")
}
