package mesh

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-bexpr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// Traffic management: each exposed Consul service's discovery chain
// (service-router, service-splitter and service-resolver config entries,
// compiled by Consul) becomes a trafficPlan (traffic_chain.go), and every
// call of the service goes through it (traffic_conn.go): the router's
// first matching rule, then the split, then the resolver's subset, whose
// instances the balancer picks from (traffic_pick.go).

// Caller tells the traffic router who makes a call: the edge puts it in
// the call's context (WithCaller). A call without one is split per
// request and never overridden.
type Caller interface {
	// Subject is the authenticated subject; "" for anonymous callers.
	Subject() string
	// APIKey is the name of the API key the caller used; "" for none.
	APIKey() string
	// RequestHeader is the first value of the client's request header name.
	RequestHeader(name string) (string, bool)
	// Claim is the verified claim name; nil when absent.
	Claim(name string) any
	// HasScope reports whether the caller's verified claims grant scope.
	HasScope(scope string) bool
	// Peer is the client's address as the edge resolved it.
	Peer() netip.Addr
}

type callerKey struct{}

// WithCaller returns ctx carrying c for the traffic router.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// RoutesByCaller reports whether calls on conn are routed by who makes
// them now (a Consul service whose discovery chain has config entries):
// only then does the caller need to travel in the context.
func RoutesByCaller(conn grpc.ClientConnInterface) bool {
	t, ok := conn.(*trafficConn)
	if !ok {
		return false
	}
	st := t.svc.traffic.routing.Load()
	return st != nil && st.plan.configured
}

func callerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// buckets is the resolution of a split: 0.01 %, as Consul's weights.
const buckets = 10000

// Node kinds of a plan.
const (
	nodeRouter = iota
	nodeSplitter
	nodeResolver
)

// trafficPlan is one service's discovery chain, compiled for routing calls.
// It never changes once built; a new chain makes a new plan.
type trafficPlan struct {
	service string
	// configured is false for Consul's default chain (no config entry):
	// every call goes to the one target, every instance.
	configured bool
	nodes      []planNode
	start      int
	targets    []planTarget
	stable     int            // the target of the default path (fallback goes there)
	bySubset   map[string]int // subset name ("" the service's default) → target
	// ignored says what the chain asks that Portico does not do.
	ignored []string
	key     splitKey
	// override lets trusted callers pick a subset; nil: off.
	override *overridePolicy
}

type planNode struct {
	name   string
	kind   int
	routes []planRoute
	splits []planSplit
	target int
	// failover: the targets tried in order when target has no instance.
	failover []int
}

type planRoute struct {
	desc       string // the match, as the explain endpoint shows it
	never      bool   // matches on what a gRPC call does not have
	exact      string
	prefix     string
	regex      *regexp.Regexp
	ignoreCase bool
	headers    []headerMatch
	next       int
	timeout    time.Duration
}

type headerMatch struct {
	name                  string
	present               bool
	exact, prefix, suffix string
	regex                 *regexp.Regexp
	invert                bool
}

type planSplit struct {
	upto   int // cumulative threshold in buckets: this split takes [previous upto, upto)
	weight float32
	next   int
}

type planTarget struct {
	id     string
	subset string
	filter string
	eval   *bexpr.Evaluator // nil: every instance
	// unsupported says why Portico routes this target to the service's
	// instances instead (another service, datacenter...); "" when honoured.
	unsupported string
	requests    prometheus.Counter
	// fallbacks: where a call its instances refused goes, in turn (its
	// resolver's failover targets, then the stable target).
	fallbacks []int
}

// splitKey says what keeps a caller on one side of a split.
type splitKey struct {
	kind   string // subject, api_key or header
	header string
}

// decision is where one call goes, and why.
type decision struct {
	target   int
	route    int // the router rule that matched; -1: no router
	split    int // the split taken; -1: no splitter
	bucket   int // the caller's bucket; -1: split per request
	override bool
	timeout  time.Duration
}

// decide routes a call of method for caller (nil: anonymous, no header)
// over p, given how many instances each target has now.
func (p *trafficPlan) decide(method string, c Caller, members []int) decision {
	d := decision{route: -1, split: -1, bucket: -1}
	if p.override != nil && c != nil {
		if t, ok := p.override.pick(p, c); ok {
			d.target, d.override = t, true
			return d
		}
	}
	n := p.start
	for range len(p.nodes) + 1 { // a compiled chain has no cycle; bounded anyway
		node := &p.nodes[n]
		switch node.kind {
		case nodeRouter:
			next := -1
			for i := range node.routes {
				if node.routes[i].matches(method, c) {
					d.route, next, d.timeout = i, node.routes[i].next, node.routes[i].timeout
					break
				}
			}
			if next < 0 { // Consul ends every router with a catch-all
				return decision{target: p.stable, route: -1, split: -1, bucket: -1}
			}
			n = next
		case nodeSplitter:
			if d.bucket < 0 {
				d.bucket = p.key.bucket(c)
			}
			b := d.bucket
			if b < 0 {
				b = rand.IntN(buckets)
			}
			i := 0
			for i < len(node.splits)-1 && b >= node.splits[i].upto {
				i++
			}
			d.split, n = i, node.splits[i].next
		default:
			d.target = node.target
			if members != nil && members[d.target] == 0 {
				for _, t := range node.failover {
					if members[t] > 0 {
						d.target = t
						break
					}
				}
			}
			return d
		}
	}
	return decision{target: p.stable, route: -1, split: -1, bucket: -1}
}

func (r *planRoute) matches(method string, c Caller) bool {
	if r.never {
		return false
	}
	switch {
	case r.exact != "" && !r.equal(method, r.exact):
		return false
	case r.prefix != "" && (len(method) < len(r.prefix) || !r.equal(method[:len(r.prefix)], r.prefix)):
		return false
	case r.regex != nil && !r.regex.MatchString(method):
		return false
	}
	for i := range r.headers {
		if !r.headers[i].matches(c) {
			return false
		}
	}
	return true
}

func (r *planRoute) equal(a, b string) bool {
	if r.ignoreCase {
		return strings.EqualFold(a, b)
	}
	return a == b
}

func (h *headerMatch) matches(c Caller) bool {
	var v string
	ok := false
	if c != nil {
		v, ok = c.RequestHeader(h.name)
	}
	var m bool
	switch {
	case h.present:
		m = ok
	case !ok:
		m = false
	case h.regex != nil:
		m = h.regex.MatchString(v)
	case h.prefix != "" || h.suffix != "":
		m = strings.HasPrefix(v, h.prefix) && strings.HasSuffix(v, h.suffix)
	default:
		m = v == h.exact
	}
	return m != h.invert
}

// bucket places the caller's key in [0, buckets); -1 when the caller has
// none. The same key lands in the same bucket in every edge, every
// service and every restart, so a caller stays on one side of a split and
// a canary of the same share in two services reaches the same callers.
func (k splitKey) bucket(c Caller) int {
	if c == nil {
		return -1
	}
	var key string
	switch k.kind {
	case SplitKeyAPIKey:
		key = c.APIKey()
	case SplitKeyHeader:
		key, _ = c.RequestHeader(k.header)
	default:
		key = c.Subject()
	}
	if key == "" {
		return -1
	}
	return int(stableHash(key) % buckets)
}

// stableHash is FNV-1a over s, finished with splitmix64's mixer so that
// keys differing in their last byte spread over every bucket.
func stableHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// overridePolicy lets a trusted caller force a subset by header or claim.
type overridePolicy struct {
	header   string
	claim    string
	scopes   []string
	networks []netip.Prefix
}

// pick returns the target the caller asks for, if it may.
func (o *overridePolicy) pick(p *trafficPlan, c Caller) (int, bool) {
	var want string
	if o.header != "" {
		want, _ = c.RequestHeader(o.header)
	}
	if want == "" && o.claim != "" {
		want, _ = c.Claim(o.claim).(string)
	}
	if want == "" {
		return 0, false
	}
	t, ok := p.bySubset[want]
	if !ok || !o.trusts(c) {
		return 0, false
	}
	return t, true
}

func (o *overridePolicy) trusts(c Caller) bool {
	if peer := c.Peer(); peer.IsValid() {
		for _, n := range o.networks {
			if n.Contains(peer.Unmap()) {
				return true
			}
		}
	}
	for _, want := range o.scopes {
		if c.HasScope(want) {
			return true
		}
	}
	return false
}

// StaticCaller is a Caller made of plain values: the explain endpoint's
// hypothetical caller, and tests'.
type StaticCaller struct {
	Sub, Key string
	Headers  map[string]string // by canonical name
	Claims   map[string]any
	Scopes   []string
	Addr     netip.Addr
}

func (s *StaticCaller) Subject() string { return s.Sub }
func (s *StaticCaller) APIKey() string  { return s.Key }
func (s *StaticCaller) RequestHeader(name string) (string, bool) {
	v, ok := s.Headers[name]
	return v, ok
}
func (s *StaticCaller) Claim(name string) any { return s.Claims[name] }
func (s *StaticCaller) HasScope(scope string) bool {
	for _, x := range s.Scopes {
		if x == scope {
			return true
		}
	}
	return false
}
func (s *StaticCaller) Peer() netip.Addr { return s.Addr }
