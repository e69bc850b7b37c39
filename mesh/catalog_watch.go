package mesh

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/resolver"
)

// What the catalog makes of its watches' answers (watch.go runs the
// blocking queries): the service list starts and removes services, and each
// service's instances become the state its resolver is pushed.

// catalogWatch runs the catalog's Consul queries, the service list and each
// service's instances, in goroutines the catalog owns (it calls services and
// instances in them), and tells the catalog's readers what they found. It
// has no lock of its own: health has one, and the signals are channels.
type catalogWatch struct {
	cfg    ConsulConfig
	client *api.Client
	log    *zap.Logger
	health *watchHealth

	changed  chan struct{}
	listed   chan struct{} // closed after the first service list
	listOnce sync.Once
}

func newCatalogWatch(cfg ConsulConfig, client *api.Client, log *zap.Logger) *catalogWatch {
	return &catalogWatch{
		cfg: cfg, client: client, log: log, health: newWatchHealth(),
		changed: make(chan struct{}, 1), listed: make(chan struct{}),
	}
}

func (w *catalogWatch) limiter() *rate.Limiter {
	return rate.NewLimiter(rate.Limit(w.cfg.QueryRate), 5)
}

// services delivers the service list until ctx ends.
func (w *catalogWatch) services(ctx context.Context, deliver func(all map[string][]string, resync bool)) {
	watchResync(ctx, "catalog-services", w.limiter(), w.health, w.log, w.cfg.WaitTime,
		func(q *api.QueryOptions) (map[string][]string, *api.QueryMeta, error) {
			return w.client.Catalog().Services(q)
		},
		deliver)
}

// instances delivers every instance of service name, whatever its health,
// until ctx ends: the catalog filters passing ones itself, so that it can
// tell an instance that failed its check (removed at once) from one Consul
// does not know right now (kept for the grace period).
func (w *catalogWatch) instances(ctx context.Context, name string, deliver func(entries []*api.ServiceEntry, resync bool)) {
	watchResync(ctx, "health/"+name, w.limiter(), w.health, w.log, w.cfg.WaitTime,
		func(q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
			return w.client.Health().Service(name, w.cfg.Tag, false, q)
		},
		deliver)
}

// forget drops the health of service name's watches, once stopped.
func (w *catalogWatch) forget(name string) {
	w.health.forget("health/" + name)
	w.health.forget("discovery-chain/" + name)
}

// notify signals Changed; a signal already pending covers this one.
func (w *catalogWatch) notify() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// markListed closes listed, after the first service list.
func (w *catalogWatch) markListed() { w.listOnce.Do(func() { close(w.listed) }) }

// setServices starts and stops per-service watches as services gain or lose
// the expose tag. It only runs on successful answers, so a Consul outage
// never empties the set; a service missing from an answer is removed after
// its grace period (at once without one), unless it is back by then.
func (c *Catalog) setServices(all map[string][]string, resync bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	want := map[string]bool{}
	for name, tags := range all {
		if slices.Contains(tags, c.cfg.Consul.Tag) {
			want[name] = true
		}
	}
	changed := false
	for name := range want {
		if _, ok := c.services[name]; ok {
			continue
		}
		svc, err := c.startService(name)
		if err != nil {
			c.log.Error("cannot watch consul service", zap.String("service", name), zap.Error(err))
			continue
		}
		c.services[name] = svc
		c.log.Info("consul service exposed", zap.String("service", name))
		changed = true
	}
	for name, svc := range c.services {
		if !want[name] && c.cfg.Consul.ServiceGrace == 0 {
			c.removeLocked(svc)
			c.log.Info("consul service no longer exposed; closing its connections after the drain period",
				zap.String("service", name), zap.Duration("drain", c.cfg.Consul.DrainAfterDeregister))
			changed = true
			continue
		}
		svc.mu.Lock()
		if svc.listed != want[name] {
			svc.listed = want[name]
			c.reviewGraceLocked(svc, resync)
		}
		svc.mu.Unlock()
	}
	if changed {
		c.watch.notify()
	}
	c.watch.markListed()
}

// removeLocked stops watching svc and closes its connection after the
// drain period; c.mu is held. Its routes go at the next table build.
func (c *Catalog) removeLocked(svc *catalogService) {
	delete(c.services, svc.name)
	c.removed++
	svc.mu.Lock()
	svc.removed = true
	if svc.grace != nil {
		svc.grace.stop()
		svc.grace = nil
	}
	svc.mu.Unlock()
	svc.cancel()
	svc.outliers.stop()
	c.watch.forget(svc.name)
	c.traffic.forget(svc.name)
	c.conns.drain(svc.conn)
}

// startService opens the connection of the exposed service name and starts
// watching its instances, until svc.cancel or Close.
func (c *Catalog) startService(name string) (*catalogService, error) {
	svc, err := c.conns.newService(name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(c.ctx)
	svc.cancel = cancel
	c.wg.Go(func() {
		c.watch.instances(ctx, name, func(entries []*api.ServiceEntry, resync bool) {
			if c.updateInstances(svc, entries, resync) {
				c.watch.notify()
			}
		})
	})
	if c.cfg.Traffic.ChainsEnabled() {
		c.wg.Go(func() {
			c.watch.chain(ctx, name, func(a chainAnswer) { c.setPlan(svc, a) }, func() { c.planUnread(svc) })
		})
	}
	return svc, nil
}

// updateInstances takes Consul's answer about svc's instances (every
// registered one, any health), pushes the ones to serve to the resolver and
// reports whether what they serve may have changed.
func (c *Catalog) updateInstances(svc *catalogService, entries []*api.ServiceEntry, resync bool) bool {
	svc.mu.Lock()
	first := svc.state == nil
	prevN := svc.instances
	svc.entries = entries
	changed := c.resolveLocked(svc, c.cfg.Consul.ServiceGrace > 0)
	c.reviewGraceLocked(svc, resync)
	n, holding := svc.instances, svc.holding
	svc.mu.Unlock()
	svc.push()
	if first || prevN != n {
		passingN := 0
		for _, e := range entries {
			if passing(e) {
				passingN++
			}
		}
		fields := []zap.Field{zap.String("service", svc.name), zap.Int("passing", passingN)}
		if holding != holdNone {
			fields = append(fields, zap.Int("serving", n), zap.String("kept", string(holding)))
		}
		c.log.Info("consul instances", fields...)
	}
	return changed
}

// resolveLocked recomputes what svc serves from Consul's last answer and
// what it served so far, keeping what Consul does not confirm only with
// hold; svc.mu is held. It reports whether what the instances serve may
// have changed.
func (c *Catalog) resolveLocked(svc *catalogService, hold bool) bool {
	serve, why := selectInstances(svc.entries, svc.serving, hold)
	eps := make([]resolver.Endpoint, 0, len(serve))
	var versions []string
	for _, e := range serve {
		addr := withTraffic(resolver.Address{Addr: entryAddr(e), ServerName: svc.name}, svc.traffic)
		addr = WithExpectedIdentity(addr, ServiceID("", e.Service.Namespace, e.Node.Datacenter, e.Service.Service))
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{addr}})
		if h := e.Service.Meta[MetaDescriptors]; h != "" {
			versions = append(versions, "hash:"+h)
		} else {
			versions = append(versions, "id:"+e.Service.ID)
		}
	}
	slices.Sort(versions)
	version := strings.Join(slices.Compact(versions), ",")
	svc.state, svc.instances, svc.serving, svc.holding = &resolver.State{Endpoints: eps}, len(eps), serve, why
	svc.rebuildRoutingLocked()
	changed := version != svc.version
	svc.version = version
	return changed && len(eps) > 0
}
