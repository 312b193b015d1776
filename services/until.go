package services

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ProbeUntil's poll interval: quick at first, since most servers switch
// within a second of their reload, then backing off so that a slow server
// is not hammered.
const (
	firstPoll = 200 * time.Millisecond
	maxPoll   = 2 * time.Second
)

// ProbeUntil probes e until accept returns true for a result, until wait has
// passed or until ctx ends; reloads are asynchronous, and a server may
// serve the old chain for a moment after its reload command returned. With
// wait <= 0 it probes once.
//
// On failure it returns the last chain it saw (nil if no probe succeeded)
// and a *ProbeError that says what was last seen: the leaf's SPKI digest
// and expiry, or the last probe's error.
func ProbeUntil(ctx context.Context, e Endpoint, opts ProbeOptions, wait time.Duration, accept func(*ProbeResult) bool) (*ProbeResult, error) {
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if wait > 0 {
		wctx, cancel = context.WithTimeout(ctx, wait)
	}
	defer cancel()

	var (
		last     *ProbeResult // the last chain seen
		lastErr  error        // the last probe's error, nil if it succeeded
		attempts int
		delay    = firstPoll
	)
	for {
		attempts++
		res, err := Probe(wctx, e, opts)
		switch {
		case err == nil && accept(res):
			return res, nil
		case err == nil:
			last, lastErr = res, nil
		case wctx.Err() == nil || attempts == 1:
			lastErr = err
			// Otherwise the probe was cut short by the end of the wait,
			// which says nothing new about the server.
		}
		if wait <= 0 || wctx.Err() != nil {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-wctx.Done():
		case <-t.C:
		}
		t.Stop()
		if wctx.Err() != nil {
			break
		}
		delay = min(delay*3/2, maxPoll)
	}

	if wait <= 0 && lastErr != nil && ctx.Err() == nil {
		return last, lastErr
	}
	var seen string
	switch {
	case lastErr != nil:
		var pe *ProbeError
		if errors.As(lastErr, &pe) {
			seen = "last probe: " + pe.Reason
		} else {
			seen = "last probe: " + lastErr.Error()
		}
	case last != nil:
		seen = "last seen: " + last.describe()
	}
	probes := "1 probe"
	if attempts != 1 {
		probes = fmt.Sprintf("%d probes", attempts)
	}
	perr := &ProbeError{Endpoint: e, Err: lastErr}
	switch {
	case ctx.Err() != nil:
		perr.Reason = fmt.Sprintf("gave up waiting for an acceptable chain (%v) after %s; %s", ctx.Err(), probes, seen)
		perr.Err = errors.Join(ctx.Err(), lastErr)
	case wait > 0:
		perr.Reason = fmt.Sprintf("no acceptable chain within %s (%s); %s", wait, probes, seen)
	default:
		perr.Reason = "chain not accepted; " + seen
	}
	return last, perr
}
