// Package pebbletest runs Pebble, Let's Encrypt's ACME test server, as a
// child process on loopback, for daneroll's tests and its demo.
//
// Pebble is pinned in go.mod as a tool; Build compiles that exact version.
// Each Start is a fresh CA (new roots, no accounts). Pebble's HTTPS listener
// gets a certificate made here for 127.0.0.1, trusted through RootsFile.
package pebbletest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Options configure a Pebble instance.
type Options struct {
	// Dir holds the configuration, the TLS files and the log.
	Dir string
	// Binary is the pebble executable (see Build).
	Binary string
	// AlwaysValid skips challenge validation (PEBBLE_VA_ALWAYS_VALID).
	AlwaysValid bool
	// DNSServer is the resolver Pebble's validation uses (host:port, asked
	// over TCP), so that http-01 and dns-01 are checked for real.
	DNSServer string
	// HTTPPort and TLSPort are where Pebble connects for http-01 and
	// tls-alpn-01 validation; 0 picks free ports.
	HTTPPort, TLSPort int
	// Profiles maps profile names to certificate lifetimes; nil gives one,
	// "default", of 90 days.
	Profiles map[string]time.Duration
	// Blocklist names domains Pebble refuses to issue for
	// (rejectedIdentifier).
	Blocklist []string
	// EABRequired makes Pebble refuse new accounts without External
	// Account Binding (externalAccountRequired), as ZeroSSL and Google do.
	EABRequired bool
	// EABKeys are the bindings Pebble accepts: key ID → HMAC key,
	// base64url without padding, as CAs hand them out.
	EABKeys map[string]string
	// Env adds environment variables (e.g. PEBBLE_CHAIN_LENGTH, or
	// PEBBLE_ALTERNATE_ROOTS=N for chains to N more roots; see Root).
	Env []string
}

// Pebble is a running instance.
type Pebble struct {
	// Directory is the ACME directory URL.
	Directory string
	// Management is the base URL of the management interface.
	Management string
	// RootsFile is a PEM file that makes the HTTPS listeners trusted.
	RootsFile string
	// HTTPPort and TLSPort are the validation ports in use.
	HTTPPort, TLSPort int
	// Log is Pebble's output.
	Log string

	cmd    *exec.Cmd
	client *http.Client
	done   chan struct{}

	mu      sync.Mutex // guards waitErr
	waitErr error
}

var buildMu sync.Mutex // serializes builds into the same directory

// Build compiles the Pebble version pinned in go.mod into dir and returns
// the executable's path. It must run inside the daneroll module.
func Build(dir string) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	bin := filepath.Join(dir, "pebble-server") // not "pebble", a name callers like for Start's Dir
	cmd := exec.Command("go", "build", "-o", bin, "github.com/letsencrypt/pebble/v2/cmd/pebble")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build pebble: %v\n%s", err, out.String())
	}
	return bin, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start runs Pebble and waits until its directory answers.
func Start(ctx context.Context, opts Options) (*Pebble, error) {
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	certFile, keyFile, rootsFile, err := makeTLS(opts.Dir)
	if err != nil {
		return nil, err
	}
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = FreePort(); err != nil {
			return nil, err
		}
	}
	if opts.HTTPPort != 0 {
		ports[2] = opts.HTTPPort
	}
	if opts.TLSPort != 0 {
		ports[3] = opts.TLSPort
	}
	profiles := map[string]any{}
	if opts.Profiles == nil {
		// One profile: Pebble picks one at random for orders that name none,
		// which would make lifetimes, and so renewal times, random.
		opts.Profiles = map[string]time.Duration{"default": 90 * 24 * time.Hour}
	}
	for name, life := range opts.Profiles {
		profiles[name] = map[string]any{"description": name, "validityPeriod": int64(life / time.Second)}
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  "127.0.0.1:" + strconv.Itoa(ports[0]),
		"managementListenAddress":        "127.0.0.1:" + strconv.Itoa(ports[1]),
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       ports[2],
		"tlsPort":                        ports[3],
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": opts.EABRequired,
		"externalAccountMACKeys":         opts.EABKeys,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles":                       profiles,
		"domainBlocklist":                opts.Blocklist,
	}}
	cfgData, _ := json.MarshalIndent(cfg, "", "  ")
	cfgFile := filepath.Join(opts.Dir, "pebble.json")
	if err := os.WriteFile(cfgFile, cfgData, 0o600); err != nil {
		return nil, err
	}
	args := []string{"-config", cfgFile}
	if opts.DNSServer != "" {
		args = append(args, "-dnsserver", opts.DNSServer)
	}
	logFile := filepath.Join(opts.Dir, "pebble.log")
	logf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(opts.Binary, args...)
	cmd.Dir = opts.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(os.Environ(),
		"PEBBLE_VA_NOSLEEP=1",
		"PEBBLE_WFE_NONCEREJECT=0",
		"PEBBLE_AUTHZREUSE=0",
	)
	if opts.AlwaysValid {
		cmd.Env = append(cmd.Env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	cmd.Env = append(cmd.Env, opts.Env...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pebble: %w", err)
	}
	roots, err := os.ReadFile(rootsFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	p := &Pebble{
		Directory:  "https://127.0.0.1:" + strconv.Itoa(ports[0]) + "/dir",
		Management: "https://127.0.0.1:" + strconv.Itoa(ports[1]),
		RootsFile:  rootsFile,
		HTTPPort:   ports[2],
		TLSPort:    ports[3],
		Log:        logFile,
		cmd:        cmd,
		client:     &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
		done:       make(chan struct{}),
	}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	if err := p.waitReady(ctx); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Pebble) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, 500*time.Millisecond) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.Directory, nil)
		resp, err := p.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			log, _ := os.ReadFile(p.Log)
			return fmt.Errorf("pebble exited: %v\n%s", p.exitErr(), log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pebble did not answer at %s: %v", p.Directory, err)
		}
	}
}

func (p *Pebble) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Close stops Pebble.
func (p *Pebble) Close() error {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.done
	return nil
}

// HTTPClient trusts Pebble's HTTPS listeners.
func (p *Pebble) HTTPClient() *http.Client { return p.client }

// IssuerRoot returns the PEM root that signs Pebble's certificates.
func (p *Pebble) IssuerRoot(ctx context.Context) ([]byte, error) {
	return p.Root(ctx, 0)
}

// Root returns root n in PEM: 0 is the root of the default chain, 1 … N
// those of the alternate chains (PEBBLE_ALTERNATE_ROOTS=N).
func (p *Pebble) Root(ctx context.Context, n int) ([]byte, error) {
	return p.get(ctx, "/roots/"+strconv.Itoa(n))
}

func (p *Pebble) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.Management+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pebble %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// SetRenewalWindow makes Pebble's ARI endpoint suggest [start, end] for the
// certificate (PEM leaf), through its management interface.
func (p *Pebble) SetRenewalWindow(ctx context.Context, certPEM []byte, start, end time.Time) error {
	ari, _ := json.Marshal(map[string]any{"suggestedWindow": map[string]string{
		"start": start.UTC().Format(time.RFC3339), "end": end.UTC().Format(time.RFC3339),
	}})
	body, _ := json.Marshal(map[string]string{"Certificate": string(certPEM), "ARIResponse": string(ari)})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Management+"/set-renewal-info/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("pebble set-renewal-info: %s: %s", resp.Status, msg)
	}
	return nil
}

// makeTLS writes a throwaway CA and a certificate for 127.0.0.1 and
// localhost, for Pebble's HTTPS listeners.
func makeTLS(dir string) (certFile, keyFile, rootsFile string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "daneroll test CA for pebble's listener"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost", "pebble"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return
	}
	certFile = filepath.Join(dir, "listener.pem")
	keyFile = filepath.Join(dir, "listener.key")
	rootsFile = filepath.Join(dir, "listener-ca.pem")
	for _, f := range []struct {
		path string
		typ  string
		der  []byte
	}{{certFile, "CERTIFICATE", der}, {keyFile, "PRIVATE KEY", keyDER}, {rootsFile, "CERTIFICATE", caDER}} {
		if err = os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return
		}
	}
	return
}

// Main is a TestMain for packages whose tests need Pebble: unless the
// tests run with -short, it builds Pebble into a temporary directory and
// points *bin at it, runs the tests, cleans up and exits. Tests skip when
// *bin is empty.
func Main(m interface{ Run() int }, short func() bool, bin *string) {
	flag.Parse()
	if short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "daneroll-pebble-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *bin, err = Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
