package rollover

import (
	"time"

	"github.com/daneroll/daneroll/metrics"
)

// Run is one run of a command, for metrics.
type Run struct {
	Command string
	Took    time.Duration
	OK      bool
	At      time.Time
	// Statuses describe the certificates after the run; WithDNS says
	// whether they asked the authoritative servers (Status) or not
	// (Snapshot).
	Statuses []CertStatus
	WithDNS  bool
	// Outcomes are a renewal's, one per certificate.
	Outcomes []Outcome
}

// Metrics turns a run into samples (see package metrics): what it
// measured replaces what an earlier run wrote, the rest stays.
func Metrics(r Run) *metrics.Set {
	var set metrics.Set
	for _, s := range r.Statuses {
		cert := []string{"certificate", s.Name}
		if s.NotAfter.IsZero() {
			set.Replaces(metrics.Expiry, s.Name)
		} else {
			set.Time(metrics.Expiry, s.NotAfter, cert...)
		}
		if p := s.Pending; p != nil {
			set.Add(metrics.Pending, 1, append(cert, "kind", p.Kind, "step", p.Step)...)
			set.Time(metrics.PendingSince, p.Started, cert...)
		} else {
			set.Add(metrics.Pending, 0, cert...)
			set.Replaces(metrics.PendingSince, s.Name)
		}
		if s.Members != nil {
			set.Replaces(metrics.MemberServing, s.Name)
			set.Replaces(metrics.AgentRunning, s.Name)
			for _, m := range s.Members {
				member := []string{"certificate", s.Name, "host", m.Host}
				set.Bool(metrics.MemberServing, m.OK && m.Current, member...)
				set.Bool(metrics.AgentRunning, m.Agent, member...)
			}
		}
		if !r.WithDNS {
			continue
		}
		for _, f := range []metrics.Family{metrics.RecordServers, metrics.OwnerServers, metrics.ServedKeyPublished, metrics.StaleRecords} {
			set.Replaces(f, s.Name)
		}
		if len(s.TLSA) == 0 {
			continue
		}
		published, stale := true, 0
		for _, o := range s.TLSA {
			owner := []string{"certificate", s.Name, "owner", o.Owner}
			set.Add(metrics.OwnerServers, float64(o.Servers), owner...)
			for _, rec := range o.Records {
				set.Add(metrics.RecordServers, float64(rec.Visible), append(owner, "key", rec.Key, "record", rec.Record)...)
				if rec.Served && (o.Servers == 0 || rec.Visible < o.Servers) {
					published = false
				}
			}
			stale += len(o.Stale)
		}
		for _, o := range s.Former {
			stale += len(o.Stale)
		}
		set.Bool(metrics.ServedKeyPublished, published, cert...)
		set.Add(metrics.StaleRecords, float64(stale), cert...)
	}
	for _, o := range r.Outcomes {
		if o.Err != nil {
			set.Time(metrics.LastFailure, r.At, "certificate", o.Name)
		} else {
			set.Time(metrics.LastSuccess, r.At, "certificate", o.Name)
		}
	}
	run := []string{"command", r.Command}
	set.Add(metrics.RunDuration, r.Took.Seconds(), run...)
	set.Bool(metrics.RunSuccess, r.OK, run...)
	set.Time(metrics.RunTime, r.At, run...)
	return &set
}
