package cftest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/dnstest"
)

// A zone seeded with two identical records (as migrated zones hold them):
// the API still refuses to make a third, lists both, deletes each by its
// id; the mirror serves the data once, until the last of them goes.
func TestAddIdenticalRecord(t *testing.T) {
	srv := NewServer(testToken, "example.test")
	defer srv.Close()
	c := dnstest.StartT(t, dnstest.Options{Origin: "example.test.", Secondaries: 1})
	m, err := srv.MirrorTo(c)
	if err != nil {
		t.Fatal(err)
	}
	owner := "_25._tcp.mail.example.test"
	rec := Record{Type: "TLSA", Name: owner, TTL: 300, Data: &TLSAData{Usage: 3, Selector: 1, MatchingType: 1, Certificate: cert}}
	first, err := srv.AddRecord("example.test", rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.AddRecord("example.test", rec); err == nil || !strings.Contains(err.Error(), fmt.Sprint(CodeIdenticalRecord)) {
		t.Errorf("AddRecord of an identical record: %v, want 81058", err)
	}
	// Upper-case hex is the same data.
	upper := rec
	upper.Data = &TLSAData{Usage: 3, Selector: 1, MatchingType: 1, Certificate: strings.ToUpper(cert)}
	second, err := srv.AddIdenticalRecord("example.test", upper)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == first.ID {
		t.Fatalf("both records have id %s", first.ID)
	}
	if _, err := srv.AddIdenticalRecord("nowhere.test", rec); err == nil {
		t.Error("AddIdenticalRecord into a zone the fake does not have succeeded")
	}

	// The API's behaviour is unchanged: a POST of the same data is refused.
	recs := "/zones/" + srv.ZoneID("example.test") + "/dns_records"
	r := call(t, srv, testToken, "POST", recs, fmt.Sprintf(
		`{"type":"TLSA","name":%q,"ttl":300,"data":{"usage":3,"selector":1,"matching_type":1,"certificate":%q}}`, owner, cert))
	if r.status != 400 || !strings.Contains(string(r.raw), `"code":81058`) {
		t.Errorf("POST of an identical record: %d %s", r.status, r.raw)
	}
	r = call(t, srv, testToken, "GET", recs+"?type=TLSA&name="+owner, "")
	if n := len(r.body["result"].([]any)); r.status != 200 || n != 2 {
		t.Fatalf("list: %d, %d records, want 2: %s", r.status, n, r.raw)
	}

	want := []string{owner + ". 300 IN TLSA 3 1 1 " + cert}
	check := func(when string, want []string) {
		t.Helper()
		for i, addr := range c.Addrs() {
			if got := texts(served(t, addr, owner, dns.TypeTLSA)); !slices.Equal(got, want) {
				t.Errorf("%s: server %d serves %q, want %q", when, i, got, want)
			}
		}
	}
	check("both records", want)
	if r := call(t, srv, testToken, "DELETE", recs+"/"+first.ID, ""); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	check("one of the two deleted", want)
	if r := call(t, srv, testToken, "DELETE", recs+"/"+second.ID, ""); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	check("both deleted", nil)
	if n := len(srv.Records("example.test")); n != 0 {
		t.Errorf("%d records left", n)
	}
	if err := m.Err(); err != nil {
		t.Error(err)
	}
}
