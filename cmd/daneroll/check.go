package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/rollover"
)

// check exits 0 when every target passes, 1 with warnings, 2 on failure.
func (c *cli) check(ctx context.Context, args []string) int {
	fs := c.flagSet("check")
	asJSON := fs.Bool("json", false, "print JSON")
	resolver := fs.String("resolver", "", "validating resolver host:port (default: [dns] resolver, then /etc/resolv.conf)")
	targets, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	var cfg *config.Config
	if len(targets) == 0 || c.configFlag != "" {
		var err error
		if cfg, err = c.loadConfig(); err != nil {
			c.printError(err)
			return 2
		}
	}
	start := time.Now()
	results, err := rollover.Check(ctx, cfg, targets, rollover.CheckOptions{Resolver: *resolver})
	if err != nil {
		c.printError(err)
		return 2
	}
	code = 0
	for _, r := range results {
		switch r.Verdict {
		case rollover.CheckFail:
			code = 2
		case rollover.CheckWarn:
			code = max(code, 1)
		}
	}
	c.afterRun(ctx, cfg, nil, rollover.Run{Command: "check", Took: time.Since(start), OK: code == 0, At: time.Now()}, nil)
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			c.printError(err)
			return 2
		}
		return code
	}
	for _, r := range results {
		ep := r.Endpoint
		if ep == "" {
			ep = r.Target
		}
		fmt.Fprintf(c.stdout, "%s %s\n", strings.ToUpper(r.Verdict), ep)
		if r.Owner != "" {
			secure := "DNSSEC-validated"
			if !r.Secure {
				secure = "not validated"
			}
			records := strings.Join(r.Records, "; ")
			if records == "" {
				records = "none"
			}
			fmt.Fprintf(c.stdout, "  tlsa %s (%s): %s\n", strings.TrimSuffix(r.Owner, "."), secure, records)
		}
		if r.Served != "" {
			fmt.Fprintf(c.stdout, "  served key %s\n", r.Served)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(c.stdout, "  %s\n", n)
		}
	}
	return code
}
