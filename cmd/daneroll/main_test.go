package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/daneroll/daneroll/store"
)

// The command-line tests are testscript files in testdata/script, in the
// manner of FiloSottile/age: each runs the real binary (this test binary,
// re-executed as "daneroll") and asserts its exit code, stdout and stderr.
//
// Scripts are grouped by what they need, by the prefix of their name:
//
//	dns_*    an in-process signed DNS zone and a Cloudflare API (fast, -short)
//	world_*  Pebble too, and an SMTP service that reloads (skipped with -short)
//	others   nothing but files (fast, -short)
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"daneroll": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// TestScript runs the scripts that need no server.
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Files: scripts(t, func(name string) bool {
			return !strings.HasPrefix(name, "dns_") && !strings.HasPrefix(name, "world_")
		}),
		Setup: setupCommon,
		Cmds:  commands(),
		// TESTSCRIPT_UPDATE=1 rewrites expected outputs after a deliberate change.
		UpdateScripts: os.Getenv("TESTSCRIPT_UPDATE") != "",
	})
}

// scripts lists the scripts in testdata/script whose names keep accepts.
func scripts(t *testing.T, keep func(name string) bool) []string {
	t.Helper()
	all, err := filepath.Glob(filepath.Join("testdata", "script", "*.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range all {
		if keep(filepath.Base(f)) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatal("no scripts")
	}
	return out
}

// lockKey finds a script's held lock in its Values.
type lockKey struct{}

// heldLock is the state-directory lock a script took with holdlock.
type heldLock struct{ l *store.Lock }

// setupCommon gives every script $VECTORS, the TLSA test vectors of the
// dane package, and a slot for the lock that holdlock takes.
func setupCommon(env *testscript.Env) error {
	vectors, err := filepath.Abs(filepath.Join("..", "..", "dane", "testdata", "vectors"))
	if err != nil {
		return err
	}
	env.Setenv("VECTORS", vectors)
	h := &heldLock{}
	env.Values[lockKey{}] = h
	env.Defer(func() { _ = h.l.Unlock() })
	return nil
}

// commands are the scripts' own commands, beyond testscript's:
//
//	exits N PROG ARGS   run PROG like exec and assert its exit code is N
//	holdlock DIR        take DIR's daneroll lock in the test process (as a
//	                    running daneroll would) and set $LOCKPID
//	unlock              release it
//	snapshot DIR FILE   write every path under DIR with its mode and the
//	                    SHA-256 of its contents (or symlink target) to FILE,
//	                    so that "cmp" shows whether anything changed
//	expand IN OUT       copy IN to OUT with $VARS replaced by their values
//	                    (configurations that name servers on random ports)
//	grab VAR REGEXP     set $VAR to REGEXP's first group in the last stdout
//	nosecrets VAR...    assert that the last stdout and stderr hold none of
//	                    the (non-empty) values of the variables
//	served OWNER        (dns_ and world_ scripts) the TLSA records every
//	                    authoritative server serves at OWNER
//	serving             (world_ scripts) the SPKI digest of the key the
//	                    SMTP service serves
func commands() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	return map[string]func(ts *testscript.TestScript, neg bool, args []string){
		"exits":     cmdExits,
		"holdlock":  cmdHoldLock,
		"unlock":    cmdUnlock,
		"snapshot":  cmdSnapshot,
		"expand":    cmdExpand,
		"grab":      cmdGrab,
		"nosecrets": cmdNoSecrets,
		"served":    cmdServed,
		"serving":   cmdServing,
	}
}

func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits N PROG [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("%s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with %d, want %d", args[1], got, want)
	}
}

func cmdHoldLock(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: holdlock DIR")
	}
	h := ts.Value(lockKey{}).(*heldLock)
	if h.l != nil {
		ts.Fatalf("holdlock: already held")
	}
	st, err := store.Open(ts.MkAbs(args[0]))
	ts.Check(err)
	h.l, err = st.Lock()
	ts.Check(err)
	ts.Setenv("LOCKPID", strconv.Itoa(os.Getpid()))
}

func cmdUnlock(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: unlock")
	}
	h := ts.Value(lockKey{}).(*heldLock)
	if h.l == nil {
		ts.Fatalf("unlock: no lock held")
	}
	ts.Check(h.l.Unlock())
	h.l = nil
}

func cmdSnapshot(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: snapshot DIR FILE")
	}
	root := ts.MkAbs(args[0])
	var lines []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %s", filepath.ToSlash(rel), info.Mode())
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			line += " -> " + target
		case info.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			line += " " + hex.EncodeToString(sum[:])
		}
		lines = append(lines, line)
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		lines = []string{"(no such directory)"}
	} else {
		ts.Check(err)
	}
	slices.Sort(lines)
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(strings.Join(lines, "\n")+"\n"), 0o644))
}

func cmdExpand(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: expand IN OUT")
	}
	var missing []string
	out := os.Expand(ts.ReadFile(args[0]), func(name string) string {
		v := ts.Getenv(name)
		if v == "" {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		ts.Fatalf("expand: %s: unset variables %v", args[0], missing)
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(out), 0o644))
}

func cmdGrab(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: grab VAR REGEXP")
	}
	re, err := regexp.Compile(`(?m)` + args[1])
	ts.Check(err)
	m := re.FindStringSubmatch(ts.ReadFile("stdout"))
	if len(m) < 2 {
		ts.Fatalf("grab: no match for %q in stdout", args[1])
	}
	ts.Setenv(args[0], m[1])
	ts.Logf("%s=%s", args[0], m[1])
}

func cmdNoSecrets(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: nosecrets VAR...")
	}
	out, errOut := ts.ReadFile("stdout"), ts.ReadFile("stderr")
	for _, name := range args {
		v := ts.Getenv(name)
		if v == "" {
			ts.Fatalf("nosecrets: $%s is empty", name)
		}
		if strings.Contains(out, v) {
			ts.Fatalf("stdout shows $%s", name)
		}
		if strings.Contains(errOut, v) {
			ts.Fatalf("stderr shows $%s", name)
		}
	}
}
