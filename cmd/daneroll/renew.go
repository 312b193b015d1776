package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
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
	backend, err := c.backend(cfg)
	if err != nil {
		return nil, err
	}
	rep := newReporter(c.stdout)
	return rollover.BuildWithStore(cfg, st, rollover.Wiring{
		Backend:  backend,
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

// reporter prints progress lines and the countdown of every pending wait:
// on a terminal one line rewritten every second, otherwise a line every
// minute. Certificates run concurrently, so lines are whole and prefixed
// with the certificate's name.
type reporter struct {
	out   io.Writer
	tty   bool
	every time.Duration

	mu      sync.Mutex // guards out and everything below
	waits   map[int]pendingWait
	lastID  int
	shown   bool          // a countdown line is on the terminal, unended
	ticking chan struct{} // closed to stop the ticker; nil when none runs
}

type pendingWait struct {
	cert, what string
	until      time.Time
}

func newReporter(out io.Writer) *reporter {
	tty := false
	if f, ok := out.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	every := time.Minute
	if tty {
		every = time.Second
	}
	return &reporter{out: out, tty: tty, every: every, waits: map[int]pendingWait{}}
}

func (r *reporter) Progress(cert, step, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clear()
	if cert == "" {
		fmt.Fprintf(r.out, "%s\n", msg)
	} else {
		fmt.Fprintf(r.out, "%s: %s: %s\n", cert, step, msg)
	}
	if r.tty && len(r.waits) > 0 {
		r.draw()
	}
}

// clear ends a countdown line on the terminal. The caller holds r.mu.
func (r *reporter) clear() {
	if r.shown {
		fmt.Fprint(r.out, "\r\033[K")
		r.shown = false
	}
}

// draw writes the countdown of every wait. The caller holds r.mu.
func (r *reporter) draw() {
	ws := make([]pendingWait, 0, len(r.waits))
	for _, w := range r.waits {
		ws = append(ws, w)
	}
	sort.Slice(ws, func(i, j int) bool {
		return ws[i].until.Before(ws[j].until) || ws[i].until.Equal(ws[j].until) && ws[i].cert < ws[j].cert
	})
	parts := make([]string, len(ws))
	for i, w := range ws {
		left := max(time.Until(w.until).Round(time.Second), 0)
		parts[i] = fmt.Sprintf("%s: %s: %s left", w.cert, w.what, left)
	}
	line := strings.Join(parts, " | ")
	if r.tty {
		fmt.Fprint(r.out, "\r\033[K"+line)
		r.shown = true
	} else {
		fmt.Fprintln(r.out, line)
	}
}

// Waiting announces a wait and keeps it in the countdown until the
// returned function is called.
func (r *reporter) Waiting(cert, what string, until time.Time) func() {
	r.Progress(cert, what, fmt.Sprintf("waiting until %s (%s)", until.Local().Format(time.RFC3339), time.Until(until).Round(time.Second)))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastID++
	id := r.lastID
	r.waits[id] = pendingWait{cert, what, until}
	if r.ticking == nil {
		r.ticking = make(chan struct{})
		go r.tick(r.ticking)
	}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.waits, id)
		if len(r.waits) == 0 && r.ticking != nil {
			close(r.ticking)
			r.ticking = nil
			r.clear()
		}
	}
}

func (r *reporter) tick(stop chan struct{}) {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			r.mu.Lock()
			if len(r.waits) > 0 {
				r.draw()
			}
			r.mu.Unlock()
		}
	}
}
