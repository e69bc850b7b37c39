package mesh

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/credentials/insecure"
)

// fakeConsul serves the two blocking queries the catalog makes
// (/v1/catalog/services and /v1/health/service/:name) from a state the
// test changes; a change bumps the index and wakes blocked queries.
type fakeConsul struct {
	mu       sync.Mutex
	index    uint64
	wake     chan struct{} // closed at the next change
	down     bool
	services map[string][]*api.ServiceEntry
}

func newFakeConsul(t *testing.T) (*fakeConsul, *api.Client) {
	f := &fakeConsul{index: 100, wake: make(chan struct{}), services: map[string][]*api.ServiceEntry{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = strings.TrimPrefix(srv.URL, "http://")
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f, client
}

// change applies mut and bumps the index; index, if non-zero, sets it
// instead (lower: what a restarted agent may answer).
func (f *fakeConsul) change(index uint64, mut func(s map[string][]*api.ServiceEntry)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	mut(f.services)
	f.index++
	if index != 0 {
		f.index = index
	}
	close(f.wake)
	f.wake = make(chan struct{})
}

// setDown makes every query fail (a Consul without a leader) or answer.
func (f *fakeConsul) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	close(f.wake)
	f.wake = make(chan struct{})
}

func (f *fakeConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	index, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait, _ := time.ParseDuration(q.Get("wait"))
	f.mu.Lock()
	if index > 0 && index == f.index {
		wake := f.wake
		f.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-wake:
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
		f.mu.Lock()
	}
	defer f.mu.Unlock()
	if f.down {
		http.Error(w, "No cluster leader", http.StatusInternalServerError)
		return
	}
	w.Header().Set("X-Consul-Index", strconv.FormatUint(f.index, 10))
	w.Header().Set("X-Consul-KnownLeader", "true")
	var body any
	switch name, ok := strings.CutPrefix(r.URL.Path, "/v1/health/service/"); {
	case r.URL.Path == "/v1/catalog/services":
		all := map[string][]string{"consul": {}}
		for name, entries := range f.services {
			var tags []string
			for _, e := range entries {
				tags = append(tags, e.Service.Tags...)
			}
			slices.Sort(tags)
			if len(entries) > 0 {
				all[name] = slices.Compact(tags)
			}
		}
		body = all
	case ok:
		out := []*api.ServiceEntry{}
		for _, e := range f.services[name] {
			if (q.Get("tag") == "" || slices.Contains(e.Service.Tags, q.Get("tag"))) && (!q.Has("passing") || passing(e)) {
				out = append(out, e)
			}
		}
		body = out
	default:
		http.NotFound(w, r)
		return
	}
	_ = json.NewEncoder(w).Encode(body)
}

// instance is a registered instance of service on port, whose service
// check has status and output.
func instance(service string, port int, status, output string) *api.ServiceEntry {
	id := fmt.Sprintf("%s-%d", service, port)
	return &api.ServiceEntry{
		Node:    &api.Node{Node: "node-1", Address: "127.0.0.1", Datacenter: "dc1"},
		Service: &api.AgentService{ID: id, Service: service, Tags: []string{"portico"}, Port: port},
		Checks: api.HealthChecks{
			{Node: "node-1", CheckID: "serfHealth", Status: api.HealthPassing, Output: "Agent alive and reachable"},
			{Node: "node-1", CheckID: "service:" + id, ServiceID: id, Status: status, Output: output},
		},
	}
}

func up(service string, port int) *api.ServiceEntry {
	return instance(service, port, api.HealthPassing, "gRPC check: success")
}

// fakeClock runs the grace timers when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at   time.Time
	f    func()
	done bool // fired or stopped
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.done
		t.done = true
		return was
	}
}

// Advance moves time on and runs the timers due, in this goroutine.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for _, t := range c.timers {
		if !t.done && !t.at.After(c.now) {
			t.done = true
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// pending counts the timers neither fired nor stopped.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.done {
			n++
		}
	}
	return n
}

const testGrace = 30 * time.Second

type catalogFixture struct {
	*Catalog
	consul *fakeConsul
	clock  *fakeClock
	logs   *observer.ObservedLogs
}

// newTestCatalog watches a fake Consul holding initial, with a fake clock
// for the grace; it returns once the first answers are in.
func newTestCatalog(t *testing.T, grace time.Duration, initial ...*api.ServiceEntry) *catalogFixture {
	t.Helper()
	consul, client := newFakeConsul(t)
	consul.change(0, func(s map[string][]*api.ServiceEntry) {
		for _, e := range initial {
			s[e.Service.Service] = append(s[e.Service.Service], e)
		}
	})
	cfg := DefaultConfig()
	cfg.Consul.Address = "fake"
	cfg.Consul.QueryRate = 1000
	cfg.Consul.WaitTime = 5 * time.Second
	cfg.Consul.DrainAfterDeregister = time.Millisecond
	cfg.Consul.ServiceGrace = grace
	off := false
	cfg.Traffic.Chains = &off // the fake serves the catalog and health only
	core, logs := observer.New(zapcore.InfoLevel)
	c := NewCatalog(cfg, CatalogParams{Client: client, Creds: insecure.NewCredentials(), Log: zap.New(core)})
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	c.clock = clk
	c.Start()
	t.Cleanup(func() { _ = c.Close() })
	if err := c.WaitSynced(t.Context()); err != nil {
		t.Fatal(err)
	}
	return &catalogFixture{Catalog: c, consul: consul, clock: clk, logs: logs}
}

// waitFor polls cond until it holds, for at most 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) || t.Context().Err() != nil {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// served is what the resolver of service gets now: the instance ports,
// and why some are kept.
func (f *catalogFixture) served(service string) (ports []string, why holdReason) {
	f.mu.Lock()
	svc := f.services[service]
	f.mu.Unlock()
	if svc == nil {
		return nil, ""
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.state == nil {
		return nil, "(no answer yet)"
	}
	for _, ep := range svc.state.Endpoints {
		ports = append(ports, ep.Addresses[0].Addr[strings.LastIndex(ep.Addresses[0].Addr, ":")+1:])
	}
	slices.Sort(ports)
	return ports, svc.holding
}

func (f *catalogFixture) waitServed(t *testing.T, service string, why holdReason, ports ...string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s served on %v (%q)", service, ports, why), func() bool {
		got, w := f.served(service)
		return slices.Equal(got, ports) && w == why
	})
}

// listed reports whether the last catalog answer listed service.
func (f *catalogFixture) listed(service string) bool {
	f.mu.Lock()
	svc := f.services[service]
	f.mu.Unlock()
	svc.mu.Lock()
	defer svc.mu.Unlock()
	return svc.listed
}

// metric reads the value of one of the catalog's collectors.
func (f *catalogFixture) metric(t *testing.T, name string) float64 {
	t.Helper()
	for _, col := range f.Collectors() {
		ch := make(chan prometheus.Metric, 1)
		col.Collect(ch)
		m := <-ch
		if !strings.Contains(m.Desc().String(), `"`+name+`"`) {
			continue
		}
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		if pb.Gauge != nil {
			return pb.Gauge.GetValue()
		}
		return pb.Counter.GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestCatalogGraceAgentRestart: a restarted agent first answers with an
// empty catalog (its index gone backwards), then with the instances
// registered but their checks not run, then passing. Throughout, the
// service keeps its routes and both instances; afterwards nothing is
// left of the grace.
func TestCatalogGraceAgentRestart(t *testing.T) {
	f := newTestCatalog(t, testGrace, up("products", 1), up("products", 2))
	f.waitServed(t, "products", holdNone, "1", "2")

	f.consul.setDown(true)
	waitFor(t, "watch failing", func() bool { return !f.Status().Healthy })
	f.consul.setDown(false)
	f.consul.change(5, func(s map[string][]*api.ServiceEntry) { clear(s) })
	waitFor(t, "products in grace", func() bool { return slices.Equal(f.InGrace(), []string{"products"}) && !f.listed("products") })
	f.waitServed(t, "products", holdNoInstance, "1", "2")
	if got := f.Targets(); !slices.Equal(got, []string{"consul:products"}) {
		t.Fatalf("targets during the grace: %v", got)
	}
	if got := f.metric(t, "portico_consul_services_in_grace"); got != 1 {
		t.Fatalf("portico_consul_services_in_grace = %v, want 1", got)
	}

	// Registered again, checks not run yet.
	f.consul.change(6, func(s map[string][]*api.ServiceEntry) {
		s["products"] = []*api.ServiceEntry{instance("products", 1, api.HealthCritical, ""), instance("products", 2, api.HealthCritical, "")}
	})
	f.waitServed(t, "products", holdUnchecked, "1", "2")
	waitFor(t, "products listed again", func() bool { return f.listed("products") })
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) { s["products"][0] = up("products", 1) })
	f.waitServed(t, "products", holdUnchecked, "1", "2")
	if got := f.InGrace(); len(got) != 1 {
		t.Fatalf("in grace with one check not run: %v", got)
	}
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) { s["products"][1] = up("products", 2) })
	waitFor(t, "grace over", func() bool { return len(f.InGrace()) == 0 })
	f.waitServed(t, "products", holdNone, "1", "2")

	if n := f.clock.pending(); n != 0 {
		t.Fatalf("%d grace timers still pending", n)
	}
	f.clock.Advance(2 * testGrace)
	if got := f.Targets(); !slices.Equal(got, []string{"consul:products"}) || f.Removed() != 0 {
		t.Fatalf("after the grace: targets %v, removed %d", got, f.Removed())
	}
	start := f.logs.FilterMessage("consul service missing; keeping its routes and last known instances for the grace period").All()
	if len(start) != 1 || start[0].ContextMap()["service"] != "products" || start[0].ContextMap()["hint"] == nil {
		t.Fatalf("grace start logged %d times: %v", len(start), start)
	}
	if back := f.logs.FilterMessage("consul service back within the grace period").Len(); back != 1 {
		t.Fatalf("grace end logged %d times", back)
	}
}

// TestCatalogGraceFacts: what Consul knows for sure is applied at once,
// grace or not: a failed check, maintenance, a deregistration while other
// instances remain, and a new instance only once it passes.
func TestCatalogGraceFacts(t *testing.T) {
	f := newTestCatalog(t, testGrace, up("products", 1), up("products", 2), up("products", 3))
	f.waitServed(t, "products", holdNone, "1", "2", "3")

	f.consul.change(0, func(s map[string][]*api.ServiceEntry) {
		s["products"][0] = instance("products", 1, api.HealthCritical, "gRPC check: NOT_SERVING")
	})
	f.waitServed(t, "products", holdNone, "2", "3")

	f.consul.change(0, func(s map[string][]*api.ServiceEntry) {
		e := up("products", 2)
		e.Checks = append(e.Checks, &api.HealthCheck{CheckID: api.ServiceMaintPrefix + "products-2", Status: api.HealthCritical})
		s["products"][1] = e
	})
	f.waitServed(t, "products", holdNone, "3")

	f.consul.change(0, func(s map[string][]*api.ServiceEntry) {
		s["products"] = []*api.ServiceEntry{s["products"][0], s["products"][1], up("products", 3), instance("products", 4, api.HealthCritical, "")}
	})
	f.waitServed(t, "products", holdNone, "3")
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) { s["products"][3] = up("products", 4) })
	f.waitServed(t, "products", holdNone, "3", "4")

	f.consul.change(0, func(s map[string][]*api.ServiceEntry) { s["products"] = s["products"][3:] })
	f.waitServed(t, "products", holdNone, "4")
	if got := f.InGrace(); len(got) != 0 {
		t.Fatalf("in grace: %v", got)
	}
	if n := f.clock.pending(); n != 0 {
		t.Fatalf("%d grace timers started", n)
	}
}

// TestCatalogGraceRegistrationsLost: an agent that lost its registrations
// removes the instances one by one; they register again one by one, their
// checks not run yet. The balancer never goes empty, and a new instance
// still joins only once it passes.
func TestCatalogGraceRegistrationsLost(t *testing.T) {
	f := newTestCatalog(t, testGrace, up("products", 1), up("products", 2))
	f.waitServed(t, "products", holdNone, "1", "2")
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) { s["products"] = s["products"][1:] })
	f.waitServed(t, "products", holdNone, "2")
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) { delete(s, "products") })
	f.waitServed(t, "products", holdNoInstance, "2")
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) {
		s["products"] = []*api.ServiceEntry{instance("products", 1, api.HealthCritical, "")}
	})
	waitFor(t, "products listed again", func() bool { return f.listed("products") })
	f.waitServed(t, "products", holdNoInstance, "2")
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) { s["products"][0] = up("products", 1) })
	f.waitServed(t, "products", holdNone, "1")
	waitFor(t, "grace over", func() bool { return len(f.InGrace()) == 0 })
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) {
		s["products"] = append(s["products"], instance("products", 2, api.HealthCritical, ""))
	})
	time.Sleep(50 * time.Millisecond)
	f.waitServed(t, "products", holdNone, "1")
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) { s["products"][1] = up("products", 2) })
	f.waitServed(t, "products", holdNone, "1", "2")
	if len(f.InGrace()) != 0 || f.Removed() != 0 {
		t.Fatalf("in grace %v, removed %d", f.InGrace(), f.Removed())
	}
}

// TestCatalogGraceExpires: a service that leaves and does not come back
// keeps its routes and last instance until the grace ends, then is removed:
// counted, logged with how long it was gone, its routes signalled away.
func TestCatalogGraceExpires(t *testing.T) {
	f := newTestCatalog(t, testGrace, up("products", 1), up("users", 7))
	f.waitServed(t, "products", holdNone, "1")
	for len(f.Changed()) > 0 {
		<-f.Changed()
	}

	f.consul.change(0, func(s map[string][]*api.ServiceEntry) { delete(s, "products") })
	waitFor(t, "products in grace", func() bool { return slices.Equal(f.InGrace(), []string{"products"}) && !f.listed("products") })
	f.waitServed(t, "products", holdNoInstance, "1")
	f.clock.Advance(testGrace - time.Millisecond)
	if got := f.Targets(); !slices.Equal(got, []string{"consul:products", "consul:users"}) {
		t.Fatalf("targets before the grace ends: %v", got)
	}
	f.clock.Advance(time.Millisecond)
	if got := f.Targets(); !slices.Equal(got, []string{"consul:users"}) {
		t.Fatalf("targets after the grace: %v", got)
	}
	select {
	case <-f.Changed():
	default:
		t.Fatal("no change signalled for the removal")
	}
	if got := f.metric(t, "portico_consul_services_removed_total"); got != 1 {
		t.Fatalf("portico_consul_services_removed_total = %v, want 1", got)
	}
	if got := f.metric(t, "portico_consul_services_in_grace"); got != 0 {
		t.Fatalf("portico_consul_services_in_grace = %v, want 0", got)
	}
	gone := f.logs.FilterMessage("consul service gone for longer than the grace period; removing its routes").All()
	if len(gone) != 1 {
		t.Fatalf("removal logged %d times", len(gone))
	}
	if m := gone[0].ContextMap(); m["service"] != "products" || m["gone"] != testGrace || gone[0].Level != zapcore.WarnLevel {
		t.Fatalf("removal log: %v %v", gone[0].Level, m)
	}

	// It comes back later: a new service, exposed at once.
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) { s["products"] = []*api.ServiceEntry{up("products", 1)} })
	waitFor(t, "products back", func() bool { return slices.Contains(f.Targets(), "consul:products") })
	f.waitServed(t, "products", holdNone, "1")
}

// TestCatalogGraceUncheckedExpires: instances whose checks never run are
// served for the grace period only; the service, still listed, keeps its
// routes.
func TestCatalogGraceUncheckedExpires(t *testing.T) {
	f := newTestCatalog(t, testGrace, up("products", 1), up("products", 2))
	f.waitServed(t, "products", holdNone, "1", "2")
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) {
		s["products"] = []*api.ServiceEntry{instance("products", 1, api.HealthCritical, ""), up("products", 2)}
	})
	f.waitServed(t, "products", holdUnchecked, "1", "2")
	f.clock.Advance(testGrace)
	f.waitServed(t, "products", holdNone, "2")
	if got := f.Targets(); !slices.Equal(got, []string{"consul:products"}) || f.Removed() != 0 {
		t.Fatalf("targets %v, removed %d", got, f.Removed())
	}
	if n := f.logs.FilterMessage("consul never confirmed the instances kept for the grace period; serving only passing ones").Len(); n != 1 {
		t.Fatalf("logged %d times", n)
	}
	// Still not run at the next answer: not served again.
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) { s["products"][1] = up("products", 2) })
	time.Sleep(50 * time.Millisecond)
	f.waitServed(t, "products", holdNone, "2")
}

// TestCatalogNoGrace: with service_grace 0 a service that leaves the
// catalog is removed at once, as are instances nobody registers any more.
func TestCatalogNoGrace(t *testing.T) {
	f := newTestCatalog(t, 0, up("products", 1), up("users", 7))
	f.waitServed(t, "products", holdNone, "1")
	f.consul.change(0, func(s map[string][]*api.ServiceEntry) {
		s["users"] = []*api.ServiceEntry{instance("users", 7, api.HealthCritical, "")}
		delete(s, "products")
	})
	waitFor(t, "products removed", func() bool { return slices.Equal(f.Targets(), []string{"consul:users"}) })
	f.waitServed(t, "users", holdNone)
	if f.Removed() != 1 || len(f.InGrace()) != 0 || f.clock.pending() != 0 {
		t.Fatalf("removed %d, in grace %v, timers %d", f.Removed(), f.InGrace(), f.clock.pending())
	}
}

func TestSelectInstances(t *testing.T) {
	p1, p2 := up("s", 1), up("s", 2)
	fresh1 := instance("s", 1, api.HealthCritical, "")
	failed1 := instance("s", 1, api.HealthCritical, "dial tcp: connection refused")
	warn1 := instance("s", 1, api.HealthWarning, "slow")
	fresh3 := instance("s", 3, api.HealthCritical, "")
	maint1 := up("s", 1)
	maint1.Checks = append(maint1.Checks, &api.HealthCheck{CheckID: api.ServiceMaintPrefix + "s-1", Status: api.HealthCritical})
	nodeDown1 := up("s", 1)
	nodeDown1.Checks[0] = &api.HealthCheck{CheckID: "serfHealth", Status: api.HealthCritical, Output: "Agent not live or unreachable"}
	ports := func(es []*api.ServiceEntry) []int {
		out := []int{}
		for _, e := range es {
			out = append(out, e.Service.Port)
		}
		return out
	}
	for _, tt := range []struct {
		desc          string
		entries, last []*api.ServiceEntry
		hold          bool
		want          []int
		why           holdReason
	}{
		{"passing only", []*api.ServiceEntry{p1, failed1, p2}[1:], nil, true, []int{2}, holdNone},
		{"nothing registered: keep the last", nil, []*api.ServiceEntry{p1, p2}, true, []int{1, 2}, holdNoInstance},
		{"nothing registered, no hold", nil, []*api.ServiceEntry{p1, p2}, false, []int{}, holdNone},
		{"nothing registered, nothing known", nil, nil, true, []int{}, holdNone},
		{"check not run on a known instance", []*api.ServiceEntry{fresh1, p2}, []*api.ServiceEntry{p1, p2}, true, []int{1, 2}, holdUnchecked},
		{"check not run, no hold", []*api.ServiceEntry{fresh1, p2}, []*api.ServiceEntry{p1, p2}, false, []int{2}, holdNone},
		{"check not run on a new instance", []*api.ServiceEntry{fresh3, p2}, []*api.ServiceEntry{p1, p2}, true, []int{2}, holdNone},
		{"check failed", []*api.ServiceEntry{failed1, p2}, []*api.ServiceEntry{p1, p2}, true, []int{2}, holdNone},
		{"every check failed", []*api.ServiceEntry{failed1}, []*api.ServiceEntry{p1}, true, []int{}, holdNone},
		{"warning", []*api.ServiceEntry{warn1}, []*api.ServiceEntry{p1}, true, []int{}, holdNone},
		{"maintenance", []*api.ServiceEntry{maint1, p2}, []*api.ServiceEntry{p1, p2}, true, []int{2}, holdNone},
		{"node down", []*api.ServiceEntry{nodeDown1, p2}, []*api.ServiceEntry{p1, p2}, true, []int{2}, holdNone},
		{"deregistered, others remain", []*api.ServiceEntry{p2}, []*api.ServiceEntry{p1, p2}, true, []int{2}, holdNone},
		{"last deregistered, a new one not checked yet", []*api.ServiceEntry{fresh3}, []*api.ServiceEntry{p1}, true, []int{1}, holdNoInstance},
		{"last deregistered, a new one not checked yet, no hold", []*api.ServiceEntry{fresh3}, []*api.ServiceEntry{p1}, false, []int{}, holdNone},
		{"one failed, the other deregistered", []*api.ServiceEntry{failed1}, []*api.ServiceEntry{p1, p2}, true, []int{2}, holdNoInstance},
		{"one back unchecked, the other still deregistered", []*api.ServiceEntry{fresh1}, []*api.ServiceEntry{p1, p2}, true, []int{1}, holdUnchecked},
	} {
		got, why := selectInstances(tt.entries, tt.last, tt.hold)
		if !slices.Equal(ports(got), tt.want) || why != tt.why {
			t.Errorf("%s: got %v %q, want %v %q", tt.desc, ports(got), why, tt.want, tt.why)
		}
	}
}
