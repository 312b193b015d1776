// Package metrics writes daneroll's state as a Prometheus text-format file
// for node_exporter's textfile collector.
//
// # What a file holds
//
// Each run of renew, status or check measures some things (a renewal
// knows whether each certificate succeeded, status knows what every
// authoritative server serves) and not others. [Write] replaces what the
// run measured and keeps the rest of the previous file, so the file
// always holds the latest value of every metric: the last success of a
// certificate stays after a status run, a status run's server counts stay
// after a renewal. Samples of certificates no longer configured are
// dropped.
//
// The file is written atomically (temporary file, rename) with mode 0644,
// so node_exporter never reads half of one.
package metrics

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/daneroll/daneroll/store"
)

// Family is a metric family: its name, help text and type.
type Family struct {
	Name string
	Help string
	Type string // "gauge"
	// Scope is the label whose value says which samples a run replaces:
	// "certificate" for per-certificate families, "command" for per-run
	// ones.
	Scope string
}

// The families daneroll writes.
var (
	Expiry = Family{"daneroll_certificate_expiry_timestamp_seconds",
		"When the live certificate expires (Unix time).", "gauge", "certificate"}
	LastSuccess = Family{"daneroll_certificate_last_success_timestamp_seconds",
		"When a renew run last ended well for the certificate (done, nothing due, or waiting as planned).", "gauge", "certificate"}
	LastFailure = Family{"daneroll_certificate_last_failure_timestamp_seconds",
		"When a renew run last failed for the certificate (or rolled back).", "gauge", "certificate"}
	Pending = Family{"daneroll_transaction_pending",
		"1 while a transaction is pending, labelled with its kind and step; 0 when none is.", "gauge", "certificate"}
	PendingSince = Family{"daneroll_transaction_started_timestamp_seconds",
		"When the pending transaction started (Unix time).", "gauge", "certificate"}
	RecordServers = Family{"daneroll_tlsa_record_servers",
		"On how many authoritative servers each wanted TLSA record is visible.", "gauge", "certificate"}
	OwnerServers = Family{"daneroll_tlsa_authoritative_servers",
		"How many authoritative servers answer for the TLSA owner name.", "gauge", "certificate"}
	ServedKeyPublished = Family{"daneroll_served_key_published",
		"1 when every authoritative server serves the served key's records at every TLSA name, else 0.", "gauge", "certificate"}
	StaleRecords = Family{"daneroll_tlsa_stale_records",
		"Stale TLSA records (keys daneroll will not serve) at the certificate's names.", "gauge", "certificate"}
	MemberServing = Family{"daneroll_fleet_member_serving",
		"Fleet mode: 1 when the member's last report says its endpoints serve the fleet's live set, else 0.", "gauge", "certificate"}
	AgentRunning = Family{"daneroll_fleet_agent_running",
		"Fleet mode: 1 while the member's daneroll agent runs, else 0.", "gauge", "certificate"}
	RunDuration = Family{"daneroll_run_duration_seconds",
		"How long the last run of the command took.", "gauge", "command"}
	RunSuccess = Family{"daneroll_run_success",
		"1 when the last run of the command succeeded, else 0.", "gauge", "command"}
	RunTime = Family{"daneroll_run_timestamp_seconds",
		"When the last run of the command ended (Unix time).", "gauge", "command"}
)

var families = []Family{Expiry, LastSuccess, LastFailure, Pending, PendingSince, RecordServers, OwnerServers,
	ServedKeyPublished, StaleRecords, MemberServing, AgentRunning, RunDuration, RunSuccess, RunTime}

func familyNamed(name string) (Family, bool) {
	for _, f := range families {
		if f.Name == name {
			return f, true
		}
	}
	return Family{}, false
}

// Label is one name="value" pair.
type Label struct{ Name, Value string }

// Sample is one value of a family.
type Sample struct {
	Family Family
	Labels []Label
	Value  float64
}

func (s Sample) label(name string) (string, bool) {
	for _, l := range s.Labels {
		if l.Name == name {
			return l.Value, true
		}
	}
	return "", false
}

// Set collects the samples of one run.
type Set struct {
	samples []Sample
}

// Add adds a sample; labels are name, value pairs.
func (s *Set) Add(f Family, value float64, labels ...string) {
	var ls []Label
	for i := 0; i+1 < len(labels); i += 2 {
		ls = append(ls, Label{labels[i], labels[i+1]})
	}
	s.samples = append(s.samples, Sample{Family: f, Labels: ls, Value: value})
}

// Time adds a timestamp sample (seconds since the epoch); zero times are
// left out.
func (s *Set) Time(f Family, t time.Time, labels ...string) {
	if t.IsZero() {
		return
	}
	s.Add(f, float64(t.UnixMilli())/1000, labels...)
}

// Bool adds 1 or 0.
func (s *Set) Bool(f Family, b bool, labels ...string) {
	v := 0.0
	if b {
		v = 1
	}
	s.Add(f, v, labels...)
}

// Replaces marks that this run measured f for scope value v (a
// certificate's name, a command), even if it added no sample: the old
// samples go.
func (s *Set) Replaces(f Family, v string) {
	s.samples = append(s.samples, Sample{Family: f, Labels: []Label{{f.Scope, v}}, Value: math.NaN()})
}

// maxFile bounds the previous file read back.
const maxFile = 16 << 20

// Write merges set into the file at path and replaces it atomically:
// samples of a family and scope value the set has replace the old ones,
// old samples of certificates not in certs are dropped, the rest stays.
func Write(path string, set *Set, certs []string) error {
	old, err := read(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("metrics: %s: %w", path, err)
	}
	replaced := map[[2]string]bool{}
	var merged []Sample
	for _, s := range set.samples {
		v, _ := s.label(s.Family.Scope)
		replaced[[2]string{s.Family.Name, v}] = true
		if !math.IsNaN(s.Value) {
			merged = append(merged, s)
		}
	}
	for _, s := range old {
		v, _ := s.label(s.Family.Scope)
		if replaced[[2]string{s.Family.Name, v}] {
			continue
		}
		if s.Family.Scope == "certificate" && !slices.Contains(certs, v) {
			continue
		}
		merged = append(merged, s)
	}
	if err := store.WriteFile(path, Format(merged), 0o644); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// Format writes samples in the text exposition format, families in a fixed
// order, samples sorted by their labels.
func Format(samples []Sample) []byte {
	var b bytes.Buffer
	for _, f := range families {
		var fs []Sample
		for _, s := range samples {
			if s.Family.Name == f.Name {
				fs = append(fs, s)
			}
		}
		if len(fs) == 0 {
			continue
		}
		sort.SliceStable(fs, func(i, j int) bool { return labelText(fs[i].Labels) < labelText(fs[j].Labels) })
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", f.Name, f.Help, f.Name, f.Type)
		for _, s := range fs {
			fmt.Fprintf(&b, "%s%s %s\n", f.Name, labelText(s.Labels), strconv.FormatFloat(s.Value, 'g', -1, 64))
		}
	}
	return b.Bytes()
}

func labelText(ls []Label) string {
	if len(ls) == 0 {
		return ""
	}
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.Name + `="` + escape(l.Value) + `"`
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// escape escapes a label value: backslash, double quote and line feed.
func escape(v string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
}

// read parses a file Write wrote; lines of families it does not know are
// dropped, a line it cannot read is an error.
func read(path string) ([]Sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Sample
	sc := bufio.NewScanner(io.LimitReader(f, maxFile))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, known, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if known {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

func parseLine(line string) (Sample, bool, error) {
	nameEnd := strings.IndexAny(line, "{ ")
	if nameEnd <= 0 {
		return Sample{}, false, errors.New("no metric name")
	}
	f, known := familyNamed(line[:nameEnd])
	s := Sample{Family: f}
	rest := line[nameEnd:]
	if strings.HasPrefix(rest, "{") {
		var err error
		if s.Labels, rest, err = parseLabels(rest[1:]); err != nil {
			return Sample{}, false, err
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
	if err != nil {
		return Sample{}, false, fmt.Errorf("bad value %q", strings.TrimSpace(rest))
	}
	s.Value = v
	return s, known, nil
}

// parseLabels reads `a="x",b="y"}` and returns the labels and what follows
// the closing brace.
func parseLabels(s string) ([]Label, string, error) {
	var out []Label
	for {
		if strings.HasPrefix(s, "}") {
			return out, s[1:], nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || len(s) < eq+2 || s[eq+1] != '"' {
			return nil, "", errors.New("bad label")
		}
		name := s[:eq]
		s = s[eq+2:]
		var v strings.Builder
		closed := false
		for i := 0; i < len(s); i++ {
			c := s[i]
			switch {
			case c == '\\' && i+1 < len(s):
				i++
				switch s[i] {
				case 'n':
					v.WriteByte('\n')
				default:
					v.WriteByte(s[i])
				}
			case c == '"':
				s, closed = s[i+1:], true
			default:
				v.WriteByte(c)
				continue
			}
			if closed {
				break
			}
		}
		if !closed {
			return nil, "", errors.New("unterminated label value")
		}
		out = append(out, Label{name, v.String()})
		s = strings.TrimPrefix(s, ",")
	}
}
