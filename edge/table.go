package edge

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/edge/compose"
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
	// fallback lets mesh try an idempotent call a canary subset failed
	// once more on the stable one, within the method's retry budget
	// (noFallback: the call may not be repeated).
	fallback grpc.CallOption
}

// RouteTable is an immutable set of routes; a new one replaces it whole.
type RouteTable struct {
	router *transcode.Router[*Route]
	routes []*Route
	// Rejected holds one error per service left out of the table.
	Rejected []error
	// Built is when the table was compiled.
	Built time.Time
	doc   apiDoc // its OpenAPI document, rendered on first use
	// Frontend is the frontend the table is for ("" without frontends).
	Frontend string
	aud      *policies.Audience // the frontend's view and defaults; nil without frontends
	set      *frontendSet       // every frontend's table, on the one Tables holds
}

// frontendSet is the tables of the frontends, and how a request picks one.
type frontendSet struct {
	rules []frontendRule // in config order: the first that matches
	def   *RouteTable    // edge.default_frontend's; nil: 404
	all   []*RouteTable  // in config order
	// byListener are the tables of the frontends with a listener of
	// their own, by frontend.
	byListener map[string]*RouteTable
}

// frontendRule is what one frontend serves: every condition it sets must
// hold, and it must set one.
type frontendRule struct {
	t            *RouteTable
	hosts        []string // exact names, and ".example.com" suffixes
	claim, value string
	keySource    string
}

func (fr *frontendRule) matches(host string, caller func() *policies.Caller) bool {
	if len(fr.hosts) == 0 && fr.claim == "" && fr.keySource == "" {
		return false // reachable as the default only
	}
	if len(fr.hosts) > 0 && !slices.ContainsFunc(fr.hosts, func(h string) bool {
		return h == host || strings.HasPrefix(h, ".") && strings.HasSuffix(host, h)
	}) {
		return false
	}
	if fr.claim == "" && fr.keySource == "" {
		return true
	}
	c := caller()
	if c == nil {
		return false
	}
	if fr.keySource != "" && (c.APIKey == "" || c.Provider != fr.keySource) {
		return false
	}
	if fr.claim != "" && !claimHas(c.Claims[fr.claim], fr.value) {
		return false
	}
	return true
}

// claimHas: the claim is the value, or a list holding it.
func claimHas(claim any, value string) bool {
	switch v := claim.(type) {
	case string:
		return v == value
	case []any:
		return slices.ContainsFunc(v, func(e any) bool { s, ok := e.(string); return ok && s == value })
	}
	return false
}

// Identifier verifies a request's credential before any route
// (*policies.Compiler; a nil one identifies no one).
type Identifier interface {
	Identify(r *http.Request) (*http.Request, *policies.Caller)
}

// For is the table that serves r: its frontend's, chosen by the listener
// that accepted it (a frontend's own), else by Host and by the caller (id verifies the request's credential, when a rule needs
// it, and returns the request to go on with); nil: no frontend
// serves it. Without frontends it is t itself.
func (t *RouteTable) For(r *http.Request, id Identifier) (*RouteTable, *http.Request) {
	if t.set == nil {
		return t, r
	}
	if name := listenerFrontend(r.Context()); name != "" {
		return t.set.byListener[name], r
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	var caller *policies.Caller
	asked := false
	who := func() *policies.Caller {
		if !asked && id != nil {
			asked = true
			r, caller = id.Identify(r)
		}
		return caller
	}
	for i := range t.set.rules {
		if t.set.rules[i].matches(host, who) {
			return t.set.rules[i].t, r
		}
	}
	return t.set.def, r
}

// Frontends lists every frontend's table (only t without frontends).
func (t *RouteTable) Frontends() []*RouteTable {
	if t.set == nil {
		return []*RouteTable{t}
	}
	return t.set.all
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
	return buildTable(refls, nil, nil, c, pc, calls)
}

// buildTable builds the routes of the reflected services, then those of
// the composed methods of the frontend files, as aud sees them (nil: no
// frontends configured).
func buildTable(refls []*mesh.Reflection, fronts []protoreflect.FileDescriptor, aud *policies.Audience, c *transcode.Compiler, pc *policies.Compiler, calls *Calls) *RouteTable {
	if calls == nil {
		def := DefaultConfig()
		calls = NewCalls(nil, nil, CallLimits{Timeout: def.UpstreamTimeout, MaxStreamDuration: def.MaxStreamDuration,
			StreamIdle: transcode.DefaultConfig().StreamIdleTimeout})
	}
	t := &RouteTable{router: transcode.NewRouter[*Route](), Built: time.Now()}
	if aud != nil {
		t.Frontend, t.aud = aud.Frontend, aud
	}
	owner := map[string]string{}   // service name → upstream
	claimed := map[string]*Route{} // "METHOD shape" → route
	var served []servedService     // what compositions may call
	for _, refl := range refls {
		if refl == nil {
			continue
		}
		// Clients see the services without their internal fields, and a
		// frontend only what is its: in their messages and in the
		// messages their Any payloads carry.
		views, viewTypes, viewErr := upstreamView(refl, pc != nil || aud != nil, aud)
		for i, svc := range refl.Services {
			if up, ok := owner[string(svc.Name)]; ok {
				t.Rejected = append(t.Rejected, fmt.Errorf("service %s on %s: already served by upstream %s; ignored", svc.Name, svc.Upstream, up))
				continue
			}
			if viewErr != nil {
				t.Rejected = append(t.Rejected, fmt.Errorf("service %s on %s rejected: %w", svc.Name, svc.Upstream, viewErr))
				continue
			}
			desc := views[i]
			var types transcode.Resolver
			switch {
			case viewTypes != nil:
				types = viewTypes
			case svc.Types != nil: // no typed nil in the interface
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
			routes, err := serviceRoutes(svc, methods, claimed, pc, pols, calls, t.aud)
			if err != nil {
				t.Rejected = append(t.Rejected, fmt.Errorf("service %s on %s rejected: %w", svc.Name, svc.Upstream, err))
				continue
			}
			owner[string(svc.Name)] = svc.Upstream
			served = append(served, servedService{svc, desc, pols})
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
	if len(fronts) > 0 {
		composedRoutes(t, served, fronts, claimed, c, pc, calls)
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

// composedRoutes adds the routes of the composed methods of fronts, each
// compiled alone: a method that does not compile (with its position) or
// whose route is taken is rejected, and the others are served.
// servedService is a service the table serves, as clients see it (without
// its internal fields): what a composition may call.
type servedService struct {
	svc  *mesh.Service
	desc protoreflect.ServiceDescriptor
	pols map[string]*policies.MethodPolicy // by full method; nil without policies
}

func composedRoutes(t *RouteTable, served []servedService, fronts []protoreflect.FileDescriptor, claimed map[string]*Route, c *transcode.Compiler, pc *policies.Compiler, calls *Calls) {
	type backend struct {
		svc *mesh.Service
		md  protoreflect.MethodDescriptor
	}
	backends := map[string]backend{}
	guards := map[string]policies.Guard{}
	pols := map[string]*policies.MethodPolicy{}
	for _, s := range served {
		mds := s.desc.Methods()
		for i := 0; i < mds.Len(); i++ {
			md := mds.Get(i)
			name := string(s.svc.Name) + "/" + string(md.Name())
			backends[name] = backend{s.svc, md}
			guards[name] = s.pols["/"+name].Guard()
			pols["/"+name] = s.pols["/"+name]
		}
	}
	// Invokers are made for the methods compositions name, once each.
	invokers := map[string]compose.Invoke{}
	env := compose.Env{Backend: func(m string) (compose.Backend, bool) {
		b, ok := backends[m]
		if !ok {
			return compose.Backend{}, false
		}
		if invokers[m] == nil {
			// Idempotent methods are retried as their own routes are, within
			// the same budget; the one call that is not never is.
			var retry func(context.Context, func(context.Context) error) error
			if policies.Idempotent(b.md) {
				retry = pc.CallRetry(pols["/"+m])
			}
			invokers[m] = calls.invoker(b.svc.Conn, b.md, retry)
		}
		return compose.Backend{Desc: b.md, Invoke: invokers[m]}, true
	}}
	if answers := pc.Answers(); answers != nil {
		env.LastGood = answers
	}
	for _, fd := range fronts {
		for i := 0; i < fd.Services().Len(); i++ {
			mds := fd.Services().Get(i).Methods()
			for j := 0; j < mds.Len(); j++ {
				md := mds.Get(j)
				if !t.aud.SeesMethod(md) {
					continue // not this frontend's (include mode: not tagged for it)
				}
				routes, err := composedMethod(md, env, guards, claimed, c, pc, calls, t.aud)
				if err != nil {
					t.Rejected = append(t.Rejected, fmt.Errorf("composed method %s rejected: %w", md.FullName(), err))
					continue
				}
				for _, r := range routes {
					claimed[r.Binding.HTTPMethod+" "+r.Binding.Template.Shape()] = r
					if err := t.router.Add(r.Binding.HTTPMethod, r.Binding.Template, r, describeRoute); err != nil {
						t.Rejected = append(t.Rejected, fmt.Errorf("composed method %s: %w", md.FullName(), err))
						continue
					}
					t.routes = append(t.routes, r)
				}
			}
		}
	}
}

// upstreamView is the upstream's services as clients (view) or the
// audience see them, with the types their Any payloads resolve to (nil:
// the upstream's own).
func upstreamView(refl *mesh.Reflection, view bool, aud *policies.Audience) ([]protoreflect.ServiceDescriptor, *dynamicpb.Types, error) {
	sds := make([]protoreflect.ServiceDescriptor, len(refl.Services))
	for i, svc := range refl.Services {
		sds[i] = svc.Desc
	}
	if !view {
		return sds, nil, nil
	}
	return policies.Views(sds, aud)
}

// composedMethod compiles one composed method into its routes.
func composedMethod(md protoreflect.MethodDescriptor, env compose.Env, guards map[string]policies.Guard, claimed map[string]*Route, c *transcode.Compiler, pc *policies.Compiler, calls *Calls, aud *policies.Audience) ([]*Route, error) {
	opt, err := compose.Option(md)
	if err != nil {
		return nil, err
	}
	if opt == nil {
		return nil, fmt.Errorf("%s: no (portico.v1.compose) option: a frontend proto declares composed methods only", position(md))
	}
	cm, err := compose.Compile(md, opt, env)
	if err != nil {
		return nil, err
	}
	tm, err := c.CompileMethod(md, nil)
	if err != nil {
		return nil, err
	}
	if tm == nil {
		return nil, fmt.Errorf("%s: no google.api.http binding", position(md))
	}
	var mp *policies.MethodPolicy
	if pc != nil {
		if mp, err = pc.CompileMethod(md); err != nil {
			return nil, err
		}
	}
	// The called methods' chains do not run: the composed method's must
	// guard them at least as well.
	for i, call := range opt.GetCalls() {
		if why := mp.Guard().Covers(guards[call.GetMethod()]); why != "" {
			return nil, fmt.Errorf("%s: option (portico.v1.compose).calls[%d]: calls %s, but %s", position(md), i, call.GetMethod(), why)
		}
	}
	var routes []*Route
	for _, b := range tm.Bindings {
		key := b.HTTPMethod + " " + b.Template.Shape()
		if prev := claimed[key]; prev != nil {
			return nil, fmt.Errorf("route conflict: %s %s is claimed by %s and %s", b.HTTPMethod, b.Template.Shape(), prev.Binding, b)
		}
		r := &Route{Binding: b, Codec: b.Codec(), FullMethod: tm.FullMethod}
		m := *cm // each binding counts its calls under its own route label
		if calls.tel != nil {
			plan := *cm.Plan
			plan.Observe = calls.tel.observeComposed(b.Template.Raw)
			plan.Trace = calls.tel.traceComposed(b.Template.Raw)
			m.Plan = &plan
		}
		r.Chain = pc.Chain(mp, b.HTTPMethod, b.Template.Raw, policies.Target{Codec: r.Codec, Call: calls.compose(&m, r.Codec),
			Timeout: calls.upstreamTimeout, Budget: cm.Timeout, Composed: true}.For(aud))
		routes = append(routes, r)
	}
	return routes, nil
}

// position is "file:line:col" of d, or its file.
func position(d protoreflect.Descriptor) string {
	fd := d.ParentFile()
	if l := fd.SourceLocations().ByDescriptor(d); l.StartLine != 0 || l.StartColumn != 0 {
		return fmt.Sprintf("%s:%d:%d", fd.Path(), l.StartLine+1, l.StartColumn+1)
	}
	return fd.Path()
}

// serviceRoutes turns a service's methods into routes, failing on the first
// route already claimed (by this or an earlier service).
func serviceRoutes(svc *mesh.Service, methods []*transcode.Method, claimed map[string]*Route, pc *policies.Compiler, pols map[string]*policies.MethodPolicy, calls *Calls, aud *policies.Audience) ([]*Route, error) {
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
			}.For(aud))
			r.fallback = noFallback
			if budget := r.Chain.RetryBudget(); budget != nil {
				r.fallback = mesh.IdempotentCall{Budget: budget}
			}
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
