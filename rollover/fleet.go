package rollover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/etcdstore"
	"github.com/daneroll/daneroll/services"
	"github.com/daneroll/daneroll/store"
)

// Fleet is the Backend of fleet mode (package etcdstore): the state is
// shared by several hosts, and each member's agent installs the live set
// on its host. A deploy moves the fleet's live set and waits for every
// member to report the new key served (docs/fleet.md).
type Fleet interface {
	Backend
	// AwaitServed waits until every member registered for name, but
	// those in skip, has reported set with key served for the current
	// write of the live set, and returns the members; progress hears
	// which ones it still waits for.
	AwaitServed(ctx context.Context, name, set, key string, timeout time.Duration, skip []string, progress func(waiting []string)) ([]string, error)
	// Members lists the members registered for name; Reports what each
	// last reported.
	Members(ctx context.Context, name string) ([]etcdstore.Member, error)
	Reports(ctx context.Context, name string) (map[string]etcdstore.Report, error)
	// AliveHosts returns the members whose agent runs.
	AliveHosts(ctx context.Context) (map[string]bool, error)
}

// MemberStatus is what a fleet member last reported for a certificate.
type MemberStatus struct {
	Host      string   `json:"host"`
	Endpoints []string `json:"endpoints,omitempty"`
	// Set and Key are what it installed and serves; OK is set when its
	// endpoints served Key and matched the TLSA records.
	Set string `json:"set,omitempty"`
	Key string `json:"key,omitempty"`
	// Served maps each endpoint to the key it served when last probed.
	Served map[string]string `json:"served,omitempty"`
	OK     bool              `json:"ok"`
	Error  string            `json:"error,omitempty"`
	At     time.Time         `json:"at,omitzero"`
	// Current is set when the report is for the live set as it is now.
	Current bool `json:"current"`
	// Agent is set while its agent runs.
	Agent bool `json:"agent_running"`
}

// memberStatus reads the members' reports of c; attention lists the
// members that failed or lag behind the live set.
func (e *Engine) memberStatus(ctx context.Context, c *config.Certificate, f Fleet, st *State) (out []MemberStatus, attention []string, err error) {
	out = []MemberStatus{} // not nil: fleet mode, even with no member
	members, err := f.Members(ctx, c.Name)
	if err != nil {
		return nil, nil, err
	}
	reports, err := f.Reports(ctx, c.Name)
	if err != nil {
		return nil, nil, err
	}
	alive, err := f.AliveHosts(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, m := range members {
		ms := MemberStatus{Host: m.Host, Endpoints: m.Endpoints, Agent: alive[m.Host]}
		if !ms.Agent {
			attention = append(attention, fmt.Sprintf("the agent of member %s is not running: the next deploy waits for it, then rolls back (a member gone for good leaves with daneroll agent --leave --host %s)", m.Host, m.Host))
		}
		r, ok := reports[m.Host]
		if ok {
			ms.Set, ms.Key, ms.OK, ms.Error, ms.At, ms.Served = r.Set, r.Key, r.OK, r.Error, r.At, r.Endpoints
			ms.Current = r.Set == st.LiveSet && r.Key == st.servedKey()
		}
		switch {
		case !ok:
			attention = append(attention, fmt.Sprintf("member %s has reported nothing yet", m.Host))
		case !r.OK:
			attention = append(attention, fmt.Sprintf("member %s failed at %s: %s", m.Host, r.At.UTC().Format(time.RFC3339), r.Error))
		case !ms.Current && st.Txn == nil:
			attention = append(attention, fmt.Sprintf("member %s serves set %s, not the fleet's %s", m.Host, r.Set, st.LiveSet))
		}
		out = append(out, ms)
	}
	return out, attention, nil
}

var _ Fleet = (*etcdstore.Store)(nil)

func (e *Engine) fleet() (Fleet, bool) {
	f, ok := e.st.(Fleet)
	return f, ok
}

func (e *Engine) reportTimeout() time.Duration {
	if e.cfg != nil && e.cfg.Store.ReportTimeout.Duration > 0 {
		return e.cfg.Store.ReportTimeout.Duration
	}
	return config.DefaultReportTimeout
}

// deployFleet makes the new set the fleet's and waits for its members.
func (e *Engine) deployFleet(ctx context.Context, c *config.Certificate, st *State, f Fleet) error {
	txn := st.Txn
	if err := f.Switch(c.Name, txn.NewSet); err != nil {
		return err
	}
	if err := e.refreshLive(c, st); err != nil {
		return err
	}
	if k := st.key(txn.Target); k != nil && k.Served.IsZero() {
		k.Served = e.clock.Now()
	}
	e.rep.Progress(c.Name, "deploy", fmt.Sprintf("set %s is the fleet's; waiting for every member's agent to serve key %s", txn.NewSet, short(txn.Target)))
	hosts, err := e.awaitMembers(ctx, c, f, txn.NewSet, txn.Target, nil)
	if err == nil && len(hosts) == 0 && !c.AllowUnverifiedDeploy {
		err = errors.New("no member is registered for it: no host reported serving it (start daneroll agent on the hosts that serve it; allow_unverified_deploy = true deploys without)")
	}
	if err != nil && ctx.Err() != nil {
		// Interrupted: the journal still says deploy, and the next run
		// waits again. Rolling back now would only move every member
		// twice.
		return err
	}
	if err != nil {
		if txn.PrevSet == "" {
			return e.bootstrap(c, "not every member serves it", err)
		}
		return e.rollback(ctx, c, st, err)
	}
	e.rep.Progress(c.Name, "deploy", fmt.Sprintf("%s serve key %s", membersPhrase(hosts), short(txn.Target)))
	return nil
}

// verifyFleet checks, before a fleet's transaction goes on to retire the
// old key, that the new set is still the fleet's and every member serves
// it. A run resumed at verify may find otherwise: its predecessor was
// killed in a rollback, after putting the old set back. Then the new set
// is deployed again.
func (e *Engine) verifyFleet(ctx context.Context, c *config.Certificate, st *State, f Fleet) error {
	if err := e.refreshLive(c, st); err != nil {
		return err
	}
	if st.LiveSet != st.Txn.NewSet {
		e.rep.Progress(c.Name, "verify", fmt.Sprintf("the fleet serves set %s, not the new set %s: deploying it again", st.LiveSet, st.Txn.NewSet))
		return e.deployFleet(ctx, c, st, f)
	}
	_, err := e.awaitMembers(ctx, c, f, st.Txn.NewSet, st.Txn.Target, nil)
	if err != nil && ctx.Err() == nil {
		return e.rollback(ctx, c, st, err)
	}
	return err
}

func (e *Engine) awaitMembers(ctx context.Context, c *config.Certificate, f Fleet, set, key string, skip []string) ([]string, error) {
	return f.AwaitServed(ctx, c.Name, set, key, e.reportTimeout(), skip, func(waiting []string) {
		e.rep.Progress(c.Name, "deploy", "waiting for "+strings.Join(waiting, ", "))
	})
}

func membersPhrase(hosts []string) string {
	switch len(hosts) {
	case 0:
		return "no member is registered; nothing"
	case 1:
		return "member " + hosts[0] + " reports it:"
	}
	return fmt.Sprintf("all %d members (%s) report they", len(hosts), strings.Join(hosts, ", "))
}

// rollbackFleet puts the previous set back as the fleet's and waits for
// the members to serve it again: those that reported on the new set. A
// member that did not is not waited for again: it never said it left the
// old set, and whichever key it serves, the TLSA records stay.
func (e *Engine) rollbackFleet(ctx context.Context, c *config.Certificate, st *State, f Fleet, cause error) error {
	prev := st.Txn.PrevSet
	rb := &RolledBackError{Err: cause, To: prev}
	if prev == "" {
		return rb
	}
	e.rep.Progress(c.Name, "rollback", fmt.Sprintf("making set %s the fleet's again: %v", prev, cause))
	if err := f.Switch(c.Name, prev); err != nil {
		rb.SwitchErr = err
		return rb
	}
	rb.Reverted = true
	if err := e.refreshLive(c, st); err != nil {
		rb.SwitchErr, rb.Reverted = err, false
		return rb
	}
	var nse *etcdstore.NotServedError
	if errors.As(cause, &nse) {
		rb.Silent = nse.Silent
	}
	if st.Txn.Previous != "" {
		_, rb.ProbeErr = e.awaitMembers(ctx, c, f, prev, st.Txn.Previous, rb.Silent)
	}
	return rb
}

// Agent keeps a member's host in step with the fleet: for each
// certificate with services on this host, it installs the fleet's live
// set into the host's state_dir, reloads the services, probes their
// endpoints as verify does, and reports what it found.
type Agent struct {
	e     *Engine // this host's configuration, reloads and probes
	local *store.Store
	fleet *etcdstore.Store
	// Poll is how often the agent looks for a change of the live sets.
	Poll time.Duration
	// Resync is how often every certificate is synced even without a
	// change (a look that failed, a service restarted by hand).
	Resync time.Duration
}

// NewAgent returns the agent of this host. e is an engine of the host's
// configuration (its Backend does not matter); local is its state_dir.
func NewAgent(e *Engine, local *store.Store, fleet *etcdstore.Store) *Agent {
	return &Agent{e: e, local: local, fleet: fleet, Poll: time.Second, Resync: time.Minute}
}

// AgentOutcome is what the agent did for one certificate.
type AgentOutcome struct {
	Name string
	// Set is the fleet's live set ("" when there is none yet).
	Set     string
	Changed bool
	Err     error
}

// served are this host's certificates: those with services here.
func (a *Agent) served() []*config.Certificate {
	var out []*config.Certificate
	for _, c := range a.e.cfg.Certificates {
		if len(c.Services) > 0 {
			out = append(out, c)
		}
	}
	return out
}

func (a *Agent) endpoints(c *config.Certificate) []string {
	var eps []string
	for _, name := range c.Services {
		eps = append(eps, a.e.cfg.Services[name].Probe...)
	}
	return eps
}

// Register records this host as a member of each of its certificates.
func (a *Agent) Register(ctx context.Context) error {
	for _, c := range a.served() {
		if err := a.fleet.Register(ctx, c.Name, a.endpoints(c)); err != nil {
			return err
		}
	}
	return nil
}

// SyncAll brings every certificate of this host in step once.
func (a *Agent) SyncAll(ctx context.Context) []AgentOutcome {
	var out []AgentOutcome
	for _, c := range a.served() {
		out = append(out, a.Sync(ctx, c))
	}
	return out
}

// Run registers, then keeps the host in step until ctx ends: at every
// change of a live set, and every Resync.
func (a *Agent) Run(ctx context.Context) error {
	// Alive first: it refuses a second agent under the same member name.
	if err := a.fleet.Alive(ctx); err != nil {
		return err
	}
	if err := a.Register(ctx); err != nil {
		return err
	}
	changed := make(chan string, 64)
	var names []string
	for _, c := range a.served() {
		names = append(names, c.Name)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		_ = a.fleet.WatchLive(wctx, names, a.Poll, func(name string) {
			select {
			case changed <- name:
			default: // the resync catches up
			}
		})
	}()
	defer func() {
		stopWatch()
		<-watched
	}()
	a.report(a.SyncAll(ctx))
	tick := time.NewTicker(a.Resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			// Registered again each time: a member record lost (etcd
			// restored from a backup, a --leave by mistake) comes back.
			if err := a.Register(ctx); err != nil {
				a.e.log.Warn("registering with the fleet", "err", err)
			}
			if err := a.fleet.Alive(ctx); err != nil {
				a.e.log.Warn("the fleet's liveness key", "err", err)
			}
			a.report(a.SyncAll(ctx))
		case name := <-changed:
			if c := a.e.cfg.Certificate(name); c != nil {
				a.report([]AgentOutcome{a.Sync(ctx, c)})
			}
		}
	}
}

func (a *Agent) report(outs []AgentOutcome) {
	for _, o := range outs {
		switch {
		case o.Err != nil:
			a.e.log.Error("agent", "cert", o.Name, "set", o.Set, "err", o.Err)
		case o.Changed:
			a.e.rep.Progress(o.Name, "agent", fmt.Sprintf("set %s installed and served", o.Set))
		}
	}
}

// Sync brings one certificate in step: installs the fleet's live set if
// this host serves another, reloads, probes, and reports in etcd. A set
// that fails here is taken back on this host (the previous one installed
// and reloaded again) and reported as failed: the coordinator then rolls
// the fleet back.
func (a *Agent) Sync(ctx context.Context, c *config.Certificate) AgentOutcome {
	out := AgentOutcome{Name: c.Name}
	lock, err := a.local.LockCert(c.Name)
	if err != nil {
		out.Err = err
		return out
	}
	defer lock.Unlock()
	id, rev, err := a.fleet.LiveRevision(c.Name)
	if err != nil || id == "" {
		out.Err = err
		return out
	}
	out.Set = id
	rep := etcdstore.Report{Set: id, LiveRevision: rev}
	fail := func(err error) AgentOutcome {
		out.Err = err
		rep.OK, rep.Error, rep.At = false, err.Error(), a.e.clock.Now().UTC()
		if perr := a.fleet.PutReport(ctx, c.Name, rep); perr != nil {
			out.Err = errors.Join(err, perr)
		}
		return out
	}
	set, err := a.fleet.Set(c.Name, id)
	if err != nil {
		return fail(fmt.Errorf("the fleet's set %s: %w", id, err))
	}
	leaf, err := set.Leaf()
	if err != nil {
		return fail(err)
	}
	keyIDHex, spki, err := keyID(leaf.PublicKey)
	if err != nil {
		return fail(err)
	}
	rep.Key = keyIDHex
	prev, err := a.local.Live(c.Name)
	if err != nil {
		return fail(err)
	}
	key := &KeyInfo{ID: keyIDHex, SPKI: spki}
	// What each endpoint serves goes into the report, failed or not.
	served := map[string]string{}
	rep.Endpoints = served
	if prev == nil || !sameSet(prev, set) {
		// Nothing is served here that a DANE client would refuse,
		// whatever etcd says.
		if err := a.e.matchesRecords(ctx, c, set); err != nil {
			return fail(fmt.Errorf("not installed: %w", err))
		}
		localID, err := a.install(c.Name, set)
		if err != nil {
			return fail(err)
		}
		if err := a.local.Switch(c.Name, localID); err != nil {
			return fail(err)
		}
		out.Changed = true
		a.e.rep.Progress(c.Name, "agent", fmt.Sprintf("installed the fleet's set %s (here %s)", id, localID))
	}
	if out.Changed {
		err = a.e.reload(ctx, c)
		if err == nil {
			err = a.e.probeKey(ctx, c, key, served)
		}
	} else if err = a.e.probeKey(ctx, c, key, served); err != nil {
		// Installed, but not served (a service restarted from an old
		// configuration, a reload that was lost): reload once.
		a.e.log.Warn("the installed set is not served; reloading", "cert", c.Name, "err", err)
		if err = a.e.reload(ctx, c); err == nil {
			err = a.e.probeKey(ctx, c, key, served)
		}
	}
	if err != nil {
		if out.Changed && prev != nil {
			err = a.takeBack(ctx, c, prev, err)
		}
		return fail(err)
	}
	if c.KeepSets > 0 {
		// The live set is never pruned; the previous one is kept too.
		var protect []string
		if prev != nil {
			protect = append(protect, prev.ID)
		}
		if _, err := a.local.PruneSets(c.Name, c.KeepSets, protect...); err != nil {
			a.e.log.Warn("pruning this host's archive", "cert", c.Name, "err", err)
		}
	}
	rep.OK, rep.At = true, a.e.clock.Now().UTC()
	if err := a.fleet.PutReport(ctx, c.Name, rep); err != nil {
		out.Err = err
	}
	return out
}

func sameSet(a, b *store.Set) bool {
	return bytes.Equal(a.Cert, b.Cert) && bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Chain, b.Chain)
}

// install archives set on this host, or finds it among the newest sets
// already there (an agent that takes a set back and tries again must not
// archive a copy each time).
func (a *Agent) install(name string, set *store.Set) (string, error) {
	ids, err := a.local.Sets(name)
	if err != nil {
		return "", err
	}
	for i := len(ids) - 1; i >= 0 && i >= len(ids)-3; i-- {
		if have, err := a.local.Set(name, ids[i]); err == nil && sameSet(have, set) {
			return ids[i], nil
		}
	}
	return a.local.Install(name, set)
}

// takeBack puts this host's previous set back after the fleet's failed
// here, if a DANE client would still accept it: a member back from a long
// absence may hold a set whose record is long retired, and then the new
// set, whose record is published, is the better one to keep.
func (a *Agent) takeBack(ctx context.Context, c *config.Certificate, prev *store.Set, cause error) error {
	if err := a.e.matchesRecords(ctx, c, prev); err != nil {
		return fmt.Errorf("%w; this host keeps the new set: its previous set %s would not match the TLSA records either (%v)", cause, prev.ID, err)
	}
	if err := a.local.Switch(c.Name, prev.ID); err != nil {
		return fmt.Errorf("%w; switching this host back to its set %s failed too: %v", cause, prev.ID, err)
	}
	if err := a.e.reload(ctx, c); err != nil {
		return fmt.Errorf("%w; switched this host back to its set %s, but reloading failed: %v", cause, prev.ID, err)
	}
	return fmt.Errorf("%w; this host serves its set %s again", cause, prev.ID)
}

// matchesRecords checks set's chain against the TLSA records a DANE client
// of each of c's endpoints finds through the validating resolver, as a
// probe judges the served chain.
func (e *Engine) matchesRecords(ctx context.Context, c *config.Certificate, set *store.Set) error {
	if len(c.TLSA) == 0 {
		return nil
	}
	chain, err := set.Certificates()
	if err != nil {
		return err
	}
	for _, name := range c.Services {
		for _, endpoint := range e.cfg.Services[name].Probe {
			ep, err := services.ParseEndpoint(endpoint)
			if err != nil {
				return fmt.Errorf("%s (service %s): %w", endpoint, name, err)
			}
			if ep.TLSAOwner() == "" {
				continue
			}
			records, err := e.clientRecords(ctx, c, ep)
			if err != nil {
				return fmt.Errorf("%s (service %s): %w", endpoint, name, err)
			}
			if err := e.matchClient(ep, records, chain); err != nil {
				return fmt.Errorf("set %s does not match %w", set.ID, err)
			}
		}
	}
	return nil
}
