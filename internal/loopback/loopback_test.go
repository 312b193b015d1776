package loopback

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/cftest"
	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/pebbletest"
)

var pebbleBin string

func TestMain(m *testing.M) {
	pebbletest.Main(m, testing.Short, &pebbleBin)
}

const digestA = "0000000000000000000000000000000000000000000000000000000000000001"

// A world without a CA: the zone, its resolver and the Cloudflare fake, as
// the dns_* scripts of cmd/daneroll get them.
func TestZoneWithoutCA(t *testing.T) {
	w := StartT(t, Options{Servers: 2, Hosts: []string{"mail", "www"}, Cloudflare: &CloudflareOptions{Token: "tok"}})
	env := w.Env()
	for _, k := range []string{"NS1", "NS2", "RESOLVER", "TSIG_SECRET", "TESTPID", "CF_API", "CF_TOKEN"} {
		if env[k] == "" {
			t.Errorf("Env lacks %s: %v", k, env)
		}
	}
	for _, k := range []string{"NS3", "DIRECTORY", "ROOTS", "PORT"} {
		if v, ok := env[k]; ok {
			t.Errorf("Env has %s=%q without its part", k, v)
		}
	}
	if env["CF_TOKEN"] != "tok" || env["NS1"] != w.DNS.Primary() || len(w.TSIGSecret) < 40 {
		t.Errorf("Env %v, secret %q", env, w.TSIGSecret)
	}
	for _, h := range []string{"mail", "www"} {
		m := new(dns.Msg)
		m.SetQuestion(h+"."+Zone, dns.TypeA)
		m.SetEdns0(1232, true)
		r, err := dns.Exchange(m, w.Resolver.Addr())
		if err != nil || len(r.Answer) == 0 || !r.AuthenticatedData {
			t.Errorf("%s A through the resolver: %v %v", h, r, err)
		}
	}

	owner := "_25._tcp.mail." + Zone
	if got, err := w.Published(owner); err != nil || got != nil {
		t.Fatalf("published before: %v %v", got, err)
	}
	w.DNS.Freeze(1)
	if err := w.DNS.Update(func(z *dnstest.Zone) error { return z.AddString("_25._tcp.mail 60 IN TLSA 3 1 1 " + digestA) }); err != nil {
		t.Fatal(err)
	}
	got, err := w.Published(owner)
	var d *DisagreeError
	if !errors.As(err, &d) || d.Server != 1 || d.Got != nil || !slices.Equal(got, []string{digestA}) {
		t.Fatalf("a frozen secondary: published %v, %v", got, err)
	}
	w.DNS.Thaw(1)
	if got, err := w.Published(owner); err != nil || !slices.Equal(got, []string{digestA}) {
		t.Fatalf("after the thaw: %v %v", got, err)
	}
	per, err := w.Served(owner)
	if err != nil || len(per) != 2 || len(per[1]) != 1 || per[1][0].Usage != 3 {
		t.Fatalf("served %v %v", per, err)
	}
	var j struct{}
	if ok, err := w.Journal("mail", &j); ok || err != nil {
		t.Errorf("journal before anything ran: %v %v", ok, err)
	}

	w.Close()
	w.Close() // again: nothing
	if _, err := dns.Exchange(new(dns.Msg).SetQuestion(owner, dns.TypeTLSA), env["NS1"]); err == nil {
		t.Error("the primary still answers after Close")
	}
}

// A configuration with two certificates, three services and both
// publishers, as a benchmark with many certificates would have it.
func TestConfiguration(t *testing.T) {
	if pebbleBin == "" {
		t.Skip("needs Pebble: not in -short mode")
	}
	w := StartT(t, Options{
		Pebble:     &pebbletest.Options{Binary: pebbleBin, AlwaysValid: true},
		Cloudflare: &CloudflareOptions{Mirror: true},
		Services: []ServiceOptions{
			{Name: "smtp", Cert: "mail"},
			{Name: "https", Cert: "www", Protocol: "tls"},
			{Name: "submission", Cert: "mail"},
		},
		Config: &ConfigOptions{
			TopLevel: "concurrency = 2",
			Certificates: []CertificateOptions{
				{Name: "mail", Policy: "reuse", TTL: 5, Extra: "keep_sets = 2\n"},
				{Name: "www", Domains: []string{"www.example.test", "example.test"}, TTL: 60, Publisher: PublisherCloudflare},
			},
		},
	})
	c := w.Config
	if c.StateDir != w.StateDir || c.ACME.Directory != w.Pebble.Directory || c.DNS.Resolver != w.Resolver.Addr() || c.Concurrency != 2 {
		t.Errorf("config: state %s, directory %s, resolver %s, concurrency %d", c.StateDir, c.ACME.Directory, c.DNS.Resolver, c.Concurrency)
	}
	if len(c.Certificates) != 2 {
		t.Fatalf("%d certificates", len(c.Certificates))
	}
	mail, www := c.Certificates[0], c.Certificates[1]
	smtp, https, sub := w.Service("smtp"), w.Service("https"), w.Service("submission")
	trim := func(s string) string { return strings.TrimSuffix(s, ".") }
	if mail.KeyPolicy != "reuse" || mail.TLSATTL != 5 || mail.KeepSets != 2 || mail.Publisher != PublisherRFC2136 ||
		!slices.Equal(mail.Domains, []string{"mail.example.test"}) || !slices.Equal(mail.Services, []string{"smtp", "submission"}) ||
		!slices.Equal(mail.TLSA, []string{trim(smtp.Owner()), trim(sub.Owner())}) {
		t.Errorf("mail: %+v", mail)
	}
	if www.KeyPolicy != "rollover" || www.TLSATTL != 60 || www.Publisher != PublisherCloudflare ||
		!slices.Equal(www.Services, []string{"https"}) || !slices.Equal(www.TLSA, []string{trim(https.Owner())}) {
		t.Errorf("www: %+v", www)
	}
	if p := c.DNS.Publishers[PublisherCloudflare]; p == nil || p.APIURL != w.Cloudflare.URL || len(p.Nameservers) != 3 {
		t.Errorf("cloudflare publisher %+v", p)
	}
	if p := c.DNS.Publishers[PublisherRFC2136]; p == nil || p.Server != w.DNS.Primary() || p.TSIGName != TSIGKey {
		t.Errorf("rfc2136 publisher %+v", p)
	} else if b, err := os.ReadFile(p.TSIGSecretFile); err != nil || strings.TrimSpace(string(b)) != w.TSIGSecret {
		t.Errorf("secret file: %v", err)
	}
	if s, ok := c.Services["https"]; !ok || !slices.Equal(s.Probe, []string{"tls://www.example.test:" + https.Port + "?connect=127.0.0.1"}) ||
		!slices.Equal(s.Reload, []string{"kill", "-HUP", w.Env()["TESTPID"]}) {
		t.Errorf("https service %+v", s)
	}
	if env := w.Env(); env["PORT"] != smtp.Port || env["DIRECTORY"] != w.Pebble.Directory || env["HTTPPORT"] == "0" {
		t.Errorf("Env %v", env)
	}

	// A change through the Cloudflare API reaches every server.
	if _, err := w.Cloudflare.AddRecord("example.test", cftest.Record{Type: "TLSA", Name: "_" + https.Port + "._tcp.www",
		Data: &cftest.TLSAData{Usage: 3, Selector: 1, MatchingType: 1, Certificate: digestA}, TTL: 60}); err != nil {
		t.Fatal(err)
	}
	if got, err := w.Published(https.Owner()); err != nil || !slices.Equal(got, []string{digestA}) {
		t.Errorf("mirrored record: %v %v", got, err)
	}
}

// Start says what is missing instead of starting half a world.
func TestStartErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no dir", Options{Pebble: &pebbletest.Options{Binary: "pebble"}}, "Options.Dir is required"},
		{"config without a CA", Options{Dir: t.TempDir(), Config: &ConfigOptions{}}, "needs Options.Pebble"},
		{"two services of a name", Options{Services: []ServiceOptions{{Cert: "a"}, {Cert: "b"}}}, `two services named "smtp"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Start(ctx, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start: %v, want %q", err, tc.want)
			}
			if w != nil {
				t.Errorf("a world on error")
			}
		})
	}
}
