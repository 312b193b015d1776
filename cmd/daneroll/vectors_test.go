package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTLSAVectors runs "daneroll tlsa --cert" for every vector that gen.sh
// computed with openssl (see the header of vectors.txt for the format), with
// and without --name.
func TestTLSAVectors(t *testing.T) {
	dir := filepath.Join("..", "..", "dane", "testdata", "vectors")
	f, err := os.Open(filepath.Join(dir, "vectors.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string]bool{}
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20) // matching type 0 lines hold a whole certificate in hex
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Split(text, " ")
		if len(fields) != 5 {
			t.Fatalf("vectors.txt:%d: want FILE USAGE SELECTOR MATCHING DATA, got %d fields", line, len(fields))
		}
		file, params, data := fields[0], strings.Join(fields[1:4], " "), fields[4]
		files[file] = true
		n++
		args := []string{"tlsa", "--cert", filepath.Join(dir, file), "--usage", fields[1], "--selector", fields[2], "--matching", fields[3]}
		want := params + " " + data + "\n"
		if got, errOut, code := runCLI(args...); code != 0 || got != want || errOut != "" {
			t.Errorf("vectors.txt:%d: daneroll %s\nexit %d, stderr %q\ngot  %q\nwant %q", line, strings.Join(args, " "), code, errOut, got, want)
		}
		args = append(args, "--name", "_25._tcp.mail.example.test")
		want = "_25._tcp.mail.example.test. IN TLSA " + want
		if got, errOut, code := runCLI(args...); code != 0 || got != want || errOut != "" {
			t.Errorf("vectors.txt:%d: daneroll %s\nexit %d, stderr %q\ngot  %q\nwant %q", line, strings.Join(args, " "), code, errOut, got, want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	// Every certificate and key file of the directory has vectors, so that
	// a vectors.txt cut short does not pass unnoticed; the keys of the root
	// and the intermediate only sign, gen.sh makes no vectors for them.
	files["root.key"], files["int.key"] = true, true
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".crt", ".key", ".pub", ".pem":
			if !files[e.Name()] {
				t.Errorf("%s has no vector", e.Name())
			}
		}
	}
	t.Logf("%d vectors", n)
}

// runCLI runs the command line in this process.
func runCLI(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return out.String(), errOut.String(), code
}
