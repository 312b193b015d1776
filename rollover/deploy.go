package rollover

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/services"
)

// RolledBackError reports a deploy that failed its checks and was undone,
// saying what is true afterwards: which set is live, whether its reload
// worked and whether the probes see its key served again.
type RolledBackError struct {
	Err error
	// To is the set that is live again ("" when there was none).
	To string
	// Reverted is set when the previous set is live again (the symlink
	// switched back).
	Reverted bool
	// SwitchErr is why switching back failed, when it did.
	SwitchErr error
	// ReloadErr is the reload's failure after switching back, when it
	// failed (often the same failure that caused the rollback).
	ReloadErr error
	// ProbeErr is set when, after switching back, the probes did not see
	// the previous key served.
	ProbeErr error
	// Unprobed is set when no probe is configured, so nothing says which
	// key is served.
	Unprobed bool
	// Silent are the fleet's members that reported nothing on the new
	// set, and were not waited for on the old one.
	Silent []string
}

func (e *RolledBackError) Error() string {
	switch {
	case e.To == "":
		return fmt.Sprintf("%v; there was no earlier certificate to return to, the new one stays live; TLSA records kept", e.Err)
	case !e.Reverted:
		return fmt.Sprintf("%v; switching back to set %s failed: %v; the new set stays live; TLSA records kept", e.Err, e.To, e.SwitchErr)
	case e.ProbeErr != nil && e.ReloadErr != nil:
		return fmt.Sprintf("%v; switched back to set %s, but its reload failed too (%v) and the probes do not see the old key served: %v; TLSA records kept",
			e.Err, e.To, e.ReloadErr, e.ProbeErr)
	case e.ReloadErr != nil && e.Unprobed:
		return fmt.Sprintf("%v; switched back to set %s, but its reload failed too (%v) and no probe is configured to tell which key is served; TLSA records kept",
			e.Err, e.To, e.ReloadErr)
	case e.ProbeErr != nil:
		return fmt.Sprintf("%v; switched back to set %s, but the probes do not see the old key served: %v; TLSA records kept", e.Err, e.To, e.ProbeErr)
	case e.ReloadErr != nil:
		return fmt.Sprintf("%v; switched back to set %s: the old key is served again, but reloading still fails (%v); TLSA records kept",
			e.Err, e.To, e.ReloadErr)
	}
	if len(e.Silent) > 0 {
		return fmt.Sprintf("%v; rolled back to set %s on every member that reports (not on %s: whichever key it serves keeps its record); TLSA records kept",
			e.Err, e.To, strings.Join(e.Silent, ", "))
	}
	return fmt.Sprintf("%v; rolled back to set %s; TLSA records kept", e.Err, e.To)
}

func (e *RolledBackError) Unwrap() error { return e.Err }

// deploy makes the new set live and reloads the services.
func (e *Engine) deploy(ctx context.Context, c *config.Certificate, st *State) error {
	txn := st.Txn
	if txn.NewSet == "" {
		// A journal of an older daneroll, which ordered after the hold.
		if err := e.obtain(ctx, c, st); err != nil {
			return err
		}
	}
	if f, ok := e.fleet(); ok {
		return e.deployFleet(ctx, c, st, f)
	}
	if err := e.st.Switch(c.Name, txn.NewSet); err != nil {
		return err
	}
	if err := e.refreshLive(c, st); err != nil {
		return err
	}
	if k := st.key(txn.Target); k != nil && k.Served.IsZero() {
		k.Served = e.clock.Now()
	}
	e.rep.Progress(c.Name, "deploy", fmt.Sprintf("set %s is live", txn.NewSet))
	if err := e.reload(ctx, c); err != nil {
		if txn.PrevSet == "" {
			return e.bootstrap(c, "reloading failed", err)
		}
		return e.rollback(ctx, c, st, err)
	}
	return nil
}

// bootstrapError is a first certificate whose services could not be
// reloaded or reached. They usually are not running yet: nginx and dovecot
// cannot start before their certificate exists. Nothing is rolled back
// (there is nothing to go back to); the step is taken again next run.
type bootstrapError struct {
	msg string
}

func (e *bootstrapError) Error() string { return e.msg }

func (e *Engine) bootstrap(c *config.Certificate, what string, err error) error {
	return &bootstrapError{msg: fmt.Sprintf("the first certificate is live in %s, but %s (%v). If the services are not running yet because they had no certificate to start with (%s), start them now, then run daneroll renew again: it checks them and finishes",
		e.st.LiveName(c.Name), what, err, strings.Join(c.Services, ", "))}
}

func (e *Engine) refreshLive(c *config.Certificate, st *State) error {
	live, err := e.st.Live(c.Name)
	if err != nil {
		return err
	}
	if live == nil {
		st.LiveSet, st.Cert = "", nil
		return nil
	}
	info, err := certInfo(live)
	if err != nil {
		return err
	}
	st.LiveSet, st.Cert = live.ID, info
	return nil
}

func (e *Engine) reload(ctx context.Context, c *config.Certificate) error {
	for _, name := range c.Services {
		svc := e.cfg.Services[name]
		if len(svc.Reload) == 0 {
			continue
		}
		e.rep.Progress(c.Name, "deploy", fmt.Sprintf("reloading %s: %s", name, strings.Join(svc.Reload, " ")))
		if err := e.opts.Reload(ctx, svc.Reload, svc.ReloadTimeout.Duration); err != nil {
			return fmt.Errorf("reload %s: %w", name, err)
		}
	}
	return nil
}

// verify probes every endpoint of the certificate's services: the served
// leaf must carry the target key and the chain must match the TLSA records
// that a DANE client of the endpoint finds. On failure the previous set is
// put back.
func (e *Engine) verify(ctx context.Context, c *config.Certificate, st *State) error {
	if f, ok := e.fleet(); ok {
		if err := e.verifyFleet(ctx, c, st, f); err != nil {
			return err
		}
	}
	if err := e.probeAll(ctx, c, st, st.Txn.Target); err != nil {
		if st.Txn.PrevSet == "" && errors.Is(err, syscall.ECONNREFUSED) {
			return e.bootstrap(c, "a service does not answer", err)
		}
		return e.rollback(ctx, c, st, err)
	}
	return nil
}

// probeAll checks that every endpoint serves key want. With TLSA records
// configured, each endpoint is judged as a DANE client judges it: by the
// records at its own owner name (_PORT._tcp.HOST of the probe URL, whatever
// address connect= dials) as the validating resolver returns them, not by
// the records daneroll meant to publish.
func (e *Engine) probeAll(ctx context.Context, c *config.Certificate, st *State, want string) error {
	k := st.key(want)
	if k == nil {
		return fmt.Errorf("unknown key %s", short(want))
	}
	return e.probeKey(ctx, c, k, nil)
}

// probeKey checks that every endpoint of c's services serves key k, as
// probeAll says. served, when not nil, hears the key each endpoint
// probed served last.
func (e *Engine) probeKey(ctx context.Context, c *config.Certificate, k *KeyInfo, served map[string]string) error {
	want := k.ID
	probes := 0
	for _, name := range c.Services {
		for _, endpoint := range e.cfg.Services[name].Probe {
			probes++
			ep, err := services.ParseEndpoint(endpoint)
			if err != nil {
				return fmt.Errorf("%s (service %s): %w", endpoint, name, err)
			}
			var records []dane.TLSA
			if len(c.TLSA) > 0 {
				if records, err = e.clientRecords(ctx, c, ep); err != nil {
					return fmt.Errorf("%s (service %s): %w", endpoint, name, err)
				}
			}
			accept := func(chain []*x509.Certificate) error {
				if len(chain) == 0 {
					return errors.New("no certificate served")
				}
				id, _, _ := keyID(chain[0].PublicKey)
				if served != nil {
					served[endpoint] = id
				}
				if !bytes.Equal(chain[0].RawSubjectPublicKeyInfo, k.SPKI) {
					return fmt.Errorf("serves key %s, want %s", short(id), short(k.ID))
				}
				if records == nil {
					return nil
				}
				return e.matchClient(ep, records, chain)
			}
			e.rep.Progress(c.Name, "verify", "probing "+endpoint)
			if err := e.opts.Probe(ctx, endpoint, accept); err != nil {
				return fmt.Errorf("%s (service %s): %w", endpoint, name, err)
			}
		}
	}
	_, fleet := e.fleet()
	switch {
	case probes == 0 && fleet:
		// The members' agents probed their own endpoints.
	case probes == 0:
		e.log.Warn("the deploy is not checked: no service of the certificate has a probe (allow_unverified_deploy); records of keys it no longer serves are retired on faith",
			"cert", c.Name, "key", short(want))
	case len(c.TLSA) > 0:
		e.rep.Progress(c.Name, "verify", fmt.Sprintf("%d endpoint(s) serve key %s and match the TLSA records the resolver returns for them", probes, short(want)))
	default:
		e.rep.Progress(c.Name, "verify", fmt.Sprintf("%d endpoint(s) serve key %s", probes, short(want)))
	}
	return nil
}

// matchClient judges chain as a DANE client of ep does, by records, the
// TLSA records it finds (clientRecords).
func (e *Engine) matchClient(ep services.Endpoint, records []dane.TLSA, chain []*x509.Certificate) error {
	if _, err := dane.Verify(records, chain, dane.VerifyOptions{Names: []string{ep.Host}, SMTP: isSMTP(ep.Scheme), Now: e.clock.Now()}); err != nil {
		return fmt.Errorf("the TLSA records a DANE client finds at %s: %w", strings.TrimSuffix(ep.TLSAOwner(), "."), err)
	}
	return nil
}

// clientRecords are the TLSA records a DANE client of ep finds: those at
// its owner name, from the validating resolver. None at all fails: the
// client would find nothing to match (a typo in tlsa, a probe on another
// port). Records the resolver did not validate are used, with a warning:
// DANE clients ignore them, so no client fails on them either.
func (e *Engine) clientRecords(ctx context.Context, c *config.Certificate, ep services.Endpoint) ([]dane.TLSA, error) {
	owner := ep.TLSAOwner()
	if owner == "" {
		e.log.Warn("the probe names an IP address, which has no TLSA records: only the served key is checked there", "cert", c.Name, "probe", ep.String())
		return nil, nil
	}
	look, err := e.opts.LookupTLSA(ctx, owner)
	if err != nil {
		return nil, fmt.Errorf("TLSA records at %s: %w", strings.TrimSuffix(owner, "."), err)
	}
	if len(look.Records) == 0 {
		hint := ""
		if !slices.Contains(c.TLSA, strings.TrimSuffix(owner, ".")) {
			hint = fmt.Sprintf(" (it is not among the certificate's tlsa names: %s)", strings.Join(c.TLSA, ", "))
		}
		return nil, fmt.Errorf("no TLSA records at %s, where a DANE client of this endpoint looks%s", strings.TrimSuffix(owner, "."), hint)
	}
	if !look.Secure {
		e.log.Warn("the resolver did not validate the TLSA records (no AD bit): DANE clients ignore them", "cert", c.Name, "owner", owner)
	}
	return look.Records, nil
}

func isSMTP(scheme string) bool {
	return scheme == "smtp" || scheme == "submission" || scheme == "smtps"
}

// rollback puts the previous set back after a failed deploy, reloads, and
// checks that the old key is served again. The TLSA records stay.
func (e *Engine) rollback(ctx context.Context, c *config.Certificate, st *State, cause error) error {
	if f, ok := e.fleet(); ok {
		return e.rollbackFleet(ctx, c, st, f, cause)
	}
	prev := st.Txn.PrevSet
	rb := &RolledBackError{Err: cause, To: prev}
	if prev == "" {
		return rb
	}
	e.rep.Progress(c.Name, "rollback", fmt.Sprintf("switching back to set %s: %v", prev, cause))
	if err := e.st.Switch(c.Name, prev); err != nil {
		rb.SwitchErr = err
		return rb
	}
	rb.Reverted = true
	if err := e.refreshLive(c, st); err != nil {
		rb.SwitchErr, rb.Reverted = err, false
		return rb
	}
	// A reload that fails again (the usual reason for the rollback) does
	// not mean the old set is not served: a service that never loaded
	// the new files still serves the old ones. The probes tell.
	rb.ReloadErr = e.reload(ctx, c)
	rb.Unprobed = e.probes(c) == 0
	if st.Txn.Previous != "" {
		rb.ProbeErr = e.probeAll(ctx, c, st, st.Txn.Previous)
	}
	return rb
}

// probes counts the endpoints that verify a deploy of c.
func (e *Engine) probes(c *config.Certificate) int {
	n := 0
	for _, name := range c.Services {
		n += len(e.cfg.Services[name].Probe)
	}
	return n
}
