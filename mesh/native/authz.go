package native

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/mesh"
)

// maxCachedCallers bounds the decision cache; callers are services, so this
// is far more than a mesh has.
const maxCachedCallers = 10_000

// Authorizer decides per call whether the caller's identity may call the
// target service, from Consul intentions through the local agent. Decisions
// are cached for TTL, so an intention that turns to deny takes effect on open
// connections within TTL; when the agent does not answer, a decision younger
// than MaxStale is used, and past that calls fail with UNAVAILABLE (closed,
// never open).
type Authorizer struct {
	client   *api.Client
	target   string
	ttl      time.Duration
	maxStale time.Duration
	log      *zap.Logger

	mu    sync.Mutex
	cache map[string]decision
	sf    singleflight.Group
}

type decision struct {
	ok     bool
	reason string
	at     time.Time
}

// AuthorizerParams is what an Authorizer works with.
type AuthorizerParams struct {
	// Client asks the local agent.
	Client *api.Client
	// Target is the service calls are authorized to (a Consul service
	// name).
	Target string
	// TTL is how long a decision is cached; MaxStale how long one is used
	// while the agent does not answer.
	TTL, MaxStale time.Duration
	Log           *zap.Logger
}

// NewAuthorizer authorizes calls to p.Target.
func NewAuthorizer(p AuthorizerParams) *Authorizer {
	return &Authorizer{client: p.Client, target: p.Target, ttl: p.TTL, maxStale: p.MaxStale, log: p.Log, cache: map[string]decision{}}
}

// Authorize returns nil if the caller (its certificate's SPIFFE URI and
// serial) may call the target, or a gRPC status error.
func (a *Authorizer) Authorize(ctx context.Context, caller mesh.SPIFFEID, serial string) error {
	uri := caller.String()
	a.mu.Lock()
	d, ok := a.cache[uri]
	a.mu.Unlock()
	if !ok || time.Since(d.at) > a.ttl {
		v, err, _ := a.sf.Do(uri, func() (any, error) { return a.fetch(uri, serial) })
		switch {
		case err == nil:
			d = v.(decision)
		case ok && time.Since(d.at) <= a.maxStale:
			a.log.Debug("cannot check intentions; using the last decision", zap.String("caller", uri), zap.Duration("age", time.Since(d.at)), zap.Error(err))
		default:
			return status.Errorf(codes.Unavailable, "cannot check Consul intentions for %s → %s: %v", caller.Service, a.target, err)
		}
	}
	if !d.ok {
		return status.Errorf(codes.PermissionDenied, "Consul intentions deny %s → %s: %s", caller.Service, a.target, d.reason)
	}
	return nil
}

func (a *Authorizer) fetch(uri, serial string) (decision, error) {
	res, err := a.client.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: a.target, ClientCertURI: uri, ClientCertSerial: serial})
	if err != nil {
		return decision{}, err
	}
	d := decision{ok: res.Authorized, reason: res.Reason, at: time.Now()}
	a.mu.Lock()
	if len(a.cache) >= maxCachedCallers {
		clear(a.cache)
	}
	a.cache[uri] = d
	a.mu.Unlock()
	return d, nil
}

// check authorizes the caller of ctx's call.
func (a *Authorizer) check(ctx context.Context) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no peer information")
	}
	id, serial, err := mesh.PeerSPIFFEID(p.AuthInfo)
	if err != nil {
		return status.Error(codes.Unauthenticated, fmt.Sprintf("caller identity: %v", err))
	}
	return a.Authorize(ctx, id, serial)
}

// UnaryInterceptor authorizes every unary call.
func (a *Authorizer) UnaryInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// StreamInterceptor authorizes every streaming call.
func (a *Authorizer) StreamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}
