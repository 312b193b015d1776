// Package notify tells an operator about a daneroll run that needs a
// person: it runs a configured command (an argv array, never a shell) with
// a JSON summary of the run on its standard input and a one-line subject in
// DANEROLL_SUBJECT, the way cron mails a failed job's output — but only when
// something failed, was rolled back, or has been waiting longer than it
// should.
package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/daneroll/daneroll/services"
)

// SubjectEnv is the environment variable that carries the subject.
const SubjectEnv = "DANEROLL_SUBJECT"

// Certificate is one certificate's part of a run.
type Certificate struct {
	Name string `json:"name"`
	// Outcome is "failed", "rolled back", "stuck" or "ok".
	Outcome string `json:"outcome"`
	// Action and Detail are what the run did and said.
	Action string `json:"action"`
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`
	// PendingSince is when the transaction still pending started.
	PendingSince time.Time `json:"pending_since,omitzero"`
}

// Summary is what the command reads on its standard input, as JSON.
type Summary struct {
	Host         string        `json:"host"`
	Command      string        `json:"command"`
	Started      time.Time     `json:"started"`
	Seconds      float64       `json:"duration_seconds"`
	Certificates []Certificate `json:"certificates"`
}

// NeedsAPerson reports whether any certificate's outcome is not "ok".
func (s *Summary) NeedsAPerson() bool {
	for _, c := range s.Certificates {
		if c.Outcome != "ok" {
			return true
		}
	}
	return false
}

// Subject is one line for a mail subject or a chat message: "daneroll on
// mx1: mail failed, www stuck".
func (s *Summary) Subject() string {
	var parts []string
	byOutcome := map[string][]string{}
	for _, c := range s.Certificates {
		if c.Outcome != "ok" {
			byOutcome[c.Outcome] = append(byOutcome[c.Outcome], c.Name)
		}
	}
	outcomes := make([]string, 0, len(byOutcome))
	for o := range byOutcome {
		outcomes = append(outcomes, o)
	}
	sort.Strings(outcomes)
	for _, o := range outcomes {
		parts = append(parts, strings.Join(byOutcome[o], ", ")+" "+o)
	}
	if len(parts) == 0 {
		parts = []string{"nothing needs a person"}
	}
	line := fmt.Sprintf("daneroll %s on %s: %s", s.Command, s.Host, strings.Join(parts, "; "))
	return strings.Join(strings.Fields(line), " ")
}

// Options configure Send.
type Options struct {
	Timeout time.Duration
	// Env is the environment the command gets, with the subject added;
	// nil means daneroll's (the caller removes its secrets).
	Env    []string
	Logger *slog.Logger
}

// Send runs argv with the summary on standard input and the subject in
// DANEROLL_SUBJECT. Its failure is the caller's to report, never a reason
// to fail the run.
func Send(ctx context.Context, argv []string, s *Summary, opts Options) error {
	body, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	env := opts.Env
	if env == nil {
		env = os.Environ()
	}
	env = append(services.EnvWithout(env, SubjectEnv), SubjectEnv+"="+s.Subject())
	return services.Reload(ctx, argv, services.ReloadOptions{
		Verb: "notify", Timeout: opts.Timeout, Env: env, Logger: opts.Logger, Stdin: append(body, '\n'),
	})
}
