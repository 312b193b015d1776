package acme

import (
	"errors"
	"fmt"
	"strings"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
)

// Problem is an error the ACME server returned (RFC 8555 §6.7), in one
// line a person can act on.
type Problem struct {
	// Type is the short problem type, e.g. "rateLimited", "unauthorized".
	Type   string
	Detail string
	Status int
	// RetryAfter is set for rate limits when the server says when to retry.
	RetryAfter time.Duration
	// Sub are per-identifier problems, "name: detail".
	Sub []string

	err error
	// binding is set when the CA refused a registration that carried
	// External Account Binding: its problem is then about the binding.
	binding bool
}

func (p *Problem) Error() string {
	var b strings.Builder
	switch p.Type {
	case "rateLimited":
		b.WriteString("rate limited by the CA")
	case "":
		fmt.Fprintf(&b, "the CA answered %d", p.Status)
	default:
		b.WriteString("the CA refused (" + p.Type + ")")
	}
	if p.Detail != "" {
		b.WriteString(": " + p.Detail)
	}
	for _, s := range p.Sub {
		b.WriteString("; " + s)
	}
	if p.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", p.RetryAfter.Round(time.Second))
	}
	return b.String()
}

// Unwrap gives the lego error.
func (p *Problem) Unwrap() error { return p.err }

// Hint suggests what to do.
func (p *Problem) Hint() string {
	if p.binding && (p.Type == "unauthorized" || p.Type == "malformed") {
		return "the CA did not accept the External Account Binding: check eab_kid and the HMAC key (eab_hmac_key_file or eab_hmac_key_env) against what the CA shows; some CAs accept each pair for one account only"
	}
	switch p.Type {
	case "externalAccountRequired":
		return "the CA registers an account only with External Account Binding: set eab_kid and eab_hmac_key_file (or eab_hmac_key_env) in [acme] to the key ID and HMAC key the CA hands out"
	case "rateLimited":
		return "nothing was changed; run daneroll again later (Let's Encrypt's limits: https://letsencrypt.org/docs/rate-limits/)"
	case "unauthorized", "connection", "dns", "incorrectResponse", "tls", "caa":
		return "the CA could not validate the challenge; check that the names point at this host (http-01, tls-alpn-01) or that the publisher controls the zone (dns-01)"
	case "invalidProfile":
		return "check [acme] profile: the CA lists its profiles in its directory's meta"
	case "accountDoesNotExist":
		return "the CA no longer knows the stored account; remove the account directory under STATE/accounts to register anew"
	}
	return ""
}

// IsRateLimit reports whether err is an ACME rate limit.
func IsRateLimit(err error) bool {
	var p *Problem
	return errors.As(err, &p) && p.Type == "rateLimited"
}

// describe turns lego's problem errors into a *Problem, and leaves other
// errors alone.
func describe(err error) error {
	if err == nil {
		return nil
	}
	problems := findProblems(err)
	if len(problems) == 0 {
		return err
	}
	pd := problems[0]
	p := &Problem{
		Type:   strings.TrimPrefix(pd.Type, "urn:ietf:params:acme:error:"),
		Detail: pd.Detail,
		Status: pd.HTTPStatus,
		err:    err,
	}
	for _, s := range pd.SubProblems {
		p.Sub = append(p.Sub, s.Identifier.Value+": "+s.Detail)
	}
	// lego joins one error per name; report them all.
	for _, other := range problems[1:] {
		p.Sub = append(p.Sub, other.Detail)
	}
	var rl *legoacme.RateLimitedError
	if errors.As(err, &rl) {
		p.RetryAfter = rl.RetryAfter
	}
	return p
}

// findProblems collects the ACME problems in an error tree, in order,
// without repeating one.
func findProblems(err error) []*legoacme.ProblemDetails {
	var out []*legoacme.ProblemDetails
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if pd, ok := e.(*legoacme.ProblemDetails); ok {
			for _, seen := range out {
				if seen == pd {
					return
				}
			}
			out = append(out, pd)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, inner := range u.Unwrap() {
				walk(inner)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}
