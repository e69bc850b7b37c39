package mesh

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// trafficConn carries the calls of one Consul service through its
// discovery chain: it decides each call's target (traffic.go) and hands
// the call to the service's connection, whose picker keeps to that
// target's instances. It is the Conn of the service's routes.
type trafficConn struct {
	svc       *catalogService
	fallbacks *prometheus.CounterVec // service, from, to
}

// IdempotentCall marks a call that may be repeated. One that a canary
// subset fails with UNAVAILABLE (before any byte reached the client) is
// tried once more on the stable subset, if Budget (a retry budget; nil:
// none) allows.
type IdempotentCall struct {
	grpc.EmptyCallOption
	Budget func() bool
}

// Invoke implements grpc.ClientConnInterface.
func (t *trafficConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	st := t.svc.traffic.routing.Load()
	if st == nil || !st.plan.configured {
		return t.svc.conn.Invoke(ctx, method, args, reply, opts...)
	}
	d := st.plan.decide(method, callerFrom(ctx), st.members)
	if c := st.plan.targets[d.target].requests; c != nil {
		c.Inc()
	}
	if d.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.timeout)
		defer cancel()
	}
	err := t.svc.conn.Invoke(withPick(ctx, st.sel[d.target]), method, args, reply, opts...)
	if err == nil || d.override || ctx.Err() != nil || status.Code(err) != codes.Unavailable {
		return err
	}
	if unsent(err) {
		// Never sent: the resolver's failover targets, then the stable
		// subset, then any instance that serves the method (one only a
		// newer version has, during a rollout), whatever the call.
		for _, to := range st.plan.fallbacks(d.target) {
			t.fellBack(st.plan, d.target, to)
			if err = t.svc.conn.Invoke(withPick(ctx, st.sel[to]), method, args, reply, opts...); !unsent(err) {
				return err
			}
		}
		t.fellBack(st.plan, d.target, -1)
		return t.svc.conn.Invoke(withPick(ctx, st.any), method, args, reply, opts...)
	}
	// An instance of a canary failed it: once more on the stable subset,
	// if the call may be repeated and its budget allows.
	if stable := st.plan.stable; d.target != stable && fallbackAllowed(opts) {
		t.fellBack(st.plan, d.target, stable)
		return t.svc.conn.Invoke(withPick(ctx, st.sel[stable]), method, args, reply, opts...)
	}
	return err
}

func (t *trafficConn) fellBack(p *trafficPlan, from, to int) {
	if t.fallbacks != nil {
		t.fallbacks.WithLabelValues(t.svc.name, p.subsetLabel(from), p.subsetLabel(to)).Inc()
	}
}

// fallbackAllowed reports whether opts mark an idempotent call whose
// budget grants one more try.
func fallbackAllowed(opts []grpc.CallOption) bool {
	for _, o := range opts {
		if ic, ok := o.(IdempotentCall); ok {
			return ic.Budget == nil || ic.Budget()
		}
	}
	return false
}

// NewStream implements grpc.ClientConnInterface. A stream is routed as a
// unary call is; it goes elsewhere only when the picker refused it (it
// was never sent), since its first message may already have reached the
// client otherwise.
func (t *trafficConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	st := t.svc.traffic.routing.Load()
	if st == nil || !st.plan.configured {
		return t.svc.conn.NewStream(ctx, desc, method, opts...)
	}
	d := st.plan.decide(method, callerFrom(ctx), st.members)
	if c := st.plan.targets[d.target].requests; c != nil {
		c.Inc()
	}
	cs, err := t.svc.conn.NewStream(withPick(ctx, st.sel[d.target]), desc, method, opts...)
	if err == nil || d.override || !unsent(err) {
		return cs, err
	}
	for _, to := range st.plan.fallbacks(d.target) {
		t.fellBack(st.plan, d.target, to)
		if cs, err = t.svc.conn.NewStream(withPick(ctx, st.sel[to]), desc, method, opts...); !unsent(err) {
			return cs, err
		}
	}
	t.fellBack(st.plan, d.target, -1)
	return t.svc.conn.NewStream(withPick(ctx, st.any), desc, method, opts...)
}

// fallbacks are the targets a call refused by target's instances goes to
// in turn: the failover targets of its resolver, then the stable target.
func (p *trafficPlan) fallbacks(target int) []int {
	return p.targets[target].fallbacks
}

// subsetLabel names target t in metrics: its subset, "default", or "any"
// (t -1: any instance serving the method).
func (p *trafficPlan) subsetLabel(t int) string {
	if t < 0 {
		return "any"
	}
	if s := p.targets[t].subset; s != "" {
		return s
	}
	return "default"
}

// trafficMetrics are the traffic router's collectors, one set per catalog.
type trafficMetrics struct {
	requests  *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
}

func newTrafficMetrics() *trafficMetrics {
	return &trafficMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_traffic_requests_total",
			Help: "Calls of Consul services with a configured discovery chain, by the subset the chain routed them to.",
		}, []string{"service", "subset"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_traffic_fallbacks_total",
			Help: "Idempotent calls a canary subset failed with UNAVAILABLE, tried again on the stable subset.",
		}, []string{"service", "from", "to"}),
	}
}

// forgetSubset drops the series of a subset a service's chain no longer has.
func (m *trafficMetrics) forgetSubset(service, subset string) {
	m.requests.DeleteLabelValues(service, subset)
	m.fallbacks.DeletePartialMatch(prometheus.Labels{"service": service, "from": subset})
	m.fallbacks.DeletePartialMatch(prometheus.Labels{"service": service, "to": subset})
}

// forget drops the series of a service that left.
func (m *trafficMetrics) forget(service string) {
	m.requests.DeletePartialMatch(prometheus.Labels{"service": service})
	m.fallbacks.DeletePartialMatch(prometheus.Labels{"service": service})
}
