package rollover

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane"
)

// CertStatus is what `daneroll status` shows for one certificate.
type CertStatus struct {
	Name      string   `json:"name"`
	Domains   []string `json:"domains"`
	KeyPolicy string   `json:"key_policy"`
	// Key is the current key's SPKI SHA-256 (its "3 1 1" digest), NextKey
	// the pre-published next key's, Served the live certificate's.
	Key     string `json:"key,omitempty"`
	NextKey string `json:"next_key,omitempty"`
	Served  string `json:"served_key,omitempty"`

	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`

	RenewAt     time.Time `json:"renew_at,omitzero"`
	RenewReason string    `json:"renew_reason,omitempty"`
	RekeyAt     time.Time `json:"rekey_at,omitzero"`

	Pending     *PendingStatus `json:"pending,omitempty"`
	LastFailure string         `json:"last_failure,omitempty"`
	// Attention says what needs a person; status exits 2 when any
	// certificate has some. Stuck is set when one of them is a
	// transaction pending longer than its planned waits explain.
	Attention []string `json:"attention,omitempty"`
	Stuck     bool     `json:"stuck,omitempty"`

	TLSA []OwnerStatus `json:"tlsa,omitempty"`
	// Members are the fleet's members and what each serves (fleet mode).
	Members []MemberStatus `json:"members,omitempty"`
	// Former are owner names the certificate once published at and the
	// configuration no longer names, with the records still there.
	Former   []OwnerStatus `json:"former_owners,omitempty"`
	Warnings []string      `json:"warnings,omitempty"`
}

// PendingStatus is a transaction in progress.
type PendingStatus struct {
	Kind    string    `json:"kind"`
	Step    string    `json:"step"`
	Reason  string    `json:"reason"`
	Started time.Time `json:"started"`
	// Error is what stopped the last attempt at the step, and ErrorAt
	// when.
	Error   string    `json:"error,omitempty"`
	ErrorAt time.Time `json:"error_at,omitzero"`
}

// OwnerStatus compares wanted and visible records at one name.
type OwnerStatus struct {
	Owner string `json:"owner"`
	// Records are the wanted records with, for each, on how many of the
	// authoritative servers it is visible.
	Records []RecordStatus `json:"records"`
	// Stale are records at the name for keys daneroll will not serve,
	// which `daneroll prune` removes after probing.
	Stale  []StaleStatus `json:"stale,omitempty"`
	Signed bool          `json:"signed"`
	// SignedUnknown is set when no authoritative server answered, so
	// whether the zone is signed is not known (Signed is then false).
	SignedUnknown bool `json:"signed_unknown,omitempty"`
	Servers       int  `json:"servers"`
	// Validated is the configured resolver's AD bit for the records, when
	// a resolver is configured and answered with some.
	Validated *bool  `json:"validated,omitempty"`
	Error     string `json:"error,omitempty"`
}

// StaleStatus is a stale record and why it is stale: "retired key",
// "imported key", "unknown key", "owner no longer configured".
type StaleStatus struct {
	Record string `json:"record"`
	Why    string `json:"why"`
}

// RecordStatus is one wanted record.
type RecordStatus struct {
	Record  string `json:"record"`
	Key     string `json:"key"` // "current", "next", "served"
	Visible int    `json:"visible"`
	// Served is set for the records of the key being served.
	Served bool `json:"served,omitempty"`
}

// Status reports on the selected certificates without changing anything
// and without the lock.
func (e *Engine) Status(ctx context.Context, names []string) ([]CertStatus, error) {
	return e.statuses(ctx, names, true)
}

// Snapshot is Status from the state directory alone: it asks no server,
// so it says nothing of the TLSA records (for metrics after a renewal).
func (e *Engine) Snapshot(ctx context.Context, names []string) ([]CertStatus, error) {
	return e.statuses(ctx, names, false)
}

func (e *Engine) statuses(ctx context.Context, names []string, withDNS bool) ([]CertStatus, error) {
	certs, err := e.select_(names)
	if err != nil {
		return nil, err
	}
	var out []CertStatus
	for _, c := range certs {
		s, err := e.status(ctx, c, withDNS)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (e *Engine) status(ctx context.Context, c *config.Certificate, withDNS bool) (CertStatus, error) {
	st, err := e.load(c)
	if err != nil {
		return CertStatus{}, err
	}
	cs := CertStatus{
		Name: c.Name, Domains: c.Domains, KeyPolicy: c.KeyPolicy,
		Key: st.Current, NextKey: st.Next, Served: st.servedKey(), LastFailure: st.LastFailure,
	}
	if st.Cert != nil {
		cs.Serial, cs.NotAfter = st.Cert.Serial, st.Cert.NotAfter
	}
	switch {
	case st.Renewal != nil && st.Cert != nil && st.Renewal.Serial == st.Cert.Serial:
		cs.RenewAt, cs.RenewReason = st.Renewal.At, st.Renewal.Reason
	case st.Cert != nil:
		if set, err := e.st.Set(c.Name, st.LiveSet); err == nil {
			if leaf, err := set.Leaf(); err == nil {
				cs.RenewAt = acme.FallbackRenewal(leaf, c.RenewBefore.Duration)
				cs.RenewReason = "without ARI: a third of the lifetime left, or renew_before"
			}
		}
	default:
		cs.RenewReason = "no certificate yet: the next renew issues one"
	}
	if c.KeyPolicy == config.PolicyRollover && !st.CurrentSince.IsZero() {
		cs.RekeyAt = st.CurrentSince.Add(c.RekeyAfter.Duration)
	}
	if st.Txn != nil {
		cs.Pending = &PendingStatus{Kind: st.Txn.Kind, Step: st.Txn.Step, Reason: st.Txn.Reason, Started: st.Txn.Started,
			Error: st.Txn.Error, ErrorAt: st.Txn.ErrorAt}
	}
	if withDNS {
		if len(c.TLSA) > 0 {
			cs.TLSA, cs.Warnings = e.tlsaStatus(ctx, c, st)
		}
		cs.Former = e.formerStatus(ctx, c, st)
	}
	cs.Attention = e.attention(c, st, &cs)
	if f, ok := e.fleet(); ok {
		var attention []string
		if cs.Members, attention, err = e.memberStatus(ctx, c, f, st); err != nil {
			return CertStatus{}, err
		}
		cs.Attention = append(cs.Attention, attention...)
	}
	return cs, nil
}

// attention lists what needs a person, which makes `daneroll status` exit
// 2: a served key whose record some authoritative server lacks, a
// certificate inside its renewal window whose last attempt failed, a
// transaction pending longer than its planned waits explain.
func (e *Engine) attention(c *config.Certificate, st *State, cs *CertStatus) []string {
	now := e.clock.Now()
	var out []string
	for _, o := range cs.TLSA {
		for _, r := range o.Records {
			if r.Served && o.Servers > 0 && r.Visible < o.Servers {
				out = append(out, fmt.Sprintf("the served key's record %s is visible on %d of %d authoritative servers",
					r.Record, r.Visible, o.Servers))
			}
		}
	}
	failure := cs.LastFailure
	if cs.Pending != nil && cs.Pending.Error != "" {
		failure = cs.Pending.Error
	}
	if failure != "" && !cs.RenewAt.IsZero() && !now.Before(cs.RenewAt) {
		out = append(out, "inside its renewal window since "+cs.RenewAt.UTC().Format(time.RFC3339)+", and the last attempt failed: "+failure)
	}
	if t := st.Txn; t != nil {
		planned := false
		if t.Step == StepHold {
			if until, ok := e.safeAt(c, st, t.Target); ok && now.Before(until) {
				planned = true // a hold, bounded by max_hold
			}
		}
		if age := now.Sub(t.Started); !planned && age > e.cfg.Notify.StuckAfter.Duration {
			cs.Stuck = true
			out = append(out, fmt.Sprintf("a %s transaction has been pending at step %s for %s (stuck_after %s)",
				t.Kind, t.Step, age.Round(time.Minute), config.FormatDuration(e.cfg.Notify.StuckAfter.Duration)))
		}
	}
	if !cs.NotAfter.IsZero() && !now.Before(cs.NotAfter) {
		out = append(out, "the live certificate has expired")
	}
	return out
}

func (e *Engine) tlsaStatus(ctx context.Context, c *config.Certificate, st *State) ([]OwnerStatus, []string) {
	d, err := e.dns(c)
	if err != nil {
		return nil, []string{err.Error()}
	}
	var warnings []string
	role := map[string]string{}
	for _, pair := range [][2]string{{st.servedKey(), "served"}, {st.Next, "next"}, {st.Current, "current"}} {
		if pair[0] != "" {
			role[pair[0]] = pair[1]
		}
	}
	wantedKeys := e.wantedKeys(st)
	wanted := records(c, wantedKeys)
	rep, repErr := d.Confirmer.Check(ctx, e.wants(c, st, nil))
	var chain = e.liveChain(c, st)
	var out []OwnerStatus
	for _, owner := range c.TLSA {
		fq := dns.Fqdn(owner)
		os := OwnerStatus{Owner: fq, Records: []RecordStatus{}}
		if repErr != nil {
			os.Error = repErr.Error()
		}
		var zr *dane.ZoneReport
		if rep != nil {
			for _, z := range rep.Zones {
				if _, ok := z.Owners[fq]; ok {
					zr = z
				}
			}
		}
		os.SignedUnknown = true
		if zr != nil {
			os.Signed = zr.Signed
			for _, s := range zr.Servers {
				if !s.Skipped {
					os.Servers++
				}
				if !s.Skipped && s.Err == nil {
					os.SignedUnknown = false
				}
			}
		}
		for _, rr := range wanted[fq] {
			rs := RecordStatus{Record: rrLine(rr)}
			for _, k := range wantedKeys {
				if dane.MatchesSPKI(rr, k.SPKI) {
					rs.Key = role[k.ID]
					rs.Served = k.ID == st.servedKey()
				}
			}
			if zr != nil {
				for _, s := range zr.Servers {
					if !s.Skipped && s.Err == nil && !containsTLSARR(s.Missing, rr) {
						rs.Visible++
					}
				}
			}
			os.Records = append(os.Records, rs)
		}
		_, published, err := e.planOwner(ctx, c, st, d.Publisher, fq)
		if err == nil {
			var stale []Stale
			stale, err = e.staleAt(ctx, c, st, d.Publisher, fq)
			for _, s := range stale {
				os.Stale = append(os.Stale, StaleStatus{Record: rrLine(s.Record), Why: s.Why})
			}
		}
		if err != nil {
			os.Error = err.Error()
		} else {
			if len(chain) > 0 {
				var recs []dane.TLSA
				for _, rr := range published {
					if t, err := dane.FromRR(rr); err == nil {
						recs = append(recs, t)
					}
				}
				smtp := strings.HasPrefix(fq, "_25.") || strings.HasPrefix(fq, "_465.") || strings.HasPrefix(fq, "_587.")
				for _, w := range dane.Lint(recs, chain, dane.VerifyOptions{Names: c.Domains, SMTP: smtp, Now: e.clock.Now()}) {
					warnings = append(warnings, fmt.Sprintf("%s: %s", strings.TrimSuffix(fq, "."), w.Msg))
				}
			}
		}
		if zr != nil && !zr.Signed && !os.SignedUnknown {
			warnings = append(warnings, fmt.Sprintf("zone %s is not DNSSEC-signed: DANE clients ignore its TLSA records", zr.Zone))
		}
		if res := e.cfg.DNS.Resolver; res != "" && len(os.Records) > 0 {
			look, err := dane.LookupTLSA(ctx, &dane.Querier{Timeout: 3 * time.Second}, res, fq)
			switch {
			case err != nil:
				warnings = append(warnings, fmt.Sprintf("%s: the validating resolver %s: %v", strings.TrimSuffix(fq, "."), res, err))
			case len(look.Records) > 0 && !look.Secure:
				warnings = append(warnings, fmt.Sprintf("%s: the resolver %s answers without the AD bit: it does not validate, or the chain of trust to the zone is broken; DANE clients behind such a resolver ignore the records",
					strings.TrimSuffix(fq, "."), res))
			case len(look.Records) == 0:
				warnings = append(warnings, fmt.Sprintf("%s: the resolver %s finds no TLSA records there: DANE clients behind it see none (yet)",
					strings.TrimSuffix(fq, "."), res))
			default:
				secure := look.Secure
				os.Validated = &secure
			}
		}
		out = append(out, os)
	}
	return out, dedupe(warnings)
}

func containsTLSARR(set []dns.RR, rr *dns.TLSA) bool {
	for _, x := range set {
		if dns.IsDuplicate(x, rr) {
			return true
		}
	}
	return false
}

func dedupe(in []string) []string {
	var out []string
	for _, s := range in {
		if !contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// liveChain is the live set's chain, leaf first, or nil.
func (e *Engine) liveChain(c *config.Certificate, st *State) []*x509.Certificate {
	if st.LiveSet == "" {
		return nil
	}
	set, err := e.st.Set(c.Name, st.LiveSet)
	if err != nil {
		return nil
	}
	chain, err := set.Certificates()
	if err != nil {
		return nil
	}
	return chain
}

// WantedRecords returns, per certificate, the TLSA records the
// configuration wants published now, as zone-file lines. Certificates
// without keys yet have none.
func (e *Engine) WantedRecords(names []string) ([]CertRecords, error) {
	certs, err := e.select_(names)
	if err != nil {
		return nil, err
	}
	var out []CertRecords
	for _, c := range certs {
		st, err := e.load(c)
		if err != nil {
			return nil, err
		}
		cr := CertRecords{Name: c.Name}
		recs := records(c, e.wantedKeys(st))
		for _, owner := range c.TLSA {
			for _, rr := range recs[dns.Fqdn(owner)] {
				cr.Lines = append(cr.Lines, rrLine(rr))
			}
		}
		if len(c.TLSA) > 0 && len(st.Keys) == 0 {
			cr.Note = "no keys yet: daneroll renew generates them"
		}
		out = append(out, cr)
	}
	return out, nil
}

// CertRecords are one certificate's wanted records.
type CertRecords struct {
	Name  string
	Lines []string
	Note  string
}

// formerStatus lists the records still published at owners the
// certificate once had.
func (e *Engine) formerStatus(ctx context.Context, c *config.Certificate, st *State) []OwnerStatus {
	configured := fqdns(c.TLSA)
	var out []OwnerStatus
	for _, owner := range st.Owners {
		if slices.Contains(configured, owner) {
			continue
		}
		os := OwnerStatus{Owner: owner, Records: []RecordStatus{}}
		d, err := e.dns(c)
		var stale []Stale
		if err == nil {
			stale, err = e.staleAt(ctx, c, st, d.Publisher, owner)
		}
		if err != nil {
			os.Error = err.Error()
		}
		for _, s := range stale {
			os.Stale = append(os.Stale, StaleStatus{Record: rrLine(s.Record), Why: s.Why})
		}
		out = append(out, os)
	}
	return out
}
