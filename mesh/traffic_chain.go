package mesh

import (
	"fmt"
	"math"
	"net/textproto"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-bexpr"
)

// maxTargets bounds the targets of one plan: instances carry their
// membership as one bit per target.
const maxTargets = 64

// defaultPlan routes every call of service to every instance: Consul's
// default chain, or no chain read yet.
func defaultPlan(service string) *trafficPlan {
	return &trafficPlan{
		service:  service,
		nodes:    []planNode{{name: "resolver:" + service, kind: nodeResolver}},
		targets:  []planTarget{{id: service}},
		bySubset: map[string]int{"": 0},
	}
}

// compilePlan compiles the discovery chain Consul compiled for service,
// with its service-resolver entry (nil if none: it lists the subsets a
// tester may force even at 0 %), for routing calls. What the chain asks
// and Portico does not do is listed in the plan's ignored, and the plan
// does the nearest thing that never fails a call because of it.
func compilePlan(service string, chain *api.CompiledDiscoveryChain, resolver *api.ServiceResolverConfigEntry, cfg TrafficConfig) *trafficPlan {
	if chain == nil || chain.Default || len(chain.Nodes) == 0 {
		p := defaultPlan(service)
		p.key = cfg.keyFor(service)
		return p
	}
	p := &trafficPlan{service: service, configured: true, bySubset: map[string]int{}, key: cfg.keyFor(service), override: cfg.overridePolicy()}
	note := func(format string, args ...any) { p.ignored = append(p.ignored, fmt.Sprintf(format, args...)) }

	// Targets, in a stable order.
	ids := make([]string, 0, len(chain.Targets))
	for id := range chain.Targets {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	targetOf := map[string]int{}
	for _, id := range ids {
		t := chain.Targets[id]
		pt := planTarget{id: id, subset: t.ServiceSubset}
		switch {
		case t.Service != service:
			pt.unsupported = "another service (" + t.Service + ")"
		case t.Datacenter != "" && chain.Datacenter != "" && t.Datacenter != chain.Datacenter:
			pt.unsupported = "another datacenter (" + t.Datacenter + ")"
		case t.External:
			pt.unsupported = "an external service"
		}
		if pt.unsupported != "" {
			note("target %s is %s, which Portico does not reach: its calls go to %s's own instances", id, pt.unsupported, service)
		} else {
			pt.filter = t.Subset.Filter
		}
		targetOf[id] = len(p.targets)
		p.targets = append(p.targets, pt)
	}
	// The resolver's other subsets, which no split reaches now: a tester
	// may still force them.
	if resolver != nil {
		names := make([]string, 0, len(resolver.Subsets))
		for name := range resolver.Subsets {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			if p.hasSubset(name) {
				continue
			}
			p.targets = append(p.targets, planTarget{id: name + "." + service, subset: name, filter: resolver.Subsets[name].Filter})
		}
	}
	if len(p.targets) > maxTargets {
		d := defaultPlan(service)
		d.key = p.key
		d.ignored = []string{fmt.Sprintf("the chain has %d targets, more than the %d Portico routes: every call goes to any instance", len(p.targets), maxTargets)}
		return d
	}
	for i := range p.targets {
		t := &p.targets[i]
		if t.filter != "" {
			ev, err := bexpr.CreateEvaluator(t.filter)
			if err != nil {
				note("target %s: filter %q does not compile (%v): it selects every instance", t.id, t.filter, err)
				t.filter = ""
			} else {
				t.eval = ev
			}
		}
		if t.unsupported == "" {
			if _, ok := p.bySubset[t.subset]; !ok {
				p.bySubset[t.subset] = i
			}
		}
	}

	// Nodes.
	names := make([]string, 0, len(chain.Nodes))
	for name := range chain.Nodes {
		names = append(names, name)
	}
	slices.Sort(names)
	nodeOf := map[string]int{}
	for i, name := range names {
		nodeOf[name] = i
	}
	p.nodes = make([]planNode, len(names))
	for i, name := range names {
		n := chain.Nodes[name]
		pn := planNode{name: name}
		switch n.Type {
		case api.DiscoveryGraphNodeTypeRouter:
			pn.kind = nodeRouter
			for j, r := range n.Routes {
				pn.routes = append(pn.routes, compileRoute(j, r, nodeOf[r.NextNode], note))
			}
		case api.DiscoveryGraphNodeTypeSplitter:
			pn.kind = nodeSplitter
			pn.splits = compileSplits(n.Splits, nodeOf)
		default:
			pn.kind = nodeResolver
			if n.Resolver != nil {
				pn.target = targetOf[n.Resolver.Target]
				if f := n.Resolver.Failover; f != nil {
					for _, id := range f.Targets {
						if t, ok := targetOf[id]; ok && p.targets[t].unsupported == "" {
							pn.failover = append(pn.failover, t)
						}
					}
				}
			}
			if lb := n.LoadBalancer; lb != nil && lb.Policy != "" {
				note("resolver %s: load_balancer %q is ignored: Portico balances with mesh.load_balancing", name, lb.Policy)
			}
		}
		p.nodes[i] = pn
	}
	p.start = nodeOf[chain.StartNode]
	if _, ok := p.bySubset[""]; !ok {
		p.bySubset[""] = p.stableTarget()
	}
	p.stable = p.stableTarget()
	// Where a call its target's instances refuse goes: the resolver's
	// failover targets in order, then the stable target.
	for _, n := range p.nodes {
		if n.kind != nodeResolver {
			continue
		}
		var fb []int
		for _, x := range append(slices.Clone(n.failover), p.stable) {
			if x != n.target && !slices.Contains(fb, x) {
				fb = append(fb, x)
			}
		}
		p.targets[n.target].fallbacks = fb
	}
	for i := range p.targets {
		if p.targets[i].fallbacks == nil && i != p.stable {
			p.targets[i].fallbacks = []int{p.stable}
		}
	}
	return p
}

func (p *trafficPlan) hasSubset(name string) bool {
	for _, t := range p.targets {
		if t.subset == name && t.unsupported == "" {
			return true
		}
	}
	return false
}

// stableTarget is where the default path leads: a router's catch-all, a
// splitter's heaviest split, a resolver's target.
func (p *trafficPlan) stableTarget() int {
	n := p.start
	for range len(p.nodes) + 1 {
		node := &p.nodes[n]
		switch node.kind {
		case nodeRouter:
			if len(node.routes) == 0 {
				return 0
			}
			n = node.routes[len(node.routes)-1].next
		case nodeSplitter:
			best := 0
			for i, s := range node.splits {
				if s.weight > node.splits[best].weight {
					best = i
				}
			}
			n = node.splits[best].next
		default:
			return node.target
		}
	}
	return 0
}

// compileSplits turns weights (percent, 0.01 resolution) into cumulative
// thresholds in the splits' order: raising one split's weight moves only
// the buckets next to its edge, so a ramp only moves callers one way.
func compileSplits(splits []*api.DiscoverySplit, nodeOf map[string]int) []planSplit {
	out := make([]planSplit, 0, len(splits))
	var sum float64
	for _, s := range splits {
		sum += float64(s.Weight)
		out = append(out, planSplit{upto: int(math.Round(sum * buckets / 100)), weight: s.Weight, next: nodeOf[s.NextNode]})
	}
	if len(out) > 0 {
		out[len(out)-1].upto = buckets
	}
	return out
}

func compileRoute(i int, r *api.DiscoveryRoute, next int, note func(string, ...any)) planRoute {
	pr := planRoute{next: next, desc: "any call"}
	var m *api.ServiceRouteHTTPMatch
	if r.Definition != nil && r.Definition.Match != nil {
		m = r.Definition.Match.HTTP
	}
	if m != nil {
		var desc []string
		pr.ignoreCase = m.CaseInsensitive
		switch {
		case m.PathExact != "":
			pr.exact = m.PathExact
			desc = append(desc, "path = "+m.PathExact)
		case m.PathPrefix != "" && m.PathPrefix != "/":
			pr.prefix = m.PathPrefix
			desc = append(desc, "path prefix "+m.PathPrefix)
		case m.PathRegex != "":
			expr := "^(?:" + m.PathRegex + ")$"
			if m.CaseInsensitive {
				expr = "(?i)" + expr
			}
			re, err := regexp.Compile(expr)
			if err != nil {
				note("service-router rule %d: path_regex %q does not compile (%v): the rule never matches", i, m.PathRegex, err)
				pr.never = true
			}
			pr.regex = re
			desc = append(desc, "path ~ "+m.PathRegex)
		}
		for _, h := range m.Header {
			hm := headerMatch{name: textproto.CanonicalMIMEHeaderKey(h.Name), present: h.Present, exact: h.Exact, prefix: h.Prefix, suffix: h.Suffix, invert: h.Invert}
			d := "header " + h.Name
			switch {
			case h.Present:
				d += " present"
			case h.Regex != "":
				re, err := regexp.Compile("^(?:" + h.Regex + ")$")
				if err != nil {
					note("service-router rule %d: header %s regex %q does not compile (%v): the rule never matches", i, h.Name, h.Regex, err)
					pr.never = true
				}
				hm.regex = re
				d += " ~ " + h.Regex
			case h.Prefix != "" || h.Suffix != "":
				d += " like " + h.Prefix + "*" + h.Suffix
			default:
				d += " = " + h.Exact
			}
			if h.Invert {
				d = "not " + d
			}
			pr.headers = append(pr.headers, hm)
			desc = append(desc, d)
		}
		if len(m.QueryParam) > 0 {
			note("service-router rule %d matches on query parameters, which a gRPC call does not carry: the rule never matches", i)
			pr.never = true
		}
		if len(m.Methods) > 0 && !slices.ContainsFunc(m.Methods, func(s string) bool { return strings.EqualFold(s, "POST") }) {
			pr.never = true // every gRPC call is a POST
			desc = append(desc, "methods "+strings.Join(m.Methods, ","))
		}
		if len(desc) > 0 {
			pr.desc = strings.Join(desc, ", ")
		}
	}
	if r.Definition != nil && r.Definition.Destination != nil {
		d := r.Definition.Destination
		pr.timeout = d.RequestTimeout
		var ignored []string
		if d.PrefixRewrite != "" {
			ignored = append(ignored, "prefix_rewrite")
		}
		if d.IdleTimeout != 0 {
			ignored = append(ignored, "idle_timeout")
		}
		if d.NumRetries != 0 || d.RetryOnConnectFailure || len(d.RetryOnStatusCodes) > 0 || len(d.RetryOn) > 0 {
			ignored = append(ignored, "retries (the method's portico.v1 retry policy applies)")
		}
		if d.RequestHeaders != nil || d.ResponseHeaders != nil {
			ignored = append(ignored, "header modifiers")
		}
		if len(ignored) > 0 {
			note("service-router rule %d: %s ignored", i, strings.Join(ignored, ", "))
		}
	}
	return pr
}
