package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// ConsulIdentity is a service's identity from the local Consul agent's
// Connect CA: its leaf certificate and every CA root, each kept current by a
// blocking query, so a renewed leaf or a rotated CA replaces the snapshot
// without touching open connections.
//
// The agent endpoints it uses are deprecated since Consul 1.16 but served by
// 1.20; they sit behind IdentitySource so a Workload API source can replace
// them.
type ConsulIdentity struct {
	client  *api.Client
	service string
	log     *zap.Logger
	health  *watchHealth

	cur   atomic.Pointer[Identity]
	ready chan struct{}
	once  sync.Once

	mu    sync.Mutex
	roots *api.CARootList
	leaf  *api.LeafCert

	cancel context.CancelFunc // set by Start
	wg     sync.WaitGroup
}

// NewConsulIdentity returns the identity of service (a service NAME: the
// agent issues leaves per name, whatever its parameter is called); nothing
// is contacted until Start. Close stops it.
func NewConsulIdentity(client *api.Client, service string, log *zap.Logger) *ConsulIdentity {
	return &ConsulIdentity{client: client, service: service, log: log, health: newWatchHealth(), ready: make(chan struct{})}
}

// Start begins watching the leaf and the CA roots, each in a goroutine that
// Close stops and waits for.
func (c *ConsulIdentity) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	lim := func() *rate.Limiter { return rate.NewLimiter(rate.Every(100*time.Millisecond), 5) }
	c.wg.Go(func() {
		watch(ctx, "connect-ca-roots", lim(), c.health, c.log, 5*time.Minute,
			func(q *api.QueryOptions) (*api.CARootList, *api.QueryMeta, error) {
				return c.client.Agent().ConnectCARoots(q)
			},
			func(r *api.CARootList) {
				c.mu.Lock()
				c.roots = r
				c.mu.Unlock()
				c.rebuild()
			})
	})
	c.wg.Go(func() {
		watch(ctx, "connect-ca-leaf/"+c.service, lim(), c.health, c.log, 5*time.Minute,
			func(q *api.QueryOptions) (*api.LeafCert, *api.QueryMeta, error) {
				return c.client.Agent().ConnectCALeaf(c.service, q)
			},
			func(l *api.LeafCert) {
				c.mu.Lock()
				c.leaf = l
				c.mu.Unlock()
				c.rebuild()
			})
	})
}

// rebuild makes a new snapshot from the latest leaf and roots.
func (c *ConsulIdentity) rebuild() {
	c.mu.Lock()
	roots, leaf := c.roots, c.leaf
	c.mu.Unlock()
	if roots == nil || leaf == nil {
		return
	}
	var pems [][]byte
	for _, r := range roots.Roots {
		pems = append(pems, []byte(r.RootCertPEM))
	}
	// The leaf PEM may carry intermediates (after a CA rotation, the
	// cross-signed one); X509KeyPair keeps them all in the chain we send.
	id, err := newIdentity([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM), pems, []string{roots.TrustDomain})
	if err != nil {
		c.log.Error("consul identity: unusable leaf or roots; keeping the previous identity", zap.String("service", c.service), zap.Error(err))
		return
	}
	prev := c.cur.Swap(id)
	if prev == nil {
		c.log.Info("mesh identity loaded", zap.String("id", id.ID), zap.Time("not_after", id.NotAfter()), zap.Int("roots", len(roots.Roots)))
	} else if prev.Cert.Leaf.SerialNumber.Cmp(id.Cert.Leaf.SerialNumber) != 0 || prev.rootCount != id.rootCount {
		c.log.Info("mesh identity rotated", zap.String("id", id.ID), zap.Time("not_after", id.NotAfter()), zap.Int("roots", len(roots.Roots)))
	}
	c.once.Do(func() { close(c.ready) })
}

// Identity implements IdentitySource.
func (c *ConsulIdentity) Identity() *Identity { return c.cur.Load() }

// Ready implements IdentitySource.
func (c *ConsulIdentity) Ready() <-chan struct{} { return c.ready }

// Status reports whether the leaf and roots watches are answering.
func (c *ConsulIdentity) Status() WatchStatus { return c.health.status() }

// Close stops the watches and waits for them; it is safe without Start.
func (c *ConsulIdentity) Close() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
}

// FileIdentity reads an identity from PEM files and reloads it when any of
// them changes; a reload that fails keeps the previous identity and logs why.
type FileIdentity struct {
	certFile, keyFile, caFile string
	trust                     []string
	interval                  time.Duration
	log                       *zap.Logger

	cur   atomic.Pointer[Identity]
	ready chan struct{}
	last  [3][]byte

	cancel context.CancelFunc // set by Start
	wg     sync.WaitGroup
}

// NewFileIdentity loads the files of files mode (cfg's CertFile, KeyFile,
// CAFile and TrustDomains) once; an error is returned if that fails. Start
// then checks them every cfg.ReloadInterval until Close.
func NewFileIdentity(cfg TLSConfig, log *zap.Logger) (*FileIdentity, error) {
	f := &FileIdentity{certFile: cfg.CertFile, keyFile: cfg.KeyFile, caFile: cfg.CAFile, trust: cfg.TrustDomains, interval: cfg.ReloadInterval,
		log: log, ready: make(chan struct{})}
	if _, err := f.reload(); err != nil {
		return nil, err
	}
	close(f.ready)
	return f, nil
}

// Start begins checking the files for changes, in a goroutine that Close
// stops and waits for.
func (f *FileIdentity) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.wg.Go(func() {
		t := time.NewTicker(f.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			changed, err := f.reload()
			switch {
			case err != nil:
				f.log.Error("mesh identity files changed but cannot be loaded; keeping the previous identity", zap.Error(err))
			case changed:
				id := f.cur.Load()
				f.log.Info("mesh identity reloaded from files", zap.String("id", id.ID), zap.Time("not_after", id.NotAfter()))
			}
		}
	})
}

// reload reads the three files and swaps in a new identity if their bytes
// changed.
func (f *FileIdentity) reload() (bool, error) {
	var cur [3][]byte
	for i, p := range []string{f.certFile, f.keyFile, f.caFile} {
		b, err := os.ReadFile(p)
		if err != nil {
			return false, err
		}
		cur[i] = b
	}
	if f.cur.Load() != nil && bytes.Equal(cur[0], f.last[0]) && bytes.Equal(cur[1], f.last[1]) && bytes.Equal(cur[2], f.last[2]) {
		return false, nil
	}
	id, err := newIdentity(cur[0], cur[1], [][]byte{cur[2]}, f.trust)
	if err != nil {
		return false, fmt.Errorf("%s, %s, %s: %w", f.certFile, f.keyFile, f.caFile, err)
	}
	if id.ID == "" {
		return false, fmt.Errorf("%s: the certificate has no single URI SAN (a SPIFFE ID)", f.certFile)
	}
	if _, err := ParseSPIFFEID(id.Cert.Leaf.URIs[0]); err != nil {
		return false, fmt.Errorf("%s: %w", f.certFile, err)
	}
	f.last = cur
	f.cur.Store(id)
	return true, nil
}

// Identity implements IdentitySource.
func (f *FileIdentity) Identity() *Identity { return f.cur.Load() }

// Ready implements IdentitySource.
func (f *FileIdentity) Ready() <-chan struct{} { return f.ready }

// Close stops the reload loop and waits for it; it is safe without Start.
func (f *FileIdentity) Close() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
}

// WaitIdentity waits until src has an identity or ctx ends.
func WaitIdentity(ctx context.Context, src IdentitySource) error {
	select {
	case <-src.Ready():
		return nil
	case <-ctx.Done():
		return errors.New("mesh identity not available: " + context.Cause(ctx).Error())
	}
}
