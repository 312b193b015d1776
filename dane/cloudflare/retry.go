package cloudflare

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 1 << 20

// maxAnswerBody bounds every other answer: a page of 100 records is some
// tens of kilobytes, so 8 MiB is far above anything the API sends, and
// well below what would hurt the host. cloudflare-go reads whole bodies
// into memory; without a bound, a server sending without end (a broken
// proxy, a wrong API URL) made daneroll grow by gigabytes.
const maxAnswerBody = 8 << 20

// answerTooLargeError is the error of a call whose answer was larger than
// the limit: something that is not the Cloudflare API may be answering.
type answerTooLargeError struct {
	Limit int64
}

func (e *answerTooLargeError) Error() string {
	return fmt.Sprintf("the answer is larger than %d MiB, far more than the API sends: is the API URL right?", e.Limit>>20)
}

// limitedBody fails with *answerTooLargeError once more than limit bytes
// have been read.
type limitedBody struct {
	rc    io.ReadCloser
	limit int64
	left  int64 // bytes still allowed; negative once the limit is passed
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, &answerTooLargeError{Limit: b.limit}
	}
	// One byte more than allowed tells a body of exactly limit bytes from
	// a longer one.
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return n, &answerTooLargeError{Limit: b.limit}
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// exchangeKey is the context key under which a call's *exchange travels to
// probeTransport.
type exchangeKey struct{}

// exchange is what probeTransport saw of the last HTTP answer of one call.
// cloudflare-go reduces a 429 or 5xx answer to a bare message and drops the
// error chain of 4xx answers; the status, the Retry-After header and the
// body are what the retry and the error message need.
type exchange struct {
	mu     sync.Mutex // guards the fields below: a list may fetch pages concurrently
	status int
	header http.Header
	body   []byte // error answers only
}

func (e *exchange) set(status int, header http.Header, body []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status, e.header, e.body = status, header, body
}

func (e *exchange) get() (int, http.Header, []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status, e.header, e.body
}

// probeTransport bounds every answer's body and records answers in the
// request context's exchange.
type probeTransport struct {
	base http.RoundTripper
}

func (t *probeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	var body []byte
	if resp.StatusCode >= http.StatusBadRequest {
		// Read here, and handed on as a copy, so that the body is kept
		// and the connection is released even where cloudflare-go does
		// not read or close it (429 and 5xx answers).
		body, _ = io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
	} else {
		resp.Body = &limitedBody{rc: resp.Body, limit: maxAnswerBody, left: maxAnswerBody}
	}
	if ex, _ := req.Context().Value(exchangeKey{}).(*exchange); ex != nil {
		ex.set(resp.StatusCode, resp.Header.Clone(), body)
	}
	return resp, nil
}

// result is the outcome of one attempt.
type result struct {
	err   error     // nil on success; otherwise redacted, and wrapping api when set
	api   *APIError // the API's error answer, if there was one
	retry bool      // worth another attempt
	// wait is the server's Retry-After, when it gave one.
	wait    time.Duration
	hasWait bool
}

// once makes one attempt of a call and classifies its failure.
func (p *Publisher) once(ctx context.Context, call func(context.Context) error) result {
	ex := &exchange{}
	err := call(context.WithValue(ctx, exchangeKey{}, ex))
	if err == nil {
		return result{}
	}
	if ctx.Err() != nil {
		return result{err: ctx.Err()}
	}
	status, header, body := ex.get()
	if status == 0 {
		// No answer: refused, reset, timed out. A change may or may not
		// have been applied; the callers allow for that.
		return result{err: p.redact(err), retry: true}
	}
	res := result{}
	res.wait, res.hasWait = retryAfter(header)
	var tooLarge *answerTooLargeError
	switch {
	case status >= http.StatusBadRequest:
		res.api = p.parseAPIError(status, body)
		res.err = res.api
	case errors.As(err, &tooLarge):
		// cloudflare-go's own words around it add nothing.
		res.err = fmt.Errorf("HTTP %d: %w", status, tooLarge)
	default:
		res.err = p.redact(fmt.Errorf("unexpected answer (HTTP %d): %w", status, err))
	}
	res.retry = status == http.StatusTooManyRequests || status >= http.StatusInternalServerError
	return res
}

// do makes a call that may safely be repeated (a GET, a DELETE by id),
// retrying as retryOrFail allows.
func (p *Publisher) do(ctx context.Context, op string, call func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		res := p.once(ctx, call)
		if res.err == nil {
			return nil
		}
		if err := p.retryOrFail(ctx, op, attempt, res); err != nil {
			return err
		}
	}
}

// retryOrFail returns nil after waiting when a failed attempt should be
// retried, or the error to give up with.
func (p *Publisher) retryOrFail(ctx context.Context, op string, attempt int, res result) error {
	if !res.retry {
		return p.fail(op, res)
	}
	if attempt >= p.maxRetries {
		return fmt.Errorf("cloudflare: %s: gave up after %d attempts: %w", op, attempt+1, p.explain(res))
	}
	d := min(time.Second<<attempt, maxBackoff)
	if res.hasWait {
		if res.wait > maxRetryAfter {
			return fmt.Errorf("cloudflare: %s: Cloudflare asks to wait %s before trying again: %w", op, res.wait, p.explain(res))
		}
		d = res.wait
	}
	p.log.Warn("cloudflare: retrying", "op", op, "attempt", attempt+2, "of", p.maxRetries+1, "after", d, "reason", res.err.Error())
	if err := p.sleep(ctx, d); err != nil {
		return fmt.Errorf("cloudflare: %s: %w (while waiting to retry after: %v)", op, err, res.err)
	}
	return nil
}

// fail is the error for a failed call that is not retried.
func (p *Publisher) fail(op string, res result) error {
	return fmt.Errorf("cloudflare: %s: %w", op, p.explain(res))
}

// explain puts what the error means for the operator in front of it.
func (p *Publisher) explain(res result) error {
	ae := res.api
	if ae == nil {
		return res.err
	}
	var hint string
	switch {
	case ae.HasCode(9106):
		hint = "no API token was sent"
	case ae.HasCode(6003) || ae.HasCode(6111):
		hint = "the API token is malformed (check the token file for stray characters)"
	case ae.Status == http.StatusUnauthorized || ae.HasCode(1000) || ae.HasMessage("invalid access token") || ae.HasMessage("invalid api token"):
		hint = "the API token is invalid, expired or revoked"
	case ae.Status == http.StatusForbidden || ae.HasCode(10000) || ae.HasCode(9109):
		hint = "the API token lacks a permission for this zone (it needs Zone:Read and DNS:Edit)"
	case ae.Status == http.StatusTooManyRequests:
		hint = "rate limited by Cloudflare"
	case ae.Status >= http.StatusInternalServerError:
		hint = "Cloudflare failed"
	case ae.HasCode(1004):
		hint = "Cloudflare refused the record"
	default:
		return ae
	}
	return fmt.Errorf("%s: %w", hint, ae)
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date taken
// relative to the answer's own Date so that clock skew does not matter.
func retryAfter(h http.Header) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		// Capped only so that the Duration cannot overflow: anything
		// longer than maxRetryAfter is refused anyway.
		n = min(n, int64(24*time.Hour/time.Second))
		return time.Duration(n) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	now := time.Now()
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		now = d
	}
	return max(at.Sub(now), 0), true
}

// APIError is an error answer of the Cloudflare API. Its text carries the
// HTTP status and every Cloudflare error code and message.
type APIError struct {
	Status int
	Errors []ErrorDetail
}

// ErrorDetail is one of Cloudflare's {code, message} errors, with the
// error_chain some of them carry.
type ErrorDetail struct {
	Code    int
	Message string
	Chain   []ErrorDetail
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP %d", e.Status)
	if len(e.Errors) == 0 {
		if t := http.StatusText(e.Status); t != "" {
			b.WriteString(" " + t)
		}
		return b.String()
	}
	b.WriteString(": ")
	for i, d := range e.Errors {
		if i > 0 {
			b.WriteString("; ")
		}
		writeDetail(&b, d)
	}
	return b.String()
}

func writeDetail(b *strings.Builder, d ErrorDetail) {
	fmt.Fprintf(b, "%s (%d)", d.Message, d.Code)
	for _, c := range d.Chain {
		b.WriteString(": ")
		writeDetail(b, c)
	}
}

// HasCode reports whether code is among the errors, chains included.
func (e *APIError) HasCode(code int) bool {
	return e.find(func(d ErrorDetail) bool { return d.Code == code })
}

// HasMessage reports whether a message, chains included, contains s (case
// folded).
func (e *APIError) HasMessage(s string) bool {
	s = strings.ToLower(s)
	return e.find(func(d ErrorDetail) bool { return strings.Contains(strings.ToLower(d.Message), s) })
}

func (e *APIError) find(f func(ErrorDetail) bool) bool {
	var walk func([]ErrorDetail) bool
	walk = func(ds []ErrorDetail) bool {
		for _, d := range ds {
			if f(d) || walk(d.Chain) {
				return true
			}
		}
		return false
	}
	return walk(e.Errors)
}

// wireError is the API's error entry.
type wireError struct {
	Code       int         `json:"code"`
	Message    string      `json:"message"`
	ErrorChain []wireError `json:"error_chain"`
}

func (p *Publisher) parseAPIError(status int, body []byte) *APIError {
	ae := &APIError{Status: status}
	var env struct {
		Errors []wireError `json:"errors"`
	}
	if json.Unmarshal(body, &env) != nil {
		// Not the API's envelope: an edge error page, say. The status
		// says enough.
		return ae
	}
	var conv func([]wireError) []ErrorDetail
	conv = func(ws []wireError) []ErrorDetail {
		var out []ErrorDetail
		for _, w := range ws {
			// One line per error, whatever the server put in the message.
			msg := strings.Join(strings.Fields(p.redactString(w.Message)), " ")
			out = append(out, ErrorDetail{Code: w.Code, Message: msg, Chain: conv(w.ErrorChain)})
		}
		return out
	}
	ae.Errors = conv(env.Errors)
	return ae
}

// redactString removes the token from text that came from elsewhere (a
// server may echo what it was sent, upper- or lower-cased).
func (p *Publisher) redactString(s string) string {
	if p.token == "" || len(s) < len(p.token) {
		return s
	}
	// The token is ASCII (New checks), so ASCII case folding finds every
	// casing of it, and keeps byte offsets, so that they apply to s.
	folded, token := asciiLower(s), asciiLower(p.token)
	if !strings.Contains(folded, token) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(folded, token)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteString("[redacted]")
		s, folded = s[i+len(token):], folded[i+len(token):]
	}
}

// asciiLower lower-cases ASCII letters only, leaving every other byte, so
// that the result has the same length as s.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// redactedError is err with the token taken out of its text.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func (p *Publisher) redact(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if clean := p.redactString(msg); clean != msg {
		return &redactedError{msg: clean, err: errors.Unwrap(err)}
	}
	return err
}
