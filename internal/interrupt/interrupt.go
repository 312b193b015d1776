// Package interrupt gives the development programs (the demo, the side by
// side benchmark) a context that Ctrl-C cancels, so that they stop their
// children and clean up rather than die half-way.
package interrupt

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Context is cancelled by SIGINT or SIGTERM; the first says on stderr
// that prog stops and cleans up. Later signals are caught too, so that a
// second Ctrl-C cannot leave a temporary directory behind half-way through
// the cleanup.
func Context(prog string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		first := true
		for range sigs {
			if first {
				fmt.Fprintf(os.Stderr, "\n%s: interrupted; stopping and cleaning up\n", prog)
				first = false
			}
			cancel()
		}
	}()
	return ctx, cancel
}
