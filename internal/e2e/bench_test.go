package e2e

import (
	"os"
	"testing"
	"time"

	"github.com/daneroll/daneroll/store"
)

// BenchmarkKeyChange measures the wall time of a key change against real
// BIND 9 (signing, RFC 2136) and Pebble, and the floor a key change that
// publishes a new record cannot beat: the time until every authoritative
// server serves it plus the hold of 2 × TTL. Under key_policy fresh the
// change pays the floor; under rollover the next key's record is long
// published, so the change pays none of it.
//
// TTL 60 takes over two minutes an operation; it runs only with
// DANEROLL_BENCH_LONG=1.
func BenchmarkKeyChange(b *testing.B) {
	for _, bc := range []struct {
		name   string
		policy string
		ttl    int
	}{
		{"fresh/ttl=5s", "fresh", 5},
		{"rollover/ttl=5s", "rollover", 5},
		{"fresh/ttl=60s", "fresh", 60},
		{"rollover/ttl=60s", "rollover", 60},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.ttl > 5 && os.Getenv("DANEROLL_BENCH_LONG") == "" {
				b.Skip("set DANEROLL_BENCH_LONG=1 for the long TTL")
			}
			w := newRealWorld(b, bc.policy, bc.ttl)
			w.run("renew")
			var wall, floor time.Duration
			b.ResetTimer()
			for range b.N {
				args := []string{"renew", "--force"}
				if bc.policy == "rollover" {
					b.StopTimer()
					waitNextSafe(b, w)
					b.StartTimer()
					args = []string{"rekey", "mail"}
				}
				start := time.Now()
				w.run(args...)
				took := time.Since(start)
				wall += took
				if bc.policy == "fresh" {
					floor += safeAt(b, w).Sub(start)
				}
			}
			b.ReportMetric(wall.Seconds()/float64(b.N), "wall-s/op")
			if bc.policy == "fresh" {
				b.ReportMetric(floor.Seconds()/float64(b.N), "floor-s/op")
				b.ReportMetric((wall-floor).Seconds()/float64(b.N), "over-floor-s/op")
			}
		})
	}
}

// journalKeys reads the keys' safe times from the journal.
func journalKeys(b testing.TB, w *realWorld) (current, next string, safe map[string]time.Time) {
	b.Helper()
	s, err := store.OpenReadOnly(w.state)
	if err != nil {
		b.Fatal(err)
	}
	var j struct {
		Current string `json:"current"`
		Next    string `json:"next"`
		Keys    []struct {
			ID     string               `json:"id"`
			SafeAt map[string]time.Time `json:"safe_at"`
		} `json:"keys"`
	}
	if _, err := s.ReadJSON(store.JournalPath("mail"), &j); err != nil {
		b.Fatal(err)
	}
	safe = map[string]time.Time{}
	for _, k := range j.Keys {
		safe[k.ID] = k.SafeAt[w.owner()]
	}
	return j.Current, j.Next, safe
}

// safeAt is when the current key became safe to serve: confirmation on
// every server plus the hold.
func safeAt(b testing.TB, w *realWorld) time.Time {
	cur, _, safe := journalKeys(b, w)
	return safe[cur]
}

func waitNextSafe(b testing.TB, w *realWorld) {
	_, next, safe := journalKeys(b, w)
	if d := time.Until(safe[next]); d > 0 {
		time.Sleep(d + 100*time.Millisecond)
	}
}

// BenchmarkFleetKeyChange measures a key change of a fleet of three hosts
// (internal/e2e/fleet_test.go: etcd, three agents, key_policy fresh, TTL
// 1 s) against its floor, as BenchmarkKeyChange does for one host: what is
// over the floor is the fleet's deploy (the agents notice the new live set,
// install, reload, probe, report) and the retire.
func BenchmarkFleetKeyChange(b *testing.B) {
	f := newFleet(b, "30s")
	f.issue()
	var wall, floor time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		f.mustRun(f.hosts[0], "renew", "--force")
		wall += time.Since(start)
		floor += f.safeAt().Sub(start)
	}
	b.ReportMetric(wall.Seconds()/float64(b.N), "wall-s/op")
	b.ReportMetric(floor.Seconds()/float64(b.N), "floor-s/op")
	b.ReportMetric((wall-floor).Seconds()/float64(b.N), "over-floor-s/op")
}
