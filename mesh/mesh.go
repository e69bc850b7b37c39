package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Mesh is what the edge gets from this package: the static upstreams and,
// when Consul is configured, the catalog, the client and Portico's identity.
type Mesh struct {
	cfg Config
	log *zap.Logger

	// Static are the upstreams listed in the configuration.
	Static *Upstreams
	// Consul is the agent client; nil without Consul.
	Consul *api.Client
	// Identity is Portico's mTLS identity; nil in plaintext mode.
	Identity IdentitySource
	// Catalog discovers Consul services; nil without Consul.
	Catalog *Catalog

	// identity is Identity's own lifecycle (its watches or reload loop);
	// nil in plaintext mode.
	identity interface {
		Start()
		Close()
	}
	// self keeps Portico registered in Consul between Register and Leave
	// (register.go).
	self selfRegistration
}

// New builds the mesh for cfg; nothing is contacted until Start. opts are
// added to every upstream connection (the edge's tracing stats handler).
func New(cfg Config, log *zap.Logger, opts ...grpc.DialOption) (*Mesh, error) {
	m := &Mesh{cfg: cfg, log: log}
	static, err := NewUpstreams(cfg, log, opts...)
	if err != nil {
		return nil, err
	}
	m.Static = static
	if cfg.Consul.Address == "" && cfg.TLSMode() == "" {
		return m, nil
	}
	if cfg.Consul.Address != "" {
		ac, err := cfg.Consul.APIConfig()
		if err != nil {
			_ = static.Close()
			return nil, err
		}
		if m.Consul, err = api.NewClient(ac); err != nil {
			_ = static.Close()
			return nil, fmt.Errorf("mesh.consul: %w", err)
		}
	}
	var creds credentials.TransportCredentials
	switch cfg.TLSMode() {
	case TLSModeConsul:
		ci := NewConsulIdentity(m.Consul, cfg.Consul.Register.Name, log)
		m.Identity, m.identity = ci, ci
		creds = &explainTLS{ClientCredentials(ci), consulPeer, fixConsulTLS}
	case TLSModeFiles:
		fi, err := NewFileIdentity(cfg.TLS, log)
		if err != nil {
			_ = static.Close()
			return nil, fmt.Errorf("mesh.tls: %w", err)
		}
		m.Identity, m.identity = fi, fi
		creds = &explainTLS{ClientCredentials(fi), consulPeer, fixConsulTLS}
	default:
		log.Warn("mesh.tls.mode is plaintext: calls to Consul services are neither encrypted nor authenticated")
		creds = &explainPlaintext{insecure.NewCredentials(), consulPeer, fixConsulPlaintext}
	}
	if m.Consul != nil {
		m.Catalog = NewCatalog(cfg, CatalogParams{Client: m.Consul, Creds: creds, DialOptions: opts, Log: log})
	}
	return m, nil
}

// Start begins watching Consul and the identity's source. It waits
// briefly (at most 5 s) for the identity and a first read of the catalog so
// that the first route table already holds the Consul services, but never
// fails because Consul is not there yet: Portico then starts unready and
// keeps retrying. Close stops what Start began.
func (m *Mesh) Start(ctx context.Context) error {
	if m.identity != nil {
		m.identity.Start()
	}
	if m.Catalog != nil {
		m.Catalog.Start()
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if m.Identity != nil {
		if err := WaitIdentity(wctx, m.Identity); err != nil {
			m.log.Warn("starting without a mesh identity; calls to mesh services fail until it loads", zap.Error(err))
		}
	}
	if err := m.WaitSynced(wctx); err != nil {
		m.log.Warn("starting before the consul catalog was read; routes appear once it is", zap.Error(err))
	}
	return nil
}

// WaitSynced waits until the Consul catalog and every exposed service's
// instances have been read once, or ctx ends; without Consul it returns
// nil at once.
func (m *Mesh) WaitSynced(ctx context.Context) error {
	if m.Catalog == nil {
		return nil
	}
	return m.Catalog.WaitSynced(ctx)
}

// Sources lists the discovery sources for the route table.
func (m *Mesh) Sources() []Discovery {
	out := []Discovery{m.Static}
	if m.Catalog != nil {
		out = append(out, m.Catalog)
	}
	return out
}

// RefreshInterval is how often every upstream is reflected again
// (mesh.refresh_interval).
func (m *Mesh) RefreshInterval() time.Duration { return m.cfg.RefreshInterval }

// Check is one readiness condition.
type Check struct {
	Name string `json:"name"`
	// OK false makes Portico unready; Degraded only reports.
	OK       bool   `json:"ok"`
	Degraded bool   `json:"degraded,omitempty"`
	Detail   string `json:"detail,omitempty"`
}

// Checks reports the mesh's readiness conditions: the identity is loaded,
// and Consul's watches answer (a failing watch only degrades Portico, which
// keeps serving its last known state, unless it has failed for longer than
// mesh.consul.unready_after).
func (m *Mesh) Checks() []Check {
	var out []Check
	if m.Identity != nil {
		c := Check{Name: "identity", OK: m.Identity.Identity() != nil}
		if c.OK {
			id := m.Identity.Identity()
			c.Detail = fmt.Sprintf("%s, expires %s", id.ID, id.NotAfter().UTC().Format(time.RFC3339))
		} else {
			c.Detail = "not loaded yet"
		}
		out = append(out, c)
	}
	if m.Catalog != nil {
		st := m.ConsulStatus()
		c := Check{Name: "consul", OK: true}
		if !st.Healthy {
			c.Degraded = true
			c.Detail = fmt.Sprintf("watch failing for %s (serving the last known instances and routes): %v", time.Since(st.Since).Round(time.Millisecond), st.Err)
			if ua := m.cfg.Consul.UnreadyAfter; ua > 0 && time.Since(st.Since) > ua {
				c.OK = false
			}
		}
		out = append(out, c)
		if names := m.Catalog.InGrace(); len(names) > 0 {
			slices.Sort(names)
			out = append(out, Check{Name: "consul_services", OK: true, Degraded: true,
				Detail: fmt.Sprintf("served from memory within mesh.consul.service_grace, not confirmed by Consul: %s", strings.Join(names, ", "))})
		}
	}
	return out
}

// ConsulStatus merges the catalog's and the identity's watch status.
func (m *Mesh) ConsulStatus() WatchStatus {
	st := WatchStatus{Healthy: true}
	if m.Catalog != nil {
		st = m.Catalog.Status()
	}
	if ci, ok := m.Identity.(*ConsulIdentity); ok {
		is := ci.Status()
		st.Errors += is.Errors
		if !is.Healthy && (st.Healthy || is.Since.Before(st.Since)) {
			st.Healthy, st.Since, st.Err = false, is.Since, is.Err
		}
	}
	return st
}

// Close stops every watch (waiting for each) and closes every connection;
// it is safe without Start. A registration that Leave did not end stays in
// Consul, as after a crash.
func (m *Mesh) Close() error {
	m.self.stop()
	var err error
	if m.Catalog != nil {
		err = m.Catalog.Close()
	}
	if m.identity != nil {
		m.identity.Close()
	}
	return errors.Join(err, m.Static.Close())
}
