package mesh

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// MetaDescriptors is the service-meta key where a mesh-native instance
// publishes the hash of the descriptors it serves. A new value makes the
// edge reflect that service again at once.
const MetaDescriptors = "portico_descriptors"

// Catalog discovers upstreams in Consul: every service carrying the expose
// tag, each with its own client connection whose resolver is fed the
// passing instances by a blocking query. A service that disappears from
// Consul keeps its routes and last known instances for
// mesh.consul.service_grace. It implements Discovery.
//
// This file holds its lifecycle and what it answers; catalog_watch.go what
// Consul's answers change, conns.go the connection of each service,
// resolver.go how instances reach grpc-go, and grace.go the service grace.
//
// Its state is split by job: watch runs the Consul queries and signals what
// they found, conns opens and drains the connections, and the Catalog
// itself keeps the exposed services under mu. The grace period stays here:
// it changes the services map and each service's state under both locks.
// Locks are taken in one order: mu, then a service's mu, then conns.mu.
type Catalog struct {
	cfg     Config
	log     *zap.Logger
	clock   clock // the grace timers'
	watch   *catalogWatch
	conns   *serviceConns
	traffic *trafficMetrics

	mu       sync.Mutex
	services map[string]*catalogService
	removed  uint64 // services removed after leaving the catalog
	closed   bool

	// The watches and the push queue run until Close cancels ctx; Close
	// waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// graceTimers counts grace timers set and not yet done (stopped, or
	// their endGrace returned); Close waits for them.
	graceTimers sync.WaitGroup
}

// CatalogParams is what a Catalog works with besides the configuration.
type CatalogParams struct {
	// Client is the Consul agent's.
	Client *api.Client
	// Creds secure the calls: ClientCredentials in the mesh modes, which
	// expect each instance to prove its service's SPIFFE ID in the local
	// trust domain.
	Creds credentials.TransportCredentials
	// DialOptions are added to every service connection.
	DialOptions []grpc.DialOption
	Log         *zap.Logger
}

// NewCatalog returns a catalog; Start begins watching.
func NewCatalog(cfg Config, p CatalogParams) *Catalog {
	ctx, cancel := context.WithCancel(context.Background())
	tm := newTrafficMetrics()
	conns := newServiceConns(cfg, p)
	conns.fallbacks = tm.fallbacks
	return &Catalog{
		cfg: cfg, log: p.Log, clock: realClock{}, watch: newCatalogWatch(cfg.Consul, p.Client, p.Log), conns: conns, traffic: tm,
		services: map[string]*catalogService{}, ctx: ctx, cancel: cancel,
	}
}

// Start begins watching the service list, and pushing their state to the
// resolvers grpc-go builds; Close stops both and waits for them.
func (c *Catalog) Start() {
	c.wg.Go(func() { c.conns.built.run(c.ctx) })
	c.wg.Go(func() { c.watch.services(c.ctx, c.setServices) })
}

// WaitSynced waits until the service list and every listed service's
// instances have been read once, or ctx ends.
func (c *Catalog) WaitSynced(ctx context.Context) error {
	select {
	case <-c.watch.listed:
	case <-ctx.Done():
		if st := c.Status(); st.Err != nil {
			return fmt.Errorf("consul catalog not read: %w (last error: %v)", context.Cause(ctx), st.Err)
		}
		return fmt.Errorf("consul catalog not read: %w", context.Cause(ctx))
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c.mu.Lock()
		pending := ""
		for name, svc := range c.services {
			svc.mu.Lock()
			if svc.state == nil || (c.cfg.Traffic.ChainsEnabled() && svc.plan == nil) {
				pending = name
			}
			svc.mu.Unlock()
		}
		c.mu.Unlock()
		if pending == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("consul instances of %s not read: %w", pending, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// Targets implements Discovery: the exposed services, sorted.
func (c *Catalog) Targets() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.services))
	for n := range c.services {
		names = append(names, "consul:"+n)
	}
	slices.Sort(names)
	return names
}

// Reflect implements Discovery. It reflects each service whose instances
// announced new descriptors (or any service, with force) and that has at
// least one passing instance: one instance per distinct descriptor hash
// (skew.go).
func (c *Catalog) Reflect(ctx context.Context, force bool) []Result {
	c.mu.Lock()
	var todo []*catalogService
	for _, svc := range c.services {
		svc.mu.Lock()
		due := svc.instances > 0 && (force || svc.forced || svc.version != svc.reflected)
		svc.mu.Unlock()
		if due {
			todo = append(todo, svc)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(todo, func(a, b *catalogService) int { return strings.Compare(a.name, b.name) })
	out := make([]Result, len(todo))
	var wg sync.WaitGroup
	for i, svc := range todo {
		wg.Go(func() { out[i] = c.reflectService(ctx, svc, force) })
	}
	wg.Wait()
	return out
}

// Changed implements Discovery.
func (c *Catalog) Changed() <-chan struct{} { return c.watch.changed }

// Status reports whether every Consul watch is answering.
func (c *Catalog) Status() WatchStatus { return c.watch.health.status() }

// Instances returns the number of passing instances of a service.
func (c *Catalog) Instances(service string) int {
	c.mu.Lock()
	svc := c.services[service]
	c.mu.Unlock()
	if svc == nil {
		return 0
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	return svc.instances
}

// Services lists the exposed service names, sorted.
func (c *Catalog) Services() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.services))
	for n := range c.services {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Ejected lists the instance addresses of service ejected as outliers now.
func (c *Catalog) Ejected(service string) []string {
	c.mu.Lock()
	svc := c.services[service]
	c.mu.Unlock()
	if svc == nil {
		return nil
	}
	return svc.outliers.ejected()
}

// Close stops every watch and closes every connection.
func (c *Catalog) Close() error {
	c.mu.Lock()
	c.closed = true
	svcs := c.services
	c.services = map[string]*catalogService{}
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	for _, svc := range svcs {
		svc.mu.Lock()
		if svc.grace != nil {
			svc.grace.stop()
			svc.grace = nil
		}
		svc.mu.Unlock()
		svc.outliers.stop()
		_ = svc.conn.Close()
	}
	c.graceTimers.Wait() // an endGrace already running sees c.closed and returns
	c.conns.close()
	return nil
}
