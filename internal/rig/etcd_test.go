package rig

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"
)

// gateway is a client of etcd's v3 JSON gateway (what daneroll speaks) on
// endpoints, with TLS built from the rig's files as daneroll's
// configuration names them; withCert false leaves the client certificate
// out.
type gateway struct {
	endpoints []string
	hc        *http.Client
}

func etcdClient(t *testing.T, e *Etcd, endpoints []string, withCert bool) *gateway {
	t.Helper()
	caPEM, err := os.ReadFile(e.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s: no certificate", e.CAFile)
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if withCert {
		cert, err := tls.LoadX509KeyPair(e.ClientCertFile, e.ClientKeyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr := &http.Transport{TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	return &gateway{endpoints: endpoints, hc: &http.Client{Transport: tr}}
}

// call posts req to path on the first endpoint that answers.
func (g *gateway) call(ctx context.Context, path string, req, resp any) error {
	body, _ := json.Marshal(req)
	var last error
	for _, ep := range g.endpoints {
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, ep+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		hresp, err := g.hc.Do(hreq)
		if err != nil {
			last = err
			continue
		}
		data, err := io.ReadAll(hresp.Body)
		hresp.Body.Close()
		if err == nil && hresp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %s", hresp.Status, data)
		}
		if err != nil {
			last = err
			continue
		}
		return json.Unmarshal(data, resp)
	}
	return last
}

func (g *gateway) Put(ctx context.Context, key, val string) (struct{}, error) {
	var resp struct{}
	return resp, g.call(ctx, "/v3/kv/put", map[string][]byte{"key": []byte(key), "value": []byte(val)}, &resp)
}

// etcdGet reads key with a linearizable get (the gateway's default) and
// returns its value, or "" when absent.
func etcdGet(ctx context.Context, g *gateway, key string) (string, error) {
	var resp struct {
		Kvs []struct {
			Value []byte `json:"value"`
		} `json:"kvs"`
	}
	if err := g.call(ctx, "/v3/kv/range", map[string][]byte{"key": []byte(key)}, &resp); err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

func TestEtcdQuorum(t *testing.T) {
	e := StartEtcd(t, EtcdOptions{})
	if len(e.Endpoints) != 3 {
		t.Fatalf("Endpoints = %v, want 3", e.Endpoints)
	}
	for i := range 3 {
		if m := e.Member(i); m.ClientURL != e.Endpoints[i] || m.Name == "" || m.LogPath == "" {
			t.Errorf("Member(%d) = %+v", i, m)
		}
		if !e.Healthy(i) {
			t.Errorf("member %d not healthy after start", i)
		}
	}
	if fi, err := os.Stat(e.ClientKeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("client key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	c := etcdClient(t, e, e.Endpoints, true)

	put := func(key, val string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c.Put(ctx, key, val); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	get := func(c *gateway, key, want string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := etcdGet(ctx, c, key)
		if err != nil || got != want {
			t.Fatalf("get %s = %q, %v; want %q", key, got, err, want)
		}
	}

	put("/rig/a", "1")
	get(c, "/rig/a", "1")

	// One member down of three: the quorum of two goes on, once it has a
	// leader (member 0 may have been it).
	killed := time.Now()
	e.Kill(0)
	e.Kill(0) // a second kill does nothing
	if e.Healthy(0) {
		t.Error("member 0 healthy after Kill")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.WaitHealthy(ctx, 1, 2); err != nil {
		t.Fatalf("members 1 and 2 after killing member 0: %v", err)
	}
	t.Logf("members 1 and 2 healthy %v after killing member 0", time.Since(killed).Round(time.Millisecond))
	put("/rig/b", "2")
	get(c, "/rig/b", "2")
	put("/rig/a", "3")

	// Back with its data dir, it catches up: a linearizable read on it
	// alone sees what was written while it was down.
	e.Restart(0)
	get(etcdClient(t, e, e.Endpoints[:1], true), "/rig/b", "2")
	get(etcdClient(t, e, e.Endpoints[:1], true), "/rig/a", "3")

	// Two down of three: no quorum, writes fail.
	e.Kill(1)
	e.Kill(2)
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := c.Put(ctx, "/rig/c", "4"); err == nil {
		t.Fatal("put with two of three members down succeeded")
	} else {
		t.Logf("put without quorum: %v", err)
	}
	if e.Healthy(0) {
		t.Error("member 0 healthy without quorum")
	}
}

func TestEtcdRefusesClientWithoutCertificate(t *testing.T) {
	e := StartEtcd(t, EtcdOptions{Members: 1})
	if len(e.Endpoints) != 1 || !e.Healthy(0) {
		t.Fatalf("Endpoints = %v, healthy %v; want one healthy member", e.Endpoints, e.Healthy(0))
	}
	// The same files with the certificate work.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := etcdClient(t, e, e.Endpoints, true).Put(ctx, "/rig/k", "v"); err != nil {
		t.Fatalf("put with the client certificate: %v", err)
	}

	c := etcdClient(t, e, e.Endpoints, false)
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := etcdGet(ctx, c, "/rig/k"); err == nil {
		t.Error("get without a client certificate succeeded")
	} else {
		t.Logf("get without a client certificate: %v", err)
	}

	// Plain HTTPS too: the server ends the handshake.
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.TLSConfig().RootCAs}}}
	resp, err := hc.Get(e.Endpoints[0] + "/health")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("/health without a client certificate: %s; want a TLS refusal", resp.Status)
	}
	t.Logf("/health without a client certificate: %v", err)
}
