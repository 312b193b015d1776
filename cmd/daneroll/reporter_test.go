package main

import (
	"strings"
	"testing"
	"time"

	"github.com/daneroll/daneroll/internal/syncbuf"
)

// Certificates wait together: the countdown shows every pending wait, and
// progress lines of other certificates stay whole.
func TestCountdownShowsEveryWait(t *testing.T) {
	for _, tty := range []bool{false, true} {
		var out syncbuf.Buffer
		r := &reporter{out: &out, tty: tty, every: 20 * time.Millisecond, waits: map[int]pendingWait{}}
		doneMail := r.Waiting("mail", "hold", time.Now().Add(time.Hour))
		doneWWW := r.Waiting("www", "hold", time.Now().Add(2*time.Hour))
		time.Sleep(100 * time.Millisecond)
		r.Progress("imap", "obtain", "ordering a certificate")
		time.Sleep(60 * time.Millisecond)
		doneMail()
		doneWWW()
		text := out.String()
		if !strings.Contains(text, "mail: hold: 1h0m0s left | www: hold: 2h0m0s left") &&
			!strings.Contains(text, "mail: hold: 59m59s left | www: hold: 1h59m59s left") {
			t.Errorf("tty=%v: no countdown of both waits in %q", tty, text)
		}
		if tty {
			if !strings.Contains(text, "\r\033[Kimap: obtain: ordering a certificate\n") {
				t.Errorf("a progress line did not clear the countdown first: %q", text)
			}
			if !strings.HasSuffix(text, "\r\033[K") {
				t.Errorf("the countdown line was not cleared at the end: %q", text)
			}
		} else if strings.Contains(text, "\r") {
			t.Errorf("terminal codes in plain output: %q", text)
		}
	}
}
