package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/portico-dev/portico/cmd/examples/consulagent"
	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/mesh/meshtest"
)

// loadStats counts the outcome of a closed-loop load.
type loadStats struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	samples    []string
}

func (s *loadStats) fail(msg string) {
	s.failed.Add(1)
	s.mu.Lock()
	if len(s.samples) < 5 {
		s.samples = append(s.samples, msg)
	}
	s.mu.Unlock()
}

func (s *loadStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%d ok, %d failed %v", s.ok.Load(), s.failed.Load(), s.samples)
}

// load is a closed-loop load started by runLoad.
type load struct {
	t      *testing.T
	st     *loadStats
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// runLoad sends GETs to url from workers goroutines until stop is called
// (or the test ends).
func runLoad(t *testing.T, url string, workers int) *load {
	t.Helper()
	c := harness.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{t: t, st: &loadStats{}, cancel: cancel}
	for range workers {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
				resp, err := c.Do(req)
				if err != nil {
					l.st.fail(err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					l.st.fail(fmt.Sprintf("%d %s", resp.StatusCode, b))
					continue
				}
				l.st.ok.Add(1)
			}
		})
	}
	// A test that fails before stop leaves no goroutine behind.
	t.Cleanup(func() { l.stop() })
	return l
}

// stop ends the load, waits for the workers and returns the counts.
func (l *load) stop() *loadStats {
	l.once.Do(func() {
		l.cancel()
		l.wg.Wait()
	})
	return l.st
}

// succeeded waits (up to 20 s) until n more calls than now have succeeded:
// the load has run across whatever happened before, instead of for a guessed
// time.
func (l *load) succeeded(n int64) {
	l.t.Helper()
	want := l.st.ok.Load() + n
	eventuallyOr(l.t, 20*time.Second, fmt.Sprintf("%d more successful calls", n), func() (bool, string) {
		return l.st.ok.Load() >= want, l.st.String()
	})
}

// eventually polls cond every 10 ms for up to d and reports when it held.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, d)
	return time.Time{}
}

// eventuallyOr is eventually with a description of the last state.
func eventuallyOr(t *testing.T, d time.Duration, what string, cond func() (bool, string)) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	var state string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, state = cond(); ok {
			return time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s; last: %s", what, d, state)
	return time.Time{}
}

func TestConsulDiscoveryMTLSAndSelfRegistration(t *testing.T) {
	t.Parallel()
	agent := harness.Consul(t)
	a := harness.Native(t, agent, "products", harness.NativeOptions{})
	b := harness.Native(t, agent, "products", harness.NativeOptions{})
	harness.Native(t, agent, "users", harness.NativeOptions{})
	e := harness.Portico(t, func(cfg *app.Config) {
		harness.ConsulConfig(agent)(cfg)
		cfg.Mesh.LoadBalancing.Services = map[string]string{"users": mesh.BalancerLeastRequest}
	})
	c := harness.Client(t)

	eventually(t, 10*time.Second, "routes of both services (users with least_request)", func() bool {
		return do(t, c, "GET", e.URL+"/v1/products/p-1", "").code == 200 && do(t, c, "GET", e.URL+"/v1/users/alice", "").code == 200
	})
	// Routes come with the first instance Portico hears of; the spread is
	// measured once both are in rotation.
	inRotation := map[string]bool{}
	eventually(t, 10*time.Second, "both products instances in rotation", func() bool {
		inRotation[do(t, c, "GET", e.URL+"/v1/products/p-1", "").header.Get("Grpc-Metadata-X-Instance")] = true
		return inRotation[a.ID] && inRotation[b.ID]
	})
	seen := map[string]int{}
	for range 20 {
		r := do(t, c, "GET", e.URL+"/v1/products/p-2", "")
		if r.code != 200 || !strings.Contains(r.body, `"p-2"`) {
			t.Fatalf("GET product: %d %s", r.code, r.body)
		}
		seen[r.header.Get("Grpc-Metadata-X-Instance")]++
	}
	if seen[a.ID] < 5 || seen[b.ID] < 5 {
		t.Fatalf("round_robin should spread 20 calls over both instances, got %v", seen)
	}

	// Portico proves its own Connect identity: the services saw a verified
	// client certificate for "portico" (intentions are checked against it).
	id := e.Mesh.Identity.Identity()
	if id == nil || !strings.HasSuffix(id.ID, "/svc/portico") {
		t.Fatalf("portico identity: %+v", id)
	}

	// Portico registered itself with a passing check on /readyz.
	var portico string
	eventually(t, 10*time.Second, "portico registered and passing", func() bool {
		entries, _, err := agent.Client().Health().Service("portico", "", true, nil)
		if err != nil || len(entries) != 1 {
			return false
		}
		portico = entries[0].Service.ID
		return true
	})
	r := do(t, c, "GET", e.AdminURL+"/readyz", "")
	if r.code != 200 || jsonOf(t, r.body)["status"] != "ready" {
		t.Fatalf("readyz: %d %s", r.code, r.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.App.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	svcs, err := agent.Client().Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs[portico]; ok {
		t.Fatalf("portico %s still registered after shutdown", portico)
	}
}

// meshFixture is Consul, two products instances and Portico in consul mode.
type meshFixture struct {
	agent *consulagent.Agent
	a, b  *harness.Instance
	edge  *harness.Edge
	logs  *observer.ObservedLogs // Portico's, from info up
	seen  *harness.CallLog
}

func newMeshFixture(t *testing.T, extra ...string) *meshFixture {
	t.Helper()
	f := &meshFixture{agent: harness.Consul(t), seen: &harness.CallLog{}}
	f.a = harness.Native(t, f.agent, "products", harness.NativeOptions{Seen: f.seen})
	f.b = harness.Native(t, f.agent, "products", harness.NativeOptions{Seen: f.seen})
	for _, name := range extra {
		harness.Native(t, f.agent, name, harness.NativeOptions{})
	}
	f.edge, f.logs = harness.PorticoLogged(t, harness.ConsulConfig(f.agent))
	logControlPathOnFailure(t, f.logs)
	c := harness.Client(t)
	eventually(t, 10*time.Second, "products routes", func() bool {
		return do(t, c, "GET", f.edge.URL+"/v1/products/p-1", "").code == 200
	})
	return f
}

// logControlPathOnFailure logs, if t fails, what Portico logged about
// Consul and its route table: the sequence a failure needs explaining.
func logControlPathOnFailure(t *testing.T, logs *observer.ObservedLogs) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, l := range logs.All() {
			if l.LoggerName != "edge.access" && (strings.Contains(l.Message, "consul") || strings.Contains(l.Message, "route") || strings.Contains(l.Message, "upstream")) {
				t.Logf("portico %s %s: %s %v", l.Time.Format("15:04:05.000"), l.LoggerName, l.Message, l.ContextMap())
			}
		}
	})
}

// lastCallAt is the latest call instance served, or zero.
func lastCallAt(log *harness.CallLog, instance string) (last time.Time) {
	for _, c := range log.Calls() {
		if c.Instance == instance && c.At.After(last) {
			last = c.At
		}
	}
	return last
}

// firstCallAfter is the first call instance served after t, or zero.
func firstCallAfter(log *harness.CallLog, instance string, t time.Time) time.Time {
	for _, c := range log.Calls() {
		if c.Instance == instance && c.At.After(t) {
			return c.At
		}
	}
	return time.Time{}
}

// TestInstanceRemovalAndAdditionDelays measures how long after Consul
// reports a change the traffic follows it.
func TestInstanceRemovalAndAdditionDelays(t *testing.T) {
	f := newMeshFixture(t)
	load := runLoad(t, f.edge.URL+"/v1/products/p-1", 4)
	load.succeeded(50)

	// Removal: the instance's health turns NOT_SERVING; Consul's check
	// goes critical; from the moment Consul reports it, no new call.
	f.a.Server.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	reported := harness.WaitInstance(t, f.agent, "products", f.a.ID, false)
	// What is measured is an absence (no call to a later than 1 s after
	// Consul reported it), so the test has to watch that long: this sleep
	// is the observation window, not a wait for an event.
	time.Sleep(1500 * time.Millisecond)
	// Negative: traffic left before the test's 5 ms poll saw Consul's change.
	removal := lastCallAt(f.seen, f.a.ID).Sub(reported)

	// Addition: a new instance; from the moment Consul reports it passing,
	// how long until it serves its first call.
	c := harness.Native(t, f.agent, "products", harness.NativeOptions{Seen: f.seen})
	passing := harness.WaitInstance(t, f.agent, "products", c.ID, true)
	eventually(t, 5*time.Second, "new instance serving", func() bool {
		return !firstCallAfter(f.seen, c.ID, time.Time{}).IsZero()
	})
	addition := firstCallAfter(f.seen, c.ID, time.Time{}).Sub(passing)
	st := load.stop()
	t.Logf("FIGURE removal delay (Consul reports critical → last new call): %v", removal.Round(time.Millisecond))
	t.Logf("FIGURE addition delay (Consul reports passing → first call): %v", addition.Round(time.Millisecond))
	t.Logf("load: %s", st)
	if removal > time.Second {
		t.Errorf("instance still received calls %v after Consul reported it critical (want < 1s)", removal)
	}
	if addition > time.Second {
		t.Errorf("new instance received its first call %v after Consul reported it passing (want < 1s)", addition)
	}
	if st.failed.Load() != 0 {
		t.Errorf("GETs failed while an instance left and one joined: %s", st)
	}
}

// TestInstanceKilledUnderLoad: an instance crashes (connections reset, still
// registered and passing until its check fails); idempotent GETs see no
// error because UNAVAILABLE is retried on the other instance.
func TestInstanceKilledUnderLoad(t *testing.T) {
	f := newMeshFixture(t)
	load := runLoad(t, f.edge.URL+"/v1/products/p-1", 8)
	load.succeeded(100)
	before := f.b.Calls.Load()
	f.a.Kill()
	killed := time.Now()
	// The load runs across the crash until Consul's check has failed (the
	// instance was registered and passing all along) and the survivor has
	// served 100 more calls.
	harness.WaitInstance(t, f.agent, "products", f.a.ID, false)
	eventually(t, 20*time.Second, "100 calls served by the surviving instance", func() bool { return f.b.Calls.Load()-before >= 100 })
	load.succeeded(50)
	st := load.stop()
	t.Logf("load across the crash: %s", st)
	if st.failed.Load() != 0 {
		t.Fatalf("GETs failed after an instance crashed: %s", st)
	}
	if f.b.Calls.Load()-before < 100 {
		t.Fatalf("the surviving instance served only %d calls after the crash", f.b.Calls.Load()-before)
	}
	// Handlers already dispatched when the connections closed may still
	// record a call just after; nothing may start later than that.
	if last := lastCallAt(f.seen, f.a.ID); last.After(killed.Add(100 * time.Millisecond)) {
		t.Fatalf("the killed instance served a call %v after it died", last.Sub(killed))
	}
}

// TestConsulRestartUnderLoad: Consul stops; Portico keeps serving the last
// known instances, reports degraded, then recovers by itself once the agent
// is back. Then the agent loses the registrations, as one restarted without
// its data does: the service leaves the catalog until its instances
// register again (their registrar checks every 5 s), and their checks have
// not run when they do. Not one call may fail throughout: the service
// grace keeps the routes and the last known instances, which are up.
func TestConsulRestartUnderLoad(t *testing.T) {
	f := newMeshFixture(t)
	c := harness.Client(t)
	load := runLoad(t, f.edge.URL+"/v1/products/p-1", 4)
	load.succeeded(50)

	f.agent.Stop()
	eventually(t, 10*time.Second, "readyz degraded", func() bool {
		r := do(t, c, "GET", f.edge.AdminURL+"/readyz", "")
		return r.code == 200 && jsonOf(t, r.body)["status"] == "degraded"
	})
	m := do(t, c, "GET", f.edge.AdminURL+"/metrics", "")
	if !strings.Contains(m.body, "portico_consul_watch_healthy 0") {
		t.Fatalf("metric portico_consul_watch_healthy should be 0 while Consul is down:\n%s", grepLines(m.body, "portico_consul"))
	}
	load.succeeded(200) // served from the last known state meanwhile

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := f.agent.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	eventuallyOr(t, 30*time.Second, "readyz ready again", func() (bool, string) {
		r := do(t, c, "GET", f.edge.AdminURL+"/readyz", "")
		return r.code == 200 && jsonOf(t, r.body)["status"] == "ready", r.body
	})
	t.Logf("FIGURE recovered %v after Consul came back", time.Since(restarted).Round(time.Millisecond))
	load.succeeded(100)
	if st := load.stop(); st.failed.Load() != 0 {
		t.Fatalf("calls failed while Consul was down or restarting: %s", st)
	} else {
		t.Logf("load across the Consul outage: %s", st)
	}
	m = do(t, c, "GET", f.edge.AdminURL+"/metrics", "")
	if !strings.Contains(m.body, "portico_consul_watch_healthy 1") {
		t.Fatalf("metric portico_consul_watch_healthy should be back to 1:\n%s", grepLines(m.body, "portico_consul"))
	}

	// The agent forgets both registrations.
	cat := f.edge.Mesh.Catalog
	eventually(t, 20*time.Second, "products confirmed by consul after the restart", func() bool { return len(cat.InGrace()) == 0 })
	load = runLoad(t, f.edge.URL+"/v1/products/p-1", 4)
	load.succeeded(50)
	lost := time.Now()
	for _, id := range []string{f.a.ID, f.b.ID} {
		if err := f.agent.Client().Agent().ServiceDeregister(id); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "products in its grace period", func() bool { return slices.Contains(cat.InGrace(), "products") })
	if got := value(scrape(t, f.edge.AdminURL), "portico_consul_services_in_grace", nil); got != 1 {
		t.Errorf("portico_consul_services_in_grace = %v during the grace, want 1", got)
	}
	harness.WaitInstance(t, f.agent, "products", f.a.ID, true)
	harness.WaitInstance(t, f.agent, "products", f.b.ID, true)
	back := eventually(t, 10*time.Second, "products confirmed by consul again", func() bool { return len(cat.InGrace()) == 0 })
	t.Logf("FIGURE registrations lost: products kept for %v until consul confirmed both instances again", back.Sub(lost).Round(time.Millisecond))
	load.succeeded(50)
	st := load.stop()
	t.Logf("load across the lost registrations: %s", st)
	if st.failed.Load() != 0 {
		t.Fatalf("calls failed while the agent had lost the registrations: %s", st)
	}
	fams := scrape(t, f.edge.AdminURL)
	for name, want := range map[string]float64{"portico_consul_services_in_grace": 0, "portico_consul_services_removed_total": 0} {
		if got := value(fams, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	kept := f.logs.FilterMessage("consul service missing; keeping its routes and last known instances for the grace period").FilterField(zap.String("service", "products"))
	if kept.Len() == 0 || f.logs.FilterMessage("consul service back within the grace period").Len() == 0 {
		t.Errorf("the grace was not logged: %d starts, %d ends", kept.Len(), f.logs.FilterMessage("consul service back within the grace period").Len())
	}
	for _, l := range kept.All() {
		t.Logf("logged: %s %v", l.Message, l.ContextMap())
	}
}

// TestConsulServiceGoneAfterGrace: a service whose instances all leave and
// do not come back keeps its routes for mesh.consul.service_grace (its
// calls fail with 503, not 404), then loses them: one log line names it and
// how long it was gone, and the metrics count it. Another service's calls
// run on undisturbed.
func TestConsulServiceGoneAfterGrace(t *testing.T) {
	const grace = 2 * time.Second
	agent := harness.Consul(t)
	a := harness.Native(t, agent, "products", harness.NativeOptions{})
	b := harness.Native(t, agent, "products", harness.NativeOptions{})
	harness.Native(t, agent, "users", harness.NativeOptions{})
	e, logs := harness.PorticoLogged(t, func(cfg *app.Config) {
		harness.ConsulConfig(agent)(cfg)
		cfg.Mesh.Consul.ServiceGrace = grace
	})
	logControlPathOnFailure(t, logs)
	c := harness.Client(t)
	eventually(t, 10*time.Second, "routes of both services", func() bool {
		return do(t, c, "GET", e.URL+"/v1/products/p-1", "").code == 200 && do(t, c, "GET", e.URL+"/v1/users/alice", "").code == 200
	})
	load := runLoad(t, e.URL+"/v1/users/alice", 2)

	a.Stop()
	left := time.Now() // b deregisters first thing in Stop
	b.Stop()
	eventually(t, time.Second, "products in its grace period", func() bool {
		return value(scrape(t, e.AdminURL), "portico_consul_services_in_grace", nil) == 1
	})
	// Readiness says what is served from memory (degraded, still ready).
	if rz := do(t, harness.Client(t), "GET", e.AdminURL+"/readyz", ""); rz.code != 200 ||
		!strings.Contains(rz.body, `"degraded"`) || !strings.Contains(rz.body, "products") {
		t.Fatalf("/readyz during the grace: %d %s", rz.code, rz.body)
	}
	var r response
	removed := eventuallyOr(t, grace+5*time.Second, "products routes removed", func() (bool, string) {
		r = do(t, c, "GET", e.URL+"/v1/products/p-1", "")
		return r.code == http.StatusNotFound, fmt.Sprintf("%d %s", r.code, r.body)
	})
	wantStatus(t, r, http.StatusNotFound, 5, "no route")
	t.Logf("FIGURE products routes removed %v after its last instance left (grace %v)", removed.Sub(left).Round(time.Millisecond), grace)
	if removed.Sub(left) < grace {
		t.Fatalf("routes removed %v after the service left, before the %v grace", removed.Sub(left), grace)
	}
	fams := scrape(t, e.AdminURL)
	for name, want := range map[string]float64{"portico_consul_services_in_grace": 0, "portico_consul_services_removed_total": 1} {
		if got := value(fams, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	lines := logs.FilterMessage("consul service gone for longer than the grace period; removing its routes").All()
	if len(lines) != 1 {
		t.Fatalf("removal logged %d times", len(lines))
	}
	if f := lines[0].ContextMap(); lines[0].Level != zap.WarnLevel || f["service"] != "products" || f["gone"].(time.Duration) < grace {
		t.Fatalf("removal log: %s %v", lines[0].Level, f)
	}
	if r := do(t, c, "GET", e.URL+"/v1/users/alice", ""); r.code != http.StatusOK {
		t.Fatalf("users after products left: %d %s", r.code, r.body)
	}
	if st := load.stop(); st.failed.Load() != 0 || st.ok.Load() == 0 {
		t.Fatalf("users calls while products left: %s", st)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestCARotationUnderLoad forces a Connect CA rotation while calls run:
// leaves and roots rotate in place, open connections keep working, and new
// handshakes with the new certificates succeed.
func TestCARotationUnderLoad(t *testing.T) {
	f := newMeshFixture(t)
	old := f.edge.Mesh.Identity.Identity()
	load := runLoad(t, f.edge.URL+"/v1/products/p-1", 4)
	load.succeeded(50)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if _, err := f.agent.Client().Connect().CASetConfig(&api.CAConfig{
		Provider: "consul",
		Config:   map[string]any{"PrivateKey": keyPEM},
	}, nil); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	rotated := eventually(t, 30*time.Second, "portico leaf reissued by the new CA", func() bool {
		id := f.edge.Mesh.Identity.Identity()
		return !bytes.Equal(id.Cert.Leaf.AuthorityKeyId, old.Cert.Leaf.AuthorityKeyId)
	})
	t.Logf("FIGURE portico's leaf reissued %v after the CA change", rotated.Sub(changed).Round(time.Millisecond))
	// A new instance after the rotation: every handshake with it uses the
	// new certificates on both sides.
	n := harness.Native(t, f.agent, "products", harness.NativeOptions{Seen: f.seen})
	eventually(t, 5*time.Second, "new instance serving after rotation", func() bool { return n.Calls.Load() > 0 })
	load.succeeded(100)
	st := load.stop()
	t.Logf("load across the CA rotation: %s", st)
	if st.failed.Load() != 0 {
		t.Fatalf("calls failed during the CA rotation: %s", st)
	}
	id := f.edge.Mesh.Identity.Identity()
	if id.ID != old.ID || id.Cert.Leaf.SerialNumber.Cmp(old.Cert.Leaf.SerialNumber) == 0 {
		t.Fatalf("identity after rotation: %s serial %v (before %s serial %v)", id.ID, id.Cert.Leaf.SerialNumber, old.ID, old.Cert.Leaf.SerialNumber)
	}
}

// TestWrongSPIFFEIDRefused: an impostor registered as "orders" but holding
// the identity of "users" never receives a call.
func TestWrongSPIFFEIDRefused(t *testing.T) {
	t.Parallel()
	f := newMeshFixture(t, "orders")
	c := harness.Client(t)
	eventually(t, 10*time.Second, "orders routes", func() bool {
		return do(t, c, "GET", f.edge.URL+"/v1/orders/o-1001", "").code == 200
	})
	// The impostor joins, then the genuine orders instance leaves.
	genuine := mustInstances(t, f.agent, "orders")
	usersID := mesh.NewConsulIdentity(f.agent.Client(), "users", zap.NewNop())
	usersID.Start()
	t.Cleanup(usersID.Close)
	imp := harness.Native(t, f.agent, "orders", harness.NativeOptions{Identity: usersID})
	for _, id := range genuine {
		if err := f.agent.Client().Agent().ServiceDeregister(id); err != nil {
			t.Fatal(err)
		}
		harness.WaitInstance(t, f.agent, "orders", id, false)
	}
	// Until Portico hears that the genuine instance left, calls still go
	// to it; from then on only the impostor is left to try.
	var r response
	eventuallyOr(t, 10*time.Second, "calls to orders refused", func() (bool, string) {
		r = do(t, c, "GET", f.edge.URL+"/v1/orders/o-1001", "")
		return r.code != http.StatusOK, fmt.Sprintf("%d %s", r.code, r.body)
	})
	if r.code != http.StatusServiceUnavailable {
		t.Fatalf("call to an impostor: %d %s", r.code, r.body)
	}
	if imp.Calls.Load() != 0 {
		t.Fatalf("the impostor served %d calls", imp.Calls.Load())
	}
	// The client learns that the service is unavailable, and the request
	// id to quote; the identities and the address are for the log.
	st := wantStatus(t, r, http.StatusServiceUnavailable, 14, "unavailable")
	if strings.Contains(r.body, "spiffe://") || strings.Contains(r.body, "127.0.0.1") ||
		!strings.Contains(r.body, r.header.Get("X-Request-Id")) || len(st["details"].([]any)) != 1 {
		t.Fatalf("error should carry the request id and no identity or address: %s", r.body)
	}
	// Other services are unaffected.
	if r := do(t, c, "GET", f.edge.URL+"/v1/products/p-1", ""); r.code != 200 {
		t.Fatalf("products: %d %s", r.code, r.body)
	}
}

func mustInstances(t *testing.T, agent *consulagent.Agent, service string) []string {
	t.Helper()
	entries, _, err := agent.Client().Health().Service(service, "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.ID)
	}
	return ids
}

// TestIntentionDeny: an intention denying portico → orders fails calls to
// orders with 403 PERMISSION_DENIED on connections already open; products
// are unaffected.
func TestIntentionDeny(t *testing.T) {
	t.Parallel()
	f := newMeshFixture(t, "orders")
	c := harness.Client(t)
	eventually(t, 10*time.Second, "orders routes", func() bool {
		return do(t, c, "GET", f.edge.URL+"/v1/orders/o-1001", "").code == 200
	})
	if _, err := f.agent.Client().Connect().IntentionUpsert(&api.Intention{
		SourceName: "portico", DestinationName: "orders", Action: api.IntentionActionDeny,
	}, nil); err != nil {
		t.Fatal(err)
	}
	set := time.Now()
	var r response
	denied := eventually(t, 10*time.Second, "calls to orders denied", func() bool {
		r = do(t, c, "GET", f.edge.URL+"/v1/orders/o-1001", "")
		return r.code == http.StatusForbidden
	})
	t.Logf("FIGURE deny effective %v after the intention was written (open connections)", denied.Sub(set).Round(time.Millisecond))
	body := jsonOf(t, r.body)
	if body["code"] != float64(7) || !strings.Contains(body["message"].(string), "intentions deny portico → orders") {
		t.Fatalf("403 body: %s", r.body)
	}
	if r := do(t, c, "GET", f.edge.URL+"/v1/products/p-1", ""); r.code != 200 {
		t.Fatalf("products after denying orders: %d %s", r.code, r.body)
	}
}

// TestRedeployNewMethod: a service redeployed with more annotated methods
// gets its new routes without a Portico restart; another service's calls
// run on undisturbed.
func TestRedeployNewMethod(t *testing.T) {
	agent := harness.Consul(t)
	harness.Native(t, agent, "users", harness.NativeOptions{})
	v1 := harness.Native(t, agent, "shop", harness.NativeOptions{ID: "shop-1", Examples: []string{"products"}})
	e := harness.Portico(t, harness.ConsulConfig(agent))
	c := harness.Client(t)
	eventually(t, 10*time.Second, "shop v1 routes", func() bool {
		return do(t, c, "GET", e.URL+"/v1/products/p-1", "").code == 200
	})
	if r := do(t, c, "GET", e.URL+"/v1/orders/o-1001", ""); r.code != http.StatusNotFound {
		t.Fatalf("orders before the redeploy: %d %s", r.code, r.body)
	}
	before := do(t, c, "GET", e.URL+"/openapi.json", "")
	if strings.Contains(before.body, "OrderService.GetOrder") {
		t.Fatal("the document has the orders methods before the redeploy")
	}
	load := runLoad(t, e.URL+"/v1/users/alice", 2)
	load.succeeded(50)

	v1.Stop()
	harness.Native(t, agent, "shop", harness.NativeOptions{ID: "shop-1", Examples: []string{"products", "orders"}})
	passing := time.Now()
	appeared := eventually(t, 10*time.Second, "orders route after the redeploy", func() bool {
		return do(t, c, "GET", e.URL+"/v1/orders/o-1001", "").code == 200
	})
	t.Logf("FIGURE new route served %v after the redeployed instance passed", appeared.Sub(passing).Round(time.Millisecond))
	// The document is the new table's: the new methods are in it, under a
	// new ETag.
	after := do(t, c, "GET", e.URL+"/openapi.json", "")
	if !strings.Contains(after.body, `"operationId": "portico.examples.orders.v1.OrderService.GetOrder"`) || after.header.Get("Etag") == before.header.Get("Etag") {
		t.Fatalf("the document after the redeploy (ETag %q, was %q) lacks GetOrder", after.header.Get("Etag"), before.header.Get("Etag"))
	}
	if r := do(t, c, "GET", e.URL+"/v1/products/p-1", ""); r.code != 200 {
		t.Fatalf("products after the redeploy: %d %s", r.code, r.body)
	}
	st := load.stop()
	if st.failed.Load() != 0 || st.ok.Load() == 0 {
		t.Fatalf("users calls during the shop redeploy: %s", st)
	}
}

// TestFilesModeWithReload: identities from files (no Connect CA): Portico
// verifies instances against the file CA and trust domain, and a rewritten
// certificate is picked up while calls run.
func TestFilesModeWithReload(t *testing.T) {
	agent := harness.Consul(t)
	ca := meshtest.NewCA(t, "example.test")
	fileIdentity := func(service string) *mesh.FileIdentity {
		f := ca.WriteFiles(t, t.TempDir(), agent.Datacenter, service)
		id, err := mesh.NewFileIdentity(mesh.TLSConfig{CertFile: f.Cert, KeyFile: f.Key, CAFile: f.CA, TrustDomains: []string{ca.TrustDomain}, ReloadInterval: 50 * time.Millisecond}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		id.Start()
		t.Cleanup(id.Close)
		return id
	}
	harness.Native(t, agent, "products", harness.NativeOptions{Identity: fileIdentity("products")})
	dir := t.TempDir()
	files := ca.WriteFiles(t, dir, agent.Datacenter, "portico")
	e := harness.Portico(t, func(cfg *app.Config) {
		harness.ConsulConfig(agent)(cfg)
		cfg.Mesh.TLS = mesh.TLSConfig{Mode: mesh.TLSModeFiles, CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CA,
			TrustDomains: []string{ca.TrustDomain}, ReloadInterval: 50 * time.Millisecond}
	})
	c := harness.Client(t)
	eventually(t, 10*time.Second, "products over files-mode mTLS", func() bool {
		return do(t, c, "GET", e.URL+"/v1/products/p-1", "").code == 200
	})
	load := runLoad(t, e.URL+"/v1/products/p-1", 2)
	ca.WriteFiles(t, dir, agent.Datacenter, "portico-renewed")
	eventually(t, 5*time.Second, "portico identity reloaded from files", func() bool {
		return strings.HasSuffix(e.Mesh.Identity.Identity().ID, "/svc/portico-renewed")
	})
	// A new instance means new handshakes with the reloaded certificate.
	n := harness.Native(t, agent, "products", harness.NativeOptions{Identity: fileIdentity("products")})
	eventually(t, 5*time.Second, "new instance serving", func() bool { return n.Calls.Load() > 0 })
	st := load.stop()
	if st.failed.Load() != 0 {
		t.Fatalf("calls failed across the file reload: %s", st)
	}
	// An instance holding a certificate of another CA is refused.
	stranger := meshtest.NewCA(t, "example.test")
	sf := stranger.WriteFiles(t, t.TempDir(), agent.Datacenter, "products")
	sid, err := mesh.NewFileIdentity(mesh.TLSConfig{CertFile: sf.Cert, KeyFile: sf.Key, CAFile: sf.CA, TrustDomains: []string{"example.test"}, ReloadInterval: time.Second}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	sid.Start()
	t.Cleanup(sid.Close)
	bad := harness.Native(t, agent, "products", harness.NativeOptions{Identity: sid})
	for range 20 {
		do(t, c, "GET", e.URL+"/v1/products/p-1", "")
	}
	if bad.Calls.Load() != 0 {
		t.Fatalf("an instance with a certificate from an unknown CA served %d calls", bad.Calls.Load())
	}
}
