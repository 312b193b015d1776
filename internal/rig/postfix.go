package rig

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PostfixOptions configures one postfix instance that receives SMTP with
// STARTTLS on loopback.
type PostfixOptions struct {
	// Hostname is myhostname, the name in the banner; default
	// "mail.example.test".
	Hostname string
	// Port is the SMTP port on 127.0.0.1; 0 picks a free one. The TLSA
	// record for it lives at _PORT._tcp.HOSTNAME.
	Port int
	// ChainFiles become smtpd_tls_chain_files: a private key followed by its
	// certificates, leaf first, e.g. a combined PEM, or privkey.pem and
	// fullchain.pem. smtpd reads them as root, so 0600 is fine. Required.
	ChainFiles []string
	// MainCF are extra main.cf lines ("name = value"), appended last so they
	// override the rig's settings.
	MainCF []string
}

// Postfix is a running postfix instance with a private configuration
// directory, queue and log.
type Postfix struct {
	// Addr is "127.0.0.1:port", where smtpd offers STARTTLS.
	Addr string
	// Port is Addr's port.
	Port int
	// Hostname is myhostname.
	Hostname string
	// ConfigDir holds main.cf and master.cf ("postfix -c ConfigDir …").
	ConfigDir string
	// QueueDir is the instance's queue_directory.
	QueueDir string
	// LogFile is the instance's maillog_file.
	LogFile string

	postfix string // absolute path of the postfix command
	proc    *process
}

// StartPostfix starts a postfix instance and returns once its smtpd sends a
// banner. It stops in t.Cleanup. Needs root (postfix drops privileges to the
// postfix user) and the Debian package postfix; skips under -short.
func StartPostfix(t testing.TB, opts PostfixOptions) *Postfix {
	t.Helper()
	integration(t)
	needRoot(t, "postfix")
	pf := &Postfix{postfix: lookBinary(t, "postfix", "postfix")}
	postconf := lookBinary(t, "postconf", "postfix")
	if _, err := user.Lookup("postfix"); err != nil {
		unavailable(t, "user \"postfix\" missing: reinstall the Debian package postfix")
	}
	if _, err := user.LookupGroup("postdrop"); err != nil {
		unavailable(t, "group \"postdrop\" missing: reinstall the Debian package postfix")
	}
	if len(opts.ChainFiles) == 0 {
		t.Fatal("rig: postfix: ChainFiles is empty")
	}
	chain := make([]string, len(opts.ChainFiles))
	for i, f := range opts.ChainFiles {
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatalf("rig: postfix: %v", err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("rig: postfix: chain file: %v", err)
		}
		if strings.ContainsAny(abs, ", \t\n") {
			t.Fatalf("rig: postfix: chain file %q: postfix cannot take a path with commas or spaces", abs)
		}
		chain[i] = abs
	}
	if opts.Hostname == "" {
		opts.Hostname = "mail.example.test"
	}
	pf.Hostname = opts.Hostname

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	out, err := run(ctx, postconf, "-d", "-h", "daemon_directory")
	if err != nil {
		t.Fatalf("rig: postfix: %v", err)
	}
	master := filepath.Join(strings.TrimSpace(out), "master")
	if _, err := os.Stat(master); err != nil {
		unavailable(t, "postfix master daemon missing (%v): install the Debian package postfix", err)
	}

	// Not t.TempDir: its path holds the test's name, and postfix's sockets
	// (QUEUE/private/proxywrite) must fit in the 108 bytes of a unix socket
	// address.
	dir, err := os.MkdirTemp("", "rig-postfix-")
	if err != nil {
		t.Fatalf("rig: postfix: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // runs after Stop: cleanups are LIFO
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("rig: postfix: %v", err)
	}
	if n := len(dir + "/spool/private/proxywrite"); n > 100 {
		t.Fatalf("rig: postfix: %s is too long for postfix's unix sockets (%d bytes): set TMPDIR to a shorter directory", dir, n)
	}
	// postfix's daemons run as the postfix user and must reach their queue.
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			t.Fatalf("rig: postfix: %s (mode %v) is not searchable by the postfix user: set TMPDIR to a directory that is", d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	// The configuration directory holds only root's files: "postfix check"
	// warns about anything else in it, so queue, data and log live beside it.
	pf.ConfigDir = filepath.Join(dir, "conf")
	pf.QueueDir = filepath.Join(dir, "spool")
	pf.LogFile = filepath.Join(dir, "maillog")
	for _, d := range []string{pf.ConfigDir, pf.QueueDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("rig: postfix: %v", err)
		}
	}

	began := time.Now()
	for attempt := 1; ; attempt++ {
		pf.Port = opts.Port
		if pf.Port == 0 {
			if pf.Port, err = freePort(); err != nil {
				t.Fatalf("rig: postfix: %v", err)
			}
		}
		pf.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(pf.Port))
		writeConfig(t, filepath.Join(pf.ConfigDir, "main.cf"), pf.mainCF(dir, chain, opts.MainCF))
		writeConfig(t, filepath.Join(pf.ConfigDir, "master.cf"), pf.masterCF())
		if attempt == 1 {
			// Creates the queue directories with their owners and modes, as
			// "postfix start" would; any warning is a rig bug.
			if _, err := run(ctx, pf.postfix, "-c", pf.ConfigDir, "check"); err != nil {
				t.Fatalf("rig: postfix: %v\nmaillog:\n%s", err, readTail(pf.LogFile, 16<<10))
			}
			if log := readTail(pf.LogFile, 16<<10); strings.Contains(log, "warning:") || strings.Contains(log, "fatal:") {
				t.Fatalf("rig: postfix: postfix check is not clean:\n%s", log)
			}
		}
		// master runs as our child rather than via "postfix start", which
		// would detach it: as a child it dies with the test binary
		// (Pdeathsig) and leads the process group that Stop kills. The
		// pid file and "postfix -c DIR reload/stop/status" work the same.
		pf.proc, err = startProcess("postfix", filepath.Join(dir, "master.out"),
			[]string{master, "-c", pf.ConfigDir}, nil)
		if err != nil {
			t.Fatalf("rig: postfix: %v", err)
		}
		err = pf.waitReady(ctx)
		if err == nil {
			break
		}
		pf.proc.terminate()
		if errors.Is(err, errRetry) && opts.Port == 0 && attempt < startAttempts {
			continue
		}
		t.Fatalf("rig: postfix: %v\nmaillog:\n%s", err, readTail(pf.LogFile, 16<<10))
	}
	t.Cleanup(pf.Stop)
	t.Logf("rig: postfix on %s (config %s), ready in %v", pf.Addr, pf.ConfigDir, time.Since(began).Round(time.Millisecond))
	return pf
}

// mainCF renders main.cf.
func (pf *Postfix) mainCF(dir string, chain, extra []string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
mail_owner = postfix
setgid_group = postdrop
myhostname = %[2]s
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
local_recipient_maps =
biff = no
# The rig receives only; nothing may leave the machine.
default_transport = error:5.3.0 rig postfix sends no mail
relay_transport = error:5.3.0 rig postfix sends no mail
# No reverse lookup of clients: the machine's resolver may be slow or absent.
smtpd_peername_lookup = no
smtpd_tls_chain_files = %[3]s
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
`, dir, pf.Hostname, strings.Join(chain, ", "))
	for _, l := range extra {
		sb.WriteString(l)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// masterCF renders master.cf: Debian's services without chroot (a chroot
// would need copies of /etc files in every queue) and smtpd on Addr only.
func (pf *Postfix) masterCF() string {
	return pf.Addr + ` inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
local      unix  - n n -     - local
virtual    unix  - n n -     - virtual
lmtp       unix  - - n -     - lmtp
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
`
}

// waitReady waits for smtpd's 220 banner. It returns errRetry when master
// lost the race for the port.
func (pf *Postfix) waitReady(ctx context.Context) error {
	return poll(ctx, 20*time.Millisecond, func() error {
		if done, werr := pf.proc.exited(); done {
			if strings.Contains(readTail(pf.LogFile, 16<<10), "Address already in use") {
				return permanent{fmt.Errorf("postfix: %w", errRetry)}
			}
			return permanent{fmt.Errorf("postfix master exited: %v", werr)}
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", pf.Addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return fmt.Errorf("postfix: banner: %w", err)
		}
		if !strings.HasPrefix(line, "220") {
			return fmt.Errorf("postfix: banner %q", strings.TrimSpace(line))
		}
		_, _ = conn.Write([]byte("QUIT\r\n"))
		return nil
	})
}

// ReloadArgv is the command that makes this instance reload its
// configuration and certificates: {"/usr/sbin/postfix", "-c", ConfigDir,
// "reload"}.
func (pf *Postfix) ReloadArgv() []string {
	return []string{pf.postfix, "-c", pf.ConfigDir, "reload"}
}

// Log returns the instance's recent maillog, for failure messages.
func (pf *Postfix) Log() string { return readTail(pf.LogFile, 16<<10) }

// Stop kills master and every postfix daemon it started; it is safe to call
// more than once and runs in t.Cleanup.
func (pf *Postfix) Stop() { pf.proc.terminate() }
