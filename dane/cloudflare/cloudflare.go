// Package cloudflare publishes DANE TLSA records and ACME dns-01 TXT records
// in zones hosted by Cloudflare, through its v4 API (cloudflare-go).
//
// The zone of a name is found by asking for each of its parent names in turn
// (GET /zones?name=…), longest first, so a delegated sub-zone wins over its
// parent. A record is added only after listing the name shows it missing,
// and "already exists" answers (81057, 81058) count as success, so a create
// retried after a lost answer never makes a duplicate. Only records whose
// data equals the given record are deleted, one by one, by id; nothing is
// ever deleted by name or replaced in place.
//
// cloudflare-go's own retries are turned off: they ignore Retry-After, sleep
// on the wall clock and resend a POST after a transport error without
// looking whether the first one was applied. This package retries 429 and
// 5xx answers and transport errors itself, waiting as long as Retry-After
// says (else exponentially longer), through the injected Sleep.
//
// The API token is sent only in the Authorization header, over https (plain
// http only to a loopback address); it is never logged and never part of an
// error, even when the server echoes it, in any case. Every answer is read
// up to a bound (maxAnswerBody), so a broken or hostile server cannot make
// daneroll grow without limit.
package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	cf "github.com/cloudflare/cloudflare-go"
	"github.com/miekg/dns"
)

// DefaultBaseURL is Cloudflare's API.
const DefaultBaseURL = "https://api.cloudflare.com/client/v4"

const (
	defaultMaxRetries = 6
	defaultTimeout    = 30 * time.Second
	// maxBackoff caps the exponential wait between attempts.
	maxBackoff = 30 * time.Second
	// maxRetryAfter is the longest Retry-After this package waits for;
	// beyond it, failing with a clear message beats blocking a renewal.
	maxRetryAfter = 5 * time.Minute
	// recordsPerPage is what a list asks for; the API's default is 100.
	recordsPerPage = 100
	// maxPages bounds a listing against a server that never ends.
	maxPages = 10000
)

// Config configures a Publisher.
type Config struct {
	// Token is the API token (read by the caller from a file or the
	// environment). It needs Zone:Read and DNS:Edit on the zones used. It is
	// never logged and never appears in errors.
	Token string
	// BaseURL of the API; DefaultBaseURL when empty.
	BaseURL string
	// HTTPClient makes the requests; a client with a 30 s timeout when nil.
	// It is not modified.
	HTTPClient *http.Client
	// Logger receives retries and changes; nothing is logged when nil.
	Logger *slog.Logger
	// Sleep waits between attempts and returns early with ctx's error; a
	// timer honouring ctx when nil.
	Sleep func(ctx context.Context, d time.Duration) error
	// MaxRetries is how many times a failed call is retried (429, 5xx,
	// transport errors); 6 when zero, none when negative.
	MaxRetries int
}

// Publisher is a dane.Publisher for Cloudflare-hosted zones. Its methods
// are safe for concurrent use.
type Publisher struct {
	api        *cf.API
	token      string
	baseURL    string
	log        *slog.Logger
	sleep      func(ctx context.Context, d time.Duration) error
	maxRetries int
	perPage    int

	mu sync.Mutex // guards zoneOf and zoneNamed
	// zoneOf caches the zone of each owner name looked up.
	zoneOf map[string]zoneRef
	// zoneNamed caches GET /zones?name= answers; a zero zoneRef means no
	// zone has that name.
	zoneNamed map[string]zoneRef
}

type zoneRef struct {
	name string // without the trailing dot, as Cloudflare shows it
	id   string
}

// New returns a Publisher. It makes no request.
func New(cfg Config) (*Publisher, error) {
	token := strings.TrimSpace(cfg.Token)
	if token == "" {
		return nil, errors.New("cloudflare: no API token")
	}
	for _, c := range token {
		if c < 0x21 || c > 0x7e {
			return nil, errors.New("cloudflare: the API token contains spaces or control characters: check the token file")
		}
	}
	base := strings.TrimRight(cfg.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("cloudflare: bad API URL %q", cfg.BaseURL)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("cloudflare: API URL %q is plain http, which would send the API token in clear: use https (http is allowed only to a loopback address)", cfg.BaseURL)
	}
	hc := &http.Client{Timeout: defaultTimeout}
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		hc = &c
	}
	base0 := hc.Transport
	if base0 == nil {
		base0 = http.DefaultTransport
	}
	hc.Transport = &probeTransport{base: base0}

	api, err := cf.NewWithAPIToken(token,
		cf.BaseURL(base),
		cf.HTTPClient(hc),
		cf.UserAgent("daneroll"),
		// Retries are done here, honouring Retry-After (see the package doc).
		cf.UsingRetryPolicy(0, 0, 0),
		// Cloudflare's 429 with Retry-After is the authority on pacing; a
		// client-side limiter on the wall clock would only slow tests.
		cf.UsingRateLimit(math.MaxFloat64),
	)
	if err != nil {
		return nil, fmt.Errorf("cloudflare: %w", err)
	}
	p := &Publisher{
		api:        api,
		token:      token,
		baseURL:    base,
		log:        cfg.Logger,
		sleep:      cfg.Sleep,
		maxRetries: cfg.MaxRetries,
		perPage:    recordsPerPage,
		zoneOf:     map[string]zoneRef{},
		zoneNamed:  map[string]zoneRef{},
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.sleep == nil {
		p.sleep = sleepContext
	}
	switch {
	case p.maxRetries == 0:
		p.maxRetries = defaultMaxRetries
	case p.maxRetries < 0:
		p.maxRetries = 0
	}
	return p, nil
}

// isLoopback reports whether host (a URL's host, without port or brackets)
// is this machine: localhost or a loopback address, where plain http
// exposes the token to nobody else (a test's fake API).
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// String names the publisher, with the API URL when it is not Cloudflare's.
func (p *Publisher) String() string {
	if p.baseURL == DefaultBaseURL {
		return "cloudflare"
	}
	return "cloudflare " + p.baseURL
}

// Records returns the TLSA or TXT records at owner as the API lists them.
// Cloudflare's automatic TTL (1) is reported as the 300 seconds it means.
func (p *Publisher) Records(ctx context.Context, owner string, rrtype uint16) ([]dns.RR, error) {
	if rrtype != dns.TypeTLSA && rrtype != dns.TypeTXT {
		return nil, fmt.Errorf("cloudflare: %s records are not supported (only TLSA and TXT)", dns.TypeToString[rrtype])
	}
	owner = strings.ToLower(dns.Fqdn(owner))
	z, err := p.zone(ctx, owner)
	if err != nil {
		return nil, err
	}
	recs, err := p.list(ctx, z, owner, rrtype)
	if err != nil {
		return nil, err
	}
	out := make([]dns.RR, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.rr)
	}
	return out, nil
}

// Add adds rr unless a record with the same data is there (whatever its
// TTL), in which case it changes nothing.
func (p *Publisher) Add(ctx context.Context, rr dns.RR) error {
	w, err := fromRR(rr)
	if err != nil {
		return err
	}
	z, err := p.zone(ctx, w.owner)
	if err != nil {
		return err
	}
	op := "create " + w.describe()
	params := w.createParams()
	for attempt := 0; ; attempt++ {
		// Listing first, on every attempt, is what keeps a create retried
		// after a lost answer from making a duplicate: the lost one may have
		// been applied.
		recs, err := p.list(ctx, z, w.owner, w.rrtype)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if r.key == w.key {
				if r.rr.Header().Ttl != rr.Header().Ttl {
					p.log.Info("cloudflare: record present with another TTL; left as is",
						"record", w.describe(), "ttl", r.rr.Header().Ttl, "wanted_ttl", rr.Header().Ttl)
				} else {
					p.log.Debug("cloudflare: record already present", "record", w.describe())
				}
				return nil
			}
		}
		res := p.once(ctx, func(ctx context.Context) error {
			_, err := p.api.CreateDNSRecord(ctx, cf.ZoneIdentifier(z.id), params)
			return err
		})
		switch {
		case res.err == nil:
			p.log.Info("cloudflare: added record", "record", w.describe(), "ttl", w.ttl, "zone", z.name)
			return nil
		case res.api != nil && (res.api.HasCode(codeRecordExists) || res.api.HasCode(codeIdenticalRecord)):
			p.log.Debug("cloudflare: record already exists", "record", w.describe(), "answer", res.api.Error())
			return nil
		}
		if err := p.retryOrFail(ctx, op, attempt, res); err != nil {
			return err
		}
	}
}

// Delete deletes, by id, every record at rr's owner whose type and data
// equal rr's. Other records at the name are never touched.
func (p *Publisher) Delete(ctx context.Context, rr dns.RR) error {
	w, err := fromRR(rr)
	if err != nil {
		return err
	}
	z, err := p.zone(ctx, w.owner)
	if err != nil {
		return err
	}
	recs, err := p.list(ctx, z, w.owner, w.rrtype)
	if err != nil {
		return err
	}
	deleted := 0
	for _, r := range recs {
		if r.key != w.key {
			continue
		}
		id := r.id
		err := p.do(ctx, fmt.Sprintf("delete %s (id %s)", w.describe(), id), func(ctx context.Context) error {
			return p.api.DeleteDNSRecord(ctx, cf.ZoneIdentifier(z.id), id)
		})
		var ae *APIError
		if errors.As(err, &ae) && ae.HasCode(codeRecordNotFound) {
			// Gone already: deleted by an attempt whose answer was lost,
			// or by someone else.
			err = nil
		}
		if err != nil {
			return err
		}
		deleted++
		p.log.Info("cloudflare: deleted record", "record", w.describe(), "id", id, "zone", z.name)
	}
	if deleted == 0 {
		p.log.Debug("cloudflare: no record to delete", "record", w.describe())
	}
	return nil
}

// zone finds the zone holding owner: the longest of its parent names that
// is a Cloudflare zone the token can see.
func (p *Publisher) zone(ctx context.Context, owner string) (zoneRef, error) {
	p.mu.Lock()
	z, ok := p.zoneOf[owner]
	p.mu.Unlock()
	if ok {
		return z, nil
	}
	for _, name := range zoneCandidates(owner) {
		z, err := p.zoneNamedAs(ctx, name)
		if err != nil {
			return zoneRef{}, err
		}
		if z.id != "" {
			p.mu.Lock()
			p.zoneOf[owner] = z
			p.mu.Unlock()
			return z, nil
		}
	}
	return zoneRef{}, fmt.Errorf("cloudflare: no Cloudflare zone contains %s: is the token scoped to it?", strings.TrimSuffix(owner, "."))
}

// zoneCandidates are the names that may be the zone of owner, longest
// first. Labels starting with "_" (_25._tcp, _acme-challenge) are not host
// names, so no zone can start with one.
func zoneCandidates(owner string) []string {
	labels := dns.SplitDomainName(owner)
	var out []string
	for i := range labels {
		if strings.HasPrefix(labels[i], "_") {
			continue
		}
		out = append(out, strings.Join(labels[i:], "."))
	}
	return out
}

func (p *Publisher) zoneNamedAs(ctx context.Context, name string) (zoneRef, error) {
	p.mu.Lock()
	z, ok := p.zoneNamed[name]
	p.mu.Unlock()
	if ok {
		return z, nil
	}
	var zones []cf.Zone
	err := p.do(ctx, "look up zone "+name, func(ctx context.Context) error {
		res, err := p.api.ListZonesContext(ctx, cf.WithZoneFilters(name, "", ""))
		zones = res.Result
		return err
	})
	if err != nil {
		return zoneRef{}, err
	}
	var found []cf.Zone
	for _, zz := range zones {
		if strings.EqualFold(strings.TrimSuffix(zz.Name, "."), name) {
			found = append(found, zz)
		}
	}
	switch len(found) {
	case 0:
	case 1:
		z = zoneRef{name: name, id: found[0].ID}
		if s := found[0].Status; s != "" && s != "active" {
			p.log.Warn("cloudflare: zone is not active; Cloudflare may not serve its records", "zone", name, "status", s)
		}
	default:
		return zoneRef{}, fmt.Errorf("cloudflare: %d zones are named %s (in different accounts): scope the token to one", len(found), name)
	}
	p.mu.Lock()
	p.zoneNamed[name] = z
	p.mu.Unlock()
	return z, nil
}

// list returns the records of one type at owner, every page of them.
func (p *Publisher) list(ctx context.Context, z zoneRef, owner string, rrtype uint16) ([]apiRecord, error) {
	typ := dns.TypeToString[rrtype]
	name := strings.TrimSuffix(owner, ".")
	op := fmt.Sprintf("list %s records at %s", typ, name)
	var out []apiRecord
	for page := 1; ; page++ {
		if page > maxPages {
			return nil, fmt.Errorf("cloudflare: %s: more than %d pages", op, maxPages)
		}
		var recs []cf.DNSRecord
		var info *cf.ResultInfo
		err := p.do(ctx, op, func(ctx context.Context) error {
			var err error
			recs, info, err = p.api.ListDNSRecords(ctx, cf.ZoneIdentifier(z.id), cf.ListDNSRecordsParams{
				Type: typ, Name: name,
				ResultInfo: cf.ResultInfo{Page: page, PerPage: p.perPage},
			})
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			// The API's name filter is exact; checking again costs
			// nothing and keeps another name's record from ever being
			// taken for one of ours.
			if !strings.EqualFold(strings.TrimSuffix(r.Name, "."), name) || !strings.EqualFold(r.Type, typ) {
				continue
			}
			ar, err := toAPIRecord(owner, rrtype, r)
			if err != nil {
				p.log.Warn("cloudflare: skipping a record that cannot be read", "name", name, "type", typ, "id", r.ID, "content", r.Content, "err", err)
				continue
			}
			out = append(out, ar)
		}
		if info == nil || page >= info.TotalPages || len(recs) == 0 {
			return out, nil
		}
	}
}
