package acme

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/go-acme/lego/v5/acme/api"
)

// ErrNoARI means the CA does not offer renewal information (RFC 9773).
var ErrNoARI = errors.New("the CA offers no renewal information (ARI)")

// Window is the CA's suggested renewal window.
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// RenewalInfo is the CA's answer to an ARI request.
type RenewalInfo struct {
	Window         Window
	ExplanationURL string
	// RetryAfter is how long the CA asks clients to wait before asking
	// again (zero when it did not say).
	RetryAfter time.Duration
}

// RenewalInfo asks the CA when leaf should be renewed. It returns ErrNoARI
// when the CA does not support ARI.
func (c *Client) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*RenewalInfo, error) {
	ri, err := c.lego.Certificate.GetRenewalInfo(ctx, leaf)
	if errors.Is(err, api.ErrNoARI) {
		return nil, ErrNoARI
	}
	if err != nil {
		return nil, fmt.Errorf("acme: renewal info: %w", describe(err))
	}
	return &RenewalInfo{
		Window:         Window{Start: ri.SuggestedWindow.Start.UTC(), End: ri.SuggestedWindow.End.UTC()},
		ExplanationURL: ri.ExplanationURL,
		RetryAfter:     ri.RetryAfter,
	}, nil
}

// PickRenewal returns when to renew within w. A time picked on an earlier
// run (prev) is kept while it still lies inside the window, so that
// re-checking ARI every run does not re-roll the dice; otherwise a uniformly
// random time in the window is chosen (RFC 9773 §4.2). rnd returns a number
// in [0, n); nil means math/rand/v2.
func PickRenewal(w Window, prev time.Time, rnd func(n int64) int64) time.Time {
	if !prev.IsZero() && !prev.Before(w.Start) && !prev.After(w.End) {
		return prev
	}
	if rnd == nil {
		rnd = rand.Int64N
	}
	span := w.End.Sub(w.Start)
	if span <= 0 {
		return w.Start
	}
	return w.Start.Add(time.Duration(rnd(int64(span))))
}

// FallbackRenewal is the renewal time without ARI: renewBefore before the
// certificate expires, or, when renewBefore is zero, once a third of its
// lifetime is left (what certbot and lego do).
//
// A renewBefore as long as the lifetime or longer would renew on every run;
// a third of the lifetime is used instead.
func FallbackRenewal(leaf *x509.Certificate, renewBefore time.Duration) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if renewBefore <= 0 || renewBefore >= life {
		renewBefore = life / 3
	}
	return leaf.NotAfter.Add(-renewBefore)
}
