// Command spawn runs one command for sidebyside and prints its wall time
// (nanoseconds), its peak resident set size (KiB) and its exit code:
//
//	spawn OUTFILE DIR COMMAND [ARG…]
//
// The command runs in DIR with spawn's environment, its output into
// OUTFILE.
//
// It is a process of its own, and a small one, because of how Linux
// counts the peak RSS (ru_maxrss) of a child that Go starts: os/exec
// clones the parent's memory (CLONE_VM, like vfork) until the exec, and
// the exec records the peak of that memory as the child's. Started from
// sidebyside, whose peak grows past 20 MiB, every command would show at
// least that much; started from here, at least spawn's own couple of MiB.
// Timing here also leaves the start of spawn itself out of the wall time.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: spawn OUTFILE DIR COMMAND [ARG...]")
		os.Exit(2)
	}
	out, err := os.Create(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "spawn:", err)
		os.Exit(1)
	}
	defer out.Close()
	cmd := exec.Command(os.Args[3], os.Args[4:]...)
	cmd.Dir = os.Args[2]
	cmd.Stdout, cmd.Stderr = out, out
	// The command dies with spawn (sidebyside kills spawn when it is
	// interrupted); the death signal follows the thread that started it.
	runtime.LockOSThread()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if cmd.ProcessState == nil { // it did not start
		fmt.Fprintln(os.Stderr, "spawn:", err)
		os.Exit(1)
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss // KiB on Linux
	}
	fmt.Printf("%d %d %d\n", wall.Nanoseconds(), rss, cmd.ProcessState.ExitCode())
}
