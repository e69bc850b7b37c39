package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
)

// What the catalog makes of each exposed service's discovery chain: the
// plan its calls are routed with, and the routing (traffic_pick.go) made
// of the plan, the instances and their descriptors.

// routingGen numbers routings, so that pickers know when theirs is stale.
var routingGen atomic.Uint64

// chainAnswer is one read of a service's discovery chain.
type chainAnswer struct {
	chain    *api.CompiledDiscoveryChain
	resolver *api.ServiceResolverConfigEntry
}

// chain delivers service name's compiled discovery chain, with its
// service-resolver entry, until ctx ends; failed runs after each failed
// read.
func (w *catalogWatch) chain(ctx context.Context, name string, deliver func(chainAnswer), failed func()) {
	watch(ctx, "discovery-chain/"+name, w.limiter(), w.health, w.log, w.cfg.WaitTime,
		func(q *api.QueryOptions) (chainAnswer, *api.QueryMeta, error) {
			resp, meta, err := w.client.DiscoveryChain().Get(name, nil, q)
			if err == nil && resp == nil {
				err = errors.New("empty discovery chain answer")
			}
			if err != nil {
				if ctx.Err() == nil {
					failed()
				}
				return chainAnswer{}, meta, err
			}
			a := chainAnswer{chain: resp.Chain}
			if !resp.Chain.Default {
				// The resolver lists the subsets no split reaches (a
				// tester may force them). Read once per chain change.
				e, _, err := w.client.ConfigEntries().Get(api.ServiceResolver, name, (&api.QueryOptions{}).WithContext(ctx))
				var se api.StatusError
				switch {
				case err == nil:
					a.resolver, _ = e.(*api.ServiceResolverConfigEntry)
				case errors.As(err, &se) && se.Code == http.StatusNotFound:
				case strings.Contains(err.Error(), "404"):
				default:
					failed()
					return chainAnswer{}, meta, err
				}
			}
			return a, meta, nil
		}, deliver)
}

// setPlan installs the plan compiled from a chain answer for svc.
func (c *Catalog) setPlan(svc *catalogService, a chainAnswer) {
	p := compilePlan(svc.name, a.chain, a.resolver, c.cfg.Traffic)
	svc.mu.Lock()
	if svc.removed { // its series are gone; none come back
		svc.mu.Unlock()
		return
	}
	prev := svc.plan
	labels := map[string]bool{}
	for i := range p.targets {
		if p.configured { // only calls through config entries are counted
			p.targets[i].requests = c.traffic.requests.WithLabelValues(svc.name, p.subsetLabel(i))
			labels[p.subsetLabel(i)] = true
		}
	}
	if prev != nil {
		// Subsets named per release would pile up series otherwise.
		for i := range prev.targets {
			if l := prev.subsetLabel(i); !labels[l] {
				c.traffic.forgetSubset(svc.name, l)
			}
		}
	}
	svc.plan = p
	svc.rebuildRoutingLocked()
	svc.mu.Unlock()
	if len(p.ignored) > 0 && (prev == nil || !slices.Equal(prev.ignored, p.ignored)) {
		c.log.Warn("consul discovery chain: Portico does not do all it asks", zap.String("service", svc.name), zap.Strings("ignored", p.ignored))
	}
	if p.configured || (prev != nil && prev.configured) {
		c.log.Info("consul discovery chain", zap.String("service", svc.name), zap.String("routing", p.summary()))
	}
}

// planUnread gives svc the default plan (every passing instance) while its
// chain cannot be read, so that a chain Consul refuses (an ACL, say)
// delays neither the first route table nor calls; a plan already in use
// stays.
func (c *Catalog) planUnread(svc *catalogService) {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.plan == nil {
		svc.plan = defaultPlan(svc.name)
		svc.rebuildRoutingLocked()
	}
}

// rebuildRoutingLocked makes svc's routing from its plan, the instances
// it serves and their reflected descriptors; svc.mu is held.
func (svc *catalogService) rebuildRoutingLocked() {
	p := svc.plan
	if p == nil {
		p = defaultPlan(svc.name)
	}
	r := &routing{plan: p, inst: make(map[string]instRoute, len(svc.serving)), members: make([]int, len(p.targets)),
		methods: svc.methods, sel: make([]*pickSel, len(p.targets)), gen: routingGen.Add(1)}
	for t := range p.targets {
		r.sel[t] = &pickSel{plan: p, target: t, id: p.targets[t].id}
	}
	r.any = &pickSel{plan: p, target: -1}
	for _, e := range svc.serving {
		ir := instRoute{hash: e.Service.Meta[MetaDescriptors]}
		if g := svc.groups[ir.hash]; g != nil {
			ir.group = g.bit
		}
		for t := range p.targets {
			if ev := p.targets[t].eval; ev != nil {
				if ok, err := ev.Evaluate(e); err != nil || !ok {
					continue
				}
			}
			ir.targets |= 1 << t
			r.members[t]++
		}
		r.inst[entryAddr(e)] = ir
	}
	svc.traffic.routing.Store(r)
}

// summary describes a plan in one line for the log.
func (p *trafficPlan) summary() string {
	if !p.configured {
		return "every call to any passing instance (no config entry)"
	}
	var parts []string
	for _, n := range p.nodes {
		switch n.kind {
		case nodeRouter:
			parts = append(parts, fmt.Sprintf("router %s: %d rules", n.name, len(n.routes)))
		case nodeSplitter:
			var ws []string
			for _, s := range n.splits {
				ws = append(ws, fmt.Sprintf("%g%% to %s", s.weight, p.nodes[s.next].name))
			}
			parts = append(parts, "splitter "+n.name+": "+strings.Join(ws, ", "))
		}
	}
	parts = append(parts, "stable "+p.targets[p.stable].id)
	return strings.Join(parts, "; ")
}

// Explanation is where a call would go and why, as the discovery chain
// and the instances stand now (the admin endpoint GET /traffic).
type Explanation struct {
	Service string `json:"service"`
	Method  string `json:"method"`
	// Chain is "configured" (config entries apply), "default" (none do)
	// or "off" (mesh.traffic.chains false).
	Chain    string          `json:"chain"`
	Route    *ExplainedRoute `json:"route,omitempty"`
	Split    *ExplainedSplit `json:"split,omitempty"`
	Override bool            `json:"override,omitempty"`
	// Target is the chain's target the call goes to, Subset its subset
	// ("" the service's default) and Filter the subset's filter.
	Target string `json:"target"`
	Subset string `json:"subset"`
	Filter string `json:"filter,omitempty"`
	// Failover is set when the target had no instance and the resolver's
	// failover chose this one.
	Failover bool `json:"failover,omitempty"`
	// Stable is the subset idempotent calls fall back to on UNAVAILABLE.
	Stable string `json:"stable"`
	// Instances are the passing instances of the target whose descriptors
	// serve the method as the route table does.
	Instances []ExplainedInstance `json:"instances"`
	// Elsewhere are the target's other passing instances, which lack the
	// method (or serve it with other messages) during a rollout.
	Elsewhere []ExplainedInstance `json:"not_serving_method,omitempty"`
	Ignored   []string            `json:"ignored,omitempty"`
}

// ExplainedRoute is the service-router rule a call matched.
type ExplainedRoute struct {
	Rule    int    `json:"rule"`
	Match   string `json:"match"`
	Timeout string `json:"request_timeout,omitempty"`
}

// ExplainedSplit is the service-splitter's choice.
type ExplainedSplit struct {
	// Weights are by subset ("default": the service's default one).
	Weights map[string]float32 `json:"weights"`
	// Key is what placed the caller: subject, api_key or header:<Name>;
	// "per request" when the caller has none.
	Key string `json:"key"`
	// Bucket is the caller's place in 0..9999 (-1 per request): the split
	// whose cumulative share covers it is taken.
	Bucket int    `json:"bucket"`
	Chosen string `json:"chosen"`
}

// ExplainedInstance is one passing instance.
type ExplainedInstance struct {
	ID          string `json:"id"`
	Address     string `json:"address"`
	Descriptors string `json:"descriptors,omitempty"`
}

// ErrUnknownService is Explain's answer for a service it does not expose.
var ErrUnknownService = errors.New("not an exposed Consul service")

// Explain says where a call of method (a full gRPC method,
// "/pkg.Service/Method") by caller (nil: anonymous, no header) to service
// would go now, and why.
func (c *Catalog) Explain(service, method string, caller Caller) (*Explanation, error) {
	c.mu.Lock()
	svc := c.services[service]
	c.mu.Unlock()
	if svc == nil {
		return nil, fmt.Errorf("%s: %w (exposed: %s)", service, ErrUnknownService, strings.Join(c.Services(), ", "))
	}
	svc.mu.Lock()
	serving := svc.serving
	svc.mu.Unlock()
	st := svc.traffic.routing.Load()
	p := st.plan
	ex := &Explanation{Service: service, Method: method, Chain: "default", Ignored: p.ignored}
	switch {
	case !c.cfg.Traffic.ChainsEnabled():
		ex.Chain = "off"
	case p.configured:
		ex.Chain = "configured"
	}
	d := decision{route: -1, split: -1, bucket: -1}
	if p.configured {
		d = p.decide(method, caller, st.members)
	}
	ex.Override = d.override
	if d.route >= 0 {
		r := p.routeAt(d.route)
		ex.Route = &ExplainedRoute{Rule: d.route, Match: r.desc}
		if r.timeout > 0 {
			ex.Route.Timeout = r.timeout.String()
		}
	}
	if d.split >= 0 {
		node := p.splitterOf(d.target)
		sp := &ExplainedSplit{Weights: map[string]float32{}, Bucket: d.bucket, Key: p.key.kind}
		if p.key.kind == SplitKeyHeader {
			sp.Key += ":" + p.key.header
		}
		if d.bucket < 0 {
			sp.Key = "per request"
		}
		if node != nil {
			for i, s := range node.splits {
				name := p.nodes[s.next].name
				if r := p.nodes[s.next]; r.kind == nodeResolver {
					name = p.subsetLabel(r.target)
				}
				sp.Weights[name] += s.weight
				if i == d.split {
					sp.Chosen = name
				}
			}
		}
		ex.Split = sp
	}
	t := p.targets[d.target]
	ex.Target, ex.Subset, ex.Filter, ex.Stable = t.id, t.subset, t.filter, p.targets[p.stable].subset
	if ex.Stable == "" {
		ex.Stable = "(default)"
	}
	for _, n := range p.nodes {
		if n.kind == nodeResolver && len(n.failover) > 0 && n.target != d.target && slices.Contains(n.failover, d.target) && st.members[n.target] == 0 {
			ex.Failover = true
		}
	}
	groups, known := st.methods[method]
	ex.Instances = []ExplainedInstance{}
	for _, e := range serving {
		addr := entryAddr(e)
		ir := st.inst[addr]
		if ir.targets&(1<<d.target) == 0 {
			continue
		}
		in := ExplainedInstance{ID: e.Service.ID, Address: addr, Descriptors: shortHash(ir.hash)}
		if known && ir.group&groups == 0 {
			ex.Elsewhere = append(ex.Elsewhere, in)
		} else {
			ex.Instances = append(ex.Instances, in)
		}
	}
	return ex, nil
}

// routeAt is the i-th rule of the plan's router (a chain has one).
func (p *trafficPlan) routeAt(i int) planRoute {
	for _, n := range p.nodes {
		if n.kind == nodeRouter && i < len(n.routes) {
			return n.routes[i]
		}
	}
	return planRoute{}
}

// splitterOf returns the splitter a decision for target went through:
// the one with a split leading to target's resolver.
func (p *trafficPlan) splitterOf(target int) *planNode {
	for i := range p.nodes {
		n := &p.nodes[i]
		if n.kind != nodeSplitter {
			continue
		}
		for _, s := range n.splits {
			if r := p.nodes[s.next]; r.kind == nodeResolver && (r.target == target || slices.Contains(r.failover, target)) {
				return n
			}
		}
	}
	return nil
}
