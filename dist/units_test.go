// Package dist holds what daneroll ships besides the binary: systemd units
// and a cron line. Its tests check them with the tools that read them.
package dist

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daneroll/daneroll/internal/rig"
)

// TestSystemdUnitsVerify runs systemd-analyze verify on the units, with
// ExecStart pointing at an executable that exists (verify checks it).
func TestSystemdUnitsVerify(t *testing.T) {
	analyze := rig.Program(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	bin := filepath.Join(dir, "daneroll")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	units := []string{"daneroll.service", "daneroll.timer", "daneroll-agent.service"}
	for _, name := range units {
		data, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		unit := strings.ReplaceAll(string(data), "/usr/local/bin/daneroll", bin)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"verify", "--man=no"}
	for _, name := range units {
		args = append(args, filepath.Join(dir, name))
	}
	cmd := exec.Command(analyze, args...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// verify exits 0 on some warnings; the units must not cause any.
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "daneroll") {
			t.Errorf("systemd-analyze: %s", line)
		}
	}
}

// TestUnitsRunRenew checks what the units promise in words: the service
// runs renew with the configuration, blocking (oneshot), and the timer
// fires twice a day, persistently, with a randomized but fixed delay; the
// agent's service runs the agent and comes back when it dies.
func TestUnitsRunRenew(t *testing.T) {
	svc, _ := os.ReadFile(filepath.Join("systemd", "daneroll.service"))
	timer, _ := os.ReadFile(filepath.Join("systemd", "daneroll.timer"))
	for _, want := range []string{"Type=oneshot", "ExecStart=/usr/local/bin/daneroll -c /etc/daneroll/daneroll.toml renew\n", "NoNewPrivileges=yes", "ReadWritePaths=/var/lib/daneroll"} {
		if !strings.Contains(string(svc), want) {
			t.Errorf("daneroll.service lacks %q", want)
		}
	}
	for _, want := range []string{"OnCalendar=*-*-* 00,12:00:00", "RandomizedDelaySec=", "FixedRandomDelay=true", "Persistent=true", "WantedBy=timers.target"} {
		if !strings.Contains(string(timer), want) {
			t.Errorf("daneroll.timer lacks %q", want)
		}
	}
	agent, _ := os.ReadFile(filepath.Join("systemd", "daneroll-agent.service"))
	for _, want := range []string{"ExecStart=/usr/local/bin/daneroll -c /etc/daneroll/daneroll.toml agent\n", "Restart=always", "ReadWritePaths=/var/lib/daneroll", "WantedBy=multi-user.target"} {
		if !strings.Contains(string(agent), want) {
			t.Errorf("daneroll-agent.service lacks %q", want)
		}
	}
	cron, _ := os.ReadFile(filepath.Join("cron", "daneroll"))
	if !strings.Contains(string(cron), "root /usr/local/bin/daneroll -c /etc/daneroll/daneroll.toml renew") {
		t.Errorf("cron line: %s", cron)
	}
}

// TestMailNotifier runs dist/notify/daneroll-mail as daneroll would, with a
// sendmail that keeps what it is given.
func TestMailNotifier(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "sendmail")
	got := filepath.Join(dir, "mail")
	script := "#!/bin/sh\n{ printf 'args:%s\\n' \"$*\"; cat; } > " + got + "\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join("notify", "daneroll-mail"), "hostmaster@example.org")
	cmd.Env = append(os.Environ(), "SENDMAIL="+fake, "DANEROLL_SUBJECT=daneroll renew on mx1: mail failed\r\nBcc: x@evil.example")
	cmd.Stdin = strings.NewReader(`{"host": "mx1"}` + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("daneroll-mail: %v\n%s", err, out)
	}
	data, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	mail := string(data)
	for _, want := range []string{"args:-oi -- hostmaster@example.org\n", "To: hostmaster@example.org\n",
		"Subject: daneroll renew on mx1: mail failedBcc: x@evil.example\n", "\n\n{\"host\": \"mx1\"}\n"} {
		if !strings.Contains(mail, want) {
			t.Errorf("mail lacks %q:\n%s", want, mail)
		}
	}
	if strings.Contains(mail, "\nBcc:") {
		t.Errorf("a newline in the subject made a header:\n%s", mail)
	}
}
