package etcdstore

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzRecords: whatever another member (or anyone who can write to etcd)
// puts at reports/HOST or members/HOST, decoding and checking it never
// panics, and a report that passes has an error text fit for one line of
// status and logs.
func FuzzRecords(f *testing.F) {
	f.Add([]byte(`{"host":"mx1","set":"0002","live_revision":7,"key":"`+strings.Repeat("ab", 32)+`","endpoints":{"smtp://mx:25":"`+strings.Repeat("ab", 32)+`"},"ok":true}`), "mx1")
	f.Add([]byte(`{"host":"mx1","ok":false,"error":"reload\nfailed \u001b[31m"}`), "mx1")
	f.Add([]byte(`{"host":"mx1","endpoints":["smtp://mx:25?connect=10.0.0.1"],"since":"2026-11-29T00:00:00Z"}`), "mx1")
	f.Add([]byte(`{"host":"../x","set":"../0001"}`), "../x")
	f.Fuzz(func(t *testing.T, data []byte, host string) {
		var r Report
		if json.Unmarshal(data, &r) == nil && r.check(host) == nil {
			if r.Host != host || strings.ContainsAny(r.Error, "\n\r\x1b\x00") || !utf8.ValidString(r.Error) || len(r.Error) > maxReportError+len("…") {
				t.Fatalf("a report passed with host %q, error %q", r.Host, r.Error)
			}
			if len(r.Endpoints) > maxEndpoints {
				t.Fatalf("a report of %d endpoints passed", len(r.Endpoints))
			}
		}
		var m Member
		if json.Unmarshal(data, &m) == nil && m.check(host) == nil && (m.Host != host || len(m.Endpoints) > maxEndpoints) {
			t.Fatalf("a member record passed: %+v", m)
		}
	})
}
