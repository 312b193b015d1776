package rollover

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane"
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
	return fmt.Sprintf("%v; rolled back to set %s; TLSA records kept", e.Err, e.To)
}

func (e *RolledBackError) Unwrap() error { return e.Err }

// deploy makes the new set live and reloads the services.
func (e *Engine) deploy(ctx context.Context, c *config.Certificate, st *State) error {
	txn := st.Txn
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
		return e.rollback(ctx, c, st, err)
	}
	return nil
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
// published for the endpoint. On failure the previous set is put back.
func (e *Engine) verify(ctx context.Context, c *config.Certificate, st *State) error {
	if err := e.probeAll(ctx, c, st, st.Txn.Target); err != nil {
		return e.rollback(ctx, c, st, err)
	}
	return nil
}

func (e *Engine) probeAll(ctx context.Context, c *config.Certificate, st *State, want string) error {
	k := st.key(want)
	if k == nil {
		return fmt.Errorf("unknown key %s", short(want))
	}
	published := records(c, e.wantedKeys(st))
	probes := 0
	for _, name := range c.Services {
		for _, endpoint := range e.cfg.Services[name].Probe {
			probes++
			owner, tlsa := ownerFor(endpoint), []*dns.TLSA(nil)
			if owner != "" {
				tlsa = published[owner]
			}
			accept := func(chain []*x509.Certificate) error {
				if len(chain) == 0 {
					return errors.New("no certificate served")
				}
				if !bytes.Equal(chain[0].RawSubjectPublicKeyInfo, k.SPKI) {
					id, _, _ := keyID(chain[0].PublicKey)
					return fmt.Errorf("serves key %s, want %s", short(id), short(k.ID))
				}
				return matchTLSA(tlsa, chain, endpoint)
			}
			e.rep.Progress(c.Name, "verify", "probing "+endpoint)
			if err := e.opts.Probe(ctx, endpoint, accept); err != nil {
				return fmt.Errorf("%s (service %s): %w", endpoint, name, err)
			}
		}
	}
	if probes == 0 {
		e.log.Info("no probes configured; the deploy is not checked", "cert", c.Name)
	} else {
		e.rep.Progress(c.Name, "verify", fmt.Sprintf("%d endpoint(s) serve key %s and match their TLSA records", probes, short(want)))
	}
	return nil
}

// ownerFor is the TLSA owner name of a probe URL: _PORT._tcp.HOST.
func ownerFor(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = config.ProbeDefaultPort(u.Scheme)
	}
	if net.ParseIP(u.Hostname()) != nil || port == "" {
		return ""
	}
	return strings.ToLower(dns.Fqdn(fmt.Sprintf("_%s._tcp.%s", port, u.Hostname())))
}

// matchTLSA checks the chain against the records for its endpoint, by the
// rules of RFC 7671 (and RFC 7672 for SMTP).
func matchTLSA(records []*dns.TLSA, chain []*x509.Certificate, endpoint string) error {
	if len(records) == 0 {
		return nil
	}
	var recs []dane.TLSA
	for _, rr := range records {
		t, err := dane.FromRR(rr)
		if err != nil {
			return err
		}
		recs = append(recs, t)
	}
	u, _ := url.Parse(endpoint)
	smtp := u != nil && (u.Scheme == "smtp" || u.Scheme == "submission" || u.Scheme == "smtps")
	var names []string
	if u != nil {
		names = []string{u.Hostname()}
	}
	_, err := dane.Verify(recs, chain, dane.VerifyOptions{Names: names, SMTP: smtp})
	return err
}

// rollback puts the previous set back after a failed deploy, reloads, and
// checks that the old key is served again. The TLSA records stay.
func (e *Engine) rollback(ctx context.Context, c *config.Certificate, st *State, cause error) error {
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
