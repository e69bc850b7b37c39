package edge

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// CertReloader serves the public listener's TLS configuration from files:
// the certificate chain and key, and optionally the CAs that client
// certificates must chain to. The files are read again every
// edge.tls.reload_interval and on Reload (SIGHUP); a change applies to new
// handshakes, open connections keep theirs, and a broken or half-written
// set keeps the previous one and logs why.
type CertReloader struct {
	files TLSConfig
	log   *zap.Logger
	cur   atomic.Pointer[tls.Config]

	mu      sync.Mutex // serialises loads
	sum     [32]byte   // hash of the files last loaded
	stop    chan struct{}
	done    chan struct{}
	started atomic.Bool
}

// NewCertReloader loads the files (an error here fails the start); Start
// watches them.
func NewCertReloader(files TLSConfig, log *zap.Logger) (*CertReloader, error) {
	r := &CertReloader{files: files, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// Start reads the files again every edge.tls.reload_interval until Close.
func (r *CertReloader) Start() {
	if r.started.CompareAndSwap(false, true) {
		r.mu.Lock()
		every := r.files.ReloadInterval
		r.mu.Unlock()
		go r.watch(every)
	}
}

func (r *CertReloader) configFor(*tls.ClientHelloInfo) (*tls.Config, error) { return r.cur.Load(), nil }

// Leaf is the certificate served now.
func (r *CertReloader) Leaf() *x509.Certificate {
	if c := r.cur.Load(); c != nil && len(c.Certificates) > 0 {
		return c.Certificates[0].Leaf
	}
	return nil
}

// Reload reads the files now; it reports whether they changed, and keeps
// the served configuration when they are broken.
func (r *CertReloader) Reload() (bool, error) {
	changed, err := r.load()
	if err != nil {
		r.log.Error("TLS files not reloaded; serving the previous certificate", zap.Error(err))
	} else if changed {
		r.log.Info("TLS certificate reloaded", zap.Time("not_after", r.Leaf().NotAfter))
	}
	return changed, err
}

func (r *CertReloader) load() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg, sum, err := loadTLSFiles(r.files)
	if err != nil || (r.cur.Load() != nil && sum == r.sum) {
		return false, err
	}
	r.cur.Store(cfg)
	r.sum = sum
	return true, nil
}

// SetFiles switches to other files (a SIGHUP with a changed edge.tls); a
// broken set changes nothing.
func (r *CertReloader) SetFiles(files TLSConfig) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg, sum, err := loadTLSFiles(files)
	if err != nil {
		return err
	}
	r.files = files
	if sum != r.sum {
		r.cur.Store(cfg)
		r.sum = sum
		r.log.Info("TLS certificate reloaded", zap.Time("not_after", cfg.Certificates[0].Leaf.NotAfter))
	}
	return nil
}

// CheckTLSFiles reports whether files would load.
func CheckTLSFiles(files TLSConfig) error {
	_, _, err := loadTLSFiles(files)
	return err
}

// loadTLSFiles reads and checks the files; sum identifies their content.
func loadTLSFiles(files TLSConfig) (*tls.Config, [32]byte, error) {
	var sum [32]byte
	certPEM, err := os.ReadFile(files.CertFile)
	if err != nil {
		return nil, sum, err
	}
	keyPEM, err := os.ReadFile(files.KeyFile)
	if err != nil {
		return nil, sum, err
	}
	var caPEM []byte
	if files.ClientCAFile != "" {
		if caPEM, err = os.ReadFile(files.ClientCAFile); err != nil {
			return nil, sum, err
		}
	}
	sum = sha256.Sum256(bytes.Join([][]byte{certPEM, keyPEM, caPEM, []byte(files.ClientAuth)}, []byte{0}))
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, sum, fmt.Errorf("%s, %s: %w", files.CertFile, files.KeyFile, err)
	}
	if time.Now().After(cert.Leaf.NotAfter) {
		return nil, sum, fmt.Errorf("%s expired on %s", files.CertFile, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
		// Forward-secret AEAD suites only: what HTTP/2 requires (RFC 9113
		// §9.2.2), enforced here because the guard listener terminates TLS
		// and net/http's own h2 checks no longer see the TLS state.
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
	if caPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, sum, fmt.Errorf("%s: no PEM certificate in it", files.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		if files.ClientAuth == "optional" {
			cfg.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	return cfg, sum, nil
}

func (r *CertReloader) watch(every time.Duration) {
	defer close(r.done)
	t := time.NewTicker(every)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		changed, err := r.load()
		switch {
		case err != nil:
			// A rotation writes the files one after the other: say so once
			// per distinct error, not every tick.
			if err.Error() != lastErr {
				r.log.Warn("TLS files unreadable; serving the previous certificate", zap.Error(err))
			}
			lastErr = err.Error()
		case changed:
			lastErr = ""
			r.log.Info("TLS certificate reloaded", zap.Time("not_after", r.Leaf().NotAfter))
		}
	}
}

// Close stops watching; nil-safe.
func (r *CertReloader) Close() {
	if r == nil {
		return
	}
	select {
	case <-r.stop:
	default:
		close(r.stop)
		if r.started.Load() {
			<-r.done
		}
	}
}
