package main

import (
	"context"

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
	var (
		eng *rollover.Engine
		err error
	)
	if opts.DryRun {
		eng, err = c.lookingEngineReporting()
	} else {
		eng, err = c.engine()
	}
	if err != nil {
		return c.fail(err)
	}
	outcomes, err := eng.Prune(ctx, names, opts)
	if err != nil {
		return c.fail(lockHint(err))
	}
	return c.report(outcomes)
}
