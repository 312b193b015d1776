package notify

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSendGivesTheSummaryAndSubject(t *testing.T) {
	dir := t.TempDir()
	got := filepath.Join(dir, "got")
	s := &Summary{Host: "mx1", Command: "renew", Started: time.Unix(1_800_000_000, 0).UTC(), Seconds: 2.5,
		Certificates: []Certificate{
			{Name: "mail", Outcome: "failed", Action: "failed", Error: "mail: obtain: acme: rate limited\nsecond line"},
			{Name: "www", Outcome: "stuck", Action: "waiting", PendingSince: time.Unix(1_799_000_000, 0).UTC()},
			{Name: "imap", Outcome: "ok", Action: "nothing"},
		}}
	if !s.NeedsAPerson() {
		t.Fatal("NeedsAPerson = false")
	}
	if want := "daneroll renew on mx1: mail failed; www stuck"; s.Subject() != want {
		t.Errorf("subject %q, want %q", s.Subject(), want)
	}
	argv := []string{"sh", "-c", `{ printf '%s\n' "$DANEROLL_SUBJECT"; cat; } > "$1"`, "notify", got}
	if err := Send(context.Background(), argv, s, Options{Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	subject, body, _ := strings.Cut(string(data), "\n")
	if subject != s.Subject() {
		t.Errorf("the command saw subject %q", subject)
	}
	var back Summary
	if err := json.Unmarshal([]byte(body), &back); err != nil || len(back.Certificates) != 3 || back.Certificates[0].Error != s.Certificates[0].Error {
		t.Errorf("the command read %q (%v)", body, err)
	}
}

// A failing notification is reported as such, with its output, never as a
// reload.
func TestSendFailure(t *testing.T) {
	s := &Summary{Host: "h", Command: "renew", Certificates: []Certificate{{Name: "mail", Outcome: "failed"}}}
	err := Send(context.Background(), []string{"sh", "-c", "echo 'sendmail: fatal: no recipients' >&2; exit 75"}, s, Options{Timeout: 10 * time.Second})
	if err == nil || !strings.HasPrefix(err.Error(), "notify sh -c ") || !strings.Contains(err.Error(), "no recipients") {
		t.Errorf("err = %v", err)
	}
}
