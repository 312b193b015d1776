//go:build !unix

package services

import "os/exec"

// killGroupOnCancel keeps os/exec's default on systems without process
// groups: the command itself is killed.
func killGroupOnCancel(*exec.Cmd) {}
