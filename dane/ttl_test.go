package dane_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/dane"
)

// fakeAuth is an authoritative server for one unsigned zone, answering
// through Querier.Exchange with whatever TTLs a test sets, however absurd.
type fakeAuth struct {
	zone           string
	soaTTL, minTTL uint32
	// nsecTTL, when set, adds an NSEC record with this TTL to denials.
	nsecTTL uint32
	rrsets  map[string][]dns.RR // by lower-case owner
}

func (f *fakeAuth) exchange(_ context.Context, q *dns.Msg, _, _ string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	name, qtype := strings.ToLower(q.Question[0].Name), q.Question[0].Qtype
	soa := &dns.SOA{
		Hdr: dns.RR_Header{Name: f.zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: f.soaTTL},
		Ns:  "ns." + f.zone, Mbox: "hostmaster." + f.zone, Serial: 7,
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: f.minTTL,
	}
	if !dns.IsSubDomain(f.zone, name) {
		m.Rcode = dns.RcodeRefused
		m.Authoritative = false
		return m, nil
	}
	if qtype == dns.TypeSOA && name == f.zone {
		m.Answer = []dns.RR{soa}
		return m, nil
	}
	var rrs []dns.RR
	for _, rr := range f.rrsets[name] {
		if rr.Header().Rrtype == qtype {
			rrs = append(rrs, rr)
		}
	}
	if len(rrs) > 0 {
		m.Answer = rrs
		return m, nil
	}
	if len(f.rrsets[name]) == 0 && name != f.zone {
		m.Rcode = dns.RcodeNameError
	}
	m.Ns = []dns.RR{soa}
	if f.nsecTTL != 0 {
		m.Ns = append(m.Ns, &dns.NSEC{
			Hdr:        dns.RR_Header{Name: f.zone, Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: f.nsecTTL},
			NextDomain: "zzz." + f.zone, TypeBitMap: []uint16{dns.TypeSOA, dns.TypeNS, dns.TypeNSEC},
		})
	}
	return m, nil
}

func (f *fakeAuth) confirmer() *dane.Confirmer {
	return &dane.Confirmer{Nameservers: []string{"192.0.2.1:53"}, Querier: &dane.Querier{Exchange: f.exchange}}
}

func tlsaTTL(t *testing.T, owner string, ttl uint32, last string) dns.RR {
	t.Helper()
	rr := tlsa(t, owner+" 60 IN TLSA 3 1 1 00000000000000000000000000000000000000000000000000000000000000"+last)
	rr.Hdr.Ttl = ttl
	return rr
}

func TestAnswerTTLsAreCapped(t *testing.T) {
	const (
		capped = "capped.example.test."
		top    = "top.example.test."
		allOne = "allone.example.test."
		absent = "absent.example.test."
	)
	f := &fakeAuth{
		zone:   zone,
		soaTTL: 2147483647, minTTL: 2147483647,
		rrsets: map[string][]dns.RR{
			capped: {tlsaTTL(t, capped, 300, "01"), tlsaTTL(t, capped, 2147483647, "02")},
			top:    {tlsaTTL(t, top, 2147483648, "01")},
			allOne: {tlsaTTL(t, allOne, 4294967295, "01")},
		},
	}
	wants := []dane.Want{
		{Owner: capped, Type: dns.TypeTLSA}, {Owner: top, Type: dns.TypeTLSA},
		{Owner: allOne, Type: dns.TypeTLSA}, {Owner: absent, Type: dns.TypeTLSA},
	}
	rep, err := f.confirmer().Check(context.Background(), wants)
	if err != nil {
		t.Fatal(err)
	}
	z := rep.Zones[0]
	for owner, want := range map[string]uint32{capped: dane.MaxCacheTTL, top: 0, allOne: 0, absent: 0} {
		if got := z.Owners[owner].TTL; got != want {
			t.Errorf("TTL at %s = %d, want %d", owner, got, want)
		}
	}
	if !z.Owners[absent].Absent || z.NegTTL != dane.MaxNegativeTTL {
		t.Errorf("huge SOA TTL and MINIMUM: NegTTL = %d, want %d", z.NegTTL, dane.MaxNegativeTTL)
	}
	if got := dane.CachedTTL(rep, true); got != dane.MaxCacheTTL {
		t.Errorf("CachedTTL = %d", got)
	}

	hold := dane.HoldFor(2.15, 4294967295, rep)
	if hold <= 0 || hold > dane.MaxHold(2.15) {
		t.Errorf("HoldFor(2.15, 2^32-1, report) = %v, want in (0, %v]", hold, dane.MaxHold(2.15))
	}
	if got := dane.HoldFor(100, dane.CachedTTL(rep, true), rep); got != 100*time.Duration(dane.MaxCacheTTL)*time.Second {
		t.Errorf("HoldFor(100, capped TTLs) = %v", got)
	}
}

func TestNegativeTTLs(t *testing.T) {
	const absent = "absent.example.test."
	for _, tc := range []struct {
		name                    string
		soaTTL, minTTL, nsecTTL uint32
		want                    uint32
	}{
		{"RFC 2308: the smaller of SOA TTL and MINIMUM", 3600, 300, 0, 300},
		{"MINIMUM with the top bit set reads as 0", 3600, 4294967295, 0, 0},
		{"SOA TTL with the top bit set reads as 0", 2147483648, 300, 0, 0},
		{"huge SOA values: the negative cap", 4000000, 4000000, 0, dane.MaxNegativeTTL},
		{"huge NSEC TTL: the positive cap", 300, 300, 2147483647, dane.MaxCacheTTL},
		{"NSEC TTL with the top bit set reads as 0", 300, 300, 4294967295, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeAuth{zone: zone, soaTTL: tc.soaTTL, minTTL: tc.minTTL, nsecTTL: tc.nsecTTL}
			rep, err := f.confirmer().Check(context.Background(), []dane.Want{{Owner: absent, Type: dns.TypeTLSA}})
			if err != nil {
				t.Fatal(err)
			}
			if got := rep.Zones[0].NegTTL; got != tc.want {
				t.Errorf("NegTTL = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestCacheTTL(t *testing.T) {
	for _, tc := range []struct{ in, pos, neg uint32 }{
		{0, 0, 0},
		{300, 300, 300},
		{dane.MaxNegativeTTL + 1, dane.MaxNegativeTTL + 1, dane.MaxNegativeTTL},
		{dane.MaxCacheTTL + 1, dane.MaxCacheTTL, dane.MaxNegativeTTL},
		{2147483647, dane.MaxCacheTTL, dane.MaxNegativeTTL},
		{2147483648, 0, 0},
		{4294967295, 0, 0},
	} {
		if got := dane.CacheTTL(tc.in); got != tc.pos {
			t.Errorf("CacheTTL(%d) = %d, want %d", tc.in, got, tc.pos)
		}
		if got := dane.NegativeCacheTTL(tc.in); got != tc.neg {
			t.Errorf("NegativeCacheTTL(%d) = %d, want %d", tc.in, got, tc.neg)
		}
	}
}

func TestHoldForSaturates(t *testing.T) {
	week := time.Duration(dane.MaxCacheTTL) * time.Second
	hugeTTL := &dane.Report{Zones: []*dane.ZoneReport{{Owners: map[string]dane.OwnerState{owner: {TTL: 2147483647}}}}}
	for _, tc := range []struct {
		name   string
		factor float64
		before uint32
		after  *dane.Report
		want   time.Duration
	}{
		{"plain", 2, 300, nil, 600 * time.Second},
		{"before TTL capped", 2, 2147483647, nil, 2 * week},
		{"before TTL with the top bit", 2.15, 4294967295, nil, 0},
		{"a hand-made report is capped too", 100, 0, hugeTTL, 100 * week},
		{"factor 100 on a capped TTL", 100, dane.MaxCacheTTL, nil, 100 * week},
		{"overflowing factor saturates", 1e12, dane.MaxCacheTTL, nil, math.MaxInt64},
		{"infinite factor saturates", math.Inf(1), 1, nil, math.MaxInt64},
		{"infinite factor, no TTL", math.Inf(1), 0, nil, 0},
		{"negative factor", -2, 300, nil, 0},
		{"NaN factor holds longest", math.NaN(), 300, nil, math.MaxInt64},
	} {
		if got := dane.HoldFor(tc.factor, tc.before, tc.after); got != tc.want {
			t.Errorf("%s: HoldFor(%v, %d) = %v, want %v", tc.name, tc.factor, tc.before, got, tc.want)
		}
	}
	if got, want := dane.MaxHold(2), 2*week; got != want {
		t.Errorf("MaxHold(2) = %v, want %v", got, want)
	}
	if got := dane.MaxHold(1e12); got != math.MaxInt64 {
		t.Errorf("MaxHold(1e12) = %v, want saturated", got)
	}
}
