package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/etcdstore"
	"github.com/daneroll/daneroll/fleetkey"
	"github.com/daneroll/daneroll/internal/smallfile"
	"github.com/daneroll/daneroll/rollover"
	"github.com/daneroll/daneroll/store"
)

// backend is the Backend the configuration asks for: nil for state_dir
// alone, the fleet's etcd store in fleet mode (opened once per command and
// closed when it ends).
func (c *cli) backend(cfg *config.Config) (rollover.Backend, error) {
	if !cfg.Store.Fleet() {
		return nil, nil
	}
	return c.fleetStore(cfg)
}

func (c *cli) fleetStore(cfg *config.Config) (*etcdstore.Store, error) {
	if c.etcd != nil {
		return c.etcd, nil
	}
	st := cfg.Store
	key, err := fleetkey.Load(st.FleetKeyFile)
	if err != nil {
		return nil, err
	}
	tc, err := etcdTLS(st)
	if err != nil {
		return nil, err
	}
	es, err := etcdstore.Open(context.Background(), etcdstore.Options{
		Endpoints: st.Endpoints, TLS: tc, Prefix: st.Prefix, Key: key, Host: st.Host,
		LockTTL: st.LockTTL.Duration, Logger: c.log,
	})
	if err != nil {
		return nil, &rollover.HintError{Err: err, Advice: fmt.Sprintf("check [store] endpoints, ca_file, cert_file and key_file in %s, and that etcd runs", cfg.Where("store"))}
	}
	c.etcd = es
	return es, nil
}

// etcdTLS is the client side of etcd's TLS: its servers verified by
// ca_file (else the system's roots), this member by its certificate.
func etcdTLS(st config.Store) (*tls.Config, error) {
	if !strings.HasPrefix(st.Endpoints[0], "https://") {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if st.CAFile != "" {
		data, err := smallfile.Read(st.CAFile, config.MaxPEMFile)
		if err != nil {
			return nil, fmt.Errorf("store: ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("store: ca_file: no certificates in %s", st.CAFile)
		}
	}
	if st.CertFile != "" {
		certPEM, err := smallfile.Read(st.CertFile, config.MaxPEMFile)
		if err != nil {
			return nil, fmt.Errorf("store: cert_file: %w", err)
		}
		keyPEM, err := store.ReadPrivate(st.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("store: key_file: %w", err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("store: cert_file and key_file: %v", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

func (c *cli) closeBackends() {
	if c.etcd != nil {
		_ = c.etcd.Close()
		c.etcd = nil
	}
}

// agent keeps this member in step with the fleet.
func (c *cli) agent(ctx context.Context, args []string) int {
	fs := c.flagSet("agent")
	once := fs.Bool("once", false, "bring every certificate in step once, report and exit")
	leave := fs.Bool("leave", false, "remove this member (or --host) from the fleet, and exit")
	host := fs.String("host", "", "with --leave: the member to remove (default: this one)")
	force := fs.Bool("force", false, "with --leave: even while its agent runs")
	names, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	if len(names) > 0 {
		return c.usageError("agent takes no certificate names: it serves those of this host's services")
	}
	if (*host != "" || *force) && !*leave {
		return c.usageError("--host and --force go with --leave")
	}
	cfg, err := c.loadConfig()
	if err != nil {
		return c.fail(err)
	}
	if !cfg.Store.Fleet() {
		return c.fail(&rollover.HintError{Err: errors.New("the agent runs only in fleet mode"),
			Advice: fmt.Sprintf(`set [store] type = "etcd" in %s (docs/fleet.md)`, cfg.File)})
	}
	fleet, err := c.fleetStore(cfg)
	if err != nil {
		return c.fail(err)
	}
	if *leave {
		h := cfg.Store.Host
		if *host != "" {
			h = *host
		}
		left, err := fleet.Leave(ctx, h, *force)
		if err != nil {
			return c.fail(err)
		}
		if len(left) == 0 {
			fmt.Fprintf(c.stdout, "%s was a member of no certificate\n", h)
			return 0
		}
		fmt.Fprintf(c.stdout, "%s is no longer a member of %s: deploys stop waiting for it\n", h, strings.Join(left, ", "))
		return 0
	}
	local, err := store.Open(cfg.StateDir)
	if err != nil {
		return c.fail(err)
	}
	// The agent's engine reloads and probes this host's services; its
	// own state is not used.
	eng, err := c.engineWith(cfg, local)
	if err != nil {
		return c.fail(err)
	}
	agent := rollover.NewAgent(eng, local, fleet)
	if *once {
		if err := agent.Register(ctx); err != nil {
			return c.fail(err)
		}
		code := 0
		for _, o := range agent.SyncAll(ctx) {
			switch {
			case o.Err != nil:
				c.printError(fmt.Errorf("%s: %w", o.Name, o.Err))
				code = 1
			case o.Set == "":
				fmt.Fprintf(c.stdout, "%s: the fleet has no certificate yet\n", o.Name)
			case o.Changed:
				fmt.Fprintf(c.stdout, "%s: installed and serving the fleet's set %s\n", o.Name, o.Set)
			default:
				fmt.Fprintf(c.stdout, "%s: serving the fleet's set %s\n", o.Name, o.Set)
			}
		}
		return code
	}
	c.log.Info("agent started", "host", cfg.Store.Host, "etcd", strings.Join(cfg.Store.Endpoints, ","))
	if err := agent.Run(ctx); err != nil {
		return c.fail(err)
	}
	return 0
}

// fleetKey makes a fleet key file.
func (c *cli) fleetKey(_ context.Context, args []string) int {
	fs := c.flagSet("fleet-key")
	out := fs.String("out", "", "the file to write (0600; never overwritten)")
	names, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	if len(names) > 0 || *out == "" {
		return c.usageError("fleet-key takes --out FILE and nothing else")
	}
	key, data, err := fleetkey.Generate(time.Now())
	if err != nil {
		return c.fail(err)
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return c.fail(err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(*out)
		return c.fail(err)
	}
	abs, _ := filepath.Abs(*out)
	fmt.Fprintf(c.stdout, "wrote the fleet key %s (%s)\ncopy it to every member (mode 0600) and name it in [store] fleet_key_file\n", abs, key.Recipient())
	return 0
}
