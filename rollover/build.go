package rollover

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/dane/cloudflare"
	"github.com/daneroll/daneroll/dane/manual"
	"github.com/daneroll/daneroll/dane/rfc2136"
	"github.com/daneroll/daneroll/internal/smallfile"
	"github.com/daneroll/daneroll/services"
	"github.com/daneroll/daneroll/store"
)

// Version is daneroll's version, set by the command.
const userAgentProduct = "daneroll"

// Wiring is what the command line supplies to build an engine from a
// configuration.
type Wiring struct {
	Logger   *slog.Logger
	Clock    Clock
	Reporter Reporter
	// Instruct receives the changes a manual publisher asks the operator
	// to make.
	Instruct func(manual.Instruction)
	// Version goes into the ACME User-Agent.
	Version string
	// ProbeWait bounds how long a probe retries after a reload.
	ProbeWait time.Duration
	// Failpoint is passed on to Options.Failpoint.
	Failpoint func(when string)
	// Backend, when set, keeps the state instead of the store (fleet
	// mode: package etcdstore); the store still holds the ACME account.
	Backend Backend
}

// Build makes an engine for cfg: the store, the publishers with their
// secrets, the confirmers, the ACME client factory, reloads and probes.
func Build(cfg *config.Config, w Wiring) (*Engine, error) {
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	return BuildWithStore(cfg, st, w)
}

// BuildWithStore is Build with an opened store.
func BuildWithStore(cfg *config.Config, st *store.Store, w Wiring) (*Engine, error) {
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clock := w.Clock
	if clock == nil {
		clock = RealClock{}
	}
	dnsMap, err := BuildDNS(cfg, log, clock, w.Instruct)
	if err != nil {
		return nil, err
	}
	probeWait := w.ProbeWait
	if probeWait == 0 {
		probeWait = 30 * time.Second
	}
	opts := Options{
		Config:    cfg,
		Store:     st,
		Backend:   w.Backend,
		Logger:    log,
		Clock:     clock,
		Reporter:  w.Reporter,
		DNS:       dnsMap,
		Failpoint: w.Failpoint,
		ACME: func(ctx context.Context) (ACMEClient, error) {
			dir, err := st.AccountDir(cfg.ACME.Directory, cfg.ACME.Email)
			if err != nil {
				return nil, err
			}
			var eab *acme.EAB
			if a := cfg.ACME; a.EABKID != "" {
				// Read only if an account is registered: an existing
				// account needs no binding, and the secret stays where
				// it is.
				eab = &acme.EAB{KID: a.EABKID, HMACKey: func() (string, error) {
					return readSecret(a.EABHMACKeyFile, a.EABHMACKeyEnv)
				}}
			}
			c, err := acme.NewClient(ctx, acme.Options{
				Directory:      cfg.ACME.Directory,
				Email:          cfg.ACME.Email,
				AcceptTOS:      cfg.ACME.AcceptTOS,
				CARoots:        cfg.ACME.CARoots,
				AccountDir:     dir,
				UserAgent:      userAgentProduct + "/" + w.Version,
				Logger:         log,
				EAB:            eab,
				PreferredChain: cfg.ACME.PreferredChain,
			})
			if err != nil {
				if tos, ok := err.(*acme.TOSError); ok {
					return nil, &HintError{Err: fmt.Errorf("%s: %w", cfg.Where("acme.accept_tos"), tos), Advice: tos.Hint()}
				}
				if ke, ok := err.(*acme.EABKeyError); ok {
					key := "acme.eab_hmac_key_file"
					if cfg.ACME.EABHMACKeyEnv != "" {
						key = "acme.eab_hmac_key_env"
					}
					return nil, &HintError{Err: fmt.Errorf("%s: %w", cfg.Where(key), ke), Advice: ke.Hint()}
				}
				return nil, err
			}
			return c, nil
		},
		Reload: func(ctx context.Context, argv []string, timeout time.Duration) error {
			// Reload commands get daneroll's environment without the
			// secrets it read from there.
			return services.Reload(ctx, argv, services.ReloadOptions{Timeout: timeout, Logger: log,
				Env: services.EnvWithout(os.Environ(), cfg.SecretEnvs()...)})
		},
		LookupTLSA: func(ctx context.Context, owner string) (*dane.Lookup, error) {
			resolver, err := resolverOf(cfg)
			if err != nil {
				return nil, err
			}
			return dane.LookupTLSA(ctx, &dane.Querier{}, resolver, owner)
		},
		Probe: func(ctx context.Context, endpoint string, accept func([]*x509.Certificate) error) error {
			ep, err := services.ParseEndpoint(endpoint)
			if err != nil {
				return err
			}
			// The endpoint's name is resolved as a DANE client of it
			// resolves it: through the validating resolver.
			resolver, err := resolverOf(cfg)
			if err != nil {
				return err
			}
			po := services.ProbeOptions{DialContext: services.ResolverDialer(resolver)}
			var lastReason error
			_, err = services.ProbeUntil(ctx, ep, po, probeWait, func(r *services.ProbeResult) bool {
				lastReason = accept(r.Chain)
				return lastReason == nil
			})
			if err != nil && lastReason != nil {
				return lastReason
			}
			return err
		},
	}
	return New(opts), nil
}

// BuildDNS makes the publisher and confirmer of every configured publisher.
// Secrets are read here, from their files or the environment, and go no
// further than the publisher.
func BuildDNS(cfg *config.Config, log *slog.Logger, clock Clock, instruct func(manual.Instruction)) (map[string]*DNS, error) {
	out := map[string]*DNS{}
	for name, p := range cfg.DNS.Publishers {
		conf := &dane.Confirmer{
			Nameservers: p.Nameservers,
			Resolver:    cfg.DNS.Resolver,
			// Every round of questions is bounded like the whole wait.
			Timeout: cfg.DNS.ConfirmTimeout.Duration,
			Now:     clock.Now,
			Sleep:   clock.Sleep,
			Logger:  log.With("publisher", name),
		}
		d := &DNS{Confirmer: conf}
		switch p.Type {
		case config.PublisherCloudflare:
			token, err := readSecret(p.APITokenFile, p.APITokenEnv)
			if err != nil {
				return nil, fmt.Errorf("%s: publisher %q: api token: %w", cfg.Where("dns.publisher."+name), name, err)
			}
			d.Publisher, err = cloudflare.New(cloudflare.Config{Token: token, BaseURL: p.APIURL, Logger: log})
			if err != nil {
				return nil, fmt.Errorf("publisher %q: %w", name, err)
			}
		case config.PublisherRFC2136:
			secret, err := readSecret(p.TSIGSecretFile, p.TSIGSecretEnv)
			if err != nil {
				return nil, fmt.Errorf("%s: publisher %q: tsig secret: %w", cfg.Where("dns.publisher."+name), name, err)
			}
			d.Publisher, err = rfc2136.New(rfc2136.Config{
				Server:        p.Server,
				TSIGName:      p.TSIGName,
				TSIGAlgorithm: config.TSIGAlgorithm(p.TSIGAlgorithm),
				TSIGSecret:    secret,
				Logger:        log,
			})
			if err != nil {
				return nil, fmt.Errorf("publisher %q: %w", name, err)
			}
		case config.PublisherManual:
			notify := instruct
			if notify == nil {
				notify = func(i manual.Instruction) { log.Warn("manual change needed", "change", i.String()) }
			}
			d.Publisher = manual.New(conf, notify)
		default:
			return nil, fmt.Errorf("publisher %q: unknown type %q", name, p.Type)
		}
		out[name] = d
	}
	return out, nil
}

// readSecret reads a secret from a file (trimmed) or an environment
// variable. The secret itself never appears in an error.
func readSecret(file, env string) (string, error) {
	if env != "" {
		v := strings.TrimSpace(os.Getenv(env))
		if v == "" {
			return "", fmt.Errorf("environment variable %s is empty", env)
		}
		return v, nil
	}
	data, err := smallfile.Read(file, config.MaxSecretFile)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(data))
	if v == "" {
		return "", fmt.Errorf("%s is empty", file)
	}
	return v, nil
}

// resolverOf is the validating resolver: [dns] resolver, else the first of
// /etc/resolv.conf.
func resolverOf(cfg *config.Config) (string, error) {
	if cfg.DNS.Resolver != "" {
		return cfg.DNS.Resolver, nil
	}
	return dane.SystemResolver()
}
