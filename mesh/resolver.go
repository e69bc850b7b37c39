package mesh

import (
	"context"
	"sync"

	"google.golang.org/grpc/resolver"
)

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
