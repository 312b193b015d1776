package acme

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/acme/api"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/challenge/http01"
	"github.com/go-acme/lego/v5/challenge/tlsalpn01"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/providers/http/webroot"
)

// TXTPublisher publishes dns-01 challenge records. PresentTXT returns only
// once every authoritative server of the zone serves the record, so that the
// CA's first look finds it.
type TXTPublisher interface {
	PresentTXT(ctx context.Context, fqdn, value string) error
	CleanUpTXT(ctx context.Context, fqdn, value string) error
}

// Solver says how to answer the CA's challenges for one order.
type Solver struct {
	Challenge       string // "http-01", "tls-alpn-01" or "dns-01"
	HTTP01Listen    string // standalone http-01 server address, or
	HTTP01Webroot   string // a directory whose .well-known/acme-challenge the web server serves
	TLSALPN01Listen string
	DNS01           TXTPublisher
}

// Request is one order.
type Request struct {
	Domains []string
	Key     crypto.Signer
	Profile string
	// Replaces is the certificate this one renews; its ARI identifier is
	// sent so the CA can exempt the renewal from rate limits.
	Replaces *x509.Certificate
	Solver   Solver
	// PreferredChain picks, among the chains the CA offers, the one whose
	// top certificate is issued by this common name (certbot's
	// --preferred-chain); "" uses the client's default. When no chain
	// matches, the CA's default chain is used and a warning logged.
	PreferredChain string
}

// Certificate is an issued certificate.
type Certificate struct {
	Cert  []byte // PEM leaf
	Chain []byte // PEM issuers, leaf's issuer first
	Leaf  *x509.Certificate
	URL   string
}

// Obtain runs an order for req and returns the certificate. It never
// generates a key: the certificate always carries req.Key.
func (c *Client) Obtain(ctx context.Context, req Request) (*Certificate, error) {
	if req.Key == nil {
		return nil, errors.New("acme: obtain: no key")
	}
	// Each order has a lego client of its own: the challenge solvers are
	// the client's, and orders for different certificates run at once.
	lc, err := lego.NewClient(c.config)
	if err != nil {
		return nil, fmt.Errorf("acme: directory %s: %w", c.dir, unwrapURL(err))
	}
	if err := setSolver(lc, req.Solver); err != nil {
		return nil, err
	}
	chain := req.PreferredChain
	if chain == "" {
		chain = c.preferredChain
	}
	or := certificate.ObtainRequest{
		Domains:        req.Domains,
		PrivateKey:     req.Key,
		Bundle:         false,
		Profile:        req.Profile,
		PreferredChain: chain,
	}
	if req.Replaces != nil {
		id, err := api.MakeARICertID(req.Replaces)
		if err == nil {
			or.ReplacesCertID = id
		}
	}
	// When an earlier run got as far as the CA but not as far as saving
	// the result, the old certificate is already replaced: lego then orders
	// again without "replaces" (RFC 9773 §5), which is what we want.
	res, err := lc.Certificate.Obtain(ctx, or)
	if err != nil && or.ReplacesCertID != "" && refusedOrder(err) {
		// The CA refused the new order itself, before any challenge: a
		// CA that does not know the replaced certificate (issued by
		// another CA, or for another account) refuses "replaces" as
		// malformed or unauthorized. Renewing matters more than the
		// rate-limit exemption "replaces" buys.
		c.log.Warn("the CA refused the order naming the certificate it replaces; ordering once more without", "err", describe(err))
		or.ReplacesCertID = ""
		res, err = lc.Certificate.Obtain(ctx, or)
	}
	if err != nil {
		return nil, fmt.Errorf("acme: order for %v: %w", req.Domains, describe(err))
	}
	leaf, err := parseLeaf(res.Certificate)
	if err != nil {
		return nil, fmt.Errorf("acme: certificate from the CA: %w", err)
	}
	if !samePublicKey(leaf.PublicKey, req.Key.Public()) {
		return nil, errors.New("acme: the CA issued a certificate for another key")
	}
	if top := topIssuer(res.IssuerCertificate); chain != "" && top != chain {
		// lego falls back to the default chain as certbot does, and says
		// so only in its own log.
		c.log.Warn("no chain the CA offers ends at the preferred issuer; using the CA's default chain",
			"domains", req.Domains, "preferred_chain", chain, "chain_ends_at", top)
	}
	return &Certificate{Cert: res.Certificate, Chain: res.IssuerCertificate, Leaf: leaf, URL: res.CertURL}, nil
}

// refusedOrder reports whether err is the CA's refusal of a new order:
// lego returns that problem as it is, while failures after the order exists
// (authorizations, challenges, finalization) come joined per domain. Rate
// limits are not refusals of the order's content.
func refusedOrder(err error) bool {
	pd, ok := err.(*legoacme.ProblemDetails)
	return ok && pd.Type != legoacme.RateLimitedErrorType
}

func setSolver(lc *lego.Client, s Solver) error {
	switch s.Challenge {
	case "http-01":
		if s.HTTP01Webroot != "" {
			p, err := webroot.NewHTTPProvider(s.HTTP01Webroot)
			if err != nil {
				return fmt.Errorf("acme: http-01 webroot: %w", err)
			}
			return lc.Challenge.SetHTTP01Provider(p)
		}
		host, port, err := net.SplitHostPort(s.HTTP01Listen)
		if err != nil {
			return fmt.Errorf("acme: http01_listen: %w", err)
		}
		return lc.Challenge.SetHTTP01Provider(http01.NewProviderServer(host, port))
	case "tls-alpn-01":
		host, port, err := net.SplitHostPort(s.TLSALPN01Listen)
		if err != nil {
			return fmt.Errorf("acme: tls_alpn01_listen: %w", err)
		}
		return lc.Challenge.SetTLSALPN01Provider(tlsalpn01.NewProviderServer(host, port))
	case "dns-01":
		if s.DNS01 == nil {
			return errors.New("acme: dns-01 without a publisher")
		}
		// The provider confirms on every authoritative server before it
		// returns; lego's own propagation check (which asks resolvers on
		// port 53) would only add a second, weaker wait.
		return lc.Challenge.SetDNS01Provider(dnsProvider{s.DNS01},
			dns01.WrapPreCheck(func(context.Context, string, string, string, dns01.PreCheckFunc) (bool, error) {
				return true, nil
			}))
	}
	return fmt.Errorf("acme: unknown challenge %q", s.Challenge)
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

// Timeout tells lego how long to wait after Present: Present has already
// waited, so lego's first check passes at once.
func (p dnsProvider) Timeout() (timeout, interval time.Duration) {
	return time.Minute, 50 * time.Millisecond
}

// topIssuer is the issuer's common name of the last certificate of a PEM
// chain: what lego compares a preferred chain with.
func topIssuer(chain []byte) string {
	var last *x509.Certificate
	for rest := chain; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			last = c
		}
	}
	if last == nil {
		return ""
	}
	return last.Issuer.CommonName
}

func parseLeaf(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}
