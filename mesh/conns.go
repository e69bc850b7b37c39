package mesh

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/leastrequest" // least_request_experimental
	"google.golang.org/grpc/resolver"
)

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
func (c *Catalog) newService(name string) (*catalogService, error) {
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
