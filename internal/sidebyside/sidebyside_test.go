package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// What certbot 2.1 writes for a lineage; the paths are the ones a clone
// must not keep.
const renewalConf = `# renew_before_expiry = 30 days
version = 2.1.0
archive_dir = /old/config/archive/n0001.sidebyside.test
cert = /old/config/live/n0001.sidebyside.test/cert.pem
privkey = /old/config/live/n0001.sidebyside.test/privkey.pem
chain = /old/config/live/n0001.sidebyside.test/chain.pem
fullchain = /old/config/live/n0001.sidebyside.test/fullchain.pem

# Options used in the renewal process
[renewalparams]
account = 7b7bf2396482ed2a66ed1d764cdcef58
server = https://127.0.0.1:14000/dir
authenticator = standalone
http01_port = 5002
cert = not/a/path/to/rewrite
`

func TestRewriteRenewal(t *testing.T) {
	out, err := rewriteRenewal([]byte(renewalConf), "/new", "c0007.sidebyside.test")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.NewReplacer(
		"archive_dir = /old/config/archive/n0001.sidebyside.test", "archive_dir = /new/archive/c0007.sidebyside.test",
		"/old/config/live/n0001.sidebyside.test/", "/new/live/c0007.sidebyside.test/",
	).Replace(renewalConf)
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	if _, err := rewriteRenewal([]byte("version = 2.1.0\n[renewalparams]\narchive_dir = x\n"), "/new", "c"); err == nil {
		t.Error("a renewal file without its paths was cloned")
	}
}

func TestCloneLineages(t *testing.T) {
	src, dst := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "dst")
	for _, name := range []string{"n0001.sidebyside.test", "n0002.sidebyside.test"} {
		archive := filepath.Join(src, "archive", name)
		live := filepath.Join(src, "live", name)
		for _, d := range []string{archive, live, filepath.Join(src, "renewal"), filepath.Join(src, "accounts", "a")} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{"cert", "privkey", "chain", "fullchain"} {
			if err := os.WriteFile(filepath.Join(archive, f+"1.pem"), []byte(name+" "+f), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join("..", "..", "archive", name, f+"1.pem"), filepath.Join(live, f+".pem")); err != nil {
				t.Fatal(err)
			}
		}
		conf := strings.ReplaceAll(renewalConf, "n0001.sidebyside.test", name)
		if err := os.WriteFile(filepath.Join(src, "renewal", name+".conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "accounts", "a", "regr.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}

	from, err := cloneLineages(src, dst, 3, cloneName)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"n0001.sidebyside.test", "n0002.sidebyside.test", "n0001.sidebyside.test"}; !slices.Equal(from, want) {
		t.Errorf("cloned from %q, want %q", from, want)
	}
	// Through the clone's own link, the source's bytes.
	data, err := os.ReadFile(filepath.Join(dst, "live", "c0002.sidebyside.test", "privkey.pem"))
	if err != nil || string(data) != "n0002.sidebyside.test privkey" {
		t.Errorf("c0002's privkey.pem: %q, %v", data, err)
	}
	if target, _ := os.Readlink(filepath.Join(dst, "live", "c0003.sidebyside.test", "cert.pem")); target != "../../archive/c0003.sidebyside.test/cert1.pem" {
		t.Errorf("c0003's cert.pem links to %q", target)
	}
	if info, err := os.Stat(filepath.Join(dst, "archive", "c0001.sidebyside.test", "privkey1.pem")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("c0001's key: %v, %v", info, err)
	}
	conf, err := os.ReadFile(filepath.Join(dst, "renewal", "c0003.sidebyside.test.conf"))
	if err != nil || !strings.Contains(string(conf), "\nprivkey = "+filepath.Join(dst, "live", "c0003.sidebyside.test", "privkey.pem")+"\n") {
		t.Errorf("c0003's renewal file:\n%s (%v)", conf, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "accounts", "a", "regr.json")); err != nil {
		t.Errorf("the account was not copied: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "renewal", "n0001.sidebyside.test.conf")); err == nil {
		t.Error("a source lineage was copied under its own name")
	}
}

func TestStamps(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"keep", "change", "remove"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("1"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before, err := stamps(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A rewrite of the same size within the same clock tick still
	// changes the inode, as an atomic write (temp file, rename) does.
	if err := os.WriteFile(filepath.Join(dir, "change.tmp"), []byte("2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "change.tmp"), filepath.Join(dir, "change")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "remove")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "new"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	after, err := stamps(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := diffStamps(before, after)
	// "." as well: entries came and went.
	if want := []string{".", "change", "new (new)", "remove (removed)"}; !slices.Equal(got, want) {
		t.Errorf("changes %q, want %q", got, want)
	}
	if d := describeChanges(got); d != "4 written (the directory itself, change, new (new), …)" {
		t.Errorf("described as %q", d)
	}
	if d := describeChanges(diffStamps(after, after)); d != "no file or directory written" {
		t.Errorf("no change described as %q", d)
	}
}

func TestDanerollConfig(t *testing.T) {
	conf := danerollConfig("/w/state", "https://127.0.0.1:14000/dir", "/w/roots.pem", "", 5002,
		[]string{"c0001.sidebyside.test", "c0002.sidebyside.test"}, []string{"n0001.sidebyside.test", "n0001.sidebyside.test"})
	var got struct {
		StateDir string `toml:"state_dir"`
		ACME     struct {
			Directory string
			Email     *string
			CARoots   []string `toml:"ca_roots"`
		}
		Certificate []struct {
			Name, Challenge string
			Domains         []string
			Listen          string `toml:"http01_listen"`
			KeyPolicy       string `toml:"key_policy"`
		}
	}
	if _, err := toml.Decode(conf, &got); err != nil {
		t.Fatalf("%v\n%s", err, conf)
	}
	// No e-mail address: the imported account is the one to use.
	if got.StateDir != "/w/state" || got.ACME.Email != nil || !slices.Equal(got.ACME.CARoots, []string{"/w/roots.pem"}) || len(got.Certificate) != 2 {
		t.Fatalf("%+v", got)
	}
	c := got.Certificate[1]
	if c.Name != "c0002.sidebyside.test" || !slices.Equal(c.Domains, []string{"n0001.sidebyside.test"}) ||
		c.Challenge != "http-01" || c.Listen != "127.0.0.1:5002" || c.KeyPolicy != "reuse" {
		t.Errorf("%+v", c)
	}
}

func TestOptions(t *testing.T) {
	o, err := parseOptions([]string{"-quick", "-noop", "7,8", "-runs", "9"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// -quick sets what was not given.
	if !slices.Equal(o.noop, sizes{7, 8}) || o.runs != 9 || o.issue != quick().issue || o.forceRuns != quick().forceRuns {
		t.Errorf("%+v", o)
	}
	if o, _ := parseOptions(nil, io.Discard); !slices.Equal(o.noop, sizes{20, 200, 1000}) || o.issue != 100 || o.status != 1000 || o.force != 20 {
		t.Errorf("defaults %+v", o)
	}
	for _, bad := range [][]string{{"-noop", "20,x"}, {"-noop", "0"}, {"-issue", "0"}, {"extra"}} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestTable(t *testing.T) {
	ms := func(d ...time.Duration) []sample {
		var s []sample
		for _, x := range d {
			s = append(s, sample{wall: x * time.Millisecond, rss: 10 * 1024})
		}
		return s
	}
	rows := []row{
		{op: "no-op renew, 20", certbot: result{samples: ms(1000, 900, 5000)}, daneroll: result{samples: ms(3, 2, 40)}},
		{op: "issuing 4", issued: 4, certbot: result{samples: ms(3000, 3000, 3000, 3000), sum: true}, daneroll: result{samples: ms(200, 400)}},
	}
	want := `| operation | certbot | peak RSS | daneroll | peak RSS | certbot ÷ daneroll |
| --- | ---: | ---: | ---: | ---: | ---: |
| no-op renew, 20 | 1.00 s | 10 MiB | 3.0 ms | 10 MiB | 333× |
| issuing 4 | 12.0 s (0.33/s) | 10 MiB | 300 ms (13.3/s) | 10 MiB | 40× |
`
	if got := table(rows); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
