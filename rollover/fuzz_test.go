package rollover

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane"
)

// FuzzJournal decodes arbitrary journals as load does: a journal that
// validate accepts must be safe for everything that reads the state
// afterwards (the planner, status, tlsa), and one it refuses must give a
// one-line reason.
func FuzzJournal(f *testing.F) {
	spki := "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEOKNLdWivB6ekEshvbYkUt059YfGuR+y9zNR96VXEtx/MvtAIdcRn18KuIkJPM/H98Rs/bkCdEup9Ww55md2kSg=="
	id := "9c5ba8fd4e43acd9fc7eb7df3d12d5c7e6b86a8a28ec3ac5c4d7bdb9e1ba5cb2"
	for _, seed := range []string{
		`{"version":1}`,
		`{"version":1,"keys":[null]}`,
		`{"version":1,"txn":{"kind":"rekey","step":"deploy","new_set":"../../../../etc"}}`,
		`{"version":1,"keys":[{"id":"` + id + `","spki":"` + spki + `","safe_at":{"_25._tcp.mail.example.org.":"2026-01-01T00:00:00Z"}}],"current":"` + id + `","live_set":"0001","cert":{"key":"` + id + `"},"issuers":{"0001":"https://ca.example/dir"}}`,
		`{"version":1,"txn":{"kind":"renew","step":"obtain","challenges":["_acme-challenge.mail.example.org. 60 IN TXT \"x\""]}}`,
		`{"version":1,"txn":{"kind":"renew","step":"obtain","challenges":["example.org. 60 IN TXT \"x\""]}}`,
		`{"version":2}`,
	} {
		f.Add([]byte(seed))
	}
	cert := &config.Certificate{Name: "mail", Domains: []string{"mail.example.org"}, KeyPolicy: config.PolicyRollover,
		TLSA: []string{"_25._tcp.mail.example.org"}, TLSATTL: 300, TLSAParams: []string{"3 1 1", "3 1 2"}}
	e := New(Options{Config: &config.Config{}})
	f.Fuzz(func(t *testing.T, data []byte) {
		st := &State{}
		if json.Unmarshal(data, st) != nil {
			return
		}
		if err := st.validate(); err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("reason %q is not one line", err)
			}
			return
		}
		protected := st.protectedKeys()
		keys := e.wantedKeys(st)
		recs := records(cert, keys)
		ks := e.keySets(st, protected)
		for owner, rrs := range recs {
			published := append([]*dns.TLSA{}, rrs...)
			p := dane.PlanOwner(owner, rrs, published, ks)
			if len(p.Delete) > 0 || len(p.Add) > 0 {
				t.Fatalf("a plan against exactly the wanted records changes them: %+v", p)
			}
		}
		_, _ = e.safeAt(cert, st, st.Current)
		if st.Txn != nil {
			_ = nextStep(st.Txn.Kind, st.Txn.Step, true)
			for _, line := range st.Txn.Challenges {
				if _, err := challengeRecord(line); err != nil {
					t.Fatalf("validate accepted challenge %q: %v", line, err)
				}
			}
		}
	})
}
