package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/metrics"
	"github.com/daneroll/daneroll/notify"
	"github.com/daneroll/daneroll/rollover"
	"github.com/daneroll/daneroll/services"
)

// afterRun writes the metrics file and, after a run that changes things,
// runs the notify command when a certificate needs a person. Neither
// failure is fatal: each is a warning line, and the run's exit code stays
// what the run earned.
func (c *cli) afterRun(ctx context.Context, cfg *config.Config, eng *rollover.Engine, run rollover.Run, names []string) {
	if cfg == nil {
		return
	}
	if run.Statuses == nil && eng != nil && (cfg.Metrics.Textfile != "" || len(cfg.Notify.Command) > 0) {
		// What the run left, from the state directory alone.
		run.Statuses, _ = eng.Snapshot(ctx, names)
	}
	if cfg.Metrics.Textfile != "" {
		var certs []string
		for _, cert := range cfg.Certificates {
			certs = append(certs, cert.Name)
		}
		if err := metrics.Write(cfg.Metrics.Textfile, rollover.Metrics(run), certs); err != nil {
			c.warn(fmt.Errorf("%s: %w", cfg.Where("metrics.textfile"), err))
		}
	}
	if len(cfg.Notify.Command) == 0 || run.Outcomes == nil {
		return
	}
	s := summary(run)
	if !s.NeedsAPerson() {
		return
	}
	env := services.EnvWithout(os.Environ(), cfg.SecretEnvs()...)
	if err := notify.Send(ctx, cfg.Notify.Command, s, notify.Options{Timeout: cfg.Notify.Timeout.Duration, Env: env, Logger: c.log}); err != nil {
		c.warn(fmt.Errorf("%s: the notification failed: %w", cfg.Where("notify.command"), err))
	}
}

// summary describes a run for the notify command.
func summary(run rollover.Run) *notify.Summary {
	host, _ := os.Hostname()
	s := &notify.Summary{Host: host, Command: run.Command, Started: run.At.Add(-run.Took).UTC(), Seconds: run.Took.Seconds()}
	stuck := map[string]time.Time{}
	for _, st := range run.Statuses {
		if st.Stuck && st.Pending != nil {
			stuck[st.Name] = st.Pending.Started
		}
	}
	for _, o := range run.Outcomes {
		cert := notify.Certificate{Name: o.Name, Outcome: "ok", Action: o.Action, Detail: o.Detail}
		var rb *rollover.RolledBackError
		switch {
		case errors.As(o.Err, &rb):
			cert.Outcome, cert.Error = "rolled back", o.Err.Error()
		case o.Err != nil:
			cert.Outcome, cert.Error = "failed", o.Err.Error()
		case !stuck[o.Name].IsZero():
			cert.Outcome, cert.PendingSince = "stuck", stuck[o.Name].UTC()
		}
		s.Certificates = append(s.Certificates, cert)
	}
	return s
}

// warn prints a problem that does not change the exit code.
func (c *cli) warn(err error) {
	fmt.Fprintf(c.stderr, "daneroll: warning: %s\n", err)
}
