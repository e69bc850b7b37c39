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
	"fmt"
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
	"github.com/portico-dev/portico/mesh/meshtest"
)

// TestTLSTermination: with cert and key files the listener speaks HTTPS and
// negotiates HTTP/2 through ALPN.
func TestTLSTermination(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := meshtest.SelfSigned(t)
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
	t.Parallel()
	b := harness.Services(t, []string{"orders"}, nil)
	e := harness.Portico(t, func(c *app.Config) { c.Transcode.StreamIdleTimeout = 300 * time.Millisecond }, b.Addr)
	r := do(t, harness.Client(t), "GET", e.URL+"/v1/orders:stream?count=3&intervalMs=2000", "")
	lines := strings.Split(strings.TrimSpace(r.body), "\n")
	if r.code != 200 || len(lines) != 2 || !strings.Contains(lines[1], `"code":4`) || !strings.Contains(lines[1], "stream_idle_timeout") {
		t.Fatalf("%d %q", r.code, r.body)
	}
}

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // PEM of the CA certificate
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(t.TempDir(), name+".pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, file: file}
}

// issue returns a leaf for 127.0.0.1 (server) or a client, with serial.
func (ca *testCA) issue(t *testing.T, serial int64, client bool) (certPEM, keyPEM []byte, pair tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: fmt.Sprintf("leaf-%d", serial)},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	pair, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, pair
}

// served returns the serial of the certificate a new connection gets, or
// the error of the call.
func served(t *testing.T, url string, cfg *tls.Config) (int64, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		return 0, fmt.Errorf("%d over %s", resp.StatusCode, resp.Proto)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
}

// TestTLSReloadAndClientCertificates: a new certificate written over the
// files is served to new connections; a broken write keeps the last good
// one. With a client CA, a client without a certificate (or with one from
// another CA) is refused at the handshake; "optional" lets it in.
func TestTLSReloadAndClientCertificates(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "server-ca")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	put := func(serial int64) {
		c, k, _ := ca.issue(t, serial, false)
		// Key first, then certificate: a reader in between sees a
		// mismatched pair and must keep the old one.
		if err := os.WriteFile(keyFile, k, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(certFile, c, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	put(100)
	b := harness.Services(t, []string{"products"}, nil)
	e, logs := harness.PorticoLogged(t, func(c *app.Config) {
		c.Edge.TLS.CertFile, c.Edge.TLS.KeyFile = certFile, keyFile
		c.Edge.TLS.ReloadInterval = 50 * time.Millisecond
	}, b.Addr)
	url := strings.Replace(e.URL, "http://", "https://", 1) + "/v1/products/p-1"
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	trust := &tls.Config{RootCAs: roots}
	if s, err := served(t, url, trust); err != nil || s != 100 {
		t.Fatalf("first certificate: serial %d, %v", s, err)
	}
	put(101)
	eventually(t, 5*time.Second, "the new certificate served", func() bool {
		s, err := served(t, url, trust)
		return err == nil && s == 101
	})
	// The reloader has read the broken file once it says so (a rotation's
	// half-written pair said it before 101 was served: count from here).
	const unreadable = "TLS files unreadable; serving the previous certificate"
	before := logs.FilterMessage(unreadable).Len()
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the broken file read and refused", func() bool { return logs.FilterMessage(unreadable).Len() > before })
	if s, err := served(t, url, trust); err != nil || s != 101 {
		t.Fatalf("after a broken write: serial %d, %v; want the last good 101", s, err)
	}

	// Client certificates for partner APIs.
	partners, other := newTestCA(t, "partner-ca"), newTestCA(t, "other-ca")
	_, _, good := partners.issue(t, 7, true)
	_, _, bad := other.issue(t, 8, true)
	put(102)
	for _, mode := range []string{"require", "optional"} {
		e := harness.Portico(t, func(c *app.Config) {
			c.Edge.TLS.CertFile, c.Edge.TLS.KeyFile = certFile, keyFile
			c.Edge.TLS.ClientCAFile, c.Edge.TLS.ClientAuth = partners.file, mode
		}, b.Addr)
		url := strings.Replace(e.URL, "http://", "https://", 1) + "/v1/products/p-1"
		if _, err := served(t, url, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{good}}); err != nil {
			t.Errorf("%s: partner certificate refused: %v", mode, err)
		}
		// GetClientCertificate sends it even though the server names
		// other CAs (with Certificates, Go's client would send none).
		forced := &tls.Config{RootCAs: roots, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &bad, nil }}
		if _, err := served(t, url, forced); err == nil {
			t.Errorf("%s: a certificate from another CA was accepted", mode)
		}
		_, err := served(t, url, trust)
		if mode == "require" && err == nil {
			t.Errorf("require: a client without a certificate was accepted")
		}
		if mode == "optional" && err != nil {
			t.Errorf("optional: a client without a certificate was refused: %v", err)
		}
	}
}
