// Package dnstest runs small authoritative DNS server clusters for tests and
// demonstrations: one primary that takes RFC 2136 updates (TSIG-signed when
// keys are configured) and secondaries that copy it, on purpose late when a
// test says so. Zones can be signed with DNSSEC. Every server listens on
// 127.0.0.1, UDP and TCP on the same random port, so other processes
// (resolvers, command-line tools) can query them too.
//
// The cluster records what each server served and when (History), which is
// what a model of resolver caches needs, and every request it got
// (Queries).
//
// Not implemented: zone transfers, NOTIFY, wildcards, NSEC3, following a
// CNAME within the zone (the CNAME itself is answered).
package dnstest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Options configures a cluster.
type Options struct {
	// Origin is the zone apex, e.g. "example.test.".
	Origin string
	// Records are zone-file lines, names relative to Origin, default TTL
	// 3600. A SOA is made when none is given; an NS record
	// "ns1.<origin>" with address 127.0.0.1 when the apex has none.
	Records []string
	// Secondaries is the number of servers that copy the primary.
	Secondaries int
	// Signed signs the zone with DNSSEC: ECDSAP256SHA256, a KSK and a ZSK,
	// NSEC for denial. RRSIGs are served when the query has the DO bit.
	Signed bool
	// TSIG maps key names to base64 secrets. When not empty, updates must
	// be signed with one of them (any of hmac-sha1, -sha224, -sha256,
	// -sha384, -sha512, as the request says).
	TSIG map[string]string
	// UpdatePolicy, when set, decides whether the key (canonical name, ""
	// for an unsigned update) may change the RRset of rrtype at name
	// (dns.TypeANY for a whole name). A denied update is REFUSED, as BIND
	// does with update-policy. Nil allows every change.
	UpdatePolicy func(key, name string, rrtype uint16) bool
	// SOATTL is the SOA record's TTL; NegativeTTL its MINIMUM field, the
	// negative caching TTL (RFC 2308). Zero keeps the SOA given in Records,
	// else 3600 and 300.
	SOATTL, NegativeTTL uint32
	// Now is the clock for RRSIG validity, secondaries' lag and the
	// history; default time.Now. It must not go backwards.
	Now func() time.Time
	// Logger receives a debug line per request; default discards.
	Logger *slog.Logger
}

// QueryLog is one request a server answered.
type QueryLog struct {
	Time      time.Time
	Server    int    // index in Addrs
	Transport string // "udp" or "tcp"
	Opcode    int    // dns.OpcodeQuery, dns.OpcodeUpdate, …
	Name      string // question (zone, for an update)
	Type      uint16
	DO, RD    bool
	TSIGKey   string // key name when the request was signed
	Rcode     int    // of the response
	// Request is the message as received.
	Request *dns.Msg
}

// Served is one interval during which a server gave one answer for an
// owner name and type.
type Served struct {
	Server   int
	From, To time.Time // To is zero while the answer is still served
	// Serial is the zone serial at From: a later change elsewhere in the
	// zone does not start a new interval.
	Serial uint32
	RRs    []dns.RR // the RRset, when positive
	TTL    uint32
	// Negative is set for NXDOMAIN and NODATA; NegTTL is then how long a
	// resolver may cache that (RFC 2308).
	Negative bool
	NegTTL   uint32
}

// Cluster is a running primary and its secondaries.
type Cluster struct {
	origin  string
	now     func() time.Time
	log     *slog.Logger
	signer  *signer // nil for an unsigned zone
	tsig    tsigKeys
	policy  func(key, name string, rrtype uint16) bool
	servers []*server // fixed at Start

	// writeMu serializes changes of the primary's zone, so a change starts
	// from the latest version and appends the next one.
	writeMu sync.Mutex

	// mu guards versions, queries, closed and the follow state and
	// timelines of every server.
	mu       sync.Mutex
	versions []*version
	queries  []QueryLog
	closed   bool
}

// server is one name server of the cluster.
type server struct {
	index    int
	addr     string
	udp, tcp *dns.Server

	// Guarded by Cluster.mu.
	frozen   bool
	lag      time.Duration
	since    time.Time // last Thaw or SetLag: no copy arrives earlier
	timeline []segment
}

// segment says from when a server served a version.
type segment struct {
	from time.Time
	v    int // index in Cluster.versions; -1 once the server stopped
}

// Start starts the cluster and returns once every server answers.
func Start(opts Options) (*Cluster, error) {
	if opts.Origin == "" {
		return nil, errors.New("dnstest: no origin")
	}
	if opts.Secondaries < 0 {
		return nil, errors.New("dnstest: negative number of secondaries")
	}
	c := &Cluster{
		origin: dns.CanonicalName(opts.Origin),
		now:    opts.Now,
		log:    opts.Logger,
		tsig:   make(tsigKeys),
		policy: opts.UpdatePolicy,
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	for name, secret := range opts.TSIG {
		if _, err := base64.StdEncoding.DecodeString(secret); err != nil {
			return nil, fmt.Errorf("dnstest: TSIG key %s: secret is not base64", name)
		}
		c.tsig[dns.CanonicalName(name)] = secret
	}
	z, err := initialZone(c.origin, opts)
	if err != nil {
		return nil, err
	}
	if opts.Signed {
		if c.signer, err = newSigner(c.origin); err != nil {
			return nil, err
		}
	}
	now := c.now()
	v, err := buildVersion(z, z.soa().Serial, now, c.signer, nil)
	if err != nil {
		return nil, err
	}
	c.versions = []*version{v}

	for i := range 1 + opts.Secondaries {
		s := &server{index: i, since: now, timeline: []segment{{from: now, v: 0}}}
		c.servers = append(c.servers, s)
		if err := c.listen(s); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// initialZone builds the zone from the options, adding the SOA and NS
// records a loadable zone needs.
func initialZone(origin string, opts Options) (*Zone, error) {
	z := newZone(origin)
	rrs, err := parseRecords(origin, opts.Records)
	if err != nil {
		return nil, err
	}
	if err := z.Add(rrs...); err != nil {
		return nil, err
	}
	if _, ok := z.sets[rrKey{origin, dns.TypeSOA}]; !ok {
		soa := fmt.Sprintf("@ 3600 IN SOA ns1.%s hostmaster.%s 1 7200 3600 1209600 300", origin, origin)
		if err := z.AddString(soa); err != nil {
			return nil, err
		}
	}
	if _, ok := z.sets[rrKey{origin, dns.TypeNS}]; !ok {
		if err := z.AddString("@ NS ns1", "ns1 A 127.0.0.1"); err != nil {
			return nil, err
		}
	}
	soa := z.SOA()
	if opts.SOATTL != 0 {
		soa.Hdr.Ttl = opts.SOATTL
	}
	if opts.NegativeTTL != 0 {
		soa.Minttl = opts.NegativeTTL
	}
	z.add(soa)
	return z, nil
}

// listen starts s on UDP and TCP on one free loopback port.
func (c *Cluster) listen(s *server) error {
	pc, l, err := listenPair()
	if err != nil {
		return fmt.Errorf("dnstest: server %d: %w", s.index, err)
	}
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { c.serve(s, w, r) })
	udp := &dns.Server{PacketConn: pc, Handler: h, UDPSize: dns.DefaultMsgSize,
		MsgAcceptFunc: acceptMsg, TsigProvider: c.tsig}
	tcp := &dns.Server{Listener: l, Handler: h, MsgAcceptFunc: acceptMsg, TsigProvider: c.tsig}
	if err := activate(udp); err != nil {
		pc.Close()
		l.Close()
		return fmt.Errorf("dnstest: server %d: %w", s.index, err)
	}
	s.udp = udp
	if err := activate(tcp); err != nil {
		l.Close()
		return fmt.Errorf("dnstest: server %d: %w", s.index, err)
	}
	s.tcp = tcp
	return nil
}

// activate starts srv on its listener and returns once it serves.
func activate(srv *dns.Server) error {
	started := make(chan struct{})
	failed := make(chan error, 1)
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { failed <- srv.ActivateAndServe() }()
	select {
	case <-started:
		return nil
	case err := <-failed:
		return err
	}
}

// listenPair opens UDP and TCP on the same random loopback port, trying
// again when the TCP port happens to be taken.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("no free port for both UDP and TCP: %w", lastErr)
}

// acceptMsg is dns.DefaultMsgAcceptFunc that also lets UPDATE through,
// whose sections hold any number of records.
func acceptMsg(dh dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	if dh.Bits&qr != 0 {
		return dns.MsgIgnore
	}
	if opcode := int(dh.Bits>>11) & 0xF; opcode == dns.OpcodeUpdate {
		if dh.Qdcount != 1 {
			return dns.MsgReject
		}
		return dns.MsgAccept
	}
	return dns.DefaultMsgAcceptFunc(dh)
}

// Addrs returns "127.0.0.1:port" of every server, the primary first.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.servers))
	for i, s := range c.servers {
		out[i] = s.addr
	}
	return out
}

// Primary returns the primary's address.
func (c *Cluster) Primary() string { return c.servers[0].addr }

// Origin returns the zone apex.
func (c *Cluster) Origin() string { return c.origin }

// Close stops every server. History intervals end at the time of Close.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	now := c.now()
	for _, s := range c.servers {
		c.advance(s, now)
	}
	c.closed = true
	for _, s := range c.servers {
		s.timeline = append(s.timeline, segment{from: now, v: -1})
	}
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for _, s := range c.servers {
		for _, srv := range []*dns.Server{s.udp, s.tcp} {
			if srv == nil {
				continue
			}
			if err := srv.ShutdownContext(ctx); err != nil {
				errs = append(errs, fmt.Errorf("dnstest: stop server %d: %w", s.index, err))
			}
		}
	}
	return errors.Join(errs...)
}

// DS returns the DS record (SHA-256) of the KSK, a trust anchor for the
// zone; nil when the zone is not signed.
func (c *Cluster) DS() *dns.DS {
	if c.signer == nil {
		return nil
	}
	return c.signer.ksk.ToDS(dns.SHA256)
}

// DNSKEYs returns the zone's keys, KSK first; nil when it is not signed.
func (c *Cluster) DNSKEYs() []*dns.DNSKEY {
	if c.signer == nil {
		return nil
	}
	return []*dns.DNSKEY{dns.Copy(c.signer.ksk).(*dns.DNSKEY), dns.Copy(c.signer.zsk).(*dns.DNSKEY)}
}

// Serial returns the SOA serial server serves now.
func (c *Cluster) Serial(server int) uint32 {
	s := c.server(server)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current(s, c.now()).serial
}

// Queries returns every request answered so far, oldest first.
func (c *Cluster) Queries() []QueryLog {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.queries)
}

// Update changes the primary's zone: fn changes z, and unless it returns
// an error the result is served under the next serial, re-signed, even
// when fn changed nothing. Secondaries copy it as Freeze and SetLag say.
// Changes are serialized: fn must not call Update itself.
func (c *Cluster) Update(fn func(z *Zone) error) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	z := c.latest().data.clone()
	if err := fn(z); err != nil {
		return err
	}
	_, err := c.commit(z)
	return err
}

// latest returns the newest version, the one the primary serves.
func (c *Cluster) latest() *version {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.versions[len(c.versions)-1]
}

// commit serves z under the next serial: the old one plus one, or the
// serial z's SOA was given when that is later (RFC 1982). The caller holds
// writeMu.
func (c *Cluster) commit(z *Zone) (*version, error) {
	prev := c.latest()
	serial := prev.serial + 1
	if given := z.soa().Serial; int32(given-prev.serial) > 0 {
		serial = given
	}
	now := c.now()
	v, err := buildVersion(z, serial, now, c.signer, prev)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("dnstest: cluster closed")
	}
	c.versions = append(c.versions, v)
	c.servers[0].serve(now, len(c.versions)-1)
	return v, nil
}

func (c *Cluster) server(i int) *server {
	if i < 0 || i >= len(c.servers) {
		panic(fmt.Sprintf("dnstest: no server %d (have %d)", i, len(c.servers)))
	}
	return c.servers[i]
}
