// Command sidebyside measures daneroll against Debian's certbot on the same
// Pebble (Let's Encrypt's test CA, with every challenge valid): no-op renew
// runs of several sizes, issuing many certificates, a forced renewal, and
// status — whole processes, wall time and peak memory — and prints a
// Markdown table of the ratios with the exact commands.
//
// certbot runs fully isolated (its own --config-dir, --work-dir and
// --logs-dir under a temporary directory, --config /dev/null); it never
// touches /etc/letsencrypt or systemd. Everything listens on 127.0.0.1 and
// is removed at the end, on failure and on Ctrl-C too (unless -keep).
//
// Run it from the source tree (make bench does, after the Go benchmarks):
//
//	go run ./internal/sidebyside          # the sizes of issue 10; minutes
//	go run ./internal/sidebyside -quick   # a smoke run of the same steps
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/daneroll/daneroll/internal/interrupt"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitInterrupted = 130
)

func main() {
	ctx, cancel := interrupt.Context("sidebyside")
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

// options are the sizes and repetitions of one run.
type options struct {
	noop      sizes // no-op renew of each of these many certificates
	issue     int   // certificates issued
	force     int   // certificates in the forced renewal
	status    int   // certificates in the status run
	runs      int   // measured runs of the cheap commands (no-op, status)
	forceRuns int   // measured runs of the forced renewal
	issueRuns int   // daneroll's issuing runs (certbot's is one run of a process per certificate)
	certbot   string
	keep      bool
}

// defaults are the sizes of issue 10.
func defaults() options {
	return options{noop: sizes{20, 200, 1000}, issue: 100, force: 20, status: 1000, runs: 5, forceRuns: 3, issueRuns: 3}
}

// quick is a smoke run of every step.
func quick() options {
	return options{noop: sizes{5, 10, 20}, issue: 5, force: 5, status: 20, runs: 3, forceRuns: 1, issueRuns: 1}
}

// sizes is a comma-separated list of certificate counts.
type sizes []int

func (s *sizes) String() string {
	parts := make([]string, len(*s))
	for i, n := range *s {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

func (s *sizes) Set(v string) error {
	var out sizes
	for part := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a positive count", part)
		}
		out = append(out, n)
	}
	*s = out
	return nil
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("sidebyside", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := defaults()
	fs.Var(&o.noop, "noop", "no-op renew of each of these many certificates (comma-separated)")
	fs.IntVar(&o.issue, "issue", o.issue, "certificates to issue (certbot: one process each; daneroll: one run)")
	fs.IntVar(&o.force, "force", o.force, "certificates in the forced renewal")
	fs.IntVar(&o.status, "status", o.status, "certificates in the status run")
	fs.IntVar(&o.runs, "runs", o.runs, "measured runs of each no-op renew and status command (after one warm-up run)")
	fs.IntVar(&o.forceRuns, "force-runs", o.forceRuns, "measured runs of each forced renewal")
	fs.IntVar(&o.issueRuns, "issue-runs", o.issueRuns, "daneroll's issuing runs, each from nothing (certbot's is one run of a process per certificate)")
	fs.StringVar(&o.certbot, "certbot", "/usr/bin/certbot", "the certbot to compare with")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory (trees, outputs, logs) and say where it is")
	smoke := fs.Bool("quick", false, "a smoke run: no-op renew of 5, 10 and 20, issuing 5, forced renewal of 5, status of 20, fewer runs; flags given explicitly still win")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *smoke {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		q := quick()
		for name, apply := range map[string]func(){
			"noop":       func() { o.noop = q.noop },
			"issue":      func() { o.issue = q.issue },
			"force":      func() { o.force = q.force },
			"status":     func() { o.status = q.status },
			"runs":       func() { o.runs = q.runs },
			"force-runs": func() { o.forceRuns = q.forceRuns },
			"issue-runs": func() { o.issueRuns = q.issueRuns },
		} {
			if !set[name] {
				apply()
			}
		}
	}
	// The lineages of every other step are cloned from the issued ones, so
	// at least one must be issued.
	if o.issue < 1 || o.force < 1 || o.status < 1 || o.runs < 1 || o.forceRuns < 1 || o.issueRuns < 1 {
		return o, fmt.Errorf("-issue, -force, -status, -runs, -force-runs and -issue-runs must be at least 1")
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if err != nil {
		if err == flag.ErrHelp {
			return exitOK
		}
		fmt.Fprintln(stderr, "sidebyside:", err)
		return exitUsage
	}
	start := time.Now()
	b, err := setup(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "sidebyside:", err)
		return exitFailed
	}
	err = b.all(ctx)
	b.close()
	if err != nil {
		fmt.Fprintln(stderr, "sidebyside:", err)
		if ctx.Err() != nil {
			return exitInterrupted
		}
		return exitFailed
	}
	b.report(stdout, time.Since(start))
	return exitOK
}
