package cftest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	cf "github.com/cloudflare/cloudflare-go"
)

// testToken has the form of a real API token (40 characters).
const testToken = "cftest-token-0123456789abcdefghijklmnopq"

const cert = "8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1"

type reply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func call(t *testing.T, srv *Server, token, method, path, body string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %v\n%s", method, path, err, raw)
		}
	}
	return r
}

func fixture(t *testing.T, name string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

// sameShape checks that every key of the documented example is in the
// answer, holding the same kind of JSON value.
func sameShape(t *testing.T, where string, want, got any) {
	t.Helper()
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			t.Errorf("%s: want an object, got %T (%v)", where, got, got)
			return
		}
		for k, v := range w {
			gv, ok := g[k]
			if !ok {
				t.Errorf("%s.%s: missing", where, k)
				continue
			}
			sameShape(t, where+"."+k, v, gv)
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			t.Errorf("%s: want an array, got %T", where, got)
			return
		}
		if len(w) > 0 && len(g) > 0 {
			sameShape(t, where+"[0]", w[0], g[0])
		}
	default:
		if reflect.TypeOf(want) != reflect.TypeOf(got) {
			t.Errorf("%s: want %T, got %T (%v)", where, want, got, got)
		}
	}
}

func errorsOf(t *testing.T, r reply) []any {
	t.Helper()
	if r.body["success"] != false {
		t.Fatalf("want success false, got %s", r.raw)
	}
	errs, _ := r.body["errors"].([]any)
	if len(errs) == 0 {
		t.Fatalf("no errors in %s", r.raw)
	}
	return errs
}

// wantError checks the status and that the errors equal the fixture's.
func wantError(t *testing.T, r reply, status int, fixtureName string) {
	t.Helper()
	if r.status != status {
		t.Errorf("status %d, want %d: %s", r.status, status, r.raw)
	}
	want := fixture(t, fixtureName)
	if !reflect.DeepEqual(errorsOf(t, r), want["errors"]) {
		t.Errorf("errors %s\nwant %v", r.raw, want["errors"])
	}
	if r.body["result"] != nil {
		t.Errorf("result of an error is %v, want null", r.body["result"])
	}
}

func tlsaBody(name string, ttl int) string {
	return fmt.Sprintf(`{"type":"TLSA","name":%q,"ttl":%d,"data":{"usage":3,"selector":1,"matching_type":1,"certificate":%q}}`, name, ttl, cert)
}

func TestShapesMatchDocumentedExamples(t *testing.T) {
	srv := NewServer(testToken, "example.org")
	defer srv.Close()
	zid := srv.ZoneID("example.org")

	r := call(t, srv, testToken, "GET", "/zones?name=example.org&per_page=50", "")
	if r.status != 200 {
		t.Fatalf("list zones: %d %s", r.status, r.raw)
	}
	sameShape(t, "zones", fixture(t, "zones.json"), r.body)

	r = call(t, srv, testToken, "POST", "/zones/"+zid+"/dns_records", tlsaBody("_25._tcp.mail.example.org", 300))
	if r.status != 200 {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	r = call(t, srv, testToken, "GET", "/zones/"+zid+"/dns_records?type=TLSA&name=_25._tcp.mail.example.org", "")
	sameShape(t, "dns_records", fixture(t, "dns_records_list.json"), r.body)
	got := r.body["result"].([]any)[0].(map[string]any)
	want := fixture(t, "dns_records_list.json")["result"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "type", "content", "data", "ttl", "proxied"} {
		if !reflect.DeepEqual(got[k], want[k]) {
			t.Errorf("%s = %v, want %v", k, got[k], want[k])
		}
	}

	raw, _ := os.ReadFile("testdata/create_txt-request.json")
	r = call(t, srv, testToken, "POST", "/zones/"+zid+"/dns_records", string(raw))
	sameShape(t, "create", fixture(t, "create_txt.json"), r.body)
	if c := r.body["result"].(map[string]any)["content"]; c != `"ADw2sEd82DUgXcQ9hNBZThJs7zVJkR5v9JeSbAb9mZY"` {
		t.Errorf("TXT content %v", c)
	}
	id := r.body["result"].(map[string]any)["id"].(string)
	if len(id) != 32 {
		t.Errorf("record id %q is not 32 hex digits", id)
	}

	r = call(t, srv, testToken, "DELETE", "/zones/"+zid+"/dns_records/"+id, "")
	sameShape(t, "delete", fixture(t, "delete_record.json"), r.body)
	if r.body["result"].(map[string]any)["id"] != id {
		t.Errorf("delete answered %s", r.raw)
	}
	r = call(t, srv, testToken, "DELETE", "/zones/"+zid+"/dns_records/"+id, "")
	wantError(t, r, 404, "error_record_not_found.json")
}

func TestAuthentication(t *testing.T) {
	srv := NewServer(testToken, "example.org", "example.net")
	defer srv.Close()
	readOnly := "cftest-readonly-0123456789abcdefghijklmn"
	scoped := "cftest-scoped-0123456789abcdefghijklmnop"
	srv.AddToken(Token{Value: readOnly, ReadOnly: true})
	srv.AddToken(Token{Value: scoped, Zones: []string{"example.org"}})
	zid := srv.ZoneID("example.org")
	netID := srv.ZoneID("example.net")

	r := call(t, srv, "", "GET", "/zones", "")
	if r.status != 400 || errorsOf(t, r)[0].(map[string]any)["code"] != float64(CodeMissingAuth) {
		t.Errorf("no token: %d %s", r.status, r.raw)
	}
	wantError(t, call(t, srv, "short", "GET", "/zones", ""), 400, "error_bad_auth_header.json")
	wantError(t, call(t, srv, strings.Repeat("x", 40), "GET", "/zones", ""), 403, "error_invalid_token.json")

	r = call(t, srv, readOnly, "GET", "/zones/"+zid+"/dns_records", "")
	if r.status != 200 {
		t.Errorf("read-only token cannot read: %s", r.raw)
	}
	r = call(t, srv, readOnly, "POST", "/zones/"+zid+"/dns_records", tlsaBody("x", 300))
	if r.status != 403 || errorsOf(t, r)[0].(map[string]any)["code"] != float64(CodeAuthentication) {
		t.Errorf("read-only token writes: %d %s", r.status, r.raw)
	}

	r = call(t, srv, scoped, "GET", "/zones?name=example.net", "")
	if n := len(r.body["result"].([]any)); n != 0 {
		t.Errorf("scoped token sees %d zones outside its scope", n)
	}
	r = call(t, srv, scoped, "GET", "/zones/"+netID+"/dns_records", "")
	if r.status != 403 {
		t.Errorf("scoped token reads another zone: %d %s", r.status, r.raw)
	}
	if n := len(srv.Records("example.org")); n != 0 {
		t.Errorf("refused calls changed the zone: %d records", n)
	}
}

func TestCreateValidation(t *testing.T) {
	srv := NewServer(testToken, "example.org")
	defer srv.Close()
	ent := srv.AddZone("example.com", Enterprise())
	zid := srv.ZoneID("example.org")
	post := func(zone, body string) reply {
		return call(t, srv, testToken, "POST", "/zones/"+zone+"/dns_records", body)
	}

	wantError(t, post(zid, tlsaBody("_25._tcp.mail", 30)), 400, "error_ttl.json")
	wantError(t, post(zid, tlsaBody("_25._tcp.mail", 86401)), 400, "error_ttl.json")
	if r := post(ent, tlsaBody("_25._tcp.mail", 30)); r.status != 200 {
		t.Errorf("enterprise zone refuses TTL 30: %s", r.raw)
	}
	r := post(zid, `{"type":"TXT","name":"a","content":"\"x\"","ttl":"300"}`)
	if r.status != 400 || !strings.Contains(string(r.raw), `"code":9022`) {
		t.Errorf("string TTL: %d %s", r.status, r.raw)
	}
	r = post(zid, `{"type":"TLSA","name":"a","content":"3 1 1 `+cert+`","ttl":300}`)
	if r.status != 400 || !strings.Contains(string(r.raw), `"code":1004`) {
		t.Errorf("TLSA without data: %d %s", r.status, r.raw)
	}
	r = post(zid, `{"type":"TLSA","name":"a","data":{"usage":3,"selector":1,"matching_type":1,"certificate":"xyz"},"ttl":300}`)
	if r.status != 400 {
		t.Errorf("TLSA with non-hex data: %d %s", r.status, r.raw)
	}
	r = post(zid, `{"type":"TXT","name":"a","content":"\"unterminated","ttl":300}`)
	if r.status != 400 {
		t.Errorf("bad TXT: %d %s", r.status, r.raw)
	}
	if r := post(zid, `{not json`); r.status != 400 || !strings.Contains(string(r.raw), `"code":9207`) {
		t.Errorf("bad JSON: %d %s", r.status, r.raw)
	}

	// Relative names are taken as relative to the zone; TTL 1 is automatic.
	r = post(zid, tlsaBody("_25._tcp.mail", 1))
	if r.status != 200 {
		t.Fatalf("create: %s", r.raw)
	}
	res := r.body["result"].(map[string]any)
	if res["name"] != "_25._tcp.mail.example.org" || res["ttl"] != float64(1) ||
		res["content"] != "3 1 1 "+cert {
		t.Errorf("created %s", r.raw)
	}
	// Identical data (the TTL does not count) is refused, and the name
	// matches whatever its case or trailing dot.
	wantError(t, post(zid, tlsaBody("_25._TCP.mail.example.org.", 3600)), 400, "error_identical.json")
	// TXT content is compared as strings: quoted or not, it is the same.
	if r := post(zid, `{"type":"TXT","name":"t","content":"\"abc\" \"d\\\"e\"","ttl":120}`); r.status != 200 {
		t.Fatalf("create TXT: %s", r.raw)
	}
	wantError(t, post(zid, `{"type":"TXT","name":"t","content":"\"abc\"   \"d\\034e\"","ttl":120}`), 400, "error_identical.json")
	if r := post(zid, `{"type":"TXT","name":"t","content":"\"abc\" \"de\"","ttl":120}`); r.status != 200 {
		t.Errorf("different TXT refused: %s", r.raw)
	}
	if n := len(srv.Records("example.org")); n != 3 {
		t.Errorf("zone has %d records, want 3", n)
	}
}

func TestListFiltersAndPages(t *testing.T) {
	srv := NewServer(testToken, "example.org")
	defer srv.Close()
	zid := srv.ZoneID("example.org")
	for i := range 12 {
		if _, err := srv.AddRecord("example.org", Record{Type: "TXT", Name: "many", Content: fmt.Sprintf(`"v%02d"`, i), TTL: 300}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.AddRecord("example.org", Record{Type: "A", Name: "many", Content: "192.0.2.1", TTL: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.AddRecord("example.org", Record{Type: "TXT", Name: "other", Content: `"v00"`}); err != nil {
		t.Fatal(err)
	}
	list := func(q string) reply {
		r := call(t, srv, testToken, "GET", "/zones/"+zid+"/dns_records?"+q, "")
		if r.status != 200 {
			t.Fatalf("list %s: %s", q, r.raw)
		}
		return r
	}
	info := func(r reply) map[string]any { return r.body["result_info"].(map[string]any) }

	r := list("type=TXT&name=many.example.org&per_page=5&page=3")
	want := map[string]any{"page": 3.0, "per_page": 5.0, "count": 2.0, "total_count": 12.0, "total_pages": 3.0}
	if !reflect.DeepEqual(info(r), want) {
		t.Errorf("result_info %v, want %v", info(r), want)
	}
	r = list("type=TXT&name=many.example.org&per_page=1")
	if info(r)["per_page"] != 5.0 {
		t.Errorf("per_page below the minimum was not raised to 5: %v", info(r))
	}
	r = list("name=MANY.example.org")
	if info(r)["total_count"] != 13.0 {
		t.Errorf("name filter is not case-insensitive: %v", info(r))
	}
	r = list("content=%22v00%22")
	if info(r)["total_count"] != 2.0 {
		t.Errorf("content filter: %v", info(r))
	}
	r = list("name.startswith=oth&type=TXT")
	if info(r)["total_count"] != 1.0 {
		t.Errorf("name.startswith: %v", info(r))
	}
	r = list("type=A&name=other.example.org&match=any")
	if info(r)["total_count"] != 2.0 {
		t.Errorf("match=any: %v", info(r))
	}
	r = list("type=TXT&order=content&direction=desc&per_page=5")
	if c := r.body["result"].([]any)[0].(map[string]any)["content"]; c != `"v11"` {
		t.Errorf("ordered by content desc, first is %v", c)
	}
	r = list("page=99")
	if n := len(r.body["result"].([]any)); n != 0 {
		t.Errorf("page past the end has %d records", n)
	}
}

func TestFaults(t *testing.T) {
	srv := NewServer(testToken, "example.org")
	defer srv.Close()
	zid := srv.ZoneID("example.org")
	recs := "/zones/" + zid + "/dns_records"

	srv.Inject("GET", "/zones", Fault{Status: 429, RetryAfter: 3})
	r := call(t, srv, testToken, "GET", "/zones", "")
	if r.status != 429 || r.header.Get("Retry-After") != "3" || !strings.Contains(string(r.raw), `"code":971`) {
		t.Errorf("429 fault: %d %v %s", r.status, r.header, r.raw)
	}
	if r := call(t, srv, testToken, "GET", "/zones", ""); r.status != 200 {
		t.Errorf("a one-time fault fired twice: %d", r.status)
	}

	srv.Inject("", "/zones/*/dns_records", Fault{Status: 502, Times: 2})
	for range 2 {
		if r := call(t, srv, testToken, "POST", recs, tlsaBody("a", 300)); r.status != 502 || !strings.Contains(string(r.raw), "<html>") {
			t.Errorf("502 fault: %d %s", r.status, r.raw)
		}
	}
	if n := len(srv.Records("example.org")); n != 0 {
		t.Errorf("a 502 before handling stored %d records", n)
	}

	srv.Inject("POST", "/zones/*/dns_records", Fault{Status: 504, AfterApply: true})
	if r := call(t, srv, testToken, "POST", recs, tlsaBody("a", 300)); r.status != 504 {
		t.Errorf("504 after apply: %d", r.status)
	}
	if n := len(srv.Records("example.org")); n != 1 {
		t.Errorf("504 after apply stored %d records, want 1", n)
	}

	srv.Inject("POST", "/zones/*/dns_records", Fault{DropResponseAfterApply: true})
	req, _ := http.NewRequest("POST", srv.URL+recs, strings.NewReader(tlsaBody("b", 300)))
	req.Header.Set("Authorization", "Bearer "+testToken)
	if resp, err := srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("dropped answer arrived: %d", resp.StatusCode)
	}
	if n := len(srv.Records("example.org")); n != 2 {
		t.Errorf("dropped answer: zone has %d records, want 2", n)
	}

	srv.Inject("POST", "/zones/*/dns_records", Fault{Code: CodeRecordExists})
	r = call(t, srv, testToken, "POST", recs, tlsaBody("c", 300))
	if r.status != 400 || !strings.Contains(string(r.raw), `"code":81057`) {
		t.Errorf("81057 fault: %d %s", r.status, r.raw)
	}

	srv.Inject("GET", "/zones", Fault{Status: 503, Times: -1})
	for range 3 {
		if r := call(t, srv, testToken, "GET", "/zones", ""); r.status != 503 {
			t.Errorf("permanent fault stopped: %d", r.status)
		}
	}
	srv.ClearFaults()
	if r := call(t, srv, testToken, "GET", "/zones", ""); r.status != 200 {
		t.Errorf("after ClearFaults: %d", r.status)
	}

	got := srv.Calls("POST", "/zones/*/dns_records")
	if len(got) != 5 {
		t.Fatalf("%d POST calls logged, want 5", len(got))
	}
	if !got[3].Fault || got[3].Status != 0 || !bytes.Contains(got[3].Body, []byte(`"name":"b"`)) {
		t.Errorf("dropped call logged as %+v", got[3])
	}
}

// TestCloudflareGoClient drives the fake with the official client, as the
// publisher does.
func TestCloudflareGoClient(t *testing.T) {
	srv := NewServer(testToken, "example.org", "mail.example.org")
	defer srv.Close()
	api, err := cf.NewWithAPIToken(testToken, cf.BaseURL(srv.URL), cf.HTTPClient(srv.Client()), cf.UsingRetryPolicy(0, 0, 0), cf.UsingRateLimit(1000))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	zones, err := api.ListZonesContext(ctx, cf.WithZoneFilters("mail.example.org", "", ""))
	if err != nil || len(zones.Result) != 1 || zones.Result[0].Name != "mail.example.org" {
		t.Fatalf("zones: %v %+v", err, zones.Result)
	}
	rc := cf.ZoneIdentifier(zones.Result[0].ID)
	rec, err := api.CreateDNSRecord(ctx, rc, cf.CreateDNSRecordParams{
		Type: "TLSA", Name: "_25._tcp.mail.example.org", TTL: 300,
		Data: map[string]any{"usage": 3, "selector": 1, "matching_type": 1, "certificate": cert},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = api.CreateDNSRecord(ctx, rc, cf.CreateDNSRecordParams{
		Type: "TLSA", Name: "_25._tcp.mail.example.org", TTL: 300,
		Data: map[string]any{"usage": 3, "selector": 1, "matching_type": 1, "certificate": cert},
	})
	var reqErr *cf.RequestError
	if !errors.As(err, &reqErr) || !reqErr.InternalErrorCodeIs(CodeIdenticalRecord) {
		t.Errorf("duplicate create: %v", err)
	}
	list, _, err := api.ListDNSRecords(ctx, rc, cf.ListDNSRecordsParams{Type: "TLSA", Name: "_25._tcp.mail.example.org"})
	if err != nil || len(list) != 1 || list[0].ID != rec.ID || list[0].TTL != 300 {
		t.Fatalf("list: %v %+v", err, list)
	}
	if err := api.DeleteDNSRecord(ctx, rc, rec.ID); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Records("mail.example.org")); n != 0 {
		t.Errorf("%d records after delete", n)
	}
	_, err = api.ListZonesContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := cf.NewWithAPIToken(strings.Repeat("y", 40), cf.BaseURL(srv.URL), cf.HTTPClient(srv.Client()), cf.UsingRetryPolicy(0, 0, 0), cf.UsingRateLimit(1000))
	_, err = bad.ListZonesContext(ctx)
	// cloudflare-go calls a 403 an AuthenticationError.
	var authErr *cf.AuthenticationError
	if !errors.As(err, &authErr) || !authErr.InternalErrorCodeIs(CodeInvalidToken) {
		t.Errorf("bad token: %T %v", err, err)
	}
}

func TestServe(t *testing.T) {
	if err := ListenAndServe("0.0.0.0:0", testToken); err == nil || !strings.Contains(err.Error(), "not a loopback") {
		t.Errorf("ListenAndServe on every interface: %v", err)
	}
	if err := ListenAndServe(":0", testToken); err == nil {
		t.Error("ListenAndServe on every interface was accepted")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := NewAPI(testToken, "example.org")
	done := make(chan error, 1)
	go func() { done <- Serve(l, api) }()
	client := &http.Client{Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", "http://"+l.Addr().String()+BasePath+"/zones?name=example.org", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(api.Requests()) != 1 {
		t.Errorf("Serve answered %d, logged %d requests", resp.StatusCode, len(api.Requests()))
	}
	l.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Serve returned nil after its listener was closed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its listener was closed")
	}
}

// TestMain lets the test binary serve as the fake in a subprocess, the way
// an end-to-end test of the daneroll binary uses it.
func TestMain(m *testing.M) {
	if addr := os.Getenv("CFTEST_LISTEN"); addr != "" {
		if err := ListenAndServe(addr, testToken, "example.org"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestListenAndServeSubprocess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a subprocess")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CFTEST_LISTEN="+addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://"+addr+BasePath+"/zones?name=example.org", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := client.Do(req)
		if err == nil {
			var env struct {
				Result []Zone `json:"result"`
			}
			err = json.NewDecoder(resp.Body).Decode(&env)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || len(env.Result) != 1 || env.Result[0].Name != "example.org" {
				t.Fatalf("subprocess answered %d %+v (%v)", resp.StatusCode, env.Result, err)
			}
			return
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait() // stderr is complete only after Wait
			t.Fatalf("subprocess fake not reachable on %s: %v; stderr: %s", addr, err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
