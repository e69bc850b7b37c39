package mesh

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
)

// trafficBalancer is the balancer of every Consul service's connection:
// grpc-go's base balancer keeps one subconnection per passing instance,
// and the picker chooses, per call, among the ready instances that are in
// the call's target (its subset) and whose descriptors serve its method,
// round robin or least request (mesh.load_balancing).
const trafficBalancer = "portico_traffic"

func init() {
	balancer.Register(base.NewBalancerBuilder(trafficBalancer, pickerBuilder{}, base.Config{}))
}

// maxGroups bounds the distinct descriptor sets of one service routed at
// once (a rollout has two or three); instances of further sets get no
// reflected method.
const maxGroups = 56

// trafficHolder is a service's routing, shared by its pickers: every
// address pushed to grpc-go carries it (trafficAttr), as the pickers have
// no other way to the service.
type trafficHolder struct {
	service      string
	leastRequest bool
	routing      atomic.Pointer[routing]

	// inflight counts each ready instance's calls in flight (least
	// request), kept across pickers for the instances still ready.
	mu       sync.Mutex
	inflight map[balancer.SubConn]*atomic.Int32
}

type trafficAttr struct{}

func withTraffic(a resolver.Address, h *trafficHolder) resolver.Address {
	a.Attributes = a.Attributes.WithValue(trafficAttr{}, h)
	return a
}

// routing is what a service's calls are routed with now. It is replaced
// whole whenever the chain, the instances or the reflected descriptors
// change, and never modified.
type routing struct {
	plan    *trafficPlan
	inst    map[string]instRoute // by instance address
	members []int                // instances per target
	// methods gives, per full method the route table serves, the
	// descriptor groups whose instances serve it as the table does. A
	// method it lacks (reflection, health) may go to any instance.
	methods map[string]uint64
	sel     []*pickSel // per target
	any     *pickSel   // any instance serving the method (the last fallback)
	gen     uint64
}

// instRoute is one instance's place in the routing.
type instRoute struct {
	targets uint64 // bit t: in target t
	group   uint64 // its descriptor group's bit; 0 while not reflected
	hash    string // its descriptor hash ("" unannounced)
}

// pickSel travels in a call's context to the picker: the target chosen
// for it, or the descriptor hash reflection must reach.
type pickSel struct {
	plan   *trafficPlan // the plan target indexes; a newer one remaps by id
	target int          // -1: any
	id     string
	hash   string
	pinned bool // hash applies
}

type pickKey struct{}

func withPick(ctx context.Context, s *pickSel) context.Context {
	return context.WithValue(ctx, pickKey{}, s)
}

type pickerBuilder struct{}

func (pickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	var h *trafficHolder
	p := &trafficPicker{ready: make([]readySC, 0, len(info.ReadySCs))}
	for sc, sci := range info.ReadySCs {
		if h == nil {
			h, _ = sci.Address.Attributes.Value(trafficAttr{}).(*trafficHolder)
		}
		p.ready = append(p.ready, readySC{sc: sc, addr: sci.Address.Addr})
	}
	if h == nil || len(p.ready) == 0 {
		return base.NewErrPicker(balancer.ErrNoSubConnAvailable)
	}
	p.h = h
	if h.leastRequest {
		h.mu.Lock()
		counts := make(map[balancer.SubConn]*atomic.Int32, len(p.ready))
		for i := range p.ready {
			c := h.inflight[p.ready[i].sc]
			if c == nil {
				c = new(atomic.Int32)
			}
			counts[p.ready[i].sc], p.ready[i].inflight = c, c
			p.ready[i].done = func(balancer.DoneInfo) { c.Add(-1) }
		}
		h.inflight = counts // gone instances' counters go with the old map
		h.mu.Unlock()
	}
	return p
}

type readySC struct {
	sc       balancer.SubConn
	addr     string
	inflight *atomic.Int32
	done     func(balancer.DoneInfo) // ends a call counted in inflight
}

type trafficPicker struct {
	h     *trafficHolder
	ready []readySC

	mu    sync.RWMutex
	gen   uint64 // the routing the cache was made for
	cache map[uint64]*candidates
}

// candidates are the ready instances of one (target, groups) choice.
type candidates struct {
	list []*readySC
	next atomic.Uint32
}

func (p *trafficPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	st := p.h.routing.Load()
	sel, _ := info.Ctx.Value(pickKey{}).(*pickSel)
	var c *candidates
	target := -1
	if sel != nil && sel.pinned {
		c = p.byHash(st, sel.hash)
	} else {
		if sel != nil {
			target = sel.target
			if sel.plan != st.plan { // decided before the chain changed
				target = st.plan.remap(sel.id)
			}
		}
		groups := ^uint64(0)
		if g, ok := st.methods[info.FullMethodName]; ok {
			groups = g
		}
		c = p.candidates(st, target, groups)
	}
	if len(c.list) == 0 {
		return balancer.PickResult{}, p.none(st, sel, target, info.FullMethodName)
	}
	var r *readySC
	switch {
	case len(c.list) == 1:
		r = c.list[0]
	case p.h.leastRequest:
		i := rand.IntN(len(c.list))
		j := rand.IntN(len(c.list) - 1)
		if j >= i {
			j++
		}
		r = c.list[i]
		if c.list[j].inflight.Load() < r.inflight.Load() {
			r = c.list[j]
		}
	default:
		r = c.list[(c.next.Add(1)-1)%uint32(len(c.list))]
	}
	if r.inflight == nil {
		return balancer.PickResult{SubConn: r.sc}, nil
	}
	r.inflight.Add(1)
	return balancer.PickResult{SubConn: r.sc, Done: r.done}, nil
}

// candidates returns the ready instances in target (-1: any) whose group
// is in groups, from a cache kept per routing.
func (p *trafficPicker) candidates(st *routing, target int, groups uint64) *candidates {
	key := uint64(target+1)<<maxGroups | groups&(1<<maxGroups-1)
	p.mu.RLock()
	if p.gen == st.gen && p.cache != nil {
		if c, ok := p.cache[key]; ok {
			p.mu.RUnlock()
			return c
		}
	}
	p.mu.RUnlock()
	c := &candidates{}
	for i := range p.ready {
		r := &p.ready[i]
		ir, ok := st.inst[r.addr]
		if !ok || (target >= 0 && ir.targets&(1<<target) == 0) {
			continue
		}
		if groups != ^uint64(0) && ir.group&groups == 0 {
			continue
		}
		c.list = append(c.list, r)
	}
	p.mu.Lock()
	if p.gen != st.gen || p.cache == nil {
		p.gen, p.cache = st.gen, map[uint64]*candidates{}
	}
	if old, ok := p.cache[key]; ok {
		c = old
	} else {
		p.cache[key] = c
	}
	p.mu.Unlock()
	return c
}

// byHash returns the ready instances serving descriptors hash (reflection).
func (p *trafficPicker) byHash(st *routing, hash string) *candidates {
	c := &candidates{}
	for i := range p.ready {
		if ir, ok := st.inst[p.ready[i].addr]; ok && ir.hash == hash {
			c.list = append(c.list, &p.ready[i])
		}
	}
	return c
}

// none is the answer when no ready instance fits. Reflection pinned to a
// descriptor hash waits for such an instance that is still connecting (it
// has its own deadline); a call fails at once with UNAVAILABLE, since the
// instances that would fit are connecting, failing or ejected (or there
// are none): an idempotent call then falls back to the stable subset, and
// any other is refused now rather than held until its deadline.
func (p *trafficPicker) none(st *routing, sel *pickSel, target int, method string) error {
	if sel != nil && sel.pinned {
		for _, ir := range st.inst {
			if ir.hash == sel.hash {
				return balancer.ErrNoSubConnAvailable
			}
		}
		return status.Errorf(codes.Unavailable, "no passing instance of %s serves descriptors %s", p.h.service, shortHash(sel.hash))
	}
	where := ""
	if target >= 0 && target < len(st.plan.targets) && st.plan.configured {
		where = " in " + st.plan.targetName(target)
	}
	return errNoReady(fmt.Sprintf(noReadyInstance+"%s%s serves %s", p.h.service, where, method))
}

// noReadyInstance starts the picker's refusal of a call it cannot place.
const noReadyInstance = "no ready instance of "

// unsentReason marks the picker's refusal (an ErrorInfo detail): the call
// never left the edge, so any call may go elsewhere.
const unsentReason = "PORTICO_NO_READY_INSTANCE"

// refusalToken is this process's own, in every refusal: an upstream
// relaying someone's refusal cannot make a sent call look unsent.
var refusalToken = func() string {
	b := make([]byte, 16)
	_, _ = cryptorand.Read(b)
	return hex.EncodeToString(b)
}()

func errNoReady(msg string) error {
	st, err := status.New(codes.Unavailable, msg).WithDetails(&errdetails.ErrorInfo{Reason: unsentReason, Domain: "portico.mesh",
		Metadata: map[string]string{"token": refusalToken}})
	if err != nil {
		return status.Error(codes.Unavailable, msg)
	}
	return st.Err()
}

// unsent reports whether err is the picker's refusal.
func unsent(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == unsentReason && ei.GetMetadata()["token"] == refusalToken {
			return true
		}
	}
	return false
}

// remap returns the target of p with id, or p's stable target.
func (p *trafficPlan) remap(id string) int {
	for i := range p.targets {
		if p.targets[i].id == id {
			return i
		}
	}
	return p.stable
}

// targetName names target t for people: its subset, or the service.
func (p *trafficPlan) targetName(t int) string {
	if s := p.targets[t].subset; s != "" {
		return "subset " + s
	}
	return "its default subset"
}
