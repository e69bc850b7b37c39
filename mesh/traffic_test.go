package mesh

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/resolver"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/mesh/meshtest"
)

// Pure logic of traffic management: the plan compiled from a chain shaped
// as Consul compiles it, its decisions, and the union of descriptor
// groups. End to end, with a real Consul and real instances:
// integration/traffic_test.go.

// testChain is what Consul compiles for products with a router (x-beta:
// 1 → v2, then the default), a 90/10 splitter and a resolver with
// subsets v1 (default) and v2.
func testChain(w1, w2 float32, extra ...api.ServiceRoute) *api.CompiledDiscoveryChain {
	routes := []*api.DiscoveryRoute{{
		Definition: &api.ServiceRoute{
			Match:       &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-beta", Exact: "1"}}}},
			Destination: &api.ServiceRouteDestination{ServiceSubset: "v2"},
		},
		NextNode: "resolver:v2.products.default.default.dc1",
	}}
	for _, r := range extra {
		routes = append(routes, &api.DiscoveryRoute{Definition: &r, NextNode: "resolver:v2.products.default.default.dc1"})
	}
	routes = append(routes, &api.DiscoveryRoute{
		Definition: &api.ServiceRoute{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/"}}},
		NextNode:   "splitter:products.default.default",
	})
	return &api.CompiledDiscoveryChain{
		ServiceName: "products", Datacenter: "dc1", Protocol: "grpc", StartNode: "router:products.default.default",
		Nodes: map[string]*api.DiscoveryGraphNode{
			"router:products.default.default": {Type: "router", Name: "products.default.default", Routes: routes},
			"splitter:products.default.default": {Type: "splitter", Name: "products.default.default", Splits: []*api.DiscoverySplit{
				{Weight: w1, NextNode: "resolver:v1.products.default.default.dc1"},
				{Weight: w2, NextNode: "resolver:v2.products.default.default.dc1"},
			}},
			"resolver:v1.products.default.default.dc1": {Type: "resolver", Resolver: &api.DiscoveryResolver{Target: "v1.products.default.default.dc1"}},
			"resolver:v2.products.default.default.dc1": {Type: "resolver", Resolver: &api.DiscoveryResolver{
				Target: "v2.products.default.default.dc1", Failover: &api.DiscoveryFailover{Targets: []string{"v1.products.default.default.dc1"}},
			}},
		},
		Targets: map[string]*api.DiscoveryTarget{
			"v1.products.default.default.dc1": {ID: "v1.products.default.default.dc1", Service: "products", ServiceSubset: "v1", Datacenter: "dc1",
				Subset: api.ServiceResolverSubset{Filter: `Service.Meta.version == "1"`}},
			"v2.products.default.default.dc1": {ID: "v2.products.default.default.dc1", Service: "products", ServiceSubset: "v2", Datacenter: "dc1",
				Subset: api.ServiceResolverSubset{Filter: `Service.Meta.version == "2"`}},
		},
	}
}

func subsetOf(p *trafficPlan, d decision) string { return p.targets[d.target].subset }

func TestPlanRouterSplitFailover(t *testing.T) {
	p := compilePlan("products", testChain(90, 10), nil, TrafficConfig{})
	if !p.configured || subsetOf(p, decision{target: p.stable}) != "v1" {
		t.Fatalf("plan: configured %v, stable %q", p.configured, p.targets[p.stable].subset)
	}
	beta := &StaticCaller{Sub: "anyone", Headers: map[string]string{"X-Beta": "1"}}
	if d := p.decide("/pkg.S/M", beta, []int{1, 1}); subsetOf(p, d) != "v2" || d.route != 0 {
		t.Fatalf("x-beta: 1 → %+v", d)
	}
	// A subject's bucket decides, the same on every call.
	c := &StaticCaller{Sub: "alice"}
	first := p.decide("/pkg.S/M", c, []int{1, 1})
	for range 100 {
		if d := p.decide("/pkg.S/M", c, []int{1, 1}); d != first {
			t.Fatalf("alice moved: %+v then %+v", first, d)
		}
	}
	if first.bucket != int(stableHash("alice")%buckets) || first.split < 0 {
		t.Fatalf("alice: %+v", first)
	}
	// v2 without instances fails over to v1, as its resolver says.
	for i := range 1000 {
		c := &StaticCaller{Sub: fmt.Sprint("user-", i)}
		if d := p.decide("/pkg.S/M", c, []int{1, 0}); subsetOf(p, d) != "v1" {
			t.Fatalf("v2 empty: %s still sent to %s", c.Sub, subsetOf(p, d))
		}
	}
	// Anonymous callers are split per request: both sides get some.
	got := map[string]int{}
	for range 2000 {
		got[subsetOf(p, p.decide("/pkg.S/M", nil, []int{1, 1}))]++
	}
	if got["v2"] < 100 || got["v2"] > 320 {
		t.Fatalf("anonymous 90/10 over 2000 calls: %v", got)
	}
}

func TestPlanSplitThresholds(t *testing.T) {
	p := compilePlan("products", testChain(33.33, 66.67), nil, TrafficConfig{})
	for _, n := range p.nodes {
		if n.kind == nodeSplitter {
			if n.splits[0].upto != 3333 || n.splits[1].upto != buckets {
				t.Fatalf("thresholds %+v, want 3333 then %d (0.01 %% resolution)", n.splits, buckets)
			}
			return
		}
	}
	t.Fatal("no splitter")
}

func TestPlanRouteMatches(t *testing.T) {
	route := func(m api.ServiceRouteHTTPMatch) api.ServiceRoute {
		return api.ServiceRoute{Match: &api.ServiceRouteMatch{HTTP: &m}, Destination: &api.ServiceRouteDestination{ServiceSubset: "v2"}}
	}
	chain := testChain(100, 0,
		route(api.ServiceRouteHTTPMatch{PathExact: "/pkg.S/Exact"}),
		route(api.ServiceRouteHTTPMatch{PathPrefix: "/pkg.S/Pre", CaseInsensitive: true}),
		route(api.ServiceRouteHTTPMatch{PathRegex: "/pkg\\.S/Re[0-9]+"}),
		route(api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-tenant", Prefix: "acme-"}}}),
		route(api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-debug", Present: true}, {Name: "x-env", Exact: "prod", Invert: true}}}),
		route(api.ServiceRouteHTTPMatch{PathExact: "/pkg.S/Get", Methods: []string{"GET"}}),
		route(api.ServiceRouteHTTPMatch{PathExact: "/pkg.S/Q", QueryParam: []api.ServiceRouteHTTPMatchQueryParam{{Name: "q", Present: true}}}),
	)
	p := compilePlan("products", chain, nil, TrafficConfig{})
	for _, tc := range []struct {
		method string
		hdr    map[string]string
		want   string
	}{
		{"/pkg.S/Exact", nil, "v2"},
		{"/pkg.S/Exactly", nil, "v1"},
		{"/PKG.s/prefixed", nil, "v2"},
		{"/pkg.S/Re42", nil, "v2"},
		{"/pkg.S/Re4x", nil, "v1"},
		{"/pkg.S/M", map[string]string{"X-Tenant": "acme-eu"}, "v2"},
		{"/pkg.S/M", map[string]string{"X-Tenant": "other"}, "v1"},
		{"/pkg.S/M", map[string]string{"X-Debug": ""}, "v2"},
		{"/pkg.S/M", map[string]string{"X-Debug": "", "X-Env": "prod"}, "v1"},
		{"/pkg.S/Get", nil, "v1"}, // a gRPC call is a POST
		{"/pkg.S/Q", nil, "v1"},   // nor does it carry a query
	} {
		d := p.decide(tc.method, &StaticCaller{Sub: "s", Headers: tc.hdr}, []int{1, 1})
		if got := subsetOf(p, d); got != tc.want {
			t.Errorf("%s %v: %s, want %s", tc.method, tc.hdr, got, tc.want)
		}
	}
	if !strings.Contains(strings.Join(p.ignored, "\n"), "query parameters") {
		t.Fatalf("a query match should be reported as not honoured: %q", p.ignored)
	}
}

func TestPlanIgnoredReported(t *testing.T) {
	chain := testChain(90, 10, api.ServiceRoute{
		Match:       &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/x"}},
		Destination: &api.ServiceRouteDestination{PrefixRewrite: "/y", NumRetries: 3},
	})
	chain.Targets["v2.products.default.default.dc1"].Datacenter = "dc2"
	chain.Nodes["resolver:v1.products.default.default.dc1"].LoadBalancer = &api.LoadBalancer{Policy: "ring_hash"}
	p := compilePlan("products", chain, nil, TrafficConfig{})
	all := strings.Join(p.ignored, "\n")
	for _, want := range []string{"prefix_rewrite", "retries", "another datacenter (dc2)", `load_balancer "ring_hash"`} {
		if !strings.Contains(all, want) {
			t.Errorf("ignored %q lacks %q", all, want)
		}
	}
	// The unreachable target's calls go to the service's own instances.
	if p.targets[p.bySubset["v1"]].eval == nil {
		t.Fatal("v1 lost its filter")
	}
}

func TestPlanOverride(t *testing.T) {
	resolver := &api.ServiceResolverConfigEntry{Subsets: map[string]api.ServiceResolverSubset{
		"v1": {Filter: `Service.Meta.version == "1"`}, "v2": {Filter: `Service.Meta.version == "2"`}, "v3": {Filter: `Service.Meta.version == "3"`},
	}}
	cfg := TrafficConfig{Override: OverrideConfig{TrustedScopes: []string{"tester"}, TrustedNetworks: []string{"10.0.0.0/8"}, Claim: "subset"}}
	p := compilePlan("products", testChain(100, 0), resolver, cfg)
	for _, tc := range []struct {
		name string
		c    *StaticCaller
		want string
	}{
		{"trusted scope, header", &StaticCaller{Scopes: []string{"tester"}, Headers: map[string]string{"Portico-Subset": "v2"}}, "v2"},
		{"trusted scope, subset only the resolver lists", &StaticCaller{Scopes: []string{"tester"}, Headers: map[string]string{"Portico-Subset": "v3"}}, "v3"},
		{"trusted network, claim", &StaticCaller{Addr: netip.MustParseAddr("10.1.2.3"), Claims: map[string]any{"subset": "v2"}}, "v2"},
		{"untrusted", &StaticCaller{Scopes: []string{"user"}, Addr: netip.MustParseAddr("192.0.2.1"), Headers: map[string]string{"Portico-Subset": "v2"}}, "v1"},
		{"unknown subset", &StaticCaller{Scopes: []string{"tester"}, Headers: map[string]string{"Portico-Subset": "v9"}}, "v1"},
	} {
		if got := subsetOf(p, p.decide("/pkg.S/M", tc.c, nil)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	// Off unless the operator trusts someone.
	if compilePlan("products", testChain(100, 0), resolver, TrafficConfig{}).override != nil {
		t.Fatal("override on without trusted scopes or networks")
	}
}

func TestSubsetFilterOnConsulEntries(t *testing.T) {
	p := compilePlan("products", testChain(90, 10), nil, TrafficConfig{})
	svc := &catalogService{name: "products", plan: p, traffic: &trafficHolder{}, serving: []*api.ServiceEntry{
		{Node: &api.Node{Address: "10.0.0.1"}, Service: &api.AgentService{ID: "a", Port: 1, Meta: map[string]string{"version": "1"}}},
		{Node: &api.Node{Address: "10.0.0.2"}, Service: &api.AgentService{ID: "b", Port: 1, Meta: map[string]string{"version": "2", MetaDescriptors: "h2"}}},
		{Node: &api.Node{Address: "10.0.0.3"}, Service: &api.AgentService{ID: "c", Port: 1}},
	}}
	svc.rebuildRoutingLocked()
	r := svc.traffic.routing.Load()
	v1, v2 := p.bySubset["v1"], p.bySubset["v2"]
	if r.members[v1] != 1 || r.members[v2] != 1 {
		t.Fatalf("members %v", r.members)
	}
	if r.inst["10.0.0.2:1"].targets != 1<<v2 || r.inst["10.0.0.2:1"].hash != "h2" || r.inst["10.0.0.3:1"].targets != 0 {
		t.Fatalf("instances %+v", r.inst)
	}
}

// fakeSC is a subconnection for picker tests.
type fakeSC struct {
	balancer.SubConn
	name string
}

// pickerFor builds the picker over addrs, with svc's routing.
func pickerFor(h *trafficHolder, addrs ...string) balancer.Picker {
	info := base.PickerBuildInfo{ReadySCs: map[balancer.SubConn]base.SubConnInfo{}}
	for _, a := range addrs {
		info.ReadySCs[&fakeSC{name: a}] = base.SubConnInfo{Address: withTraffic(resolver.Address{Addr: a}, h)}
	}
	return pickerBuilder{}.Build(info)
}

func TestPickerKeepsToTargetAndMethod(t *testing.T) {
	p := compilePlan("products", testChain(90, 10), nil, TrafficConfig{})
	h := &trafficHolder{service: "products"}
	svc := &catalogService{name: "products", plan: p, traffic: h, groups: map[string]*descGroup{"old": {bit: 1}, "new": {bit: 2}},
		methods: map[string]uint64{"/pkg.S/Old": 3, "/pkg.S/New": 2}, serving: []*api.ServiceEntry{
			{Node: &api.Node{Address: "10.0.0.1"}, Service: &api.AgentService{Port: 1, Meta: map[string]string{"version": "1", MetaDescriptors: "old"}}},
			{Node: &api.Node{Address: "10.0.0.2"}, Service: &api.AgentService{Port: 1, Meta: map[string]string{"version": "1", MetaDescriptors: "new"}}},
			{Node: &api.Node{Address: "10.0.0.3"}, Service: &api.AgentService{Port: 1, Meta: map[string]string{"version": "2", MetaDescriptors: "new"}}},
		}}
	svc.rebuildRoutingLocked()
	st := h.routing.Load()
	pk := pickerFor(h, "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1")
	pick := func(target int, method string) map[string]int {
		got := map[string]int{}
		ctx := withPick(t.Context(), st.sel[target])
		for range 30 {
			res, err := pk.Pick(balancer.PickInfo{FullMethodName: method, Ctx: ctx})
			if err != nil {
				got[err.Error()]++
				continue
			}
			got[res.SubConn.(*fakeSC).name]++
		}
		return got
	}
	v1, v2 := p.bySubset["v1"], p.bySubset["v2"]
	if got := pick(v1, "/pkg.S/Old"); got["10.0.0.1:1"] != 15 || got["10.0.0.2:1"] != 15 {
		t.Fatalf("v1, old method: %v, want round robin over both v1 instances", got)
	}
	if got := pick(v1, "/pkg.S/New"); got["10.0.0.2:1"] != 30 {
		t.Fatalf("v1, new method: %v, want only the v1 instance that has it", got)
	}
	if got := pick(v2, "/pkg.S/Old"); got["10.0.0.3:1"] != 30 {
		t.Fatalf("v2: %v", got)
	}
	// A method served before by no one now fails at once, unsent.
	svc.methods["/pkg.S/Gone"] = 0
	svc.rebuildRoutingLocked()
	st = h.routing.Load()
	if _, err := pk.Pick(balancer.PickInfo{FullMethodName: "/pkg.S/Gone", Ctx: withPick(t.Context(), st.sel[v1])}); !unsent(err) {
		t.Fatalf("gone method: %v, want the picker's UNAVAILABLE", err)
	}
}

func TestUnionOfDescriptorGroups(t *testing.T) {
	rpc := func(name string) string {
		return fmt.Sprintf(`rpc %s(Req) returns (Resp) { option (google.api.http) = {get: "/v1/%s/{id}"}; }`, name, strings.ToLower(name))
	}
	// A deploy that adds a method: the new descriptors are the base, the
	// old method goes to every instance, the new one to the new only.
	old := testGroup(t, "old", 1, 1, fmt.Sprintf(mergeProto, ""))
	fresh := testGroup(t, "new", 2, 2, fmt.Sprintf(mergeProto, rpc("B")))
	u, m, notes := unionOf([]*descGroup{old, fresh}, nil)
	if u.Hash != "new" || m["/p.S/A"] != 3 || m["/p.S/B"] != 2 || len(notes) != 0 {
		t.Fatalf("adds: %s %v %v", u.Hash, m, notes)
	}
	// One that removes a method: the older (a superset) stays the base
	// until its last instance leaves.
	u, m, _ = unionOf([]*descGroup{fresh, testGroup(t, "newer", 3, 4, fmt.Sprintf(mergeProto, ""))}, nil)
	if u.Hash != "new" || m["/p.S/A"] != 6 || m["/p.S/B"] != 2 {
		t.Fatalf("removes: %s %v", u.Hash, m)
	}
	// A compatible change (a field added to the response) keeps the method
	// on every instance; a field whose type changed does not.
	added := testGroup(t, "added", 3, 4, strings.Replace(fmt.Sprintf(mergeProto, ""), "message Resp { string id = 1; }", "message Resp { string id = 1; int64 stock = 2; }", 1))
	if _, m, notes = unionOf([]*descGroup{old, added}, nil); m["/p.S/A"] != 5 || len(notes) != 0 {
		t.Fatalf("field added: %v %v", m, notes)
	}
	retyped := testGroup(t, "retyped", 3, 4, strings.Replace(fmt.Sprintf(mergeProto, ""), "message Resp { string id = 1; }", "message Resp { int64 id = 1; }", 1))
	if _, m, notes = unionOf([]*descGroup{old, retyped}, nil); m["/p.S/A"] != 4 || len(notes) != 1 || !strings.Contains(notes[0], "do not read") {
		t.Fatalf("field retyped: %v %v", m, notes)
	}
}

func TestWireCompatible(t *testing.T) {
	method := func(src string) protoreflect.MethodDescriptor {
		return meshtest.CompileProto(t, `syntax = "proto3"; package p; service S { rpc M(Req) returns (Resp); }
enum E { E_UNSPECIFIED = 0; E_ONE = 1; }
message Resp { string id = 1; }
`+src).Services().Get(0).Methods().ByName("M")
	}
	base := method(`message Req { string id = 1; Inner in = 2; } message Inner { int32 n = 1; E e = 2; }`)
	for _, tc := range []struct {
		src  string
		want bool
	}{
		{`message Req { string id = 1; Inner in = 2; } message Inner { int32 n = 1; E e = 2; string more = 3; }`, true},
		{`message Req { string ident = 1; Inner in = 2; } message Inner { int32 count = 1; }`, true}, // renamed, dropped
		{`message Req { string id = 1; Inner in = 2; } message Inner { int64 n = 1; E e = 2; }`, false},
		{`message Req { string id = 1; repeated Inner in = 2; } message Inner { int32 n = 1; E e = 2; }`, false},
		{`message Req { string id = 1; string in = 2; }`, false},
	} {
		if got := wireCompatible(base, method(tc.src)); got != tc.want {
			t.Errorf("%s: compatible %v, want %v", tc.src, got, tc.want)
		}
	}
}

// BenchmarkTrafficRoute is the routing decision of one call: the chain's
// router (two rules), the split by the caller's subject, and the pick of
// an instance of the subset that serves the method.
func BenchmarkTrafficRoute(b *testing.B) {
	p := compilePlan("products", testChain(90, 10, api.ServiceRoute{
		Match:       &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/other.Service/"}},
		Destination: &api.ServiceRouteDestination{ServiceSubset: "v2"},
	}), nil, TrafficConfig{})
	h := &trafficHolder{service: "products"}
	svc := &catalogService{name: "products", plan: p, traffic: h, groups: map[string]*descGroup{"h": {bit: 1}},
		methods: map[string]uint64{"/pkg.S/Get": 1}}
	var addrs []string
	for i := range 6 {
		v := 1 + i%2
		addr := fmt.Sprintf("10.0.0.%d", i+1)
		svc.serving = append(svc.serving, &api.ServiceEntry{Node: &api.Node{Address: addr}, Service: &api.AgentService{Port: 1, Meta: map[string]string{"version": fmt.Sprint(v), MetaDescriptors: "h"}}})
		addrs = append(addrs, addr+":1")
	}
	svc.rebuildRoutingLocked()
	pk := pickerFor(h, addrs...)
	callers := make([]Caller, 1024)
	for i := range callers {
		callers[i] = &StaticCaller{Sub: fmt.Sprintf("user-%d@example.com", i)}
	}
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		st := h.routing.Load()
		d := st.plan.decide("/pkg.S/Get", callers[i%len(callers)], st.members)
		if _, err := pk.Pick(balancer.PickInfo{FullMethodName: "/pkg.S/Get", Ctx: withPick(ctx, st.sel[d.target])}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPickerLeastRequest(t *testing.T) {
	h := &trafficHolder{service: "products", leastRequest: true}
	svc := &catalogService{name: "products", traffic: h, serving: []*api.ServiceEntry{
		{Node: &api.Node{Address: "10.0.0.1"}, Service: &api.AgentService{Port: 1}},
		{Node: &api.Node{Address: "10.0.0.2"}, Service: &api.AgentService{Port: 1}},
	}}
	svc.rebuildRoutingLocked()
	pk := pickerFor(h, "10.0.0.1:1", "10.0.0.2:1")
	info := balancer.PickInfo{FullMethodName: "/pkg.S/M", Ctx: t.Context()}
	first, err := pk.Pick(info)
	if err != nil {
		t.Fatal(err)
	}
	// With one call in flight on the first, the next goes to the other.
	for range 20 {
		r, err := pk.Pick(info)
		if err != nil {
			t.Fatal(err)
		}
		if r.SubConn == first.SubConn {
			t.Fatal("least request picked the busy instance")
		}
		r.Done(balancer.DoneInfo{})
	}
	first.Done(balancer.DoneInfo{})
	// The counters of instances no longer ready go with their picker.
	pickerFor(h, "10.0.0.3:1")
	if len(h.inflight) != 1 {
		t.Fatalf("%d counters, want one per ready instance", len(h.inflight))
	}
}

func TestSplitKeys(t *testing.T) {
	cfg := TrafficConfig{SplitKey: "api_key", Services: map[string]TrafficService{"products": {SplitKey: "header:x-device-id"}}}
	c := &StaticCaller{Sub: "alice", Key: "key-1", Headers: map[string]string{"X-Device-Id": "d-7"}}
	if b := cfg.keyFor("products").bucket(c); b != int(stableHash("d-7")%buckets) {
		t.Fatalf("header key: bucket %d", b)
	}
	if b := cfg.keyFor("orders").bucket(c); b != int(stableHash("key-1")%buckets) {
		t.Fatalf("api_key: bucket %d", b)
	}
	if b := (TrafficConfig{}).keyFor("orders").bucket(c); b != int(stableHash("alice")%buckets) {
		t.Fatalf("default (subject): bucket %d", b)
	}
	if b := (TrafficConfig{}).keyFor("orders").bucket(&StaticCaller{}); b != -1 {
		t.Fatalf("no subject: bucket %d, want -1 (per request)", b)
	}
	for _, bad := range []TrafficConfig{
		{SplitKey: "ip"},
		{SplitKey: "header:"},
		{Services: map[string]TrafficService{"x": {SplitKey: "cookie"}}},
		{Override: OverrideConfig{TrustedNetworks: []string{"10.0.0.0/33"}}},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("%+v: accepted", bad)
		}
	}
	if err := (TrafficConfig{SplitKey: "header:X-User", Override: OverrideConfig{TrustedNetworks: []string{"10.0.0.0/8", "192.0.2.7"}}}).validate(); err != nil {
		t.Fatal(err)
	}
}

// testGroup reflects src as if an instance serving it had answered.
func testGroup(t *testing.T, hash string, seq, bit uint64, src string) *descGroup {
	t.Helper()
	fd := meshtest.CompileProto(t, src)
	files := map[string]protoreflect.FileDescriptor{}
	collectFiles(fd, files)
	reg := new(protoregistry.Files)
	for _, path := range slices.Sorted(maps.Keys(files)) {
		_ = reg.RegisterFile(files[path])
	}
	// Dependencies first: register again until every file is in.
	for range len(files) {
		for _, f := range files {
			if _, err := reg.FindFileByPath(f.Path()); err != nil {
				_ = reg.RegisterFile(f)
			}
		}
	}
	refl := &Reflection{Hash: hash}
	for i := range fd.Services().Len() {
		sd := fd.Services().Get(i)
		refl.Services = append(refl.Services, &Service{Name: sd.FullName(), Desc: sd, Types: dynamicpb.NewTypes(reg)})
	}
	return &descGroup{hash: hash, seq: seq, bit: bit, refl: refl, mds: methodsOf(refl)}
}

const mergeProto = `syntax = "proto3"; package p;
import "google/api/annotations.proto";
service S {
  rpc A(Req) returns (Resp) { option (google.api.http) = {get: "/v1/a/{id}"}; }
  %s
}
message Req { string id = 1; } message Resp { string id = 1; }`

func TestUnionMergesOlderMethods(t *testing.T) {
	// A deploy that drops B and adds C: B stays served, by the old
	// instances only, until the last of them leaves.
	old := testGroup(t, "old", 1, 1, fmt.Sprintf(mergeProto, `rpc B(Req) returns (Resp) { option (google.api.http) = {get: "/v1/b/{id}"}; }`))
	fresh := testGroup(t, "new", 2, 2, fmt.Sprintf(mergeProto, `rpc C(Req) returns (Resp) { option (google.api.http) = {get: "/v1/c/{id}"}; }`))
	u, m, notes := unionOf([]*descGroup{old, fresh}, nil)
	if m["/p.S/A"] != 3 || m["/p.S/B"] != 1 || m["/p.S/C"] != 2 || len(notes) != 0 {
		t.Fatalf("methods %v, notes %v", m, notes)
	}
	mds := u.Services[0].Desc.Methods()
	if mds.Len() != 3 || mds.ByName("B") == nil || u.Hash == fresh.refl.Hash {
		t.Fatalf("union: %d methods, hash %s", mds.Len(), u.Hash)
	}
	if _, err := u.Services[0].Types.FindMessageByName("p.Req"); err != nil {
		t.Fatal(err)
	}
	// A dropped method whose route the new version gave to another is not
	// merged (the table would refuse the service): it is named instead.
	clash := testGroup(t, "clash", 3, 4, fmt.Sprintf(mergeProto, `rpc C(Req) returns (Resp) { option (google.api.http) = {get: "/v1/b/{name}"}; }`))
	_, m, notes = unionOf([]*descGroup{old, clash}, nil)
	if _, ok := m["/p.S/B"]; ok || len(notes) != 1 || !strings.Contains(notes[0], "clash") {
		t.Fatalf("clash: methods %v, notes %v", m, notes)
	}
}

func TestFallbackOrderAndStaleDecisions(t *testing.T) {
	p := compilePlan("products", testChain(90, 10), nil, TrafficConfig{})
	v1, v2 := p.bySubset["v1"], p.bySubset["v2"]
	if fb := p.fallbacks(v2); !slices.Equal(fb, []int{v1}) {
		t.Fatalf("v2 falls back to %v, want [v1]", fb)
	}
	if fb := p.fallbacks(v1); len(fb) != 0 {
		t.Fatalf("stable v1 falls back to %v, want nowhere (no failover declared)", fb)
	}
	// A call decided under one plan and picked under the next, whose
	// targets are numbered otherwise, still goes to its subset.
	h := &trafficHolder{service: "products"}
	svc := &catalogService{name: "products", plan: p, traffic: h, serving: []*api.ServiceEntry{
		{Node: &api.Node{Address: "10.0.0.1"}, Service: &api.AgentService{Port: 1, Meta: map[string]string{"version": "1"}}},
		{Node: &api.Node{Address: "10.0.0.2"}, Service: &api.AgentService{Port: 1, Meta: map[string]string{"version": "2"}}},
	}}
	svc.rebuildRoutingLocked()
	old := h.routing.Load().sel[v2]
	chain := testChain(90, 10)
	chain.Targets["a.products.default.default.dc1"] = &api.DiscoveryTarget{ID: "a.products.default.default.dc1", Service: "products", ServiceSubset: "a",
		Subset: api.ServiceResolverSubset{Filter: `Service.Meta.version == "9"`}}
	svc.plan = compilePlan("products", chain, nil, TrafficConfig{})
	svc.rebuildRoutingLocked()
	if svc.plan.bySubset["v2"] == v2 {
		t.Fatal("the new plan numbers v2 as the old one did; the test proves nothing")
	}
	pk := pickerFor(h, "10.0.0.1:1", "10.0.0.2:1")
	for range 10 {
		r, err := pk.Pick(balancer.PickInfo{FullMethodName: "/pkg.S/M", Ctx: withPick(t.Context(), old)})
		if err != nil || r.SubConn.(*fakeSC).name != "10.0.0.2:1" {
			t.Fatalf("stale v2 decision picked %v, %v", r.SubConn, err)
		}
	}
}
