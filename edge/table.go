package edge

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/transcode"
)

// Route is one HTTP binding with everything a call needs, prepared when the
// table is built.
type Route struct {
	Binding    *transcode.Binding
	Codec      transcode.Codec
	Conn       grpc.ClientConnInterface
	FullMethod string
	Upstream   string
	// Chain is the route's request path, compiled once: its policies in
	// order, then the upstream call.
	Chain      *policies.Chain
	streamDesc *grpc.StreamDesc // nil for unary methods
}

// RouteTable is an immutable set of routes; a new one replaces it whole.
type RouteTable struct {
	router *transcode.Router[*Route]
	routes []*Route
	// Rejected holds one error per service left out of the table.
	Rejected []error
	// Built is when the table was compiled.
	Built time.Time
}

// protojson counts the routes on the reference codec.
func (t *RouteTable) protojson() int {
	n := 0
	for _, r := range t.routes {
		if r.Binding.Fallback() != "" {
			n++
		}
	}
	return n
}

// Routes lists the routes sorted by template, then HTTP method.
func (t *RouteTable) Routes() []*Route { return t.routes }

// Match finds the route for a request; see transcode.Router.MatchErr.
func (t *RouteTable) Match(method, path string, vars []string) (*Route, []string, error) {
	r, vars, _, err := t.router.MatchErr(method, path, vars)
	return r, vars, err
}

// Tables holds the current route table; readers never block.
type Tables struct {
	cur    atomic.Pointer[RouteTable]
	builds atomic.Uint64
}

// NewTables returns an empty holder: Load returns nil until the first Store.
func NewTables() *Tables { return &Tables{} }

// Load returns the current table, or nil before the first build.
func (t *Tables) Load() *RouteTable { return t.cur.Load() }

// Store swaps in a new table.
func (t *Tables) Store(rt *RouteTable) {
	t.cur.Store(rt)
	t.builds.Add(1)
}

// BuildTable compiles the services of every reflection (in order; the first
// upstream to offer a service name serves it) into a route table. Services
// that fail to compile or that claim a route another service holds are left
// out and reported in Rejected; they never affect other services.
//
// pc compiles each method's portico.v1 options; an invalid option rejects
// its service like a bad template does. A nil pc builds routes without
// policies (the `routes` command). calls makes each route's upstream call;
// nil calls without metrics or drain (tools that serve nothing).
func BuildTable(refls []*mesh.Reflection, c *transcode.Compiler, pc *policies.Compiler, calls *Calls) *RouteTable {
	if calls == nil {
		def := DefaultConfig()
		calls = NewCalls(nil, nil, CallLimits{Timeout: def.UpstreamTimeout, MaxStreamDuration: def.MaxStreamDuration,
			StreamIdle: transcode.DefaultConfig().StreamIdleTimeout})
	}
	t := &RouteTable{router: transcode.NewRouter[*Route](), Built: time.Now()}
	owner := map[string]string{}   // service name → upstream
	claimed := map[string]*Route{} // "METHOD shape" → route
	for _, refl := range refls {
		if refl == nil {
			continue
		}
		for _, svc := range refl.Services {
			if up, ok := owner[string(svc.Name)]; ok {
				t.Rejected = append(t.Rejected, fmt.Errorf("service %s on %s: already served by upstream %s; ignored", svc.Name, svc.Upstream, up))
				continue
			}
			desc := svc.Desc
			if pc != nil {
				// Clients see the service without its internal fields.
				pub, err := policies.PublicView(desc)
				if err != nil {
					t.Rejected = append(t.Rejected, fmt.Errorf("service %s on %s rejected: %w", svc.Name, svc.Upstream, err))
					continue
				}
				desc = pub
			}
			var types transcode.Resolver
			if svc.Types != nil { // no typed nil in the interface
				types = svc.Types
			}
			methods, err := c.CompileService(desc, types)
			if err != nil {
				t.Rejected = append(t.Rejected, fmt.Errorf("service %s on %s rejected: %w", svc.Name, svc.Upstream, err))
				continue
			}
			var pols map[string]*policies.MethodPolicy
			if pc != nil {
				if pols, err = pc.CompileService(desc); err != nil {
					t.Rejected = append(t.Rejected, fmt.Errorf("service %s on %s rejected: %w", svc.Name, svc.Upstream, err))
					continue
				}
			}
			routes, err := serviceRoutes(svc, methods, claimed, pc, pols, calls)
			if err != nil {
				t.Rejected = append(t.Rejected, fmt.Errorf("service %s on %s rejected: %w", svc.Name, svc.Upstream, err))
				continue
			}
			owner[string(svc.Name)] = svc.Upstream
			for _, r := range routes {
				claimed[r.Binding.HTTPMethod+" "+r.Binding.Template.Shape()] = r
				if err := t.router.Add(r.Binding.HTTPMethod, r.Binding.Template, r, describeRoute); err != nil {
					// serviceRoutes checked every claim; this is a bug.
					t.Rejected = append(t.Rejected, fmt.Errorf("service %s: %w", svc.Name, err))
					continue
				}
				t.routes = append(t.routes, r)
			}
		}
	}
	slices.SortFunc(t.routes, func(a, b *Route) int {
		if c := strings.Compare(a.Binding.Template.Raw, b.Binding.Template.Raw); c != 0 {
			return c
		}
		return strings.Compare(a.Binding.HTTPMethod, b.Binding.HTTPMethod)
	})
	return t
}

func describeRoute(r *Route) string { return r.Binding.String() }

// serviceRoutes turns a service's methods into routes, failing on the first
// route already claimed (by this or an earlier service).
func serviceRoutes(svc *mesh.Service, methods []*transcode.Method, claimed map[string]*Route, pc *policies.Compiler, pols map[string]*policies.MethodPolicy, calls *Calls) ([]*Route, error) {
	var routes []*Route
	mine := map[string]*Route{}
	for _, m := range methods {
		var sd *grpc.StreamDesc
		if m.ServerStreaming() {
			sd = &grpc.StreamDesc{StreamName: string(m.Desc.Name()), ServerStreams: true}
		}
		for _, b := range m.Bindings {
			r := &Route{Binding: b, Codec: b.Codec(), Conn: svc.Conn, FullMethod: m.FullMethod, Upstream: svc.Upstream, streamDesc: sd}
			r.Chain = pc.Chain(pols[m.FullMethod], b.HTTPMethod, b.Template.Raw, policies.Target{
				Codec: r.Codec, Call: calls.call(r), Timeout: calls.upstreamTimeout, Stream: sd != nil,
			})
			key := b.HTTPMethod + " " + b.Template.Shape()
			if prev := claimed[key]; prev != nil {
				return nil, fmt.Errorf("route conflict: %s %s is claimed by %s and %s", b.HTTPMethod, b.Template.Shape(), prev.Binding, b)
			}
			if prev := mine[key]; prev != nil {
				return nil, fmt.Errorf("route conflict: %s %s is claimed by %s and %s", b.HTTPMethod, b.Template.Shape(), prev.Binding, b)
			}
			mine[key] = r
			routes = append(routes, r)
		}
	}
	return routes, nil
}
