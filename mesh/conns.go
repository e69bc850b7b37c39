package mesh

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/leastrequest" // least_request_experimental
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

// newService opens the connection of the exposed service name: one
// grpc.ClientConn, shared by every route table built from it, whose
// resolver the catalog feeds (resolver.go), whose balancer is the one
// mesh.load_balancing names, and whose calls report to outlier detection.
func (cs *serviceConns) newService(name string) (*catalogService, error) {
	svc := &catalogService{name: name, listed: true}
	svc.outliers = &outliers{cfg: cs.cfg.Outliers, svc: name, log: cs.log, push: svc.push, now: time.Now, hosts: map[string]*hostState{}}
	lb := "round_robin"
	if cs.cfg.LoadBalancing.For(name) == BalancerLeastRequest {
		lb = "least_request_experimental"
	}
	conn, err := grpc.NewClient("portico-consul:///"+name, append([]grpc.DialOption{
		grpc.WithResolvers(&serviceResolver{svc: svc, built: cs.built}),
		grpc.WithTransportCredentials(cs.creds),
		grpc.WithChainUnaryInterceptor(svc.outliers.unary()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, lb)),
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
		_ = cc.UpdateState(svc.outliers.filter(*st))
	}
}
