package services

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Endpoint is a service to probe, such as smtp://mail.example.org:25.
type Endpoint struct {
	// Scheme is one of smtp, submission, smtps, imap, imaps, pop3, pop3s,
	// tls and https.
	Scheme string
	// Host is the name the service is known by, lower case, without a
	// trailing dot: it is sent as SNI (unless it is an IP address) and is
	// the identity the caller checks the chain for.
	Host string
	// Port is the TCP port, always set (the scheme's default when the URL
	// has none).
	Port string
	// Connect, when set, is the host or IP address dialled instead of Host
	// (from "?connect="), for tests and split-horizon setups. IPv6 addresses
	// are kept without brackets.
	Connect string
}

// protocol is how a scheme gets to TLS.
type protocol int

const (
	implicitTLS protocol = iota
	smtpSTARTTLS
	imapSTARTTLS
	pop3STLS
)

// lookupScheme returns a scheme's default port and its way to TLS.
func lookupScheme(scheme string) (port string, p protocol, ok bool) {
	switch scheme {
	case "smtp":
		return "25", smtpSTARTTLS, true
	case "submission":
		return "587", smtpSTARTTLS, true
	case "smtps":
		return "465", implicitTLS, true
	case "imap":
		return "143", imapSTARTTLS, true
	case "imaps":
		return "993", implicitTLS, true
	case "pop3":
		return "110", pop3STLS, true
	case "pop3s":
		return "995", implicitTLS, true
	case "tls", "https":
		return "443", implicitTLS, true
	}
	return "", 0, false
}

const schemeList = "smtp, submission, smtps, imap, imaps, pop3, pop3s, tls, https"

// ParseEndpoint reads "smtp://mail.example.org:25", "imaps://mail.example.org",
// "tls://host:443"… A missing port is the scheme's default: smtp 25,
// submission 587, smtps 465, imap 143, imaps 993, pop3 110, pop3s 995, tls
// and https 443. An optional "?connect=127.0.0.1" (or "[::1]", or a host
// name) is dialled instead of resolving Host, which still gives the SNI and
// the identity.
func ParseEndpoint(raw string) (Endpoint, error) {
	fail := func(format string, args ...any) (Endpoint, error) {
		return Endpoint{}, fmt.Errorf("endpoint %q: %s", raw, fmt.Sprintf(format, args...))
	}
	if !strings.Contains(raw, "://") {
		return fail("want SCHEME://HOST[:PORT], e.g. smtp://mail.example.org:25")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL, which fail already quotes.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fail("%v", err)
	}
	scheme := strings.ToLower(u.Scheme)
	defPort, _, ok := lookupScheme(scheme)
	if !ok {
		return fail("unknown scheme %q (want one of %s)", u.Scheme, schemeList)
	}
	switch {
	case u.User != nil:
		return fail("user information is not allowed")
	case u.Path != "" && u.Path != "/":
		return fail("a path is not allowed")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return fail("a fragment is not allowed")
	}
	host, err := normalizeHost(u.Hostname())
	if err != nil {
		return fail("host: %v", err)
	}
	port := u.Port()
	if port == "" {
		port = defPort
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fail("port %q is not a number from 1 to 65535", port)
	}
	e := Endpoint{Scheme: scheme, Host: host, Port: strconv.Itoa(n)} // "0025" → "25"

	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fail("query: %v", err)
	}
	for key, vals := range q {
		if key != "connect" {
			return fail("unknown parameter %q (only connect= is known)", key)
		}
		if len(vals) != 1 {
			return fail("connect= given %d times", len(vals))
		}
		c := vals[0]
		if strings.HasPrefix(c, "[") && strings.HasSuffix(c, "]") {
			c = c[1 : len(c)-1]
			if ip := net.ParseIP(c); ip == nil || ip.To4() != nil {
				return fail("connect=%s: brackets are for IPv6 addresses", vals[0])
			}
		} else if strings.Contains(c, ":") && net.ParseIP(c) == nil {
			return fail("connect=%s: give an address without a port (the port is the endpoint's)", vals[0])
		}
		if e.Connect, err = normalizeHost(c); err != nil {
			return fail("connect=: %v", err)
		}
	}
	return e, nil
}

// normalizeHost checks that h is an IP address or a plausible DNS name and
// returns it in canonical form: lower case, no trailing dot, IPv6 without
// brackets or zone.
func normalizeHost(h string) (string, error) {
	if h == "" {
		return "", errors.New("missing")
	}
	if ip := net.ParseIP(h); ip != nil {
		return ip.String(), nil
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if len(h) == 0 || len(h) > 253 {
		return "", fmt.Errorf("%q is not a host name", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("%q is not a host name", h)
		}
		for _, r := range label {
			if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-' || r == '_') {
				return "", fmt.Errorf("%q is not a host name", h)
			}
		}
	}
	return h, nil
}

// String returns the endpoint in the form ParseEndpoint reads, port always
// included: "smtp://mail.example.org:25", "tls://h.example:443?connect=::1"
// is written "tls://h.example:443?connect=[::1]".
func (e Endpoint) String() string {
	s := e.Scheme + "://" + net.JoinHostPort(e.Host, e.Port)
	if e.Connect != "" {
		c := e.Connect
		if strings.Contains(c, ":") {
			c = "[" + c + "]"
		}
		s += "?connect=" + c
	}
	return s
}

// DialAddr is the address a probe dials: Connect (or Host) and Port.
func (e Endpoint) DialAddr() string {
	h := e.Host
	if e.Connect != "" {
		h = e.Connect
	}
	return net.JoinHostPort(h, e.Port)
}

// StartTLS reports whether the scheme upgrades a plaintext connection
// (smtp, submission, imap, pop3) rather than starting with TLS.
func (e Endpoint) StartTLS() bool {
	_, p, _ := lookupScheme(e.Scheme)
	return p != implicitTLS
}
