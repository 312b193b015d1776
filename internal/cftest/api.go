package cftest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

// BasePath is where the API lives on the server, as on api.cloudflare.com.
const BasePath = "/client/v4"

// Error codes the fake answers with. Those marked "observed" are what the
// real API sends as reported by its users; the others are the fake's own
// choice where Cloudflare documents none.
const (
	CodeRateLimited        = 971   // observed: "Please wait and consider throttling your request speed"
	CodeValidation         = 1004  // observed: "DNS Validation Error", details in error_chain
	CodeInvalidHeaders     = 6003  // observed: "Invalid request headers"
	CodeBadAuthFormat      = 6111  // observed: "Invalid format for Authorization header"
	CodeNoRoute            = 7000  // observed: "No route for that URI"
	CodeMethodNotAllowed   = 7001  // "Method not allowed"
	CodeBadObjectID        = 7003  // observed: "Could not route to …, perhaps your object identifier is invalid?"
	CodeBadName            = 9000  // observed: "DNS name is invalid."
	CodeNotProxiable       = 9004  // "This record type cannot be proxied."
	CodeBadContent         = 9005  // observed for A; used for every content error
	CodeBadTTL             = 9021  // observed: "TTL must be between 60 and 86400 seconds, or 1 for Automatic."
	CodeTTLNotNumber       = 9022  // observed: "TTL must be a number, not a string."
	CodeBadType            = 9101  // unsupported record type
	CodeMissingAuth        = 9106  // observed: "Missing X-Auth-Key, X-Auth-Email or Authorization headers"
	CodeInvalidToken       = 9109  // observed: "Invalid access token" / "Unauthorized to access requested resource"
	CodeBadBody            = 9207  // observed: "Request body is invalid."
	CodeAuthentication     = 10000 // observed: "Authentication error" (token lacks the permission)
	CodeRecordNotFound     = 81044 // observed: "Record does not exist."
	CodeHostTaken          = 81053 // observed: "An A, AAAA, or CNAME record with that host already exists."
	CodeCNAMEExists        = 81054 // observed: "A CNAME record with that host already exists."
	CodeRecordExists       = 81057 // observed: "Record already exists." (also seen as "The record already exists.")
	CodeIdenticalRecord    = 81058 // observed: "An identical record already exists."
	defaultZonesPerPage    = 20
	maxZonesPerPage        = 50
	defaultRecordsPerPage  = 100
	maxRecordsPerPage      = 5000000
	minPerPage             = 5
	maxTTL                 = 86400
	minTTL                 = 60
	minTTLEnterprise       = 30
	automaticTTL           = 1
	maxRequestBody         = 1 << 20
	identicalRecordMessage = "An identical record already exists."
)

// Error is one entry of an envelope's "errors" or "messages".
type Error struct {
	Code       int     `json:"code"`
	Message    string  `json:"message"`
	ErrorChain []Error `json:"error_chain,omitempty"`
}

// ResultInfo is the pagination block of list answers.
type ResultInfo struct {
	Page       int `json:"page"`
	PerPage    int `json:"per_page"`
	Count      int `json:"count"`
	TotalCount int `json:"total_count"`
	TotalPages int `json:"total_pages"`
}

type envelope struct {
	Result     any         `json:"result"`
	Success    bool        `json:"success"`
	Errors     []Error     `json:"errors"`
	Messages   []Error     `json:"messages"`
	ResultInfo *ResultInfo `json:"result_info,omitempty"`
}

// Zone is a zone as GET /zones shows it (the fields daneroll and the usual
// clients read).
type Zone struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Status      string    `json:"status"`
	Paused      bool      `json:"paused"`
	Type        string    `json:"type"`
	NameServers []string  `json:"name_servers"`
	Account     Account   `json:"account"`
	Plan        Plan      `json:"plan"`
	Permissions []string  `json:"permissions"`
	CreatedOn   time.Time `json:"created_on"`
	ModifiedOn  time.Time `json:"modified_on"`
	ActivatedOn time.Time `json:"activated_on"`
}

// Account is the owner account of a zone.
type Account struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Plan is a zone's plan; Enterprise zones accept TTLs down to 30 seconds.
type Plan struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	LegacyID     string `json:"legacy_id"`
	IsSubscribed bool   `json:"is_subscribed"`
}

// TLSAData is the structured form of a TLSA record ("data").
type TLSAData struct {
	Usage        int    `json:"usage"`
	Selector     int    `json:"selector"`
	MatchingType int    `json:"matching_type"`
	Certificate  string `json:"certificate"`
}

// Record is a DNS record as the API shows it. To pre-create one with
// [API.AddRecord], Type and Name and either Content or (for TLSA) Data are
// enough.
type Record struct {
	ID         string         `json:"id"`
	ZoneID     string         `json:"zone_id"`
	ZoneName   string         `json:"zone_name"`
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Content    string         `json:"content"`
	Data       *TLSAData      `json:"data,omitempty"`
	Priority   *int           `json:"priority,omitempty"`
	Proxiable  bool           `json:"proxiable"`
	Proxied    bool           `json:"proxied"`
	TTL        int            `json:"ttl"`
	Settings   map[string]any `json:"settings"`
	Meta       map[string]any `json:"meta"`
	Comment    *string        `json:"comment"`
	Tags       []string       `json:"tags"`
	CreatedOn  time.Time      `json:"created_on"`
	ModifiedOn time.Time      `json:"modified_on"`

	canonical string // identity for duplicate detection: type-specific normal form of the data
}

// Token is an API token the fake accepts.
type Token struct {
	Value string
	// Zones the token may use, by name; none means every zone.
	Zones []string
	// ReadOnly tokens have Zone:Read and DNS:Read but not DNS:Edit.
	ReadOnly bool
}

// Request is one request the fake received.
type Request struct {
	Method string
	// Path is the API path, after BasePath ("/zones/…/dns_records").
	Path  string
	Query url.Values
	Body  []byte
	// Status answered; 0 when the connection was dropped.
	Status int
	// Fault is true when an injected fault shaped the answer.
	Fault bool
}

type zone struct {
	Zone
	enterprise bool
	records    []*Record // in creation order
}

// API is the fake Cloudflare API: an http.Handler serving BasePath, and the
// state behind it. Its methods are safe for concurrent use.
type API struct {
	// Now stamps created_on and modified_on; time.Now when nil. Set it
	// before serving.
	Now func() time.Time

	mu     sync.Mutex // guards zones, tokens, faults, log, hooks, pending and lastTurn
	zones  []*zone
	tokens map[string]Token
	faults []*injected
	log    []Request
	hooks  []func(Change)
	// pending are changes applied under mu whose hooks have not run yet.
	pending []Change
	// lastTurn is closed once the hooks for the changes made so far have
	// run: each batch of changes waits for its predecessor's, so hooks see
	// changes in the order they were applied, though they run without mu.
	lastTurn chan struct{}
}

// NewAPI returns a fake that accepts token for every zone and has the given
// zones (names like "example.org"), empty.
func NewAPI(token string, zones ...string) *API {
	a := &API{tokens: map[string]Token{}}
	if token != "" {
		a.AddToken(Token{Value: token})
	}
	for _, z := range zones {
		a.AddZone(z)
	}
	return a
}

func (a *API) now() time.Time {
	if a.Now != nil {
		return a.Now().UTC()
	}
	return time.Now().UTC()
}

// AddToken makes the fake accept another token.
func (a *API) AddToken(t Token) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens[t.Value] = t
}

// ZoneOption changes a zone made by AddZone.
type ZoneOption func(*zone)

// Enterprise makes the zone an Enterprise one: TTLs from 30 seconds.
func Enterprise() ZoneOption {
	return func(z *zone) {
		z.enterprise = true
		z.Plan = Plan{ID: newID(), Name: "Enterprise Website", LegacyID: "enterprise", IsSubscribed: true}
	}
}

// Status sets the zone's status ("active" by default; "pending" zones are
// listed but not served by Cloudflare's name servers).
func Status(s string) ZoneOption { return func(z *zone) { z.Status = s } }

// AddZone adds an empty zone and returns its id. Adding a zone that exists
// returns the existing id.
func (a *API) AddZone(name string, opts ...ZoneOption) string {
	name = normalName(name)
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, z := range a.zones {
		if z.Name == name {
			return z.ID
		}
	}
	now := a.now()
	z := &zone{Zone: Zone{
		ID:          newID(),
		Name:        name,
		Status:      "active",
		Type:        "full",
		NameServers: []string{"ada.ns.cloudflare.com", "bob.ns.cloudflare.com"},
		Account:     Account{ID: "01a7362d577a6c3019a474fd6f485823", Name: "daneroll test account"},
		Plan:        Plan{ID: "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", Name: "Free Website", LegacyID: "free"},
		Permissions: []string{"#dns_records:edit", "#dns_records:read", "#zone:read"},
		CreatedOn:   now,
		ModifiedOn:  now,
		ActivatedOn: now,
	}}
	for _, o := range opts {
		o(z)
	}
	a.zones = append(a.zones, z)
	return z.ID
}

// ZoneID returns the id of the zone with that name, or "".
func (a *API) ZoneID(name string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if z := a.zoneByName(normalName(name)); z != nil {
		return z.ID
	}
	return ""
}

// AddRecord adds a record to a zone (by name) directly, with the validation
// a POST gets, and returns it as the API would. Use it for records daneroll
// does not own.
func (a *API) AddRecord(zoneName string, r Record) (Record, error) {
	return a.addRecord(zoneName, r, false)
}

// AddIdenticalRecord is AddRecord without the check for an identical
// record: it adds r even when the zone has one with the same type, name
// and content, which a POST refuses (81058). It seeds what the API never
// makes but zones moved to Cloudflare from elsewhere hold (an imported
// zone file, a migration tool): two records, two ids, the same data. Both
// are listed and each is deleted by its own id; a mirror ([API.MirrorTo])
// serves the data until the last of them is deleted. Nothing the API
// answers changes.
func (a *API) AddIdenticalRecord(zoneName string, r Record) (Record, error) {
	return a.addRecord(zoneName, r, true)
}

func (a *API) addRecord(zoneName string, r Record, identical bool) (Record, error) {
	a.mu.Lock()
	defer a.unlockAndNotify()
	z := a.zoneByName(normalName(zoneName))
	if z == nil {
		return Record{}, fmt.Errorf("cftest: no zone %q", zoneName)
	}
	in := createBody{Type: r.Type, Name: r.Name, Content: &r.Content, Priority: r.Priority, Proxied: &r.Proxied, Comment: r.Comment, Tags: r.Tags,
		identicalOK: identical}
	if r.TTL != 0 {
		in.TTL = json.RawMessage(fmt.Sprint(r.TTL))
	}
	if r.Data != nil {
		in.Data, _ = json.Marshal(r.Data)
	}
	rec, fail := a.create(z, in)
	if fail != nil {
		return Record{}, fmt.Errorf("cftest: add record: %s", fail.String())
	}
	return *rec, nil
}

// Records returns the records of a zone (by name), in creation order.
func (a *API) Records(zoneName string) []Record {
	a.mu.Lock()
	defer a.mu.Unlock()
	z := a.zoneByName(normalName(zoneName))
	if z == nil {
		return nil
	}
	out := make([]Record, len(z.records))
	for i, r := range z.records {
		out[i] = *r
	}
	return out
}

// Requests returns every request received so far, in order.
func (a *API) Requests() []Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.log)
}

// Calls returns the requests whose method and API path match; method ""
// matches any, pattern is a path.Match pattern ("/zones/*/dns_records/*").
func (a *API) Calls(method, pattern string) []Request {
	var out []Request
	for _, r := range a.Requests() {
		if matches(method, pattern, r.Method, r.Path) {
			out = append(out, r)
		}
	}
	return out
}

// ResetRequests forgets the requests received so far.
func (a *API) ResetRequests() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log = nil
}

func (a *API) zoneByName(name string) *zone {
	for _, z := range a.zones {
		if z.Name == name {
			return z
		}
	}
	return nil
}

func (a *API) zoneByID(id string) *zone {
	for _, z := range a.zones {
		if z.ID == id {
			return z
		}
	}
	return nil
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// normalName is how Cloudflare shows names: lower case, no trailing dot.
func normalName(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// failure is an error answer.
type failure struct {
	status int
	errs   []Error
	header http.Header
}

func (f *failure) String() string {
	var b strings.Builder
	for i, e := range f.errs {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%d: %s", e.Code, e.Message)
		for _, c := range e.ErrorChain {
			fmt.Fprintf(&b, " (%d: %s)", c.Code, c.Message)
		}
	}
	return b.String()
}

func fail(status, code int, msg string) *failure {
	return &failure{status: status, errs: []Error{{Code: code, Message: msg}}}
}

// invalid is a record validation error as Cloudflare reports it: 1004 with
// the reason in the error chain.
func invalid(code int, msg string) *failure {
	return &failure{status: http.StatusBadRequest, errs: []Error{{
		Code: CodeValidation, Message: "DNS Validation Error",
		ErrorChain: []Error{{Code: code, Message: msg}},
	}}}
}

// answer is what the handler decided to send.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func jsonAnswer(status int, env envelope) answer {
	if env.Errors == nil {
		env.Errors = []Error{}
	}
	if env.Messages == nil {
		env.Messages = []Error{}
	}
	b, err := json.Marshal(env)
	if err != nil {
		panic(err) // only our own types are marshalled
	}
	return answer{status: status, header: http.Header{"Content-Type": {"application/json"}}, body: b}
}

func okAnswer(result any, info *ResultInfo) answer {
	return jsonAnswer(http.StatusOK, envelope{Result: result, Success: true, ResultInfo: info})
}

func (f *failure) answer() answer {
	ans := jsonAnswer(f.status, envelope{Success: false, Errors: f.errs})
	for k, v := range f.header {
		ans.header[k] = v
	}
	return ans
}

// ServeHTTP answers one API call.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
	apiPath, ok := strings.CutPrefix(r.URL.Path, BasePath)
	if !ok {
		apiPath = r.URL.Path
	}
	rec := Request{Method: r.Method, Path: apiPath, Query: r.URL.Query(), Body: body}

	a.mu.Lock()
	f := a.takeFault(r.Method, apiPath)
	a.mu.Unlock()

	var ans answer
	if f == nil || f.AfterApply || f.DropResponseAfterApply {
		a.mu.Lock()
		if ok {
			ans = a.handle(r, apiPath, body)
		} else {
			ans = fail(http.StatusNotFound, CodeNoRoute, "No route for that URI").answer()
		}
		// Hooks run before the client hears anything, as Cloudflare's
		// name servers may serve a change before its API answer arrives.
		a.unlockAndNotify()
	}
	if f != nil {
		rec.Fault = true
		if f.Delay > 0 {
			t := time.NewTimer(f.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
			}
			t.Stop()
		}
		if f.DropResponseAfterApply {
			a.record(rec)
			dropConnection(w)
			return
		}
		ans = f.answer()
	}
	rec.Status = ans.status
	a.record(rec)
	for k, v := range ans.header {
		w.Header()[k] = v
	}
	w.WriteHeader(ans.status)
	_, _ = w.Write(ans.body)
}

func (a *API) record(r Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log = append(a.log, r)
}

// dropConnection closes the client's connection without an answer, as a
// proxy that lost its upstream would.
func dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		// HTTP/2 has no hijacking: resetting the stream is the closest.
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// handle runs one call against the state; a.mu is held.
func (a *API) handle(r *http.Request, apiPath string, body []byte) answer {
	tok, f := a.authenticate(r)
	if f != nil {
		return f.answer()
	}
	parts := strings.Split(strings.Trim(apiPath, "/"), "/")
	if len(parts) == 0 || parts[0] != "zones" || len(parts) > 4 || (len(parts) >= 3 && parts[2] != "dns_records") {
		return fail(http.StatusBadRequest, CodeNoRoute, "No route for that URI").answer()
	}
	if len(parts) == 1 {
		if r.Method != http.MethodGet {
			return fail(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "Method not allowed").answer()
		}
		return a.listZones(tok, r.URL.Query())
	}
	z := a.zoneByID(parts[1])
	if z == nil {
		return fail(http.StatusBadRequest, CodeBadObjectID,
			fmt.Sprintf("Could not route to %s, perhaps your object identifier is invalid?", apiPath)).answer()
	}
	if !tok.mayUse(z.Name) {
		return fail(http.StatusForbidden, CodeInvalidToken, "Unauthorized to access requested resource").answer()
	}
	write := r.Method != http.MethodGet && r.Method != http.MethodHead
	if write && tok.ReadOnly {
		return fail(http.StatusForbidden, CodeAuthentication, "Authentication error").answer()
	}
	switch {
	case len(parts) == 2 && r.Method == http.MethodGet:
		return okAnswer(z.Zone, nil)
	case len(parts) == 3 && r.Method == http.MethodGet:
		return a.listRecords(z, r.URL.Query())
	case len(parts) == 3 && r.Method == http.MethodPost:
		var in createBody
		if err := json.Unmarshal(body, &in); err != nil {
			return fail(http.StatusBadRequest, CodeBadBody, "Request body is invalid.").answer()
		}
		rec, f := a.create(z, in)
		if f != nil {
			return f.answer()
		}
		return okAnswer(rec, nil)
	case len(parts) == 4 && r.Method == http.MethodGet:
		for _, rec := range z.records {
			if rec.ID == parts[3] {
				return okAnswer(rec, nil)
			}
		}
		return fail(http.StatusNotFound, CodeRecordNotFound, "Record does not exist.").answer()
	case len(parts) == 4 && r.Method == http.MethodDelete:
		for i, rec := range z.records {
			if rec.ID == parts[3] {
				z.records = slices.Delete(z.records, i, i+1)
				a.changed(OpDelete, z, rec)
				return okAnswer(map[string]string{"id": rec.ID}, nil)
			}
		}
		return fail(http.StatusNotFound, CodeRecordNotFound, "Record does not exist.").answer()
	}
	return fail(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "Method not allowed").answer()
}

func (t *Token) mayUse(zoneName string) bool {
	if len(t.Zones) == 0 {
		return true
	}
	for _, z := range t.Zones {
		if normalName(z) == zoneName {
			return true
		}
	}
	return false
}

// tokenFormat is what Cloudflare accepts as an API token before looking it
// up: 40 characters of [A-Za-z0-9_-].
func wellFormedToken(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (a *API) authenticate(r *http.Request) (*Token, *failure) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if r.Header.Get("X-Auth-Key") != "" || r.Header.Get("X-Auth-Email") != "" {
			// Global API keys are not supported by the fake: they are
			// refused as Cloudflare refuses a wrong one.
			return nil, fail(http.StatusForbidden, 9103, "Unknown X-Auth-Key or X-Auth-Email")
		}
		return nil, fail(http.StatusBadRequest, CodeMissingAuth, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
	}
	value, ok := strings.CutPrefix(h, "Bearer ")
	if t, known := a.tokens[value]; ok && known {
		return &t, nil
	}
	if !ok || !wellFormedToken(value) {
		return nil, &failure{status: http.StatusBadRequest, errs: []Error{{
			Code: CodeInvalidHeaders, Message: "Invalid request headers",
			ErrorChain: []Error{{Code: CodeBadAuthFormat, Message: "Invalid format for Authorization header"}},
		}}}
	}
	return nil, fail(http.StatusForbidden, CodeInvalidToken, "Invalid access token")
}

// page reads page and per_page the way the API does: out-of-range values
// are brought into range.
func page(q url.Values, def, maxPer int) (pageNo, per int) {
	pageNo, per = 1, def
	if v, err := atoi(q.Get("page")); err == nil && v >= 1 {
		pageNo = v
	}
	if v, err := atoi(q.Get("per_page")); err == nil {
		per = min(max(v, minPerPage), maxPer)
	}
	return pageNo, per
}

func atoi(s string) (int, error) {
	var n int
	_, err := fmt.Sscan(s, &n)
	return n, err
}

func paginate[T any](items []T, pageNo, per int) ([]T, *ResultInfo) {
	total := len(items)
	info := &ResultInfo{Page: pageNo, PerPage: per, TotalCount: total, TotalPages: (total + per - 1) / per}
	start := min((pageNo-1)*per, total)
	end := min(start+per, total)
	out := items[start:end]
	info.Count = len(out)
	return out, info
}

func (a *API) listZones(tok *Token, q url.Values) answer {
	name := normalName(q.Get("name"))
	status := q.Get("status")
	var zs []Zone
	for _, z := range a.zones {
		if !tok.mayUse(z.Name) || (name != "" && z.Name != name) || (status != "" && z.Status != status) {
			continue
		}
		zs = append(zs, z.Zone)
	}
	pageNo, per := page(q, defaultZonesPerPage, maxZonesPerPage)
	out, info := paginate(zs, pageNo, per)
	if out == nil {
		out = []Zone{}
	}
	return okAnswer(out, info)
}

// stringFilter builds the predicate for a name or content filter in any of
// its documented forms; filters are case-insensitive.
func stringFilter(q url.Values, field string, get func(*Record) string) []func(*Record) bool {
	var preds []func(*Record) bool
	norm := strings.ToLower
	if field == "name" {
		norm = normalName
	}
	add := func(op, v string) {
		v = norm(v)
		preds = append(preds, func(r *Record) bool {
			s := strings.ToLower(get(r))
			switch op {
			case "contains":
				return strings.Contains(s, v)
			case "startswith":
				return strings.HasPrefix(s, v)
			case "endswith":
				return strings.HasSuffix(s, v)
			}
			return s == v
		})
	}
	if v, ok := q[field]; ok {
		add("exact", v[0])
	}
	for _, op := range []string{"exact", "contains", "startswith", "endswith"} {
		for _, key := range []string{field + "." + op, field + "[" + op + "]"} {
			if v, ok := q[key]; ok {
				add(op, v[0])
			}
		}
	}
	return preds
}

func (a *API) listRecords(z *zone, q url.Values) answer {
	var preds []func(*Record) bool
	if t := q.Get("type"); t != "" {
		preds = append(preds, func(r *Record) bool { return strings.EqualFold(r.Type, t) })
	}
	preds = append(preds, stringFilter(q, "name", func(r *Record) string { return r.Name })...)
	preds = append(preds, stringFilter(q, "content", func(r *Record) string { return r.Content })...)
	anyOf := q.Get("match") == "any"
	var recs []Record
	for _, r := range z.records {
		keep := !anyOf || len(preds) == 0
		for _, p := range preds {
			if anyOf && p(r) {
				keep = true
				break
			}
			if !anyOf && !p(r) {
				keep = false
				break
			}
		}
		if keep {
			recs = append(recs, *r)
		}
	}
	if key := orderKey(q.Get("order")); key != nil {
		desc := q.Get("direction") == "desc"
		slices.SortStableFunc(recs, func(x, y Record) int {
			c := strings.Compare(key(&x), key(&y))
			if desc {
				return -c
			}
			return c
		})
	}
	pageNo, per := page(q, defaultRecordsPerPage, maxRecordsPerPage)
	out, info := paginate(recs, pageNo, per)
	if out == nil {
		out = []Record{}
	}
	return okAnswer(out, info)
}

func orderKey(order string) func(*Record) string {
	switch order {
	case "type":
		return func(r *Record) string { return r.Type }
	case "name":
		return func(r *Record) string { return r.Name }
	case "content":
		return func(r *Record) string { return r.Content }
	case "ttl":
		return func(r *Record) string { return fmt.Sprintf("%010d", r.TTL) }
	case "proxied":
		return func(r *Record) string { return fmt.Sprint(r.Proxied) }
	}
	return nil
}

// createBody is a POST /dns_records body. Read-only fields a client may
// send back (id, created_on, …) are ignored, as the API ignores them.
type createBody struct {
	Type     string          `json:"type"`
	Name     string          `json:"name"`
	Content  *string         `json:"content"`
	Data     json.RawMessage `json:"data"`
	TTL      json.RawMessage `json:"ttl"`
	Priority *int            `json:"priority"`
	Proxied  *bool           `json:"proxied"`
	Comment  *string         `json:"comment"`
	Tags     []string        `json:"tags"`

	// identicalOK skips the identical-record check (AddIdenticalRecord);
	// a request body cannot set it.
	identicalOK bool
}

func (a *API) create(z *zone, in createBody) (*Record, *failure) {
	now := a.now()
	rec := &Record{
		ID: newID(), ZoneID: z.ID, ZoneName: z.Name,
		Type:     strings.ToUpper(strings.TrimSpace(in.Type)),
		Priority: in.Priority, Comment: in.Comment, Tags: in.Tags,
		Settings: map[string]any{}, Meta: map[string]any{},
		CreatedOn: now, ModifiedOn: now,
	}
	if rec.Tags == nil {
		rec.Tags = []string{}
	}
	name := normalName(in.Name)
	switch {
	case name == "" || strings.Contains(name, ".."):
		return nil, invalid(CodeBadName, "DNS name is invalid.")
	case name == "@":
		name = z.Name
	case name != z.Name && !strings.HasSuffix(name, "."+z.Name):
		// Cloudflare takes names outside the zone as relative to it.
		name += "." + z.Name
	}
	rec.Name = name

	ttl, f := parseTTL(in.TTL, z.enterprise)
	if f != nil {
		return nil, f
	}
	rec.TTL = ttl

	content := ""
	if in.Content != nil {
		content = *in.Content
	}
	if err := setData(rec, content, in.Data); err != nil {
		return nil, err
	}
	rec.Proxiable = rec.Type == "A" || rec.Type == "AAAA" || rec.Type == "CNAME"
	if in.Proxied != nil && *in.Proxied {
		if !rec.Proxiable {
			return nil, invalid(CodeNotProxiable, "This record type cannot be proxied.")
		}
		rec.Proxied = true
	}

	for _, old := range z.records {
		if old.Name != rec.Name {
			continue
		}
		if rec.Type == "CNAME" && old.Type != "CNAME" {
			return nil, fail(http.StatusBadRequest, CodeHostTaken, "An A, AAAA, or CNAME record with that host already exists.")
		}
		if old.Type == "CNAME" && rec.Type != "CNAME" {
			return nil, fail(http.StatusBadRequest, CodeCNAMEExists, "A CNAME record with that host already exists.")
		}
		if old.Type == rec.Type && old.canonical == rec.canonical && !in.identicalOK {
			return nil, fail(http.StatusBadRequest, CodeIdenticalRecord, identicalRecordMessage)
		}
	}
	z.records = append(z.records, rec)
	a.changed(OpCreate, z, rec)
	cp := *rec
	return &cp, nil
}

func parseTTL(raw json.RawMessage, enterprise bool) (int, *failure) {
	lo := minTTL
	if enterprise {
		lo = minTTLEnterprise
	}
	rangeMsg := fmt.Sprintf("TTL must be between %d and %d seconds, or 1 for Automatic.", lo, maxTTL)
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return automaticTTL, nil
	}
	if strings.HasPrefix(s, `"`) {
		return 0, invalid(CodeTTLNotNumber, "TTL must be a number, not a string.")
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f != float64(int(f)) {
		return 0, invalid(CodeBadTTL, rangeMsg)
	}
	ttl := int(f)
	if ttl == 0 {
		// The official clients omit a zero TTL; the API then picks automatic.
		return automaticTTL, nil
	}
	if ttl != automaticTTL && (ttl < lo || ttl > maxTTL) {
		return 0, invalid(CodeBadTTL, rangeMsg)
	}
	return ttl, nil
}

func matches(method, pattern, gotMethod, gotPath string) bool {
	if method != "" && method != "*" && !strings.EqualFold(method, gotMethod) {
		return false
	}
	if pattern == "" || pattern == "*" {
		return true
	}
	ok, err := path.Match(pattern, gotPath)
	return err == nil && ok
}
