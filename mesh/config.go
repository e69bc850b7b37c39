package mesh

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/textproto"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Defaults of the mesh section.
const (
	// DefaultReflectTimeout bounds one reflection pass against one upstream.
	DefaultReflectTimeout = 10 * time.Second
	// DefaultRefreshInterval is how often upstreams are reflected again to
	// pick up new or changed methods without a restart.
	DefaultRefreshInterval = 30 * time.Second
	// DefaultMaxRecvMessageBytes caps one upstream response message.
	DefaultMaxRecvMessageBytes = 16 << 20
	// DefaultMaxSendMessageBytes caps one upstream request message.
	DefaultMaxSendMessageBytes = 16 << 20
	// DefaultServiceGrace is how long a service that disappeared from
	// Consul keeps its routes and last known instances: longer than an
	// agent restart and its services' re-registration take.
	DefaultServiceGrace = 30 * time.Second
)

// Config is the `mesh` section of the operator's YAML.
type Config struct {
	// Upstreams are the gRPC servers to reflect and call.
	Upstreams []Upstream `yaml:"upstreams"`
	// ReflectTimeout bounds one reflection pass against one upstream.
	ReflectTimeout time.Duration `yaml:"reflect_timeout"`
	// RefreshInterval: how often upstreams are reflected again.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// MaxRecvMessageBytes caps one response message from an upstream.
	MaxRecvMessageBytes int `yaml:"max_recv_message_bytes"`
	// MaxSendMessageBytes caps one request message to an upstream.
	MaxSendMessageBytes int `yaml:"max_send_message_bytes"`
	// Consul discovers upstreams: services registered with Consul.Tag.
	Consul ConsulConfig `yaml:"consul"`
	// TLS is how Portico proves itself to, and verifies, Consul-discovered
	// services.
	TLS TLSConfig `yaml:"tls"`
	// LoadBalancing picks the balancer per Consul service.
	LoadBalancing LoadBalancing `yaml:"load_balancing"`
	// Outliers ejects instances that keep failing (Consul services only).
	Outliers OutlierConfig `yaml:"outlier_detection"`
	// Traffic routes each call through its service's discovery chain
	// (Consul services only).
	Traffic TrafficConfig `yaml:"traffic"`
}

// Split keys of mesh.traffic.split_key.
const (
	SplitKeySubject = "subject"
	SplitKeyAPIKey  = "api_key"
	SplitKeyHeader  = "header" // written header:<Name>
)

// DefaultOverrideHeader is the header a trusted caller forces a subset with.
const DefaultOverrideHeader = "Portico-Subset"

// TrafficConfig is `mesh.traffic`: canary and A/B routing from the
// service-router, service-splitter and service-resolver config entries
// that operators write in Consul. Portico watches each exposed service's
// discovery chain (/v1/discovery-chain/:service) and routes every call
// through it; what a chain asks that Portico does not do is logged once.
type TrafficConfig struct {
	// Chains turns the discovery-chain watch on (default true). Off, every
	// call goes to any passing instance.
	Chains *bool `yaml:"chains"`
	// SplitKey is what keeps a caller on one side of a split: subject (the
	// authenticated subject, default), api_key (the key's name) or
	// header:<Name> (a request header). Callers without it are split per
	// request.
	SplitKey string `yaml:"split_key"`
	// Services overrides split_key per Consul service.
	Services map[string]TrafficService `yaml:"services"`
	// Override lets trusted callers force a subset (a tester trying the
	// canary at 0 %). Off unless trusted_scopes or trusted_networks is set.
	Override OverrideConfig `yaml:"override"`
}

// TrafficService is `mesh.traffic.services.<name>`.
type TrafficService struct {
	SplitKey string `yaml:"split_key"`
}

// OverrideConfig is `mesh.traffic.override`.
type OverrideConfig struct {
	// Header names the subset to force; default Portico-Subset.
	Header string `yaml:"header"`
	// Claim, if set, names a verified token claim that forces a subset
	// too (the header wins when both are there).
	Claim string `yaml:"claim"`
	// TrustedScopes: a caller granted any of these scopes may override.
	TrustedScopes []string `yaml:"trusted_scopes"`
	// TrustedNetworks: a caller from any of these CIDRs may override.
	TrustedNetworks []string `yaml:"trusted_networks"`
}

// ChainsEnabled reports whether discovery chains are watched.
func (t TrafficConfig) ChainsEnabled() bool { return t.Chains == nil || *t.Chains }

// keyFor returns the split key of a service.
func (t TrafficConfig) keyFor(service string) splitKey {
	k := t.SplitKey
	if s, ok := t.Services[service]; ok && s.SplitKey != "" {
		k = s.SplitKey
	}
	if h, ok := strings.CutPrefix(k, SplitKeyHeader+":"); ok {
		return splitKey{kind: SplitKeyHeader, header: textproto.CanonicalMIMEHeaderKey(h)}
	}
	if k == "" {
		k = SplitKeySubject
	}
	return splitKey{kind: k}
}

// overridePolicy is the override of this section; nil when off.
func (t TrafficConfig) overridePolicy() *overridePolicy {
	o := t.Override
	if len(o.TrustedScopes) == 0 && len(o.TrustedNetworks) == 0 {
		return nil
	}
	p := &overridePolicy{header: o.Header, claim: o.Claim, scopes: o.TrustedScopes}
	if p.header == "" {
		p.header = DefaultOverrideHeader
	}
	p.header = textproto.CanonicalMIMEHeaderKey(p.header)
	for _, n := range o.TrustedNetworks {
		if pfx, err := netip.ParsePrefix(n); err == nil {
			p.networks = append(p.networks, pfx.Masked())
		} else if a, err := netip.ParseAddr(n); err == nil {
			p.networks = append(p.networks, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return p
}

func (t TrafficConfig) validate() error {
	check := func(where, k string) error {
		switch {
		case k == "", k == SplitKeySubject, k == SplitKeyAPIKey:
			return nil
		case strings.HasPrefix(k, SplitKeyHeader+":") && len(k) > len(SplitKeyHeader)+1:
			return nil
		}
		return fmt.Errorf("%s %q: want subject, api_key or header:<Name>", where, k)
	}
	if err := check("mesh.traffic.split_key", t.SplitKey); err != nil {
		return err
	}
	for name, s := range t.Services {
		if err := check("mesh.traffic.services."+name+".split_key", s.SplitKey); err != nil {
			return err
		}
	}
	for _, n := range t.Override.TrustedNetworks {
		_, errP := netip.ParsePrefix(n)
		_, errA := netip.ParseAddr(n)
		if errP != nil && errA != nil {
			return fmt.Errorf("mesh.traffic.override.trusted_networks %q: want a CIDR or an address", n)
		}
	}
	return nil
}

// ConsulConfig is the `mesh.consul` section. An empty Address turns Consul
// off.
type ConsulConfig struct {
	// Address of the Consul agent's HTTP API, host:port.
	Address string `yaml:"address"`
	// Scheme is http (default) or https.
	Scheme string `yaml:"scheme"`
	// Token is the ACL token; TokenFile reads it from a file instead.
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// Datacenter to query; the agent's own when empty.
	Datacenter string `yaml:"datacenter"`
	// CAFile, CertFile, KeyFile and ServerName configure TLS to the agent
	// (scheme https).
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
	// Tag marks the services Portico exposes. Default "portico".
	Tag string `yaml:"tag"`
	// WaitTime is how long one blocking query may wait for a change.
	WaitTime time.Duration `yaml:"wait_time"`
	// QueryRate caps blocking queries per second per watch (burst 5), so a
	// key that changes constantly cannot make Portico spin.
	QueryRate float64 `yaml:"query_rate"`
	// DrainAfterDeregister is how long connections to a service that left
	// the catalog stay open for calls already running.
	DrainAfterDeregister time.Duration `yaml:"drain_after_deregister"`
	// ServiceGrace is how long an exposed service that disappeared from
	// Consul (it left the catalog, has no instance registered and passing,
	// or its instances' checks have not run since they registered again)
	// keeps its routes and its last known instances. A restarted agent can
	// answer with an empty catalog before its services are registered
	// again; within the grace that is invisible to clients. A service still
	// out of the catalog when it ends loses its routes (a warning names it
	// and how long it was gone; portico_consul_services_removed_total
	// counts it). It does not delay health: an instance whose check failed
	// leaves the balancer at once. 0 removes a service, and stops serving
	// unconfirmed instances, at once. Default 30s (DefaultServiceGrace).
	ServiceGrace time.Duration `yaml:"service_grace"`
	// UnreadyAfter makes /readyz fail once Consul has been unreachable this
	// long. 0 (default): a Consul outage only degrades Portico, which keeps
	// serving the last known instances and routes.
	UnreadyAfter time.Duration `yaml:"unready_after"`
	// Register registers Portico itself in Consul.
	Register RegisterConfig `yaml:"register"`
}

// RegisterConfig is `mesh.consul.register`.
type RegisterConfig struct {
	// Enabled registers Portico (default true when Consul is configured).
	Enabled *bool `yaml:"enabled"`
	// Name is Portico's service name in Consul, and the name its Connect
	// identity is issued for. Default "portico".
	Name string `yaml:"name"`
	// ID is this instance's id; default <name>-<host>-<port>.
	ID string `yaml:"id"`
	// Address is the address registered for the public listener; default
	// the listener's own.
	Address string `yaml:"address"`
	// Tags added to the registration (never the expose tag).
	Tags []string `yaml:"tags"`
	// CheckInterval and CheckTimeout of the HTTP check on /readyz.
	CheckInterval time.Duration `yaml:"check_interval"`
	CheckTimeout  time.Duration `yaml:"check_timeout"`
	// DeregisterCriticalAfter removes an instance whose check stayed
	// critical this long (a crashed Portico that never deregistered).
	DeregisterCriticalAfter time.Duration `yaml:"deregister_critical_after"`
}

// RegisterEnabled reports whether Portico registers itself.
func (c ConsulConfig) RegisterEnabled() bool {
	return c.Address != "" && (c.Register.Enabled == nil || *c.Register.Enabled)
}

// TLS modes of mesh.tls.mode.
const (
	TLSModeConsul    = "consul"
	TLSModeFiles     = "files"
	TLSModePlaintext = "plaintext"
)

// TLSConfig is `mesh.tls`.
type TLSConfig struct {
	// Mode: consul (Connect CA leaf and roots from the agent; the default
	// with Consul), files, or plaintext (explicit only; logged at start).
	Mode string `yaml:"mode"`
	// CertFile, KeyFile and CAFile are the identity in files mode; they are
	// reloaded when they change.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
	// TrustDomains a peer's SPIFFE ID must belong to in files mode (the
	// first one is the one upstreams are expected in). In consul mode the
	// agent's trust domain is used.
	TrustDomains []string `yaml:"trust_domains"`
	// ReloadInterval is how often files are checked for changes.
	ReloadInterval time.Duration `yaml:"reload_interval"`
}

// Balancers of mesh.load_balancing.
const (
	BalancerRoundRobin   = "round_robin"
	BalancerLeastRequest = "least_request"
)

// LoadBalancing is `mesh.load_balancing`.
type LoadBalancing struct {
	// Default balancer: round_robin (default) or least_request.
	Default string `yaml:"default"`
	// Services overrides the balancer per Consul service name.
	Services map[string]string `yaml:"services"`
}

// For returns the balancer of a service.
func (l LoadBalancing) For(service string) string {
	if b, ok := l.Services[service]; ok {
		return b
	}
	return l.Default
}

// Upstream is one statically configured gRPC server.
type Upstream struct {
	// Address is host:port.
	Address string `yaml:"address"`
	// Plaintext disables TLS to this upstream. Off by default.
	Plaintext bool `yaml:"plaintext"`
	// CAFile verifies the upstream's certificate (system roots if empty).
	CAFile string `yaml:"ca_file"`
	// ServerName overrides the name checked in the upstream's certificate.
	ServerName string `yaml:"server_name"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		ReflectTimeout:      DefaultReflectTimeout,
		RefreshInterval:     DefaultRefreshInterval,
		MaxRecvMessageBytes: DefaultMaxRecvMessageBytes,
		MaxSendMessageBytes: DefaultMaxSendMessageBytes,
		Consul: ConsulConfig{
			Scheme:               "http",
			Tag:                  "portico",
			WaitTime:             time.Minute,
			QueryRate:            20,
			DrainAfterDeregister: time.Minute,
			ServiceGrace:         DefaultServiceGrace,
			Register: RegisterConfig{
				Name:                    "portico",
				CheckInterval:           2 * time.Second,
				CheckTimeout:            time.Second,
				DeregisterCriticalAfter: time.Minute,
			},
		},
		TLS:           TLSConfig{ReloadInterval: 5 * time.Second},
		LoadBalancing: LoadBalancing{Default: BalancerRoundRobin},
		Outliers: OutlierConfig{
			ConsecutiveFailures: 5, BaseEjection: 10 * time.Second,
			MaxEjection: 5 * time.Minute, MaxEjectedPercent: 50,
		},
	}
}

// TLSMode is the effective mesh.tls.mode: consul when Consul is configured
// and no mode was set.
func (c Config) TLSMode() string {
	if c.TLS.Mode == "" && c.Consul.Address != "" {
		return TLSModeConsul
	}
	return c.TLS.Mode
}

// Validate reports the first invalid value.
func (c Config) Validate() error {
	if o := c.Outliers; o.ConsecutiveFailures < 0 || o.BaseEjection <= 0 || o.MaxEjection < o.BaseEjection || o.MaxEjectedPercent < 0 || o.MaxEjectedPercent > 100 {
		return fmt.Errorf("mesh.outlier_detection: need consecutive_failures >= 0, base_ejection > 0, max_ejection >= base_ejection, max_ejected_percent within 0..100")
	}
	if c.ReflectTimeout <= 0 {
		return fmt.Errorf("mesh.reflect_timeout must be > 0, got %s", c.ReflectTimeout)
	}
	if c.RefreshInterval <= 0 {
		return fmt.Errorf("mesh.refresh_interval must be > 0, got %s", c.RefreshInterval)
	}
	if c.MaxRecvMessageBytes <= 0 || c.MaxSendMessageBytes <= 0 {
		return errors.New("mesh.max_recv_message_bytes and mesh.max_send_message_bytes must be > 0")
	}
	if err := c.validateConsul(); err != nil {
		return err
	}
	if err := c.Traffic.validate(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, u := range c.Upstreams {
		if _, _, err := net.SplitHostPort(u.Address); err != nil {
			return fmt.Errorf("mesh.upstreams[%d].address %q: want host:port: %v", i, u.Address, err)
		}
		if seen[u.Address] {
			return fmt.Errorf("mesh.upstreams[%d].address %q is listed twice", i, u.Address)
		}
		seen[u.Address] = true
		if u.Plaintext && (u.CAFile != "" || u.ServerName != "") {
			return fmt.Errorf("mesh.upstreams[%d]: ca_file and server_name need TLS, but plaintext is set", i)
		}
	}
	return nil
}

func (c Config) validateConsul() error {
	cc := c.Consul
	switch c.TLSMode() {
	case "":
	case TLSModeConsul:
		if cc.Address == "" {
			return errors.New("mesh.tls.mode consul needs mesh.consul.address")
		}
	case TLSModeFiles:
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" || c.TLS.CAFile == "" {
			return errors.New("mesh.tls.mode files needs mesh.tls.cert_file, key_file and ca_file")
		}
		if len(c.TLS.TrustDomains) == 0 {
			return errors.New("mesh.tls.mode files needs mesh.tls.trust_domains (the SPIFFE trust domain of your services)")
		}
		if c.TLS.ReloadInterval <= 0 {
			return fmt.Errorf("mesh.tls.reload_interval must be > 0, got %s", c.TLS.ReloadInterval)
		}
	case TLSModePlaintext:
	default:
		return fmt.Errorf("mesh.tls.mode %q: want consul, files or plaintext", c.TLS.Mode)
	}
	for svc, b := range c.LoadBalancing.Services {
		if b != BalancerRoundRobin && b != BalancerLeastRequest {
			return fmt.Errorf("mesh.load_balancing.services.%s %q: want round_robin or least_request", svc, b)
		}
	}
	if d := c.LoadBalancing.Default; d != BalancerRoundRobin && d != BalancerLeastRequest {
		return fmt.Errorf("mesh.load_balancing.default %q: want round_robin or least_request", d)
	}
	if cc.Address == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(cc.Address); err != nil {
		return fmt.Errorf("mesh.consul.address %q: want host:port: %v", cc.Address, err)
	}
	if cc.Scheme != "http" && cc.Scheme != "https" {
		return fmt.Errorf("mesh.consul.scheme %q: want http or https", cc.Scheme)
	}
	if cc.Token != "" && cc.TokenFile != "" {
		return errors.New("mesh.consul: set token or token_file, not both")
	}
	if cc.Tag == "" {
		return errors.New("mesh.consul.tag must not be empty")
	}
	if cc.WaitTime < time.Second {
		return fmt.Errorf("mesh.consul.wait_time must be >= 1s, got %s", cc.WaitTime)
	}
	if cc.QueryRate <= 0 {
		return fmt.Errorf("mesh.consul.query_rate must be > 0, got %v", cc.QueryRate)
	}
	if cc.DrainAfterDeregister < 0 {
		return fmt.Errorf("mesh.consul.drain_after_deregister must be >= 0, got %s", cc.DrainAfterDeregister)
	}
	if cc.ServiceGrace < 0 {
		return fmt.Errorf("mesh.consul.service_grace must be >= 0 (0 removes a service at once), got %s", cc.ServiceGrace)
	}
	r := cc.Register
	if cc.RegisterEnabled() {
		if r.Name == "" {
			return errors.New("mesh.consul.register.name must not be empty")
		}
		if slices.Contains(r.Tags, cc.Tag) {
			return fmt.Errorf("mesh.consul.register.tags must not contain the expose tag %q: Portico would expose itself", cc.Tag)
		}
		if r.CheckInterval <= 0 || r.CheckTimeout <= 0 || r.DeregisterCriticalAfter <= 0 {
			return errors.New("mesh.consul.register: check_interval, check_timeout and deregister_critical_after must be > 0")
		}
	}
	return nil
}

// APIConfig is the consul/api client configuration of this section.
func (cc ConsulConfig) APIConfig() (*api.Config, error) {
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = cc.Address
	cfg.Scheme = cc.Scheme
	cfg.Datacenter = cc.Datacenter
	cfg.Token = cc.Token
	cfg.TokenFile = cc.TokenFile
	cfg.TLSConfig = api.TLSConfig{Address: cc.ServerName, CAFile: cc.CAFile, CertFile: cc.CertFile, KeyFile: cc.KeyFile}
	return cfg, nil
}
