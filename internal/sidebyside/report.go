package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// median is the middle run's wall time (the mean of the two middle ones
// for an even count).
func median(s []sample) time.Duration {
	if len(s) == 0 {
		return 0
	}
	d := make([]time.Duration, len(s))
	for i, x := range s {
		d[i] = x.wall
	}
	slices.Sort(d)
	if len(d)%2 == 1 {
		return d[len(d)/2]
	}
	return (d[len(d)/2-1] + d[len(d)/2]) / 2
}

func total(s []sample) time.Duration {
	var t time.Duration
	for _, x := range s {
		t += x.wall
	}
	return t
}

// peak is the largest peak RSS of the runs (KiB).
func peak(s []sample) int64 {
	var p int64
	for _, x := range s {
		p = max(p, x.rss)
	}
	return p
}

// time is what a row compares: the median run, or the total of the runs.
func (r row) time(res result) time.Duration {
	if res.sum {
		return total(res.samples)
	}
	return median(res.samples)
}

func (r row) cell(res result) string {
	t := r.time(res)
	if r.issued > 0 {
		return fmt.Sprintf("%s (%s/s)", fmtDuration(t), fmtRate(float64(r.issued)/t.Seconds()))
	}
	return fmtDuration(t)
}

// fmtDuration keeps two or three significant digits.
func fmtDuration(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 10:
		return fmt.Sprintf("%.1f ms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.0f ms", ms)
	case ms < 10000:
		return fmt.Sprintf("%.2f s", ms/1000)
	case ms < 100000:
		return fmt.Sprintf("%.1f s", ms/1000)
	}
	return fmt.Sprintf("%.0f s", ms/1000)
}

// fmtLong is a long run's time in minutes and seconds.
func fmtLong(d time.Duration) string {
	d = d.Round(time.Second)
	if d < time.Minute {
		return fmt.Sprintf("%d s", d/time.Second)
	}
	return fmt.Sprintf("%d min %d s", d/time.Minute, d%time.Minute/time.Second)
}

func fmtKiB(k int64) string {
	mib := float64(k) / 1024
	if mib < 10 {
		return fmt.Sprintf("%.1f MiB", mib)
	}
	return fmt.Sprintf("%.0f MiB", mib)
}

func fmtRate(r float64) string {
	if r < 10 {
		return fmt.Sprintf("%.2f", r)
	}
	return fmt.Sprintf("%.1f", r)
}

// fmtRatio is how many times certbot's time daneroll's is.
func fmtRatio(certbot, daneroll time.Duration) string {
	if daneroll <= 0 {
		return "–"
	}
	r := float64(certbot) / float64(daneroll)
	if r < 10 {
		return fmt.Sprintf("%.1f×", r)
	}
	return fmt.Sprintf("%.0f×", r)
}

// table is the Markdown table of the rows.
func table(rows []row) string {
	var s strings.Builder
	s.WriteString("| operation | certbot | peak RSS | daneroll | peak RSS | certbot ÷ daneroll |\n")
	s.WriteString("| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s | %s |\n", r.op,
			r.cell(r.certbot), fmtKiB(peak(r.certbot.samples)),
			r.cell(r.daneroll), fmtKiB(peak(r.daneroll.samples)),
			fmtRatio(r.time(r.certbot), r.time(r.daneroll)))
	}
	return s.String()
}

// report prints the results in Markdown, ready for the README.
func (b *bench) report(w io.Writer, took time.Duration) {
	fmt.Fprintf(w, "\n%s, %s, %d cores; %s. This run took %s.\n\n",
		time.Now().Format("2006-01-02"), cpuModel(), runtime.NumCPU(), strings.Join(b.versions, ", "), fmtLong(took))
	fmt.Fprint(w, table(b.rows))
	fmt.Fprintf(w, "\nWhole processes: wall time, and the peak resident set size of the process (the largest over its runs; "+
		"each command is started by a small helper, so no RSS shows below its %s, and starting /bin/true takes %s). "+
		"Pebble has `PEBBLE_VA_ALWAYS_VALID` set, so no challenge is checked and neither tool waits for a validation. "+
		"No-op renew, status and start: the median of %s, after one unmeasured warm-up run of each command; forced renewal: the median of %s.\n\n",
		fmtKiB(b.floor.rss), fmtDuration(b.floor.wall), runsOf(b.o.runs), runsOf(b.o.forceRuns))
	fmt.Fprintf(w, "- Lineages: certbot issued %d for real; the no-op, status and forced renewal sets are clones of them "+
		"(renewal/NAME.conf with its paths rewritten, live/ and archive/ copied). daneroll took them over with `daneroll import-certbot` "+
		"(the same keys, certificates and ACME account), with a configuration of as many `[[certificate]]` tables like the issuing one.\n", b.o.issue)
	if b.firstImport.wall > 0 {
		fmt.Fprintf(w, "- The first daneroll renew after the import asks the CA's ARI about every certificate and records the answer "+
			"(asked again after the CA's Retry-After, 6 hours at Pebble): %s for %d certificates, not in the table.\n",
			fmtDuration(b.firstImport.wall), slices.Max(b.o.noop))
	}
	if len(b.writes) > 0 {
		fmt.Fprintf(w, "- Files and directories written during the measured no-op runs, compared by their stamps (inode, size, mode, times) before and after: "+
			"daneroll's state directory, no-op renew %s.\n", strings.Join(b.writes, "; no-op renew "))
	}
	for _, n := range b.notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	fmt.Fprintf(w, "\nThe commands ($W is the working directory, removed at the end; $PEBBLE is Pebble's directory URL):\n\n```sh\n")
	for _, c := range b.setupCmds {
		fmt.Fprintf(w, "%s   # once per set of lineages\n", c)
	}
	for _, r := range b.rows {
		fmt.Fprintf(w, "# %s\n%s\n%s\n", r.op, r.certbot.cmd, r.daneroll.cmd)
	}
	fmt.Fprintf(w, "```\n")
}

// runsOf says how many runs.
func runsOf(n int) string {
	if n == 1 {
		return "one run"
	}
	return fmt.Sprintf("%d runs", n)
}

// cpuModel is the processor's name, from /proc/cpuinfo.
func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return runtime.GOARCH
}
