package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// certPEM is a self-signed certificate in PEM.
func certPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// fleetFiles writes a fleet key and a PEM certificate (the example's
// ca_file and cert_file stand-ins) into a secret directory.
func fleetFiles(t *testing.T) string {
	t.Helper()
	dir := secretDir(t)
	for name, data := range map[string]string{
		"fleet.key":   "AGE-SECRET-KEY-1 not checked here\n",
		"etcd.key":    "not checked here\n",
		"etcd-ca.pem": certPEM(t),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestStoreDefaults(t *testing.T) {
	cfg, err := Parse("x.toml", "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Type != StoreLocal || cfg.Store.Fleet() {
		t.Errorf("store %+v, want local", cfg.Store)
	}

	dir := fleetFiles(t)
	cfg, err = Parse(filepath.Join(dir, "x.toml"), `
[store]
type = "etcd"
endpoints = ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
ca_file = "etcd-ca.pem"
cert_file = "etcd-ca.pem"
key_file = "etcd.key"
fleet_key_file = "fleet.key"
`)
	if err != nil {
		t.Fatal(err)
	}
	st := cfg.Store
	host, _ := os.Hostname()
	if !st.Fleet() || st.Prefix != DefaultStorePrefix || st.Host != host || st.LockTTL.Duration != DefaultLockTTL ||
		st.ReportTimeout.Duration != DefaultReportTimeout || st.FleetKeyFile != filepath.Join(dir, "fleet.key") || st.CAFile != filepath.Join(dir, "etcd-ca.pem") {
		t.Errorf("store %+v", st)
	}
}

func TestBadStores(t *testing.T) {
	dir := fleetFiles(t)
	open := filepath.Join(dir, "open.key")
	if err := os.WriteFile(open, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o644)
	ca := "ca_file = \"" + dir + "/etcd-ca.pem\"\n"
	etcd := "[store]\ntype = \"etcd\"\nendpoints = [\"https://10.0.0.1:2379\"]\n" + ca + "fleet_key_file = \"" + dir + "/fleet.key\"\n"
	for _, tt := range []struct {
		name, src, want string
		line            int
	}{
		{"unknown type", "[store]\ntype = \"consul\"\n", `store: unknown type "consul" (want local or etcd)`, 2},
		{"etcd key on local", "[store]\nendpoints = [\"https://10.0.0.1:2379\"]\n", `store: endpoints applies only to type "etcd"`, 2},
		{"no endpoints", "[store]\ntype = \"etcd\"\nfleet_key_file = \"" + dir + "/fleet.key\"\n", `store: type etcd needs endpoints`, 1},
		{"plain http", "[store]\ntype = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\"]\nfleet_key_file = \"" + dir + "/fleet.key\"\n", `in clear over the network`, 3},
		{"no port", "[store]\ntype = \"etcd\"\nendpoints = [\"https://10.0.0.1\"]\n" + ca + "fleet_key_file = \"" + dir + "/fleet.key\"\n", `is not https://host:port`, 3},
		{"no fleet key", "[store]\ntype = \"etcd\"\nendpoints = [\"https://10.0.0.1:2379\"]\n" + ca, `needs fleet_key_file`, 1},
		{"open fleet key", "[store]\ntype = \"etcd\"\nendpoints = [\"https://10.0.0.1:2379\"]\n" + ca + "fleet_key_file = \"" + open + "\"\n", `fleet_key_file: ` + open + ` is readable or writable by group or others (mode 0644)`, 5},
		{"mixed schemes", "[store]\ntype = \"etcd\"\nendpoints = [\"https://10.0.0.1:2379\", \"http://127.0.0.1:2379\"]\n" + ca + "fleet_key_file = \"" + dir + "/fleet.key\"\n", `endpoints mix http and https`, 3},
		{"https without ca_file", "[store]\ntype = \"etcd\"\nendpoints = [\"https://10.0.0.1:2379\"]\nfleet_key_file = \"" + dir + "/fleet.key\"\n", `https endpoints need ca_file`, 1},
		{"cert without key", etcd + "cert_file = \"" + dir + "/etcd-ca.pem\"\n", `cert_file and key_file go together`, 1},
		{"ca without certificates", "[store]\ntype = \"etcd\"\nendpoints = [\"https://10.0.0.1:2379\"]\nfleet_key_file = \"" + dir + "/fleet.key\"\nca_file = \"" + dir + "/tsig.secret\"\n", `holds no PEM certificate`, 5},
		{"bad prefix", etcd + "prefix = \"daneroll\"\n", `prefix "daneroll" must start and end with /`, 6},
		{"bad host", etcd + "host = \"mx 1\"\n", `host "mx 1" is not a name`, 6},
		{"short lock", etcd + "lock_ttl = \"1s\"\n", `lock_ttl 1s is outside 5s to 5m`, 6},
		{"long report timeout", etcd + "report_timeout = \"2d\"\n", `report_timeout 2d is outside 5s to 24h`, 6},
		{"misspelt key", etcd + "lock_tl = \"20s\"\n", `did you mean "lock_ttl"?`, 6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("x.toml", tt.src)
			if err == nil {
				t.Fatalf("no error for:\n%s", tt.src)
			}
			msg := err.Error()
			if ce := (*Error)(nil); errors.As(err, &ce) && ce.Suggestion != "" {
				msg += "; hint: " + ce.Suggestion
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if prefix := "x.toml:" + strconv.Itoa(tt.line) + ":"; tt.line > 0 && !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q is not at line %d", err, tt.line)
			}
		})
	}
}
