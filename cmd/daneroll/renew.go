package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane/manual"
	"github.com/daneroll/daneroll/rollover"
	"github.com/daneroll/daneroll/store"
)

func (c *cli) renew(ctx context.Context, args []string) int {
	fs := c.flagSet("renew")
	var opts rollover.RenewOptions
	fs.BoolVar(&opts.Force, "force", false, "renew even if not due")
	fs.BoolVar(&opts.DryRun, "dry-run", false, "say what would be done, change nothing")
	fs.BoolVar(&opts.NoWait, "no-wait", false, "save the state and exit instead of waiting")
	names, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	start := time.Now()
	cfg, err := c.loadConfig()
	if err != nil {
		return c.fail(err)
	}
	open := store.Open
	if opts.DryRun {
		// A dry run changes nothing, not even by creating the state
		// directory.
		open = store.OpenReadOnly
	}
	st, err := open(cfg.StateDir)
	if err != nil {
		return c.fail(err)
	}
	eng, err := c.engineWith(cfg, st)
	if err != nil {
		return c.fail(err)
	}
	outcomes, err := eng.Renew(ctx, names, opts)
	if err != nil {
		return c.fail(lockHint(err))
	}
	code = c.report(outcomes)
	if !opts.DryRun {
		c.afterRun(ctx, cfg, eng, rollover.Run{Command: "renew", Took: time.Since(start), OK: code == 0, At: time.Now(), Outcomes: outcomes}, names)
	}
	return code
}

func (c *cli) rekey(ctx context.Context, args []string) int {
	fs := c.flagSet("rekey")
	emergency := fs.Bool("emergency", false, "switch to the pre-published next key at once")
	var opts rollover.RenewOptions
	fs.BoolVar(&opts.NoWait, "no-wait", false, "save the state and exit instead of waiting")
	names, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	if len(names) != 1 {
		return c.usageError("rekey takes exactly one certificate name")
	}
	start := time.Now()
	eng, cfg, err := c.engine()
	if err != nil {
		return c.fail(err)
	}
	out, err := eng.Rekey(ctx, names[0], *emergency, opts)
	if err != nil {
		return c.fail(lockHint(err))
	}
	code = c.report([]rollover.Outcome{out})
	c.afterRun(ctx, cfg, eng, rollover.Run{Command: "rekey", Took: time.Since(start), OK: code == 0, At: time.Now(), Outcomes: []rollover.Outcome{out}}, names)
	return code
}

// report prints one line per certificate and returns the exit code.
func (c *cli) report(outcomes []rollover.Outcome) int {
	code := 0
	for _, o := range outcomes {
		switch {
		case o.Err != nil:
			c.printError(o.Err)
			code = 1
		case o.Action == "waiting" && o.ResumeAt.IsZero():
			fmt.Fprintf(c.stdout, "%s: waiting for you: %s\n", o.Name, o.Detail)
		case o.Action == "waiting":
			fmt.Fprintf(c.stdout, "%s: waiting: %s\n", o.Name, o.Detail)
			fmt.Fprintf(c.stdout, "%s: state saved; run daneroll renew again after %s\n", o.Name, o.ResumeAt.Local().Format(time.RFC3339))
		case o.Action == "nothing":
			fmt.Fprintf(c.stdout, "%s: %s\n", o.Name, o.Detail)
		default:
			fmt.Fprintf(c.stdout, "%s: %s: %s\n", o.Name, o.Action, o.Detail)
		}
	}
	return code
}

func lockHint(err error) error {
	var le *store.LockedError
	if errors.As(err, &le) {
		return &rollover.HintError{Err: err, Advice: "another daneroll is running; nothing was changed"}
	}
	return err
}

// engine builds the renewal engine from the configuration.
func (c *cli) engine() (*rollover.Engine, *config.Config, error) {
	cfg, err := c.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return nil, nil, err
	}
	eng, err := c.engineWith(cfg, st)
	return eng, cfg, err
}

func (c *cli) engineWith(cfg *config.Config, st *store.Store) (*rollover.Engine, error) {
	rep := newReporter(c.stdout)
	return rollover.BuildWithStore(cfg, st, rollover.Wiring{
		Logger:   c.log,
		Reporter: rep,
		Instruct: func(i manual.Instruction) {
			rep.Progress("", "manual", "please "+i.String())
		},
		Version:   version(),
		Failpoint: failpoint(),
	})
}

// failpointEnv names a journal write at which daneroll kills itself, for the
// crash tests: "before:N" or "after:N" for the N-th write of this run.
const failpointEnv = "DANEROLL_FAILPOINT"

// failpoint returns the hook for $DANEROLL_FAILPOINT, or nil.
func failpoint() func(string) {
	spec := os.Getenv(failpointEnv)
	when, nth, ok := strings.Cut(spec, ":")
	n, err := strconv.Atoi(nth)
	if !ok || err != nil || n < 1 || (when != "before" && when != "after") {
		return nil
	}
	var mu sync.Mutex // guards count: certificates save at once
	count := map[string]int{}
	return func(w string) {
		mu.Lock()
		defer mu.Unlock()
		count[w]++
		if w == when && count[w] == n {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}

// reporter prints progress lines and, on a terminal, a live countdown.
type reporter struct {
	out io.Writer
	tty bool

	mu sync.Mutex // guards writes to out, so countdown and progress lines do not interleave
}

func newReporter(out io.Writer) *reporter {
	tty := false
	if f, ok := out.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &reporter{out: out, tty: tty}
}

func (r *reporter) Progress(cert, step, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case cert == "":
		fmt.Fprintf(r.out, "%s\n", msg)
	default:
		fmt.Fprintf(r.out, "%s: %s: %s\n", cert, step, msg)
	}
}

// Waiting shows how long a wait has left: a line rewritten every second on
// a terminal, a line every minute otherwise.
func (r *reporter) Waiting(cert, what string, until time.Time) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	r.Progress(cert, what, fmt.Sprintf("waiting until %s (%s)", until.Local().Format(time.RFC3339), time.Until(until).Round(time.Second)))
	every := time.Minute
	if r.tty {
		every = time.Second
	}
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				if r.tty {
					r.mu.Lock()
					fmt.Fprint(r.out, "\r\033[K")
					r.mu.Unlock()
				}
				return
			case <-t.C:
				left := time.Until(until).Round(time.Second)
				if left < 0 {
					left = 0
				}
				r.mu.Lock()
				if r.tty {
					fmt.Fprintf(r.out, "\r\033[K%s: %s: %s left", cert, what, left)
				} else {
					fmt.Fprintf(r.out, "%s: %s: %s left\n", cert, what, left)
				}
				r.mu.Unlock()
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}
