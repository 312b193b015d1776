package rig

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EtcdOptions configures an etcd cluster on loopback.
type EtcdOptions struct {
	// Members is the number of members; default 3.
	Members int
}

// Etcd is a running etcd cluster on 127.0.0.1 with TLS on every URL: the
// members' servers and peers present certificates of a test CA, and clients
// must present one too (--client-cert-auth).
type Etcd struct {
	// Endpoints are the members' client URLs, "https://127.0.0.1:PORT", in
	// member order.
	Endpoints []string
	// CAFile is the test CA's certificate (PEM), which signed the members'
	// and the client's certificates.
	CAFile string
	// ClientCertFile and ClientKeyFile are a client certificate (CN
	// "daneroll") and its private key (PEM, mode 0600) that the members
	// accept.
	ClientCertFile, ClientKeyFile string
	// Dir holds the CA, the client's files and one directory per member
	// (its certificate, key, data dir and log).
	Dir string

	t       testing.TB
	bin     string
	token   string   // --initial-cluster-token
	cluster string   // --initial-cluster
	env     []string // env(1) -u for the caller's ETCD_* variables, or nil
	tlsConf *tls.Config
	client  *http.Client

	mu      sync.Mutex // guards members[i].proc
	members []*etcdMember
}

// EtcdMember describes one member of an Etcd cluster.
type EtcdMember struct {
	// Name is the member's --name: "m0", "m1", ….
	Name string
	// ClientURL is the member's client URL, one of Etcd.Endpoints.
	ClientURL string
	// PeerURL is the member's peer URL.
	PeerURL string
	// DataDir is the member's --data-dir; it survives Kill and Restart.
	DataDir string
	// LogPath is the member's log (zap JSON lines), appended to on restart.
	LogPath string
}

type etcdMember struct {
	EtcdMember
	certFile, keyFile string
	proc              *process
}

// etcdHeartbeat and etcdElection are the raft timings in milliseconds: a
// dead leader is replaced within about a second instead of etcd's default
// several seconds.
const (
	etcdHeartbeat = 50
	etcdElection  = 500
)

// StartEtcd starts an etcd cluster of opts.Members members and returns once
// every member reports itself healthy (/health over HTTPS, which needs a
// leader and a quorum read). The cluster stops in t.Cleanup. Needs etcd
// (Debian's etcd-server); skips under -short. Each member uses free high
// ports, never etcd's 2379/2380, so a system etcd does not matter.
func StartEtcd(t testing.TB, opts EtcdOptions) *Etcd {
	t.Helper()
	integration(t)
	bin := lookBinary(t, "etcd", "etcd-server")
	n := opts.Members
	if n == 0 {
		n = 3
	}
	if n < 1 {
		t.Fatalf("rig: etcd: %d members", n)
	}

	e := &Etcd{t: t, bin: bin, Dir: tempDir(t)}
	// etcd 3.4 reads a variable ETCD_NAME as --name and so on, and refuses
	// to start when one repeats a flag of the command line.
	var unset []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "ETCD_") && k != "ETCD_UNSUPPORTED_ARCH" {
			unset = append(unset, "-u", k)
		}
	}
	if len(unset) > 0 {
		e.env = append([]string{lookBinary(t, "env", "coreutils")}, unset...)
	}
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		dir := filepath.Join(e.Dir, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatalf("rig: etcd: %v", err)
		}
		e.members = append(e.members, &etcdMember{EtcdMember: EtcdMember{
			Name:    name,
			DataDir: filepath.Join(dir, "data"),
			LogPath: filepath.Join(dir, "etcd.log"),
		}})
	}
	if err := e.makeCerts(); err != nil {
		t.Fatalf("rig: etcd: certificates: %v", err)
	}
	tlsConfig, err := e.loadClientTLS()
	if err != nil {
		t.Fatalf("rig: etcd: client TLS: %v", err)
	}
	e.tlsConf = tlsConfig
	e.client = &http.Client{
		Transport: &http.Transport{TLSClientConfig: tlsConfig.Clone(), DisableKeepAlives: true},
		Timeout:   3 * time.Second,
	}

	began := time.Now()
	for attempt := 1; ; attempt++ {
		err := e.startAll()
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
			err = e.waitHealthy(ctx, e.members...)
			cancel()
			if err == nil {
				break
			}
		}
		e.stopAll()
		if errors.Is(err, errRetry) && attempt < startAttempts {
			continue
		}
		t.Fatalf("rig: etcd: %v", err)
	}
	t.Cleanup(e.Stop)
	t.Logf("rig: etcd cluster of %d on %s, ready in %v", n, strings.Join(e.Endpoints, " "), time.Since(began).Round(time.Millisecond))
	return e
}

// startAll picks ports and a cluster token and starts every member with
// --initial-cluster-state new on empty data dirs.
func (e *Etcd) startAll() error {
	n := len(e.members)
	ports, err := freeTCPPorts(2 * n)
	if err != nil {
		return err
	}
	token := make([]byte, 8)
	if _, err := rand.Read(token); err != nil {
		return err
	}
	e.token = "rig-" + hex.EncodeToString(token)
	e.Endpoints = e.Endpoints[:0]
	var cluster []string
	for i, m := range e.members {
		m.ClientURL = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*i]))
		m.PeerURL = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*i+1]))
		e.Endpoints = append(e.Endpoints, m.ClientURL)
		cluster = append(cluster, m.Name+"="+m.PeerURL)
		// A previous attempt may have left a data dir for other ports, and
		// a log that tells of a port taken.
		if err := os.RemoveAll(m.DataDir); err != nil {
			return err
		}
		if err := os.Remove(m.LogPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	e.cluster = strings.Join(cluster, ",")
	// One member after the other: a new member first asks its peers
	// whether it is already in the cluster, and a peer that has bound its
	// port but does not serve yet (it is asking too) costs a one-second
	// timeout per peer. Each member serves its peers a few ms after start.
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for _, m := range e.members {
		p, err := startProcess("etcd "+m.Name, m.LogPath, e.argv(m, "new"), etcdExtraEnv())
		if err != nil {
			return err
		}
		e.mu.Lock()
		m.proc = p
		e.mu.Unlock()
		err = poll(ctx, 10*time.Millisecond, func() error {
			if err := e.exited(m); err != nil {
				return err
			}
			return e.peerServing(ctx, m)
		})
		if err != nil && !errors.Is(err, errRetry) {
			err = fmt.Errorf("%s does not serve its peers: %w\n%s log (%s):\n%s", m.Name, err, m.Name, m.LogPath, readTail(m.LogPath, 8<<10))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// exited returns a permanent error when member m's process has exited, one
// wrapping errRetry when it lost the race for a port.
func (e *Etcd) exited(m *etcdMember) error {
	done, werr := e.proc(m).exited()
	if !done {
		return nil
	}
	if strings.Contains(readTail(m.LogPath, 16<<10), "address already in use") {
		return permanent{fmt.Errorf("%s: %w", m.Name, errRetry)}
	}
	return permanent{fmt.Errorf("%s exited: %v", m.Name, werr)}
}

// peerServing asks member m's peer URL for /version once.
func (e *Etcd) peerServing(ctx context.Context, m *etcdMember) error {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.PeerURL+"/version", nil)
	if err != nil {
		return err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("peer /version: %s", resp.Status)
	}
	return nil
}

// argv returns the command line of member m; state is "new" or "existing".
func (e *Etcd) argv(m *etcdMember, state string) []string {
	ca := e.CAFile
	return append(slices.Clone(e.env), e.bin,
		"--name", m.Name,
		"--data-dir", m.DataDir,
		"--listen-client-urls", m.ClientURL,
		"--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL,
		"--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", e.cluster,
		"--initial-cluster-state", state,
		"--initial-cluster-token", e.token,
		"--heartbeat-interval", strconv.Itoa(etcdHeartbeat),
		"--election-timeout", strconv.Itoa(etcdElection),
		"--cert-file", m.certFile, "--key-file", m.keyFile,
		"--trusted-ca-file", ca, "--client-cert-auth",
		"--peer-cert-file", m.certFile, "--peer-key-file", m.keyFile,
		"--peer-trusted-ca-file", ca, "--peer-client-cert-auth",
		// 3.4 defaults to the deprecated capnslog and warns about it.
		"--logger", "zap", "--log-outputs", "stderr",
	)
}

// etcdExtraEnv is the environment etcd needs besides the caller's: etcd 3.4
// runs on other architectures than amd64 and ppc64le only when told to.
func etcdExtraEnv() []string {
	switch runtime.GOARCH {
	case "amd64", "ppc64le":
		return nil
	}
	return []string{"ETCD_UNSUPPORTED_ARCH=" + runtime.GOARCH}
}

// waitHealthy waits until every member of ms answers /health with
// {"health":"true"}. It returns errRetry when a member lost the race for its
// port; other errors carry the tail of the log of each member not healthy.
func (e *Etcd) waitHealthy(ctx context.Context, ms ...*etcdMember) error {
	pending := map[*etcdMember]error{}
	for _, m := range ms {
		pending[m] = errors.New("not asked yet")
	}
	err := poll(ctx, 50*time.Millisecond, func() error {
		for m := range pending {
			if err := e.exited(m); err != nil {
				return err
			}
			if err := e.health(ctx, m); err != nil {
				pending[m] = err
				continue
			}
			delete(pending, m)
		}
		if len(pending) > 0 {
			return fmt.Errorf("%d of %d members not healthy", len(pending), len(ms))
		}
		return nil
	})
	if err == nil || errors.Is(err, errRetry) {
		return err
	}
	var sb strings.Builder
	sb.WriteString(err.Error())
	for _, m := range ms {
		if merr, ok := pending[m]; ok {
			fmt.Fprintf(&sb, "\n%s (%s): %v\n%s log (%s):\n%s", m.Name, m.ClientURL, merr, m.Name, m.LogPath, readTail(m.LogPath, 8<<10))
		}
	}
	return errors.New(sb.String())
}

// health asks member m's /health once.
func (e *Etcd) health(ctx context.Context, m *etcdMember) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.ClientURL+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return err
	}
	var h struct {
		Health string `json:"health"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &h) != nil || h.Health != "true" {
		return fmt.Errorf("/health: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// proc returns member m's current process.
func (e *Etcd) proc(m *etcdMember) *process {
	e.mu.Lock()
	defer e.mu.Unlock()
	return m.proc
}

// member returns member i or panics: a test asked for a member that does not
// exist.
func (e *Etcd) member(i int) *etcdMember {
	if i < 0 || i >= len(e.members) {
		panic(fmt.Sprintf("rig: etcd: no member %d of %d", i, len(e.members)))
	}
	return e.members[i]
}

// Member describes member i (0-based, in the order of Endpoints).
func (e *Etcd) Member(i int) EtcdMember { return e.member(i).EtcdMember }

// Healthy reports whether member i answers /health with {"health":"true"}
// now: it runs, knows a leader and can read through the quorum.
func (e *Etcd) Healthy(i int) bool {
	m := e.member(i)
	if done, _ := e.proc(m).exited(); done {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return e.health(ctx, m) == nil
}

// WaitHealthy waits until each member in members (every member when none
// is named) is healthy, for instance for a new leader after Kill: until
// then, a write sent to a follower that still knows the dead leader hangs
// until etcd's request timeout (about 6 s here). It returns at once when a
// member is down.
func (e *Etcd) WaitHealthy(ctx context.Context, members ...int) error {
	var ms []*etcdMember
	for _, i := range members {
		ms = append(ms, e.member(i))
	}
	if len(members) == 0 {
		ms = e.members
	}
	return e.waitHealthy(ctx, ms...)
}

// Kill sends SIGKILL to member i's process group and waits until it is gone.
// The member stays down until Restart. Killing a member that is down does
// nothing. Safe from any goroutine.
func (e *Etcd) Kill(i int) { killProcess(e.proc(e.member(i))) }

// Restart starts member i again, after Kill, with its data dir and ports, and
// waits until it is healthy (which needs a quorum of the cluster up). It
// fails the test when the member still runs or does not come up; call it
// from the test's goroutine.
func (e *Etcd) Restart(i int) {
	e.t.Helper()
	m := e.member(i)
	if done, _ := e.proc(m).exited(); !done {
		e.t.Fatalf("rig: etcd: Restart(%d): %s still runs", i, m.Name)
	}
	began := time.Now()
	p, err := startProcess("etcd "+m.Name, m.LogPath, e.argv(m, "existing"), etcdExtraEnv())
	if err != nil {
		e.t.Fatalf("rig: etcd: restart %s: %v", m.Name, err)
	}
	e.mu.Lock()
	m.proc = p
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := e.waitHealthy(ctx, m); err != nil {
		if errors.Is(err, errRetry) {
			err = fmt.Errorf("%s's ports were taken while it was down:\n%s", m.Name, readTail(m.LogPath, 8<<10))
		}
		e.t.Fatalf("rig: etcd: restart %s: %v", m.Name, err)
	}
	e.t.Logf("rig: etcd %s restarted on %s, healthy in %v", m.Name, m.ClientURL, time.Since(began).Round(time.Millisecond))
}

// Log returns member i's recent output, for failure messages.
func (e *Etcd) Log(i int) string { return readTail(e.member(i).LogPath, 16<<10) }

// TLSConfig returns a new client TLS configuration with the rig's CA and
// client certificate, loaded from CAFile, ClientCertFile and ClientKeyFile.
func (e *Etcd) TLSConfig() *tls.Config { return e.tlsConf.Clone() }

// Stop kills every member (SIGKILL: the data dirs are thrown away, and a
// graceful stop can wait its whole grace period while a leader hands over
// to a member that is stopping too); it is safe to call more than once and
// runs in t.Cleanup.
func (e *Etcd) Stop() { e.stopAll() }

func (e *Etcd) stopAll() {
	var wg sync.WaitGroup
	for _, m := range e.members {
		if p := e.proc(m); p != nil {
			wg.Go(func() { killProcess(p) })
		}
	}
	wg.Wait()
}

// killProcess kills p's process group with SIGKILL at once, without
// terminate's grace period, and waits for p to exit. After it, terminate
// and killProcess do nothing.
func killProcess(p *process) {
	if p == nil {
		return
	}
	p.stop.Do(func() {
		if p.guard != nil {
			_ = p.guard.Process.Kill()
			_ = p.guard.Wait()
			p.guardW.Close()
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
		}
	})
}

// freeTCPPorts returns n distinct ports on 127.0.0.1 that are free now,
// none of them etcd's well-known 2379 and 2380.
func freeTCPPorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for len(ports) < n {
		if len(ls) > n+10 {
			return nil, errors.New("free port: only well-known etcd ports offered")
		}
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		if port := l.Addr().(*net.TCPAddr).Port; port != 2379 && port != 2380 {
			ports = append(ports, port)
		}
	}
	return ports, nil
}

// makeCerts writes the test CA, one server certificate per member (for
// 127.0.0.1, used on its client and peer URLs and as its client certificate
// towards the other peers) and daneroll's client certificate, ECDSA P-256,
// valid for a day.
func (e *Etcd) makeCerts() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "daneroll rig etcd CA"},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := signCert(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	e.CAFile = filepath.Join(e.Dir, "ca.pem")
	if err := writePEM(e.CAFile, "CERTIFICATE", caDER, 0o644); err != nil {
		return err
	}

	leaf := func(tmpl *x509.Certificate, certFile, keyFile string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := signCert(tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
			return err
		}
		return writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600)
	}
	for _, m := range e.members {
		dir := filepath.Dir(m.DataDir)
		m.certFile, m.keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
		err := leaf(&x509.Certificate{
			Subject:     pkix.Name{CommonName: "etcd " + m.Name},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			// A member's certificate is also its client certificate
			// towards its peers.
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}, m.certFile, m.keyFile)
		if err != nil {
			return err
		}
	}
	e.ClientCertFile, e.ClientKeyFile = filepath.Join(e.Dir, "client.pem"), filepath.Join(e.Dir, "client.key")
	return leaf(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "daneroll"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, e.ClientCertFile, e.ClientKeyFile)
}

// signCert fills in tmpl's serial number and validity and signs it.
func signCert(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
}

// writePEM writes one PEM block to path with mode perm.
func writePEM(path, typ string, der []byte, perm os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), perm)
}

// loadClientTLS builds the client TLS configuration from the files, so that
// a bad file shows at start.
func (e *Etcd) loadClientTLS() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(e.ClientCertFile, e.ClientKeyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(e.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s: no certificate", e.CAFile)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
