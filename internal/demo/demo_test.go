package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/daneroll/daneroll/internal/syncbuf"
)

// buildBinaries builds daneroll and the demo into a temporary directory.
func buildBinaries(t *testing.T) (daneroll, demo string) {
	t.Helper()
	dir := t.TempDir()
	daneroll = filepath.Join(dir, "daneroll")
	demo = filepath.Join(dir, "demo")
	for _, b := range []struct{ out, pkg string }{
		{daneroll, "github.com/daneroll/daneroll/cmd/daneroll"},
		{demo, "github.com/daneroll/daneroll/internal/demo"},
	} {
		if out, err := exec.Command("go", "build", "-o", b.out, b.pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return daneroll, demo
}

var workDirRE = regexp.MustCompile(`\$ daneroll -c (\S+)/daneroll\.toml `)

// assertCleanedUp checks that the demo's working directory is gone and
// that no process it started is left.
func assertCleanedUp(t *testing.T, out string) {
	t.Helper()
	m := workDirRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no working directory in the output:\n%s", out)
	}
	dir := m[1]
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the working directory %s is still there (%v)", dir, err)
	}
	// Pebble and daneroll run from, or are given paths in, that directory.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if strings.Contains(string(b), dir) {
			t.Errorf("process %s is still running: %q", filepath.Base(filepath.Dir(p)), strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo: Pebble, DNS, SMTP and the daneroll binary")
	}
	daneroll, demo := buildBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo, "-daneroll", daneroll)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("the demo took %s", time.Since(start).Round(100*time.Millisecond))
	text := out.String()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, text)
	}

	// The summary: the prober checked during the rollover and found no gap.
	m := regexp.MustCompile(`(?m)^  4\. key rollover .* prober: (\d+) checks, (\d+) failures$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no prober line in the summary:\n%s", text)
	}
	if n, _ := strconv.Atoi(m[1]); n < 1 || m[2] != "0" {
		t.Errorf("prober: %s checks, %s failures; want some checks and 0 failures", m[1], m[2])
	}
	for _, want := range []string{
		"\n  ok: prober: saw the served key change 1 time(s)\n",
		"\n  ok: the service switched to the pre-published next key\n",
		"\n  ok: the old key's record is retired on every server\n",
		"\nPASS: every check passed.\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", strings.TrimSpace(want))
		}
	}
	if !regexp.MustCompile(`(?m)^  5\. independent check +[0-9.]+s   PASS$`).MatchString(text) {
		t.Errorf("the independent check did not pass")
	}
	if strings.Contains(text, "FAIL") {
		t.Errorf("output has FAIL lines")
	}

	// The renewal kept the key: the digests before and after are equal,
	// and a new certificate is served.
	before := regexp.MustCompile(`(?m)^  before: 3 1 1 ([0-9a-f]{64})  certificate serial ([0-9a-f]+)$`).FindStringSubmatch(text)
	after := regexp.MustCompile(`(?m)^  after:  3 1 1 ([0-9a-f]{64})  certificate serial ([0-9a-f]+)$`).FindStringSubmatch(text)
	switch {
	case before == nil || after == nil:
		t.Errorf("no before/after digests in the output")
	case before[1] != after[1]:
		t.Errorf("the 3 1 1 digest changed across the renewal: %s -> %s", before[1], after[1])
	case before[2] == after[2]:
		t.Errorf("the renewal served the same certificate (serial %s)", before[2])
	}
	if !strings.Contains(text, "3. renewal, same key") || !strings.Contains(text, "3 1 1 digest unchanged") {
		t.Errorf("the summary does not say the digest is unchanged")
	}
	assertCleanedUp(t, text)
	if t.Failed() {
		t.Logf("output:\n%s", text)
	}
}

// TestDemoInterrupted stops the demo with SIGINT while daneroll waits (the
// hold of the first issuance) and checks that it exits 130 and leaves
// nothing behind.
func TestDemoInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Pebble, DNS, SMTP and the daneroll binary")
	}
	daneroll, demo := buildBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo, "-daneroll", daneroll)
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), "hold: waiting until") {
		if time.Now().After(deadline) {
			t.Fatalf("daneroll never reached its hold:\n%s", out.String())
		}
		select {
		case err := <-done:
			t.Fatalf("the demo ended early (%v):\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := <-done
	text := out.String()
	if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
		t.Fatalf("exit code %d (%v), want %d:\n%s", code, err, exitInterrupted, text)
	}
	if !strings.Contains(text, "demo: interrupted") {
		t.Errorf("the demo does not say it was interrupted:\n%s", text)
	}
	assertCleanedUp(t, text)
}

func TestUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	missing := filepath.Join(t.TempDir(), "no-such-daneroll")
	if code := run(context.Background(), []string{"-daneroll", missing}, &stdout, &stderr); code != exitUsage {
		t.Errorf("missing binary: exit %d, want %d", code, exitUsage)
	}
	if !strings.Contains(stderr.String(), "hint: make build") {
		t.Errorf("missing binary: no hint in %q", stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("missing binary: the demo started: %q", stdout.String())
	}
	stderr.Reset()
	if code := run(context.Background(), []string{"-ttl", "0"}, &stdout, &stderr); code != exitUsage {
		t.Errorf("-ttl 0: exit %d, want %d", code, exitUsage)
	}
	if code := run(context.Background(), []string{"extra"}, &stdout, &stderr); code != exitUsage {
		t.Errorf("an argument: exit %d, want %d", code, exitUsage)
	}
}
