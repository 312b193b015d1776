package rollover

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/store"
)

// A current key file that no longer holds the served key (restored from a
// backup, replaced by hand) makes the next renewal a key change: its
// records are published and held before it is served, and the served key's
// record goes only after the verify.
func TestReplacedCurrentKeyIsPublishedAndHeld(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse", ttl: 2})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	st := w.state()
	restored, err := acme.GenerateKey("ec256")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.store.WriteKey("mail", store.Current, restored); err != nil {
		t.Fatal(err)
	}
	restoredID, _, _ := keyID(restored.Public())
	w.rep.reset()
	o := w.mustRenew(e, RenewOptions{Force: true}, "rekeyed")
	if !strings.Contains(o.Detail, "not the served key") {
		t.Errorf("detail %q does not say why the key changes", o.Detail)
	}
	lines, waits := w.rep.reset()
	if len(waits) != 1 || waits[0] < 3*time.Second {
		t.Errorf("holds %v, want one of about 2 × 2s before serving the restored key\n%s", waits, strings.Join(lines, "\n"))
	}
	order := []string{"publish: add", "hold", "deploy: set", "verify: 1 endpoint", "retire: delete"}
	if at := matchOrder(lines, order); at != len(order) {
		t.Errorf("steps out of order (matched %d of %v):\n%s", at, order, strings.Join(lines, "\n"))
	}
	st2 := w.state()
	if st2.Current != restoredID || st2.Cert.Key != restoredID || w.svc.Served() != restoredID {
		t.Errorf("current %s, live %s, served %s; want the restored key %s", short(st2.Current), short(st2.Cert.Key), short(w.svc.Served()), short(restoredID))
	}
	if got := w.published(); !slices.Equal(got, []string{restoredID}) {
		t.Errorf("published %v, want only the restored key (%s retired)", got, short(st.Current))
	}
	w.mustRenew(e, RenewOptions{}, "nothing")
}

// matchOrder returns how many of the prefixes in order appear in lines, in
// that order.
func matchOrder(lines, order []string) int {
	at := 0
	for _, l := range lines {
		if at < len(order) && strings.HasPrefix(l, order[at]) {
			at++
		}
	}
	return at
}
