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
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/leastrequest" // least_request_experimental
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
)

// MetaDescriptors is the service-meta key where a mesh-native instance
// publishes the hash of the descriptors it serves. A new value makes the
// edge reflect that service again at once.
const MetaDescriptors = "portico_descriptors"

// Catalog discovers upstreams in Consul: every service carrying the expose
// tag, each with its own client connection whose resolver is fed the
// passing instances by a blocking query. A service that disappears from
// Consul keeps its routes and last known instances for
// mesh.consul.service_grace (see grace.go). It implements Discovery.
type Catalog struct {
	cfg    Config
	client *api.Client
	creds  credentials.TransportCredentials
	dial   []grpc.DialOption // added to every service connection
	log    *zap.Logger
	health *watchHealth
	clock  clock

	changed  chan struct{}
	listed   chan struct{} // closed after the first service list
	listOnce sync.Once
	built    *builtQueue // resolvers grpc-go built, waiting for their first push

	mu       sync.Mutex
	services map[string]*catalogService
	draining map[*grpc.ClientConn]*time.Timer
	removed  uint64 // services removed after leaving the catalog
	closed   bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// catalogService is one exposed Consul service.
type catalogService struct {
	name   string
	conn   *grpc.ClientConn
	cancel context.CancelFunc

	// pushMu serialises pushes to grpc-go, which happen outside mu: grpc-go
	// may call Build (which takes mu) while holding its own locks.
	pushMu sync.Mutex

	outliers *outliers

	mu        sync.Mutex
	cc        resolver.ClientConn // nil while grpc-go has no resolver open
	state     *resolver.State     // nil until the first health answer
	instances int
	version   string // what the instances say they serve
	reflected string // version at the last successful reflection
	forced    bool   // reflect at the next Reflect whatever the version

	// What Consul says, what is served, and the grace between (grace.go).
	// listed changes with both the catalog's mu and this one held.
	listed  bool                // in the catalog's last service list
	entries []*api.ServiceEntry // the last health answer: every registered instance, any health
	serving []*api.ServiceEntry // the instances in state
	holding holdReason          // why serving keeps instances Consul did not confirm
	grace   *graceState         // non-nil during the grace period
	removed bool
}

// NewCatalog returns a catalog; Start begins watching. creds secure the
// calls (ClientCredentials in the mesh modes, which expect each instance to
// prove its service's SPIFFE ID in the local trust domain); opts are added
// to every service connection.
func NewCatalog(cfg Config, client *api.Client, creds credentials.TransportCredentials, log *zap.Logger, opts ...grpc.DialOption) *Catalog {
	ctx, cancel := context.WithCancel(context.Background())
	return &Catalog{
		cfg: cfg, client: client, creds: creds, dial: opts, log: log, health: newWatchHealth(), clock: realClock{},
		changed: make(chan struct{}, 1), listed: make(chan struct{}), built: newBuiltQueue(), services: map[string]*catalogService{},
		draining: map[*grpc.ClientConn]*time.Timer{}, ctx: ctx, cancel: cancel,
	}
}

func (c *Catalog) limiter() *rate.Limiter {
	return rate.NewLimiter(rate.Limit(c.cfg.Consul.QueryRate), 5)
}

// Start begins watching the service list, and pushing their state to the
// resolvers grpc-go builds; Close stops both and waits for them.
func (c *Catalog) Start() {
	c.wg.Go(func() { c.built.run(c.ctx) })
	c.wg.Go(func() {
		watchResync(c.ctx, "catalog-services", c.limiter(), c.health, c.log, c.cfg.Consul.WaitTime,
			func(q *api.QueryOptions) (map[string][]string, *api.QueryMeta, error) {
				return c.client.Catalog().Services(q)
			},
			c.setServices)
	})
}

// setServices starts and stops per-service watches as services gain or lose
// the expose tag. It only runs on successful answers, so a Consul outage
// never empties the set; a service missing from an answer is removed after
// its grace period (at once without one), unless it is back by then.
func (c *Catalog) setServices(all map[string][]string, resync bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	want := map[string]bool{}
	for name, tags := range all {
		if slices.Contains(tags, c.cfg.Consul.Tag) {
			want[name] = true
		}
	}
	changed := false
	for name := range want {
		if _, ok := c.services[name]; ok {
			continue
		}
		svc, err := c.startService(name)
		if err != nil {
			c.log.Error("cannot watch consul service", zap.String("service", name), zap.Error(err))
			continue
		}
		c.services[name] = svc
		c.log.Info("consul service exposed", zap.String("service", name))
		changed = true
	}
	for name, svc := range c.services {
		if !want[name] && c.cfg.Consul.ServiceGrace == 0 {
			c.removeLocked(svc)
			c.log.Info("consul service no longer exposed; closing its connections after the drain period",
				zap.String("service", name), zap.Duration("drain", c.cfg.Consul.DrainAfterDeregister))
			changed = true
			continue
		}
		svc.mu.Lock()
		if svc.listed != want[name] {
			svc.listed = want[name]
			c.reviewGraceLocked(svc, resync)
		}
		svc.mu.Unlock()
	}
	if changed {
		c.notify()
	}
	c.listOnce.Do(func() { close(c.listed) })
}

// removeLocked stops watching svc and closes its connection after the
// drain period; c.mu is held. Its routes go at the next table build.
func (c *Catalog) removeLocked(svc *catalogService) {
	delete(c.services, svc.name)
	c.removed++
	svc.mu.Lock()
	svc.removed = true
	if svc.grace != nil {
		svc.grace.stop()
		svc.grace = nil
	}
	svc.mu.Unlock()
	svc.cancel()
	svc.outliers.stop()
	c.health.forget("health/" + svc.name)
	conn := svc.conn
	c.draining[conn] = time.AfterFunc(c.cfg.Consul.DrainAfterDeregister, func() {
		c.mu.Lock()
		delete(c.draining, conn)
		c.mu.Unlock()
		_ = conn.Close()
	})
}

// WaitSynced waits until the service list and every listed service's
// instances have been read once, or ctx ends.
func (c *Catalog) WaitSynced(ctx context.Context) error {
	select {
	case <-c.listed:
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
			if svc.state == nil {
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

func (c *Catalog) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *Catalog) startService(name string) (*catalogService, error) {
	svc := &catalogService{name: name, listed: true}
	svc.outliers = &outliers{cfg: c.cfg.Outliers, svc: name, log: c.log, push: svc.push, now: time.Now, hosts: map[string]*hostState{}}
	lb := "round_robin"
	if c.cfg.LoadBalancing.For(name) == BalancerLeastRequest {
		lb = "least_request_experimental"
	}
	conn, err := grpc.NewClient("portico-consul:///"+name, append([]grpc.DialOption{
		grpc.WithResolvers(&serviceResolver{svc: svc, built: c.built}),
		grpc.WithTransportCredentials(c.creds),
		grpc.WithChainUnaryInterceptor(svc.outliers.unary()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, lb)),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(c.cfg.MaxRecvMessageBytes),
			grpc.MaxCallSendMsgSize(c.cfg.MaxSendMessageBytes),
			grpc.ForceCodecV2(dynamicCodec{}),
		),
	}, c.dial...)...)
	if err != nil {
		return nil, err
	}
	svc.conn = conn
	ctx, cancel := context.WithCancel(c.ctx)
	svc.cancel = cancel
	c.wg.Go(func() {
		// Every instance, whatever its health: the catalog filters passing
		// ones itself, so that it can tell an instance that failed its
		// check (removed at once) from one Consul does not know right now
		// (kept for the grace period).
		watchResync(ctx, "health/"+name, c.limiter(), c.health, c.log, c.cfg.Consul.WaitTime,
			func(q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
				return c.client.Health().Service(name, c.cfg.Consul.Tag, false, q)
			},
			func(entries []*api.ServiceEntry, resync bool) {
				if c.updateInstances(svc, entries, resync) {
					c.notify()
				}
			})
	})
	return svc, nil
}

// updateInstances takes Consul's answer about svc's instances (every
// registered one, any health), pushes the ones to serve to the resolver and
// reports whether what they serve may have changed.
func (c *Catalog) updateInstances(svc *catalogService, entries []*api.ServiceEntry, resync bool) bool {
	svc.mu.Lock()
	first := svc.state == nil
	prevN := svc.instances
	svc.entries = entries
	changed := c.resolveLocked(svc, c.cfg.Consul.ServiceGrace > 0)
	c.reviewGraceLocked(svc, resync)
	n, holding := svc.instances, svc.holding
	svc.mu.Unlock()
	svc.push()
	if first || prevN != n {
		passingN := 0
		for _, e := range entries {
			if passing(e) {
				passingN++
			}
		}
		fields := []zap.Field{zap.String("service", svc.name), zap.Int("passing", passingN)}
		if holding != holdNone {
			fields = append(fields, zap.Int("serving", n), zap.String("kept", string(holding)))
		}
		c.log.Info("consul instances", fields...)
	}
	return changed
}

// resolveLocked recomputes what svc serves from Consul's last answer and
// what it served so far, keeping what Consul does not confirm only with
// hold; svc.mu is held. It reports whether what the instances serve may
// have changed.
func (c *Catalog) resolveLocked(svc *catalogService, hold bool) bool {
	serve, why := selectInstances(svc.entries, svc.serving, hold)
	eps := make([]resolver.Endpoint, 0, len(serve))
	var versions []string
	for _, e := range serve {
		addr := resolver.Address{Addr: entryAddr(e), ServerName: svc.name}
		addr = WithExpectedIdentity(addr, ServiceID("", e.Service.Namespace, e.Node.Datacenter, e.Service.Service))
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{addr}})
		if h := e.Service.Meta[MetaDescriptors]; h != "" {
			versions = append(versions, "hash:"+h)
		} else {
			versions = append(versions, "id:"+e.Service.ID)
		}
	}
	slices.Sort(versions)
	version := strings.Join(slices.Compact(versions), ",")
	svc.state, svc.instances, svc.serving, svc.holding = &resolver.State{Endpoints: eps}, len(eps), serve, why
	changed := version != svc.version
	svc.version = version
	return changed && len(eps) > 0
}

// push hands the latest state to grpc-go, if a resolver is open. Pushes are
// serialised and always carry the latest state, so a slow one cannot
// overwrite a newer one.
func (svc *catalogService) push() {
	svc.pushMu.Lock()
	defer svc.pushMu.Unlock()
	svc.mu.Lock()
	cc, st := svc.cc, svc.state
	svc.mu.Unlock()
	if cc != nil && st != nil {
		// An error only says the balancer has nothing usable yet; the next
		// update is pushed all the same.
		_ = cc.UpdateState(svc.outliers.filter(*st))
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
// least one passing instance.
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
		wg.Go(func() {
			svc.mu.Lock()
			version := svc.version
			svc.mu.Unlock()
			ctx, cancel := context.WithTimeout(ctx, c.cfg.ReflectTimeout)
			defer cancel()
			target := "consul:" + svc.name
			refl, err := reflectUpstream(ctx, target, svc.conn)
			out[i] = Result{Target: target, Reflection: refl, Err: err}
			svc.mu.Lock()
			if err == nil {
				svc.reflected, svc.forced = version, false
			} else {
				svc.forced = true
			}
			svc.mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// Changed implements Discovery.
func (c *Catalog) Changed() <-chan struct{} { return c.changed }

// Status reports whether every Consul watch is answering.
func (c *Catalog) Status() WatchStatus { return c.health.status() }

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
	draining := c.draining
	c.draining = map[*grpc.ClientConn]*time.Timer{}
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
	for conn, t := range draining {
		t.Stop()
		_ = conn.Close()
	}
	return nil
}

// serviceResolver hands one service's instances to its client connection.
// grpc-go may close and rebuild it (idle mode); a new one starts from the
// latest state.
type serviceResolver struct {
	svc   *catalogService
	built *builtQueue
}

func (r *serviceResolver) Scheme() string { return "portico-consul" }

func (r *serviceResolver) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	r.svc.mu.Lock()
	r.svc.cc = cc
	r.svc.mu.Unlock()
	// Not from Build itself: grpc-go holds locks here that UpdateState
	// needs. The catalog's builtQueue goroutine pushes once Build returned.
	r.built.add(r.svc)
	return r, nil
}

// ResolveNow: the blocking query already delivers every change.
func (r *serviceResolver) ResolveNow(resolver.ResolveNowOptions) {}

func (r *serviceResolver) Close() {
	r.svc.mu.Lock()
	defer r.svc.mu.Unlock()
	r.svc.cc = nil
}

// builtQueue carries the services whose resolver grpc-go has just built to
// the one goroutine (owned by the catalog, started by Start) that pushes
// them their latest state. add never blocks, so Build returns at once.
type builtQueue struct {
	mu   sync.Mutex
	svcs []*catalogService
	wake chan struct{} // holds a signal while svcs is not empty
}

func newBuiltQueue() *builtQueue { return &builtQueue{wake: make(chan struct{}, 1)} }

func (q *builtQueue) add(svc *catalogService) {
	q.mu.Lock()
	q.svcs = append(q.svcs, svc)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run pushes each queued service's state until ctx ends.
func (q *builtQueue) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		}
		q.mu.Lock()
		svcs := q.svcs
		q.svcs = nil
		q.mu.Unlock()
		for _, svc := range svcs {
			svc.push()
		}
	}
}
