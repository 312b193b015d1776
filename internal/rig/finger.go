package rig

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PostTLSFinger runs "posttls-finger -c -l dane TARGET", postfix's own DANE
// client, and returns its output (its log lines). target is posttls-finger's
// destination, e.g. "[mail.example.test]:2525" (brackets: no MX lookup).
//
// posttls-finger resolves through the C library, which reads only
// /etc/resolv.conf and only port 53, so it runs in a private mount namespace
// (unshare -m) where a bind mount replaces /etc/resolv.conf with one that names
// resolvConfNS ("127.x.y.z", or with ":53"), typically an Unbound with
// ExtraListen FreeResolverIP(t)+"@53". The rest of the machine keeps its
// resolv.conf. err is non-nil when posttls-finger could not run or failed; a
// connection that is merely not DANE-verified is not an error: check
// DANEVerified(output). Needs root (mount namespaces), util-linux (unshare),
// mount and postfix; skips under -short.
func PostTLSFinger(t testing.TB, resolvConfNS, target string) (string, error) {
	t.Helper()
	integration(t)
	needRoot(t, "posttls-finger in a private mount namespace")
	finger := lookBinary(t, "posttls-finger", "postfix")
	unshare := lookBinary(t, "unshare", "util-linux")
	mount := lookBinary(t, "mount", "mount")

	ip := resolvConfNS
	if host, port, err := net.SplitHostPort(resolvConfNS); err == nil {
		if port != "53" {
			t.Fatalf("rig: posttls-finger: resolver %q: resolv.conf can only name port 53", resolvConfNS)
		}
		ip = host
	}
	if net.ParseIP(ip) == nil {
		t.Fatalf("rig: posttls-finger: resolver %q is not an IP address", resolvConfNS)
	}

	dir := tempDir(t)
	resolvConf := filepath.Join(dir, "resolv.conf")
	// trust-ad: glibc passes the resolver's AD bit on only when told to, and
	// DANE needs it. One quick attempt: the resolver is local.
	writeFile(t, resolvConf, fmt.Sprintf("nameserver %s\noptions trust-ad timeout:2 attempts:2\n", ip), 0o644)
	// posttls-finger reads main.cf; an empty one means postfix's defaults
	// and keeps it independent of the machine's /etc/postfix.
	writeConfig(t, filepath.Join(dir, "main.cf"), "")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The shell runs inside the new namespace: the mount is private to it
	// and vanishes with it.
	cmd := exec.CommandContext(ctx, unshare, "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", `"$1" --bind -- "$2" /etc/resolv.conf && shift 2 && exec "$@"`, "sh",
		mount, resolvConf, finger, "-c", "-l", "dane", target)
	cmd.Env = append(cmd.Environ(), "MAIL_CONFIG="+dir)
	out, err := cmd.CombinedOutput()
	output := string(out)
	if err != nil {
		if strings.Contains(output, "unshare failed") {
			unavailable(t, "unshare -m does not work here: %s", strings.TrimSpace(output))
		}
		return output, fmt.Errorf("posttls-finger %s: %w", target, err)
	}
	return output, nil
}

// DANEVerified reports whether PostTLSFinger's output shows a connection
// that DANE verified: a TLSA record matched the served chain.
func DANEVerified(output string) bool {
	return strings.Contains(output, "Verified TLS connection established")
}
