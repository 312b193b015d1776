package main

import (
	"context"
	"time"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/rollover"
)

// prune removes stale TLSA records: exit 0 when done or nothing to do, 1 on
// failure.
func (c *cli) prune(ctx context.Context, args []string) int {
	fs := c.flagSet("prune")
	var opts rollover.PruneOptions
	fs.BoolVar(&opts.DryRun, "dry-run", false, "say what would be removed and kept, change nothing")
	names, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	start := time.Now()
	var (
		eng *rollover.Engine
		cfg *config.Config
		err error
	)
	if opts.DryRun {
		eng, cfg, err = c.lookingEngineReporting()
	} else {
		eng, cfg, err = c.engine()
	}
	if err != nil {
		return c.fail(err)
	}
	outcomes, err := eng.Prune(ctx, names, opts)
	if err != nil {
		return c.fail(lockHint(err))
	}
	code = c.report(outcomes)
	if !opts.DryRun {
		c.afterRun(ctx, cfg, eng, rollover.Run{Command: "prune", Took: time.Since(start), OK: code == 0, At: time.Now(), Outcomes: outcomes}, names)
	}
	return code
}
