package mesh

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// The service grace (mesh.consul.service_grace): what Portico serves when
// Consul stops mentioning an exposed service, or its instances.
//
// A Consul agent that restarts answers before it holds its registrations
// again: its catalog may lack services (a raft log still being replayed, or
// an agent that lost its data and waits for its services to register
// again), its services may have no instance, and a check it has just
// registered or restored reads critical, without output, until its first
// run. None of that says an instance went down. So when an exposed service
// leaves the catalog, or has no instance registered and passing, or an
// instance Portico was calling has a check that has not run yet, the
// catalog keeps the service's routes and its last known instances for the
// grace period. What Consul says for sure wins at once: an instance whose
// check failed (critical with output, warning, maintenance, its node
// failing) leaves the balancer, as does one that deregistered while another
// can serve; a new instance joins once it passes. When the grace ends with
// the service still out of the catalog it loses its routes; listed again,
// it keeps only the instances Consul confirms.

// holdReason says why a service is in its grace period; "" when it is not.
type holdReason string

const (
	holdNone       holdReason = ""
	holdUnlisted   holdReason = "not in the consul catalog"
	holdNoInstance holdReason = "no instance registered and passing"
	holdUnchecked  holdReason = "checks not run since the instances were registered again"
)

// graceState is one service's current grace period.
type graceState struct {
	since time.Time
	stop  func() bool // stops the timer that ends the grace
}

// clock is time, replaceable in tests.
type clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d; stop prevents that
	// if it has not happened yet.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// passing is Consul's own `?passing` filter: every check of the instance
// and of its node passes.
func passing(e *api.ServiceEntry) bool { return e.Checks.AggregatedStatus() == api.HealthPassing }

// unchecked reports whether an instance fails only checks that have not run:
// critical without any output is how Consul registers a check (and how an
// agent restores one when it restarts) until its first run. Every check
// run leaves an output, so a check that failed never looks like this.
func unchecked(e *api.ServiceEntry) bool {
	seen := false
	for _, c := range e.Checks {
		switch {
		case c.CheckID == api.NodeMaint || strings.HasPrefix(c.CheckID, api.ServiceMaintPrefix):
			return false
		case c.Status == api.HealthPassing:
		case c.Status == api.HealthCritical && c.Output == "":
			seen = true
		default:
			return false
		}
	}
	return seen
}

// entryAddr is the address Portico dials for an instance.
func entryAddr(e *api.ServiceEntry) string {
	host := e.Service.Address
	if host == "" {
		host = e.Node.Address
	}
	return net.JoinHostPort(host, strconv.Itoa(e.Service.Port))
}

// selectInstances picks the instances to serve from Consul's answer
// (entries: every registered instance, whatever its health) and the ones
// served until now (last). Without hold it is Consul's passing filter.
// With hold it also serves a last instance whose checks have not run yet;
// and when that leaves nothing to serve, it keeps the last instances that
// Consul does not say failed (deregistered ones: an agent that lost its
// registrations deregisters every instance, one by one). It says which it
// did.
func selectInstances(entries, last []*api.ServiceEntry, hold bool) ([]*api.ServiceEntry, holdReason) {
	var known map[string]bool
	if hold {
		known = make(map[string]bool, len(last))
		for _, e := range last {
			known[entryAddr(e)] = true
		}
	}
	out := make([]*api.ServiceEntry, 0, len(entries))
	why := holdNone
	failed := map[string]bool{}
	for _, e := range entries {
		switch {
		case passing(e):
			out = append(out, e)
		case hold && known[entryAddr(e)] && unchecked(e):
			out = append(out, e)
			why = holdUnchecked
		case !unchecked(e):
			failed[entryAddr(e)] = true
		}
	}
	if len(out) > 0 || !hold {
		return out, why
	}
	for _, e := range last {
		if !failed[entryAddr(e)] {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return out, holdNone
	}
	return out, holdNoInstance
}

// reviewGraceLocked starts or ends svc's grace period after what Consul
// said changed; svc.mu is held. resync marks an answer right after Consul
// came back, for the log.
func (c *Catalog) reviewGraceLocked(svc *catalogService, resync bool) {
	why := svc.holding
	if !svc.listed {
		why = holdUnlisted
	}
	grace := c.cfg.Consul.ServiceGrace
	switch {
	case why != holdNone && svc.grace == nil && grace > 0 && !svc.removed:
		g := &graceState{since: c.clock.Now()}
		c.graceTimers.Add(1)
		stop := c.clock.AfterFunc(grace, func() {
			defer c.graceTimers.Done()
			c.endGrace(svc, g)
		})
		g.stop = func() bool {
			if stop() {
				c.graceTimers.Done()
				return true
			}
			return false
		}
		svc.grace = g
		fields := []zap.Field{zap.String("service", svc.name), zap.String("reason", string(why)), zap.Duration("grace", grace), zap.Int("instances", svc.instances)}
		if resync {
			fields = append(fields, zap.String("hint", "consul answered right after it came back or its index went backwards: likely an agent restart"))
		}
		c.log.Info("consul service missing; keeping its routes and last known instances for the grace period", fields...)
	case why == holdNone && svc.grace != nil:
		svc.grace.stop()
		gone := c.clock.Now().Sub(svc.grace.since)
		svc.grace = nil
		c.log.Info("consul service back within the grace period", zap.String("service", svc.name), zap.Duration("gone", gone), zap.Int("passing", svc.instances))
	}
}

// endGrace runs when svc's grace period g ends: a service still not in the
// catalog is removed (its routes go at the next table build); one that is
// listed again serves only what Consul confirms.
func (c *Catalog) endGrace(svc *catalogService, g *graceState) {
	c.mu.Lock()
	if c.closed || c.services[svc.name] != svc {
		c.mu.Unlock()
		return
	}
	svc.mu.Lock()
	if svc.grace != g {
		svc.mu.Unlock()
		c.mu.Unlock()
		return
	}
	svc.grace = nil
	gone := c.clock.Now().Sub(g.since).Round(time.Millisecond)
	if !svc.listed {
		svc.mu.Unlock()
		c.removeLocked(svc)
		c.mu.Unlock()
		c.log.Warn("consul service gone for longer than the grace period; removing its routes",
			zap.String("service", svc.name), zap.Duration("gone", gone), zap.Duration("grace", c.cfg.Consul.ServiceGrace))
		c.watch.notify()
		return
	}
	kept := svc.instances
	changed := c.resolveLocked(svc, false)
	now := svc.instances
	svc.mu.Unlock()
	c.mu.Unlock()
	c.log.Warn("consul never confirmed the instances kept for the grace period; serving only passing ones",
		zap.String("service", svc.name), zap.Duration("gone", gone), zap.Int("kept", kept), zap.Int("passing", now))
	svc.push()
	if changed {
		c.watch.notify()
	}
}

// InGrace lists the exposed services in their grace period now (missing
// from Consul, served from their last known state), sorted.
func (c *Catalog) InGrace() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	for name, svc := range c.services {
		svc.mu.Lock()
		if svc.grace != nil {
			names = append(names, name)
		}
		svc.mu.Unlock()
	}
	slices.Sort(names)
	return names
}

// Removed counts the exposed services removed since start because they
// left the catalog: after their grace period, or at once without one.
func (c *Catalog) Removed() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.removed
}

// Collectors are the grace period's metrics (part of Mesh.Collectors).
func (c *Catalog) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portico_consul_services_in_grace",
			Help: "Exposed services missing from Consul now (not in the catalog, no instance registered and passing, or checks not run yet) whose routes and last known instances are kept until mesh.consul.service_grace ends.",
		}, func() float64 { return float64(len(c.InGrace())) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "portico_consul_services_removed_total",
			Help: "Exposed services whose routes were removed because they left the Consul catalog for longer than mesh.consul.service_grace (at once when it is 0).",
		}, func() float64 { return float64(c.Removed()) }),
		c.traffic.requests, c.traffic.fallbacks,
	}
}
