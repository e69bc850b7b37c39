package mesh

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
)

// serviceConns opens the connection of each exposed service, and closes the
// connections of services that left the catalog once their drain period
// ends. Its lock guards only the draining timers: it is taken after the
// catalog's (drain runs under it), never before.
type serviceConns struct {
	cfg   Config
	creds credentials.TransportCredentials
	dial  []grpc.DialOption // added to every service connection
	log   *zap.Logger
	built *builtQueue // resolvers grpc-go built, waiting for their first push
	// fallbacks counts the traffic routers' fallbacks to a stable subset.
	fallbacks *prometheus.CounterVec

	mu       sync.Mutex
	draining map[*grpc.ClientConn]*time.Timer
	closed   bool
	closing  sync.WaitGroup // drain closes in flight; close waits for them
}

func newServiceConns(cfg Config, p CatalogParams) *serviceConns {
	return &serviceConns{
		cfg: cfg, creds: p.Creds, dial: p.DialOptions, log: p.Log, built: newBuiltQueue(),
		draining: map[*grpc.ClientConn]*time.Timer{},
	}
}

// drain closes conn after mesh.consul.drain_after_deregister, or at close
// if that comes first.
func (cs *serviceConns) drain(conn *grpc.ClientConn) {
	cs.mu.Lock()
	if cs.closed {
		// Not reached: the catalog removes no service once it is closing.
		// Closed now all the same rather than leaked, without mu.
		cs.mu.Unlock()
		_ = conn.Close()
		return
	}
	cs.draining[conn] = time.AfterFunc(cs.cfg.Consul.DrainAfterDeregister, func() {
		cs.mu.Lock()
		if cs.closed {
			// close took it from draining and closes it.
			cs.mu.Unlock()
			return
		}
		delete(cs.draining, conn)
		// Before close (which sets closed under mu, then waits), so that
		// close waits for this close too.
		cs.closing.Add(1)
		cs.mu.Unlock()
		defer cs.closing.Done()
		_ = conn.Close()
	})
	cs.mu.Unlock()
}

// close closes every draining connection now, and waits for the drain
// closes already running.
func (cs *serviceConns) close() {
	cs.mu.Lock()
	cs.closed = true
	draining := cs.draining
	cs.draining = map[*grpc.ClientConn]*time.Timer{}
	cs.mu.Unlock()
	cs.closing.Wait()
	for conn, t := range draining {
		t.Stop()
		_ = conn.Close()
	}
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
	// traffic is the routing its picker and router read; router carries
	// its routes' calls through the discovery chain.
	traffic *trafficHolder
	router  *trafficConn

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

	// Traffic management (catalog_traffic.go, skew.go).
	plan    *trafficPlan          // nil until the chain is read (or without chains)
	groups  map[string]*descGroup // reflected descriptor sets, by hash ("" unannounced)
	methods map[string]uint64     // full method → groups serving it as the table does
	// unionNotes: the methods the union does not route, as last logged.
	unionNotes []string
}

// newService opens the connection of the exposed service name: one
// grpc.ClientConn, shared by every route table built from it, whose
// resolver the catalog feeds (resolver.go), whose balancer is the one
// mesh.load_balancing names, and whose calls report to outlier detection.
func (cs *serviceConns) newService(name string) (*catalogService, error) {
	svc := &catalogService{name: name, listed: true, groups: map[string]*descGroup{}}
	svc.outliers = &outliers{cfg: cs.cfg.Outliers, svc: name, log: cs.log, push: svc.push, now: time.Now, hosts: map[string]*hostState{}}
	svc.traffic = &trafficHolder{service: name, leastRequest: cs.cfg.LoadBalancing.For(name) == BalancerLeastRequest}
	svc.router = &trafficConn{svc: svc, fallbacks: cs.fallbacks}
	svc.rebuildRoutingLocked() // not shared yet
	conn, err := grpc.NewClient("portico-consul:///"+name, append([]grpc.DialOption{
		grpc.WithResolvers(&serviceResolver{svc: svc, built: cs.built}),
		grpc.WithTransportCredentials(cs.creds),
		grpc.WithChainUnaryInterceptor(svc.outliers.unary()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, trafficBalancer)),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(cs.cfg.MaxRecvMessageBytes),
			grpc.MaxCallSendMsgSize(cs.cfg.MaxSendMessageBytes),
			grpc.ForceCodecV2(bindingCodec{}),
		),
	}, cs.dial...)...)
	if err != nil {
		return nil, err
	}
	svc.conn = conn
	return svc, nil
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
		s := svc.outliers.filter(*st)
		// grpc-go's base balancer reads addresses, not endpoints.
		s.Addresses = make([]resolver.Address, 0, len(s.Endpoints))
		for _, ep := range s.Endpoints {
			s.Addresses = append(s.Addresses, ep.Addresses...)
		}
		_ = cc.UpdateState(s)
	}
}
