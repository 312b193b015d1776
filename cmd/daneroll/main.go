// Command daneroll obtains certificates over ACME and keeps DANE TLSA
// records, the certificate files on disk and the services that use them in
// step, so that a DANE-validating client never sees a certificate without a
// matching record.
//
// Usage:
//
//	daneroll [-c FILE] [-v] COMMAND [ARGS]
//
// Commands:
//
//	renew [--force] [--dry-run] [--no-wait] [NAME…]
//	status [--json] [NAME…]
//	tlsa [NAME…] | tlsa --cert FILE [--usage U --selector S --matching M] [--name OWNER]
//	check [--json] [TARGET…]
//	rekey [--emergency] [--no-wait] NAME
//	import-certbot [--out FILE] [--state-dir DIR] [--disable-certbot] [CERTBOT_DIR]
//	prune [--dry-run] [NAME…]
//	agent [--once] | agent --leave [--host NAME]
//	fleet-key --out FILE
//	version
//
// The configuration is read from -c FILE, $DANEROLL_CONFIG, or
// /etc/daneroll/daneroll.toml. See config.example.toml and README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/go-acme/lego/v5/challenge/dns01"
	legolog "github.com/go-acme/lego/v5/log"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/etcdstore"
)

const usage = `usage: daneroll [-c FILE] [-v] COMMAND [ARGS]

commands:
  renew [--force] [--dry-run] [--no-wait] [NAME...]
                      obtain, renew and roll keys as due; advance pending work
  status [--json] [NAME...]
                      keys, expiry, next renewal, TLSA wanted vs visible
  tlsa [NAME...]      the TLSA records the configuration wants, zone-file lines
  tlsa --cert FILE [--usage U] [--selector S] [--matching M] [--name OWNER]
                      the TLSA record of any certificate or key file
  check [--json] [TARGET...]
                      verify DANE end to end (smtp://host:25, example.org, tls://host:443)
  rekey [--emergency] [--no-wait] NAME
                      start a key rollover now
  import-certbot [--out FILE] [--state-dir DIR] [--disable-certbot] [CERTBOT_DIR]
                      take over certbot's lineages (default /etc/letsencrypt) with
                      the same keys and certificates: a configuration (stdout
                      unless --out) and a state directory; no DNS change
  prune [--dry-run] [NAME...]
                      remove stale TLSA records, after probing the endpoints
  agent [--once]      fleet mode: keep this host's live/ and services in step
                      with the fleet, and report what its endpoints serve
  agent --leave [--host NAME]
                      fleet mode: remove this member (or NAME) from the fleet
  fleet-key --out FILE
                      make the age identity that seals a fleet's private keys
  version             print the version

flags:
  -c FILE   configuration (default $DANEROLL_CONFIG, then /etc/daneroll/daneroll.toml)
  -v        log what happens (-v -v for debug)
`

func main() {
	// A run's live heap is small (the configuration and one journal per
	// certificate) and mostly garbage soon after it is read: at the default
	// GOGC of 100, collecting took a third of a 1000-certificate run that
	// had nothing to do. 400 costs a few MiB more at peak. An operator's
	// GOGC wins.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(400)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// cli is one invocation's terminal.
type cli struct {
	stdout, stderr io.Writer
	configFlag     string
	verbosity      counter
	log            *slog.Logger
	// etcd is the fleet's store in fleet mode, opened by the first
	// command that needs it and closed when run returns.
	etcd *etcdstore.Store
}

func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("daneroll", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.configFlag, "c", "", "configuration file")
	fs.Var(&c.verbosity, "v", "verbose")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		return c.usageError(err.Error())
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return c.usageError("no command given")
	}
	c.log = c.logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer c.closeBackends()
	cmd, cargs := rest[0], rest[1:]
	switch cmd {
	case "renew":
		return c.renew(ctx, cargs)
	case "status":
		return c.status(ctx, cargs)
	case "tlsa":
		return c.tlsa(ctx, cargs)
	case "check":
		return c.check(ctx, cargs)
	case "rekey":
		return c.rekey(ctx, cargs)
	case "import-certbot":
		return c.importCertbot(ctx, cargs)
	case "prune":
		return c.prune(ctx, cargs)
	case "agent":
		return c.agent(ctx, cargs)
	case "fleet-key":
		return c.fleetKey(ctx, cargs)
	case "version":
		fmt.Fprintln(stdout, "daneroll", version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	return c.usageError(fmt.Sprintf("unknown command %q", cmd))
}

// counter is a flag that counts its repetitions (-v -v).
type counter int

func (c *counter) String() string   { return strconv.Itoa(int(*c)) }
func (c *counter) Set(string) error { *c++; return nil }
func (c *counter) IsBoolFlag() bool { return true }

// flagSet makes a subcommand's flag set; it also takes -v, so that
// "daneroll renew -v" works like "daneroll -v renew".
func (c *cli) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&c.verbosity, "v", "verbose")
	// -c too, so that "daneroll renew -c FILE" works as people type it.
	fs.StringVar(&c.configFlag, "c", c.configFlag, "configuration file")
	return fs
}

// parse parses a subcommand's arguments. It returns the positional
// arguments and -1, or an exit code when the command should stop there
// (help printed, or a usage error).
func (c *cli) parse(fs *flag.FlagSet, args []string) ([]string, int) {
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(c.stdout, usage)
		return nil, 0
	}
	if err != nil {
		return nil, c.usageError(fs.Name() + ": " + err.Error())
	}
	c.log = c.logger()
	return pos, -1
}

// parseInterleaved parses flags that may come before or after the
// positional arguments ("renew mail --force"); "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func (c *cli) usageError(msg string) int {
	fmt.Fprintf(c.stderr, "daneroll: error: %s\n", msg)
	fmt.Fprintf(c.stderr, "daneroll: hint: run daneroll help for the commands and their flags\n")
	return 2
}

// logger sends warnings (and with -v, more) to stderr, and quiets lego's
// chatty default logger, which prints to stdout.
func (c *cli) logger() *slog.Logger {
	level := slog.LevelWarn
	switch {
	case c.verbosity >= 2:
		level = slog.LevelDebug
	case c.verbosity == 1:
		level = slog.LevelInfo
	}
	journald := underSystemd(os.Getenv)
	l := slog.New(newLogHandler(c.stderr, level, journald))
	legoLevel := slog.LevelWarn
	if c.verbosity >= 2 {
		legoLevel = slog.LevelDebug
	}
	legolog.SetDefault(slog.New(newLogHandler(c.stderr, legoLevel, journald)).With("from", "lego"))
	return l
}

// loadConfig reads the configuration and points lego's dns-01 CNAME lookups
// at the configured resolver.
func (c *cli) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(config.Path(c.configFlag))
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(c.stderr, "daneroll: warning: %s\n", w)
		if w.Hint() != "" {
			fmt.Fprintf(c.stderr, "daneroll: hint: %s\n", w.Hint())
		}
	}
	if cfg.DNS.Resolver != "" {
		dns01.SetDefaultClient(dns01.NewClient(&dns01.Options{RecursiveNameservers: []string{cfg.DNS.Resolver}}))
	}
	return cfg, nil
}

// fail prints err as "daneroll: error:" lines, each followed by its hint,
// and returns the exit code 1.
func (c *cli) fail(err error) int {
	c.printError(err)
	return 1
}

func (c *cli) printError(err error) {
	var cerrs config.Errors
	if errors.As(err, &cerrs) {
		for _, e := range cerrs {
			c.printError(e)
		}
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(err.Error()), "\n") {
		fmt.Fprintf(c.stderr, "daneroll: error: %s\n", line)
	}
	var h interface{ Hint() string }
	if errors.As(err, &h) && h.Hint() != "" {
		fmt.Fprintf(c.stderr, "daneroll: hint: %s\n", h.Hint())
	}
}

// version is the module version and, when the binary was built from a
// checkout, the VCS revision, its time and whether the tree was modified:
// "v1.2.0 (rev 5fb7e5c1a2b3, 2026-11-29T15:00:00Z)" or
// "(devel) (rev 5fb7e5c1a2b3+dirty, …)".
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	return versionOf(bi)
}

func versionOf(bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, at string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return v
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	if at != "" {
		return fmt.Sprintf("%s (rev %s, %s)", v, rev, at)
	}
	return fmt.Sprintf("%s (rev %s)", v, rev)
}
