package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// console writes the demo's plain-text output. Lines come from the main
// flow, from daneroll's output and from the background prober at the same
// time, so every line goes out whole, under one lock.
type console struct {
	mu  sync.Mutex // guards out and stepStart
	out io.Writer
	// stepStart is when the current step began: daneroll's lines are
	// stamped with the time since.
	stepStart time.Time
}

func newConsole(out io.Writer) *console { return &console{out: out, stepStart: time.Now()} }

// printf writes one line (a trailing newline is added).
func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.out, format+"\n", args...)
}

// say writes an indented line of the demo's own.
func (c *console) say(format string, args ...any) { c.printf("  "+format, args...) }

// heading starts a step and resets the step clock.
func (c *console) heading(title string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.out, "\n%s\n%s\n", title, strings.Repeat("-", len([]rune(title))))
	c.stepStart = time.Now()
}

// stamped writes a line prefixed with the time since the step began.
func (c *console) stamped(prefix, line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.out, "  %6.2fs %s%s\n", time.Since(c.stepStart).Seconds(), prefix, line)
}

// atStep formats a moment as the time since the step began, as stamped
// lines show it.
func (c *console) atStep(t time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%.2fs", t.Sub(c.stepStart).Seconds())
}

// seconds formats a duration the way every timing in the demo is shown.
func seconds(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// short abbreviates a hex digest for prose; full digests are printed where
// they are the point.
func short(hex string) string {
	if len(hex) <= 12 {
		return hex
	}
	return hex[:12] + "..."
}
