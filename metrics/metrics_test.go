package metrics

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parse reads a file with the Prometheus project's own text parser, as
// node_exporter does, and returns family → samples.
func parse(t *testing.T, data []byte) map[string][]string {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the Prometheus parser refuses the file: %v\n%s", err, data)
	}
	out := map[string][]string{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			out[name] = append(out[name], strings.Join(ls, ",")+" "+strconv.FormatFloat(m.GetGauge().GetValue(), 'g', -1, 64))
		}
	}
	return out
}

func TestWriteMergesRuns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daneroll.prom")
	at := time.Unix(1_800_000_000, 0)

	// A renewal: mail succeeded, www failed; www's name has a quote and a
	// newline that must be escaped.
	var renew Set
	renew.Time(Expiry, at.Add(90*24*time.Hour), "certificate", "mail")
	renew.Time(LastSuccess, at, "certificate", "mail")
	renew.Time(LastFailure, at, "certificate", "w\"w\nw")
	renew.Add(Pending, 1, "certificate", "w\"w\nw", "kind", "rekey", "step", "hold")
	renew.Add(RunDuration, 1.5, "command", "renew")
	renew.Bool(RunSuccess, false, "command", "renew")
	renew.Time(RunTime, at, "command", "renew")
	if err := Write(path, &renew, []string{"mail", "w\"w\nw"}); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(path)
	got := parse(t, first)
	if len(got["daneroll_certificate_last_success_timestamp_seconds"]) != 1 || len(got["daneroll_transaction_pending"]) != 1 {
		t.Fatalf("families: %v", got)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %o: node_exporter must be able to read it", fi.Mode().Perm())
	}

	// A status run later: it measures DNS and pending work, not successes;
	// www's transaction is done; "old" is no longer configured.
	var status Set
	status.Add(RecordServers, 3, "certificate", "mail", "owner", "_25._tcp.mail.example.org.", "key", "current")
	status.Add(Pending, 0, "certificate", "w\"w\nw")
	status.Replaces(PendingSince, "w\"w\nw")
	status.Add(RunDuration, 0.2, "command", "status")
	status.Bool(RunSuccess, true, "command", "status")
	if err := Write(path, &status, []string{"mail", "w\"w\nw"}); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(path)
	got = parse(t, second)
	for _, want := range []struct{ family, sample string }{
		{"daneroll_certificate_last_success_timestamp_seconds", "certificate=mail 1.8e+09"},
		{"daneroll_transaction_pending", "certificate=w\"w\nw 0"},
		{"daneroll_tlsa_record_servers", "certificate=mail,key=current,owner=_25._tcp.mail.example.org. 3"},
	} {
		found := false
		for _, s := range got[want.family] {
			found = found || s == want.sample
		}
		if !found {
			t.Errorf("%s: %q not in %q", want.family, want.sample, got[want.family])
		}
	}
	if n := len(got["daneroll_run_duration_seconds"]); n != 2 {
		t.Errorf("run durations %v, want renew's and status's", got["daneroll_run_duration_seconds"])
	}

	// A certificate removed from the configuration disappears.
	if err := Write(path, &Set{}, []string{"mail"}); err != nil {
		t.Fatal(err)
	}
	third, _ := os.ReadFile(path)
	if strings.Contains(string(third), `w\"w`) {
		t.Errorf("samples of a removed certificate stayed:\n%s", third)
	}
	parse(t, third)
}

func TestReadRefusesGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daneroll.prom")
	os.WriteFile(path, []byte("daneroll_run_success{command=\"renew} 1\n"), 0o644)
	if err := Write(path, &Set{}, nil); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("err = %v", err)
	}
}
