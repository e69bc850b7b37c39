package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
)

// selfSigned writes a certificate for 127.0.0.1 and its key; it returns the
// file paths and a pool trusting the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portico-test"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLSTermination: with cert and key files the listener speaks HTTPS and
// negotiates HTTP/2 through ALPN.
func TestTLSTermination(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	b := harness.Services(t, []string{"products"}, nil)
	e := harness.Portico(t, func(c *app.Config) {
		c.Edge.TLS.CertFile, c.Edge.TLS.KeyFile = certFile, keyFile
	}, b.Addr)
	url := strings.Replace(e.URL, "http://", "https://", 1)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/v1/products/p-1", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.TLS == nil {
		t.Fatalf("%d over %s", resp.StatusCode, resp.Proto)
	}
}

// TestStreamIdleTimeout: a stream whose upstream goes quiet is ended with a
// DEADLINE_EXCEEDED error line naming the limit.
func TestStreamIdleTimeout(t *testing.T) {
	b := harness.Services(t, []string{"orders"}, nil)
	e := harness.Portico(t, func(c *app.Config) { c.Transcode.StreamIdleTimeout = 300 * time.Millisecond }, b.Addr)
	r := do(t, harness.Client(t), "GET", e.URL+"/v1/orders:stream?count=3&intervalMs=2000", "")
	lines := strings.Split(strings.TrimSpace(r.body), "\n")
	if r.code != 200 || len(lines) != 2 || !strings.Contains(lines[1], `"code":4`) || !strings.Contains(lines[1], "stream_idle_timeout") {
		t.Fatalf("%d %q", r.code, r.body)
	}
}
