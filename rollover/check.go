package rollover

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/services"
)

// Check verdicts, in rising order of badness.
const (
	CheckPass = "pass"
	CheckWarn = "warn"
	CheckFail = "fail"
)

// CheckResult is the end-to-end DANE verdict for one endpoint.
type CheckResult struct {
	Target   string   `json:"target"`
	Endpoint string   `json:"endpoint"`
	Owner    string   `json:"owner"`
	Verdict  string   `json:"verdict"`
	Records  []string `json:"records,omitempty"`
	Secure   bool     `json:"secure"`
	Served   string   `json:"served_key,omitempty"`
	Notes    []string `json:"notes,omitempty"`
}

func (r *CheckResult) worsen(verdict, note string) {
	rank := map[string]int{CheckPass: 0, CheckWarn: 1, CheckFail: 2}
	if rank[verdict] > rank[r.Verdict] {
		r.Verdict = verdict
	}
	r.Notes = append(r.Notes, note)
}

// CheckOptions configure Check.
type CheckOptions struct {
	// Resolver is the validating resolver (host:port); "" uses the
	// configured one, then /etc/resolv.conf.
	Resolver string
	Querier  *dane.Querier
	Probe    services.ProbeOptions
	Now      func() time.Time
}

// Check verifies DANE end to end for each target: TLSA records through a
// validating resolver (AD bit), the TLS handshake (STARTTLS where the
// scheme says so), and the match by RFC 6698/7671/7672 rules. Targets are
// URLs (smtp://mx.example.org:25, tls://host:443, …) or bare domains, whose
// MX hosts are checked on port 25. With no targets, every probe of every
// certificate with TLSA records is checked.
func Check(ctx context.Context, cfg *config.Config, targets []string, opts CheckOptions) ([]CheckResult, error) {
	resolver := opts.Resolver
	if resolver == "" && cfg != nil {
		resolver = cfg.DNS.Resolver
	}
	if resolver == "" {
		var err error
		if resolver, err = dane.SystemResolver(); err != nil {
			return nil, err
		}
	}
	q := opts.Querier
	if q == nil {
		q = &dane.Querier{}
	}
	if opts.Probe.DialContext == nil {
		// Endpoints are found as a DANE client finds them: through the
		// validating resolver, not /etc/hosts or /etc/resolv.conf.
		opts.Probe.DialContext = services.ResolverDialer(resolver)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	if len(targets) == 0 && cfg != nil {
		for _, c := range cfg.Certificates {
			if len(c.TLSA) == 0 {
				continue
			}
			for _, s := range c.Services {
				for _, p := range cfg.Services[s].Probe {
					if !contains(targets, p) {
						targets = append(targets, p)
					}
				}
			}
		}
	}
	if len(targets) == 0 {
		return nil, &HintError{Err: fmt.Errorf("nothing to check"),
			Advice: "name targets (smtp://mx.example.org:25, example.org, tls://host:443) or configure probes for certificates with tlsa"}
	}
	var out []CheckResult
	for _, t := range targets {
		endpoints := []string{t}
		if !strings.Contains(t, "://") {
			hosts, secure, err := dane.LookupMX(ctx, q, resolver, t)
			if err != nil || len(hosts) == 0 {
				r := CheckResult{Target: t, Verdict: CheckFail}
				if err == nil {
					err = fmt.Errorf("no MX records")
				}
				r.Notes = append(r.Notes, fmt.Sprintf("MX lookup: %v", err))
				out = append(out, r)
				continue
			}
			endpoints = nil
			for _, h := range hosts {
				endpoints = append(endpoints, "smtp://"+h+":25")
			}
			if !secure {
				// RFC 7672 §2.2.1: an insecure MX RRset means DANE does
				// not apply to its hosts.
				for _, ep := range endpoints {
					out = append(out, CheckResult{Target: t, Endpoint: ep, Verdict: CheckFail,
						Notes: []string{"the MX RRset is not DNSSEC-validated: sending servers will not use DANE"}})
				}
				continue
			}
		}
		for _, ep := range endpoints {
			out = append(out, checkEndpoint(ctx, t, ep, resolver, q, opts.Probe, now()))
		}
	}
	return out, nil
}

func checkEndpoint(ctx context.Context, target, endpoint, resolver string, q *dane.Querier, po services.ProbeOptions, now time.Time) CheckResult {
	r := CheckResult{Target: target, Endpoint: endpoint, Verdict: CheckPass}
	ep, err := services.ParseEndpoint(endpoint)
	if err != nil {
		r.worsen(CheckFail, err.Error())
		return r
	}
	r.Owner = ep.TLSAOwner()
	if r.Owner == "" {
		r.worsen(CheckFail, "no TLSA owner name for an IP address")
		return r
	}
	look, err := dane.LookupTLSA(ctx, q, resolver, r.Owner)
	if err != nil {
		r.worsen(CheckFail, "TLSA lookup: "+err.Error())
		return r
	}
	r.Secure = look.Secure
	for _, t := range look.Records {
		r.Records = append(r.Records, t.String())
	}
	switch {
	case len(look.Records) == 0:
		r.worsen(CheckFail, fmt.Sprintf("no TLSA records at %s", r.Owner))
		return r
	case !look.Secure:
		r.worsen(CheckFail, fmt.Sprintf("resolver %s did not validate the TLSA records (no AD bit): the zone is unsigned, or the resolver does not validate", resolver))
		return r
	}
	res, err := services.Probe(ctx, ep, po)
	if err != nil {
		r.worsen(CheckFail, err.Error())
		return r
	}
	if len(res.Chain) > 0 {
		id, _, _ := keyID(res.Chain[0].PublicKey)
		r.Served = id
	}
	vo := dane.VerifyOptions{Names: []string{ep.Host}, SMTP: isSMTP(ep.Scheme), Now: now}
	if _, err := dane.Verify(look.Records, res.Chain, vo); err != nil {
		r.worsen(CheckFail, err.Error())
	}
	for _, w := range dane.Lint(look.Records, res.Chain, vo) {
		r.worsen(CheckWarn, w.Msg)
	}
	return r
}
