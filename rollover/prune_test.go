package rollover

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/store"
)

// servedAt returns the TLSA records every server serves at owner, as
// "U S M data" strings.
func (w *world) servedAt(owner string) []string {
	w.t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(owner, dns.TypeTLSA)
	r, err := dns.Exchange(m, w.dns.Primary())
	if err != nil {
		w.t.Fatal(err)
	}
	var out []string
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TLSA); ok {
			out = append(out, strings.Join(strings.Fields(strings.TrimPrefix(t.String(), t.Hdr.String())), " "))
		}
	}
	slices.Sort(out)
	return out
}

// Stale records go only through prune, after the probes: records of keys
// nobody serves are removed and confirmed gone; a record that matches what
// an endpoint serves stays, and so does everything at a name whose endpoint
// cannot be reached, each named with why.
func TestPruneRemovesOnlyWhatNoEndpointServes(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	w.mustRenew(w.engine(nil), RenewOptions{}, "issued")
	st := w.state()
	live, _ := w.store.Live("mail")
	leaf, _ := live.Leaf()
	certDigest := sha256.Sum256(leaf.Raw)
	unknown1, unknown2 := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	former := "_9999._tcp.mail.example.test."
	for _, rr := range []string{
		w.owner() + " 1 IN TLSA 3 1 1 " + unknown1,
		w.owner() + " 1 IN TLSA 3 1 1 " + unknown2,
		// The served certificate itself, by another parameter set: it
		// matches what the endpoint serves.
		w.owner() + " 1 IN TLSA 3 0 1 " + hex.EncodeToString(certDigest[:]),
		former + " 1 IN TLSA 3 1 1 " + st.Current,
	} {
		if err := w.dns.Update(func(z *dnstest.Zone) error { return z.AddString(rr) }); err != nil {
			t.Fatal(err)
		}
	}
	// The certificate once had the former name.
	st.Owners = append(st.Owners, former)
	if err := w.store.WriteJSON(store.JournalPath("mail"), st); err != nil {
		t.Fatal(err)
	}
	before := w.servedAt(w.owner())

	e := w.engineWait(nil, 2*time.Second)
	ss, err := e.Status(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ss[0].TLSA[0].Stale); n != 3 {
		t.Errorf("status lists %d stale records at %s, want 3: %+v", n, w.owner(), ss[0].TLSA[0].Stale)
	}
	if len(ss[0].Former) != 1 || ss[0].Former[0].Owner != former || len(ss[0].Former[0].Stale) != 1 {
		t.Errorf("former owners %+v", ss[0].Former)
	}

	ctx := context.Background()
	out, err := e.Prune(ctx, nil, PruneOptions{DryRun: true})
	if err != nil || out[0].Action != "would prune" {
		t.Fatalf("dry run: %+v %v", out, err)
	}
	if got := w.servedAt(w.owner()); !slices.Equal(got, before) {
		t.Fatalf("a dry run changed the zone: %v", got)
	}
	w.rep.reset()
	out, err = e.Prune(ctx, nil, PruneOptions{})
	if err != nil || out[0].Err != nil || out[0].Action != "pruned" {
		t.Fatalf("prune: %+v %v", out, err)
	}
	lines, _ := w.rep.reset()
	text := strings.Join(lines, "\n")
	for _, want := range []string{
		"matches the key served at smtp://mail.example.test:" + w.port,
		"cannot be checked: tls://mail.example.test:9999",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("prune did not say %q:\n%s", want, text)
		}
	}
	got := w.servedAt(w.owner())
	want := []string{"3 0 1 " + hex.EncodeToString(certDigest[:]), "3 1 1 " + st.Current}
	if !slices.Equal(got, want) {
		t.Errorf("published at %s: %v, want %v", w.owner(), got, want)
	}
	if got := w.servedAt(former); len(got) != 1 {
		t.Errorf("the record at the unreachable former name was removed: %v", got)
	}
	if st := w.state(); st.Txn != nil || !slices.Contains(st.Owners, former) {
		t.Errorf("after prune: txn %+v, owners %v", st.Txn, st.Owners)
	}
	// Nothing more to remove; the service never lost its record.
	out, _ = e.Prune(ctx, nil, PruneOptions{})
	if out[0].Action != "nothing" {
		t.Errorf("second prune: %+v", out[0])
	}
	w.mustRenew(w.engine(nil), RenewOptions{}, "nothing")
}
