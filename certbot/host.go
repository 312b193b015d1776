package certbot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/daneroll/daneroll/internal/smallfile"
	"github.com/daneroll/daneroll/store"
)

// Host is where certbot can be scheduled to run: systemd timers, cron
// files and the crontab of the user daneroll runs as. Every path and
// program can be pointed elsewhere, so that tests never touch the host.
type Host struct {
	// CronDir holds system cron files with a user field (/etc/cron.d).
	CronDir string
	// SystemCrontab is /etc/crontab.
	SystemCrontab string
	// ScriptDirs are run-parts directories (/etc/cron.daily, …): scripts
	// there that run certbot are listed, never changed.
	ScriptDirs []string
	// Crontab runs crontab(1) for the current user: with "-l" it prints
	// the crontab, with "-" it installs its standard input.
	Crontab []string
	// Systemctl is systemctl(1).
	Systemctl []string
	// Timers are the systemd units that run certbot.
	Timers []string
	// Timeout bounds each command.
	Timeout time.Duration
}

// SystemHost is this machine: Debian's paths, programs from $PATH.
func SystemHost() *Host {
	return &Host{
		CronDir:       "/etc/cron.d",
		SystemCrontab: "/etc/crontab",
		ScriptDirs:    []string{"/etc/cron.hourly", "/etc/cron.daily", "/etc/cron.weekly", "/etc/cron.monthly"},
		Crontab:       []string{"crontab"},
		Systemctl:     []string{"systemctl"},
		Timers:        []string{"certbot.timer", "snap.certbot.renew.timer"},
		Timeout:       30 * time.Second,
	}
}

// HostUnder is the host as seen under dir, for tests: dir/etc/cron.d,
// dir/etc/crontab, dir/etc/cron.daily and the programs dir/bin/crontab
// and dir/bin/systemctl.
func HostUnder(dir string) *Host {
	h := SystemHost()
	h.CronDir = filepath.Join(dir, "etc", "cron.d")
	h.SystemCrontab = filepath.Join(dir, "etc", "crontab")
	h.ScriptDirs = []string{filepath.Join(dir, "etc", "cron.daily")}
	h.Crontab = []string{filepath.Join(dir, "bin", "crontab")}
	h.Systemctl = []string{filepath.Join(dir, "bin", "systemctl")}
	return h
}

// Finding is one thing on the host that runs certbot.
type Finding struct {
	// Where names it: "certbot.timer", "/etc/cron.d/certbot:17",
	// "crontab of root:3".
	Where string
	// What is the line, or the timer's state.
	What string
	// Kind is "timer", "cron", "crontab" or "script" (listed, never
	// changed: a script may do more than run certbot).
	Kind string

	file string // cron files
	line int    // 1-based, cron lines
	unit string // timers
}

// Change is one change Disable made.
type Change struct {
	Where, What string
}

// Scheduled lines run certbot when they name it as a program: "certbot",
// "/usr/bin/certbot", "certbot-auto", "letsencrypt" (its old name), not
// "/etc/letsencrypt/live/…".
var runsCertbot = regexp.MustCompile("(^|[\\s;&|(`/])(certbot|certbot-auto|letsencrypt|letsencrypt-auto)($|[\\s;&|)`])")

// cronEnv is an environment line of a crontab ("PATH=/usr/bin").
var cronEnv = regexp.MustCompile(`^\s*[A-Za-z_][A-Za-z0-9_]*\s*=`)

// runPartsName is the file name cron reads in /etc/cron.d and run-parts
// runs (Debian: letters, digits, '_' and '-').
var runPartsName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

const maxCronFile = 1 << 20

// Find lists what runs certbot. Problems that keep it from looking at one
// place are returned with what it found elsewhere.
func (h *Host) Find(ctx context.Context) ([]Finding, []error) {
	var (
		out  []Finding
		errs []error
	)
	for _, unit := range h.Timers {
		f, err := h.timer(ctx, unit)
		if err != nil {
			errs = append(errs, err)
		} else if f != nil {
			out = append(out, *f)
		}
	}
	files := []string{h.SystemCrontab}
	if names, err := os.ReadDir(h.CronDir); err == nil {
		for _, e := range names {
			if runPartsName.MatchString(e.Name()) {
				files = append(files, filepath.Join(h.CronDir, e.Name()))
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("%s: %w", h.CronDir, unwrapPath(err)))
	}
	for _, f := range files {
		data, err := readCronFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, l := range cronLines(data) {
			out = append(out, Finding{Where: fmt.Sprintf("%s:%d", f, l.n), What: l.text, Kind: "cron", file: f, line: l.n})
		}
	}
	if data, who, err := h.userCrontab(ctx); err != nil {
		errs = append(errs, err)
	} else {
		for _, l := range cronLines(data) {
			out = append(out, Finding{Where: fmt.Sprintf("crontab of %s:%d", who, l.n), What: l.text, Kind: "crontab", line: l.n})
		}
	}
	for _, dir := range h.ScriptDirs {
		names, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range names {
			p := filepath.Join(dir, e.Name())
			if !runPartsName.MatchString(e.Name()) {
				continue
			}
			if data, err := readCronFile(p); err == nil {
				for _, l := range cronLines(data) {
					out = append(out, Finding{Where: fmt.Sprintf("%s:%d", p, l.n), What: l.text, Kind: "script", file: p, line: l.n})
				}
			}
		}
	}
	return out, errs
}

type cronLine struct {
	n    int
	text string
}

// cronLines finds the lines of a crontab (or script) that run certbot.
func cronLines(data []byte) []cronLine {
	var out []cronLine
	for i, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") || cronEnv.MatchString(t) || !runsCertbot.MatchString(t) {
			continue
		}
		out = append(out, cronLine{n: i + 1, text: visible(t)})
	}
	return out
}

func readCronFile(path string) ([]byte, error) {
	return smallfile.Read(path, maxCronFile)
}

// run runs argv with stdin, and returns its standard output and error.
// A program that is not installed gives exec.ErrNotFound.
func (h *Host) run(ctx context.Context, stdin []byte, argv ...string) (string, string, error) {
	if h.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.Timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.Env = append(os.Environ(), "LC_ALL=C", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")
	err := cmd.Run()
	return out.String(), strings.TrimSpace(errOut.String()), err
}

// notInstalled says whether err means the program does not exist.
func notInstalled(err error) bool {
	return errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist)
}

// timer reports a systemd unit that is enabled or active.
func (h *Host) timer(ctx context.Context, unit string) (*Finding, error) {
	if len(h.Systemctl) == 0 {
		return nil, nil
	}
	state := func(verb string) (string, error) {
		out, _, err := h.run(ctx, nil, append(slices.Clone(h.Systemctl), verb, unit)...)
		if notInstalled(err) {
			return "", err
		}
		// A non-zero exit is how systemctl says "disabled" and
		// "inactive"; the first word says which.
		return strings.TrimSpace(strings.SplitN(out, "\n", 2)[0]), nil
	}
	enabled, err := state("is-enabled")
	if notInstalled(err) {
		return nil, nil // no systemd here
	}
	active, _ := state("is-active")
	on := slices.Contains([]string{"enabled", "enabled-runtime", "linked", "linked-runtime", "alias"}, enabled)
	running := active == "active" || active == "activating"
	if !on && !running {
		return nil, nil
	}
	return &Finding{Where: unit, What: fmt.Sprintf("systemd timer, %s and %s", enabled, active), Kind: "timer", unit: unit}, nil
}

// crontabUser names the user whose crontab crontab(1) edits.
func crontabUser() string {
	if os.Geteuid() == 0 {
		return "root"
	}
	if u, err := user.LookupId(strconv.Itoa(os.Geteuid())); err == nil {
		return u.Username
	}
	return "uid " + strconv.Itoa(os.Geteuid())
}

// userCrontab returns the crontab of the user daneroll runs as, and the
// user's name.
func (h *Host) userCrontab(ctx context.Context) ([]byte, string, error) {
	who := crontabUser()
	if len(h.Crontab) == 0 {
		return nil, who, nil
	}
	out, errOut, err := h.run(ctx, nil, append(slices.Clone(h.Crontab), "-l")...)
	switch {
	case notInstalled(err):
		return nil, who, nil // no cron here
	case err != nil && strings.HasPrefix(errOut, "no crontab for"):
		return nil, who, nil
	case err != nil:
		return nil, who, fmt.Errorf("%s -l: %v: %s", strings.Join(h.Crontab, " "), err, visible(errOut))
	}
	return []byte(out), who, nil
}

// Disable stops what Find found from running certbot: it disables and
// stops the timers (systemctl disable --now) and comments out the cron
// lines, each file written whole and atomically. Scripts are not changed.
// It returns what it changed, also when it fails part-way.
func (h *Host) Disable(ctx context.Context, found []Finding) ([]Change, error) {
	var changes []Change
	for _, f := range found {
		if f.Kind != "timer" {
			continue
		}
		argv := append(slices.Clone(h.Systemctl), "disable", "--now", f.unit)
		if _, errOut, err := h.run(ctx, nil, argv...); err != nil {
			return changes, fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, visible(errOut))
		}
		changes = append(changes, Change{Where: f.unit, What: "disabled and stopped (" + strings.Join(argv[len(h.Systemctl):], " ") + ")"})
	}
	byFile := map[string][]int{}
	var files []string
	var userLines []int
	for _, f := range found {
		switch f.Kind {
		case "cron":
			if byFile[f.file] == nil {
				files = append(files, f.file)
			}
			byFile[f.file] = append(byFile[f.file], f.line)
		case "crontab":
			userLines = append(userLines, f.line)
		}
	}
	for _, file := range files {
		c, err := h.commentFile(file, byFile[file])
		changes = append(changes, c...)
		if err != nil {
			return changes, err
		}
	}
	if len(userLines) > 0 {
		c, err := h.commentUserCrontab(ctx, userLines)
		changes = append(changes, c...)
		if err != nil {
			return changes, err
		}
	}
	return changes, nil
}

// disabledMark starts every line Disable comments out.
const disabledMark = "# disabled by daneroll import-certbot: "

// commentOut comments out the given lines of data, checking that each
// still runs certbot (the file may have changed since Find).
func commentOut(where string, data []byte, lines []int) ([]byte, []Change, error) {
	all := strings.Split(string(data), "\n")
	var changes []Change
	for _, n := range lines {
		if n < 1 || n > len(all) || len(cronLines([]byte(all[n-1]))) == 0 {
			return nil, nil, fmt.Errorf("%s:%d: changed since it was read; run the command again", where, n)
		}
		changes = append(changes, Change{Where: fmt.Sprintf("%s:%d", where, n), What: "commented out: " + visible(strings.TrimSpace(all[n-1]))})
		all[n-1] = disabledMark + all[n-1]
	}
	return []byte(strings.Join(all, "\n")), changes, nil
}

func (h *Host) commentFile(file string, lines []int) ([]Change, error) {
	data, err := readCronFile(file)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	out, changes, err := commentOut(file, data, lines)
	if err != nil {
		return nil, err
	}
	// A temporary name with a dot: cron ignores it while it is written.
	if err := store.WriteFile(file, out, fi.Mode().Perm()); err != nil {
		return nil, err
	}
	return changes, nil
}

func (h *Host) commentUserCrontab(ctx context.Context, lines []int) ([]Change, error) {
	data, who, err := h.userCrontab(ctx)
	if err != nil {
		return nil, err
	}
	out, changes, err := commentOut("crontab of "+who, data, lines)
	if err != nil {
		return nil, err
	}
	argv := append(slices.Clone(h.Crontab), "-")
	if _, errOut, err := h.run(ctx, out, argv...); err != nil {
		return nil, fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, visible(errOut))
	}
	return changes, nil
}
