package acme

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/acme/api"
	"github.com/go-acme/lego/v5/challenge"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/challenge/http01"
	"github.com/go-acme/lego/v5/challenge/tlsalpn01"
	"github.com/go-acme/lego/v5/providers/http/webroot"
)

// How daneroll polls the CA when it waits for a validation or an issuance.
// lego's Certifier pauses between authorization fetches and, when the CA
// sends no Retry-After, waits 5 s before it first looks at a challenge and
// half a second between looks at an order; a local or busy CA answers in
// milliseconds. daneroll follows Retry-After when the CA gives one, and
// otherwise looks after a quarter second, then half as long again each
// time, at most every few seconds: few requests for a slow CA, no idle
// wait for a fast one.
const (
	firstPoll       = 250 * time.Millisecond
	maxPoll         = 5 * time.Second
	validationLimit = 10 * time.Minute
	issuanceLimit   = 2 * time.Minute
)

// Issued is what an order gives: the leaf and the issuers, PEM.
type issued struct {
	cert, chain []byte
	url         string
}

// order runs one ACME order (RFC 8555 §7.4) with lego's protocol client
// and daneroll's own pacing. replacesID is the ARI identifier of the
// certificate the order replaces, "" for none.
func (c *Client) order(ctx context.Context, req Request, replacesID, preferredChain string) (*issued, error) {
	core, err := c.orderCore()
	if err != nil {
		return nil, err
	}
	typ, prov, err := provider(req.Solver)
	if err != nil {
		return nil, err
	}
	domains := make([]string, len(req.Domains))
	copy(domains, req.Domains)
	o, err := core.Orders.New(ctx, domains, &api.OrderOptions{Profile: req.Profile, ReplacesCertID: replacesID})
	if err != nil {
		return nil, &orderRefused{err}
	}
	c.log.Debug("acme: order created", "order", o.Location, "domains", domains, "authorizations", len(o.Authorizations))
	if err := c.authorize(ctx, core, o, typ, prov); err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{}, DNSNames: domains,
	}, req.Key)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	done, err := core.Orders.UpdateForCSR(ctx, o.Finalize, csr)
	if err != nil {
		return nil, err
	}
	done.Location = o.Location
	err = poll(ctx, 0, issuanceLimit, func() (bool, error) {
		switch done.Status {
		case legoacme.StatusValid:
			return true, nil
		case legoacme.StatusInvalid:
			return false, fmt.Errorf("the CA refused to issue: %w", done.Err())
		}
		next, err := core.Orders.Get(ctx, o.Location)
		if err != nil {
			return false, err
		}
		done = next
		return done.Status == legoacme.StatusValid, nil
	})
	if err != nil {
		return nil, err
	}
	c.log.Debug("acme: certificate issued", "order", o.Location, "certificate", done.Certificate)
	return c.chainOf(ctx, core, done.Certificate, preferredChain)
}

// orderRefused marks the CA's refusal of a new order: nothing was
// authorized or issued, so the order may be made again differently.
type orderRefused struct{ err error }

func (e *orderRefused) Error() string { return e.err.Error() }
func (e *orderRefused) Unwrap() error { return e.err }

// authorize answers the order's pending authorizations one after the
// other: present, accept, wait, clean up. (A standalone challenge server
// serves one token at a time.)
func (c *Client) authorize(ctx context.Context, core *api.Core, o legoacme.ExtendedOrder, typ challenge.Type, prov challenge.Provider) (err error) {
	defer func() {
		if err != nil {
			// Pending authorizations count against the CA's limits;
			// give them back (RFC 8555 §7.5.2), as lego does.
			for _, url := range o.Authorizations {
				_ = core.Authorizations.Deactivate(context.WithoutCancel(ctx), url)
			}
		}
	}()
	for _, url := range o.Authorizations {
		authz, err := core.Authorizations.Get(ctx, url)
		if err != nil {
			return err
		}
		switch authz.Status {
		case legoacme.StatusValid:
			continue // reused from an earlier order
		case legoacme.StatusPending:
		default:
			return fmt.Errorf("authorization for %s is %s", authz.Identifier.Value, authz.Status)
		}
		if err := c.answer(ctx, core, url, authz, typ, prov); err != nil {
			return fmt.Errorf("%s: %w", challenge.GetTargetedDomain(authz), err)
		}
	}
	return nil
}

// answer presents the authorization's challenge of type typ, asks the CA to
// validate it and waits until it has, then takes the answer down.
func (c *Client) answer(ctx context.Context, core *api.Core, url string, authz legoacme.Authorization, typ challenge.Type, prov challenge.Provider) error {
	var chal *legoacme.Challenge
	for i := range authz.Challenges {
		if authz.Challenges[i].Type == string(typ) {
			chal = &authz.Challenges[i]
		}
	}
	if chal == nil {
		return fmt.Errorf("the CA offers no %s challenge", typ)
	}
	keyAuth, err := core.GetKeyAuthorization(chal.Token)
	if err != nil {
		return err
	}
	domain := challenge.GetTargetedDomain(authz)
	if err := prov.Present(ctx, domain, chal.Token, keyAuth); err != nil {
		return fmt.Errorf("present %s: %w", typ, err)
	}
	defer func() {
		if err := prov.CleanUp(context.WithoutCancel(ctx), domain, chal.Token, keyAuth); err != nil {
			c.log.Warn("acme: cleaning up a challenge", "domain", domain, "err", err)
		}
	}()
	accepted, err := core.Challenges.New(ctx, chal.URL)
	if err != nil {
		return err
	}
	c.log.Debug("acme: challenge accepted", "domain", domain, "type", typ, "status", accepted.Status, "retry_after", accepted.RetryAfter)
	if accepted.Status == legoacme.StatusValid {
		return nil
	}
	return poll(ctx, accepted.RetryAfter, validationLimit, func() (bool, error) {
		authz, err := core.Authorizations.Get(ctx, url)
		if err != nil {
			return false, err
		}
		switch authz.Status {
		case legoacme.StatusValid:
			return true, nil
		case legoacme.StatusPending:
			return false, nil
		}
		for _, ch := range authz.Challenges {
			if ch.Error != nil {
				return false, ch.Error
			}
		}
		return false, fmt.Errorf("authorization is %s", authz.Status)
	})
}

// poll calls check until it reports done, fails, or limit passes: first
// after wait (the CA's Retry-After) or firstPoll, then half as long again
// each time, at most maxPoll (or Retry-After) apart.
func poll(ctx context.Context, wait, limit time.Duration, check func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	delay, ceiling := firstPoll, maxPoll
	if wait > 0 {
		delay, ceiling = wait, max(wait, maxPoll)
	}
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		if time.Now().Add(delay).After(deadline) {
			return fmt.Errorf("the CA did not finish within %s", limit)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*3/2, ceiling)
	}
}

// chainOf downloads the certificate and picks the chain: the one whose top
// certificate is issued by preferredChain when the CA offers it (certbot's
// --preferred-chain), else the CA's default.
func (c *Client) chainOf(ctx context.Context, core *api.Core, url, preferredChain string) (*issued, error) {
	if preferredChain == "" {
		raw, err := core.Certificates.Get(ctx, url, false)
		if err != nil {
			return nil, err
		}
		return &issued{cert: raw.Cert, chain: raw.Issuer, url: url}, nil
	}
	all, err := core.Certificates.GetAll(ctx, url, false)
	if err != nil {
		return nil, err
	}
	def, ok := all[url]
	if !ok {
		return nil, errors.New("the CA's answer lacks the certificate")
	}
	for link, raw := range all {
		if topIssuer(raw.Issuer) == preferredChain {
			return &issued{cert: raw.Cert, chain: raw.Issuer, url: link}, nil
		}
	}
	c.log.Warn("no chain the CA offers ends at the preferred issuer; using the CA's default chain",
		"preferred_chain", preferredChain, "chain_ends_at", topIssuer(def.Issuer))
	return &issued{cert: def.Cert, chain: def.Issuer, url: url}, nil
}

// provider is how the solver answers challenges of its type.
func provider(s Solver) (challenge.Type, challenge.Provider, error) {
	switch s.Challenge {
	case "http-01":
		if s.HTTP01Webroot != "" {
			p, err := webroot.NewHTTPProvider(s.HTTP01Webroot)
			if err != nil {
				return "", nil, fmt.Errorf("acme: http-01 webroot: %w", err)
			}
			return challenge.HTTP01, p, nil
		}
		host, port, err := net.SplitHostPort(s.HTTP01Listen)
		if err != nil {
			return "", nil, fmt.Errorf("acme: http01_listen: %w", err)
		}
		return challenge.HTTP01, http01.NewProviderServer(host, port), nil
	case "tls-alpn-01":
		host, port, err := net.SplitHostPort(s.TLSALPN01Listen)
		if err != nil {
			return "", nil, fmt.Errorf("acme: tls_alpn01_listen: %w", err)
		}
		return challenge.TLSALPN01, tlsalpn01.NewProviderServer(host, port), nil
	case "dns-01":
		if s.DNS01 == nil {
			return "", nil, errors.New("acme: dns-01 without a publisher")
		}
		// Present returns only once every authoritative server serves
		// the record: the CA's first look finds it.
		return challenge.DNS01, dnsProvider{s.DNS01}, nil
	}
	return "", nil, fmt.Errorf("acme: unknown challenge %q", s.Challenge)
}

// dnsProvider adapts a TXTPublisher to lego's challenge.Provider.
type dnsProvider struct{ pub TXTPublisher }

func (p dnsProvider) Present(ctx context.Context, domain, _, keyAuth string) error {
	info := dns01.GetChallengeInfo(ctx, domain, keyAuth)
	return p.pub.PresentTXT(ctx, info.EffectiveFQDN, info.Value)
}

func (p dnsProvider) CleanUp(ctx context.Context, domain, _, keyAuth string) error {
	info := dns01.GetChallengeInfo(ctx, domain, keyAuth)
	return p.pub.CleanUpTXT(ctx, info.EffectiveFQDN, info.Value)
}
