package certbot

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daneroll/daneroll/internal/rig"
)

// fakeHost copies testdata/fakehost: Debian's /etc/cron.d/certbot, a
// second cron file that runs certbot too (with other lines that must stay),
// an /etc/crontab without certbot, root's crontab with a certbot line, a
// cron.daily script that calls certbot, an enabled and active
// certbot.timer, and stand-ins for systemctl and crontab.
func fakeHost(t *testing.T) (string, *Host) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "host")
	if err := rig.CopyTree(filepath.Join("testdata", "fakehost"), dir); err != nil {
		t.Fatal(err)
	}
	return dir, HostUnder(dir)
}

func read(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestFindAndDisable(t *testing.T) {
	dir, h := fakeHost(t)
	ctx := context.Background()
	found, errs := h.Find(ctx)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var got []string
	for _, f := range found {
		got = append(got, f.Kind+" "+strings.TrimPrefix(f.Where, dir+"/")+" "+f.What)
	}
	want := []string{
		"timer certbot.timer systemd timer, enabled and active",
		"cron etc/cron.d/certbot:17 0 */12 * * * root test -x /usr/bin/certbot -a \\! -d /run/systemd/system && perl -e 'sleep int(rand(43200))' && certbot -q renew --no-random-sleep-on-renew",
		"cron etc/cron.d/dane-renew:6 17 3 * * * root certbot renew -q && /usr/local/bin/tlsa-update.sh",
		"crontab crontab of " + crontabUser() + ":3 0 3 * * * /usr/bin/certbot renew --quiet --post-hook \"systemctl reload postfix\"",
		"script etc/cron.daily/tlsa-check:3 certbot certificates >/tmp/certs.txt 2>&1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("found:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	cronBefore := read(t, filepath.Join(dir, "etc/cron.d/dane-renew"))
	scriptBefore := read(t, filepath.Join(dir, "etc/cron.daily/tlsa-check"))
	changes, err := h.Disable(ctx, found)
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, c := range changes {
		got = append(got, strings.TrimPrefix(c.Where, dir+"/")+": "+c.What)
	}
	want = []string{
		"certbot.timer: disabled and stopped (disable --now certbot.timer)",
		"etc/cron.d/certbot:17: commented out: 0 */12 * * * root test -x /usr/bin/certbot -a \\! -d /run/systemd/system && perl -e 'sleep int(rand(43200))' && certbot -q renew --no-random-sleep-on-renew",
		"etc/cron.d/dane-renew:6: commented out: 17 3 * * * root certbot renew -q && /usr/local/bin/tlsa-update.sh",
		"crontab of " + crontabUser() + ":3: commented out: 0 3 * * * /usr/bin/certbot renew --quiet --post-hook \"systemctl reload postfix\"",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Exactly those lines, nothing else; modes kept.
	wantCron := strings.Replace(cronBefore, "\n17 3 * * * root certbot", "\n"+disabledMark+"17 3 * * * root certbot", 1)
	if got := read(t, filepath.Join(dir, "etc/cron.d/dane-renew")); got != wantCron {
		t.Errorf("dane-renew:\n%s", got)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "etc/cron.d/certbot")); fi.Mode().Perm() != 0o644 {
		t.Errorf("cron.d/certbot mode %v", fi.Mode())
	}
	if got := read(t, filepath.Join(dir, "spool/crontab")); got != "MAILTO=root\n# m h  dom mon dow   command\n"+disabledMark+
		"0 3 * * * /usr/bin/certbot renew --quiet --post-hook \"systemctl reload postfix\"\n30 2 * * 0 /usr/local/bin/rotate-dkim-keys\n" {
		t.Errorf("crontab:\n%s", got)
	}
	if read(t, filepath.Join(dir, "etc/cron.daily/tlsa-check")) != scriptBefore {
		t.Error("a script was changed")
	}
	if got := read(t, filepath.Join(dir, "systemctl.log")); !strings.Contains(got, "disable --now certbot.timer\n") {
		t.Errorf("systemctl calls:\n%s", got)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "etc/cron.d"))
	if len(entries) != 2 {
		t.Errorf("cron.d holds %d files (temporary files left?)", len(entries))
	}

	// A second look finds only the script; disabling again changes nothing.
	found, errs = h.Find(ctx)
	if len(errs) > 0 || len(found) != 1 || found[0].Kind != "script" {
		t.Fatalf("after disabling: %+v %v", found, errs)
	}
	if changes, err := h.Disable(ctx, found); err != nil || len(changes) != 0 {
		t.Errorf("disabling again: %v %v", changes, err)
	}
}

// TestHostWithoutCronOrSystemd: a host without systemctl, crontab or cron
// directories has nothing that runs certbot, and that is no error.
func TestHostWithoutCronOrSystemd(t *testing.T) {
	h := HostUnder(t.TempDir())
	found, errs := h.Find(context.Background())
	if len(found) != 0 || len(errs) != 0 {
		t.Errorf("found %+v, errors %v", found, errs)
	}
}

// TestDisableRefusesChangedFile: a cron line that changed between Find
// and Disable is not commented out blindly.
func TestDisableRefusesChangedFile(t *testing.T) {
	dir, h := fakeHost(t)
	found, _ := h.Find(context.Background())
	must(t, os.WriteFile(filepath.Join(dir, "etc/cron.d/certbot"), []byte("# emptied\n"), 0o644))
	var cron []Finding
	for _, f := range found {
		if f.Kind == "cron" {
			cron = append(cron, f)
		}
	}
	_, err := h.Disable(context.Background(), cron)
	if err == nil || !strings.Contains(err.Error(), "etc/cron.d/certbot:17: changed since it was read; run the command again") {
		t.Errorf("err = %v", err)
	}
	if read(t, filepath.Join(dir, "etc/cron.d/certbot")) != "# emptied\n" {
		t.Error("the changed file was rewritten")
	}
}

func TestReloads(t *testing.T) {
	for _, tc := range []struct {
		hook string
		want string // "name: argv | …", or "" when it is not a plain reload
	}{
		{"systemctl reload postfix", "postfix: systemctl reload postfix"},
		{"systemctl reload postfix dovecot.service", "postfix: systemctl reload postfix | dovecot: systemctl reload dovecot.service"},
		{"systemctl -q restart nginx; systemctl reload dovecot", "nginx: systemctl -q restart nginx | dovecot: systemctl reload dovecot"},
		{"/bin/systemctl try-reload-or-restart apache2", "apache2: /bin/systemctl try-reload-or-restart apache2"},
		{"service nginx reload", "nginx: service nginx reload"},
		{"/etc/init.d/postfix reload", "postfix: /etc/init.d/postfix reload"},
		{"postfix reload && doveadm reload", "postfix: postfix reload | dovecot: doveadm reload"},
		{"nginx -s reload", "nginx: nginx -s reload"},
		{"apache2ctl graceful", "apache2: apache2ctl graceful"},
		{"systemctl reload postfix || true", ""},
		{"systemctl reload postfix & ", ""},
		{"systemctl stop nginx", ""},
		{"systemctl reload", ""},
		{"systemctl --host=x reload postfix", ""},
		{"cp /etc/letsencrypt/live/x/*.pem /srv && systemctl restart app", ""},
		{"systemctl reload $SERVICE", ""},
		{"echo reload", ""},
		{"prosodyctl reload", "prosody: prosodyctl reload"},
		{"", ""},
	} {
		cmds, ok := reloads(tc.hook)
		var got []string
		for _, c := range cmds {
			got = append(got, c.name+": "+strings.Join(c.argv, " "))
		}
		if s := strings.Join(got, " | "); s != tc.want || ok != (tc.want != "") {
			t.Errorf("%q: %q %v, want %q", tc.hook, s, ok, tc.want)
		}
	}
}
