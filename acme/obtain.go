package acme

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	legoacme "github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/acme/api"
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
	chain := req.PreferredChain
	if chain == "" {
		chain = c.preferredChain
	}
	var replaces string
	if req.Replaces != nil {
		if id, err := api.MakeARICertID(req.Replaces); err == nil {
			replaces = id
		}
	}
	// When an earlier run got as far as the CA but not as far as saving
	// the result, the old certificate is already replaced: lego then orders
	// again without "replaces" (RFC 9773 §5), which is what we want.
	res, err := c.order(ctx, req, replaces, chain)
	if err != nil && replaces != "" && refusedOrder(err) {
		// The CA refused the new order itself, before any challenge: a
		// CA that does not know the replaced certificate (issued by
		// another CA, or for another account) refuses "replaces" as
		// malformed or unauthorized. Renewing matters more than the
		// rate-limit exemption "replaces" buys.
		c.log.Warn("the CA refused the order naming the certificate it replaces; ordering once more without", "err", describe(err))
		res, err = c.order(ctx, req, "", chain)
	}
	if err != nil {
		return nil, fmt.Errorf("acme: order for %v: %w", req.Domains, describe(err))
	}
	leaf, err := parseLeaf(res.cert)
	if err != nil {
		return nil, fmt.Errorf("acme: certificate from the CA: %w", err)
	}
	if !samePublicKey(leaf.PublicKey, req.Key.Public()) {
		return nil, errors.New("acme: the CA issued a certificate for another key")
	}
	return &Certificate{Cert: res.cert, Chain: res.chain, Leaf: leaf, URL: res.url}, nil
}

// refusedOrder reports whether err is the CA's refusal of a new order, not
// a rate limit: nothing exists yet that a second order would duplicate.
func refusedOrder(err error) bool {
	var r *orderRefused
	if !errors.As(err, &r) {
		return false
	}
	var pd *legoacme.ProblemDetails
	return errors.As(r.err, &pd) && pd.Type != legoacme.RateLimitedErrorType && !errors.As(r.err, new(*legoacme.RateLimitedError))
}

// orderCore is the protocol client the orders share, made on first use.
func (c *Client) orderCore() (*api.Core, error) {
	c.coreMu.Lock()
	defer c.coreMu.Unlock()
	if c.core != nil {
		return c.core, nil
	}
	core, err := api.New(c.config.HTTPClient, c.config.UserAgent, c.dir, c.account.Registration.Location, c.account.key)
	if err != nil {
		return nil, fmt.Errorf("acme: directory %s: %w", c.dir, unwrapURL(err))
	}
	c.core = core
	return core, nil
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
