package services

import (
	"strings"
	"testing"
)

func TestParseEndpoint(t *testing.T) {
	good := []struct {
		in   string
		want Endpoint
	}{
		{"smtp://mail.example.org", Endpoint{"smtp", "mail.example.org", "25", ""}},
		{"submission://mail.example.org", Endpoint{"submission", "mail.example.org", "587", ""}},
		{"smtps://mail.example.org", Endpoint{"smtps", "mail.example.org", "465", ""}},
		{"imap://mail.example.org", Endpoint{"imap", "mail.example.org", "143", ""}},
		{"imaps://mail.example.org", Endpoint{"imaps", "mail.example.org", "993", ""}},
		{"pop3://mail.example.org", Endpoint{"pop3", "mail.example.org", "110", ""}},
		{"pop3s://mail.example.org", Endpoint{"pop3s", "mail.example.org", "995", ""}},
		{"tls://host.example.org", Endpoint{"tls", "host.example.org", "443", ""}},
		{"https://www.example.org/", Endpoint{"https", "www.example.org", "443", ""}},
		{"smtp://mail.example.org:25", Endpoint{"smtp", "mail.example.org", "25", ""}},
		{"SMTP://Mail.Example.ORG.:0025", Endpoint{"smtp", "mail.example.org", "25", ""}},
		{"tls://h.example:8443?connect=[::1]", Endpoint{"tls", "h.example", "8443", "::1"}},
		{"smtp://mx.example:2525?connect=127.0.0.1", Endpoint{"smtp", "mx.example", "2525", "127.0.0.1"}},
		{"smtp://mx.example?connect=inside.example.", Endpoint{"smtp", "mx.example", "25", "inside.example"}},
		{"tls://192.0.2.1:443", Endpoint{"tls", "192.0.2.1", "443", ""}},
		{"tls://[2001:db8::1]", Endpoint{"tls", "2001:db8::1", "443", ""}},
		{"smtp://_dmarc-test.example", Endpoint{"smtp", "_dmarc-test.example", "25", ""}},
	}
	for _, tt := range good {
		got, err := ParseEndpoint(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseEndpoint(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	bad := []struct{ in, want string }{
		{"mail.example.org", "want SCHEME://HOST[:PORT]"},
		{"mail.example.org:25", "want SCHEME://HOST[:PORT]"},
		{"ftp://x.example", `unknown scheme "ftp"`},
		{"smtp://", "host: missing"},
		{"smtp://:25", "host: missing"},
		{"smtp://x.example:0", `port "0"`},
		{"smtp://x.example:70000", `port "70000"`},
		{"smtp://x.example:smtp", "invalid port"},
		{"smtp://user@x.example", "user information"},
		{"smtp://x.example/path", "path"},
		{"smtp://x.example#frag", "fragment"},
		{"smtp://x.example?conect=127.0.0.1", `unknown parameter "conect"`},
		{"smtp://x.example?connect=127.0.0.1&connect=::1", "connect= given 2 times"},
		{"smtp://x.example?connect=127.0.0.1:2525", "without a port"},
		{"smtp://x.example?connect=[127.0.0.1]", "brackets are for IPv6"},
		{"smtp://x.example?connect=", "connect=: missing"},
		{"smtp://bad_host!.example", "host"},
		{"smtp://a..example", "not a host name"},
	}
	for _, tt := range bad {
		_, err := ParseEndpoint(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseEndpoint(%q) error = %v, want %q", tt.in, err, tt.want)
			continue
		}
		if !strings.HasPrefix(err.Error(), "endpoint "+`"`) {
			t.Errorf("error %q does not name the endpoint", err)
		}
	}
}

func TestEndpointStringRoundTrips(t *testing.T) {
	for _, in := range []string{
		"smtp://mail.example.org:25",
		"imaps://mail.example.org:993",
		"tls://h.example:8443?connect=[::1]",
		"tls://[2001:db8::1]:443",
		"submission://mail.example.org:587?connect=192.0.2.7",
	} {
		e, err := ParseEndpoint(in)
		if err != nil {
			t.Fatal(err)
		}
		if e.String() != in {
			t.Errorf("String() = %q, want %q", e.String(), in)
		}
		again, err := ParseEndpoint(e.String())
		if err != nil || again != e {
			t.Errorf("ParseEndpoint(String()) = %+v, %v; want %+v", again, err, e)
		}
	}
}

func TestEndpointDialAddrAndStartTLS(t *testing.T) {
	for _, tt := range []struct {
		in, addr string
		starttls bool
	}{
		{"smtp://mail.example.org", "mail.example.org:25", true},
		{"submission://mail.example.org", "mail.example.org:587", true},
		{"imap://mail.example.org?connect=::1", "[::1]:143", true},
		{"pop3://mail.example.org?connect=10.0.0.1", "10.0.0.1:110", true},
		{"smtps://mail.example.org", "mail.example.org:465", false},
		{"https://[2001:db8::1]", "[2001:db8::1]:443", false},
	} {
		e, err := ParseEndpoint(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if e.DialAddr() != tt.addr || e.StartTLS() != tt.starttls {
			t.Errorf("%s: DialAddr %q StartTLS %v, want %q %v", tt.in, e.DialAddr(), e.StartTLS(), tt.addr, tt.starttls)
		}
	}
}
