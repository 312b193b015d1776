// Package cftest is an in-process Cloudflare v4 API server for tests: the
// zones and dns_records endpoints daneroll uses, with Cloudflare's envelope,
// bearer-token checks, validation, duplicate detection and error codes, plus
// injected faults (429 with Retry-After, 5xx, dropped responses after the
// change was applied) and a log of every request.
//
// It follows Cloudflare's documented API
// (developers.cloudflare.com/api/resources/dns/subresources/records and
// .../resources/zones), and, where the documentation says nothing, what the
// real API answers as reported by its users:
//
//   - every answer is the envelope {"success","errors","messages","result"},
//     lists add "result_info" {page, per_page, count, total_count,
//     total_pages}; an error is {"code","message"} with an optional
//     "error_chain" of the same;
//   - a missing Authorization header is 400 with code 9106, a malformed one
//     400 with 6003 and an error_chain of 6111, an unknown token 403 with
//     9109 "Invalid access token", a token without the permission 403 with
//     10000 "Authentication error" (9109 for a zone outside its scope);
//   - GET /zones?name= is an exact, case-insensitive match and only lists
//     zones the token may read (20 a page by default, 5 to 50);
//   - GET /zones/{id}/dns_records filters on type, name and content (plain
//     or .exact/.contains/.startswith/.endswith, case-insensitive; match=all
//     or any), pages with page and per_page (100 by default, 5 to 5,000,000)
//     and orders on type, name, content or ttl;
//   - POST /zones/{id}/dns_records validates the record: a TTL of 1 means
//     automatic, anything else must be within 60 to 86400 seconds (30 to
//     86400 on Enterprise zones), else 400 with 1004 "DNS Validation Error"
//     and an error_chain of 9021; TLSA records are written through their
//     "data" object (usage, selector, matching_type, certificate) and their
//     "content" is derived from it; TXT content is RFC 1035 quoted character
//     strings; a record with the same type, name and content as an existing
//     one (TTL aside) is refused with 400 and 81058 "An identical record
//     already exists." ([API.AddIdenticalRecord] seeds such a pair, as zones
//     moved to Cloudflare from elsewhere hold);
//   - DELETE /zones/{id}/dns_records/{id} answers {"result":{"id":…}}; an
//     unknown record id is 404 with 81044 "Record does not exist.";
//   - a 429 carries a Retry-After header (seconds) and code 971.
//
// [API.MirrorTo] makes an internal/dnstest cluster serve a zone the way
// Cloudflare's name servers do: every change the API applies reaches the
// cluster's primary before the API answers, and the secondaries copy it as
// the test says (Freeze, Thaw, SetLag), so a confirmation on "Cloudflare's
// name servers" can be tested for real. [API.OnChange] is the hook beneath.
//
// Use [NewServer] in tests (an httptest server on 127.0.0.1), [NewAPI] for
// the bare http.Handler, or [ListenAndServe] to run one on a given loopback
// address, e.g. from a test binary re-executed as a subprocess.
package cftest
