package cftest

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Fault shapes the answer to matching requests instead of, or after, the
// normal handling.
type Fault struct {
	// Status is the HTTP status to answer with. Zero means 400 when Code is
	// set, else the normal answer is kept (useful with Delay).
	Status int
	// RetryAfter, in seconds, sets a Retry-After header; RetryAfterHeader
	// sets it verbatim (an HTTP date, garbage) and wins over RetryAfter.
	RetryAfter       int
	RetryAfterHeader string
	// Code and Message make the error envelope; without them the envelope
	// is Cloudflare's usual one for Status (971 for 429, an HTML page from
	// the edge for 502, 503 and 504).
	Code    int
	Message string
	// Body replaces the whole answer body.
	Body string
	// AfterApply handles the request first (a create is stored, a delete
	// done) and then answers with the fault: a gateway error after the
	// origin did the work.
	AfterApply bool
	// DropResponseAfterApply handles the request and then closes the
	// connection without answering: the client sees a broken connection or
	// its own timeout, not knowing that the change was made.
	DropResponseAfterApply bool
	// Delay holds the answer back (ends early when the client goes away).
	Delay time.Duration
	// Times is how many matching requests get the fault: 0 means one,
	// negative means every one.
	Times int
}

type injected struct {
	method, pattern string
	left            int // < 0: forever
	Fault
}

// Inject makes the next matching request(s) get the fault. method "" or "*"
// matches every method; pattern is a path.Match pattern over the API path,
// e.g. "/zones/*/dns_records" or "/zones". Faults are used in the order they
// were injected.
func (a *API) Inject(method, pattern string, f Fault) {
	left := f.Times
	if left == 0 {
		left = 1
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.faults = append(a.faults, &injected{method: method, pattern: pattern, left: left, Fault: f})
}

// ClearFaults removes every pending fault.
func (a *API) ClearFaults() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.faults = nil
}

// takeFault returns the fault for this request, if any, and counts it; a.mu
// is held.
func (a *API) takeFault(method, apiPath string) *Fault {
	for i, f := range a.faults {
		if !matches(f.method, f.pattern, method, apiPath) {
			continue
		}
		if f.left > 0 {
			f.left--
			if f.left == 0 {
				a.faults = append(a.faults[:i:i], a.faults[i+1:]...)
			}
		}
		cp := f.Fault
		return &cp
	}
	return nil
}

// edgeErrorPage is the kind of body Cloudflare's edge sends for 502, 503 and
// 504: HTML, not the API envelope.
const edgeErrorPage = `<html>
<head><title>%d %s</title></head>
<body>
<center><h1>%d %s</h1></center>
<hr><center>cloudflare</center>
</body>
</html>
`

func (f *Fault) answer() answer {
	status := f.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	h := http.Header{}
	if f.RetryAfterHeader != "" {
		h.Set("Retry-After", f.RetryAfterHeader)
	} else if f.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(f.RetryAfter))
	}
	var ans answer
	switch {
	case f.Body != "":
		ans = answer{status: status, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(f.Body)}
	case f.Code != 0:
		msg := f.Message
		if msg == "" {
			msg = knownMessage(f.Code)
		}
		ans = fail(status, f.Code, msg).answer()
	case status == http.StatusTooManyRequests:
		ans = fail(status, CodeRateLimited, "Please wait and consider throttling your request speed").answer()
	case status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout:
		text := http.StatusText(status)
		ans = answer{status: status, header: http.Header{"Content-Type": {"text/html"}},
			body: fmt.Appendf(nil, edgeErrorPage, status, text, status, text)}
	default:
		ans = fail(status, 10000+status%1000, http.StatusText(status)).answer()
	}
	ans.status = status
	for k, v := range h {
		ans.header[k] = v
	}
	return ans
}

// knownMessage is Cloudflare's message for the codes a test is likely to
// inject.
func knownMessage(code int) string {
	switch code {
	case CodeRateLimited:
		return "Please wait and consider throttling your request speed"
	case CodeValidation:
		return "DNS Validation Error"
	case CodeInvalidToken:
		return "Invalid access token"
	case CodeAuthentication:
		return "Authentication error"
	case CodeRecordNotFound:
		return "Record does not exist."
	case CodeRecordExists:
		return "Record already exists."
	case CodeIdenticalRecord:
		return identicalRecordMessage
	}
	return "Error"
}
