package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/cmd/examples/consulagent"
	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
	"github.com/portico-dev/portico/mesh"
)

// Traffic management end to end: a real Consul agent compiles the
// service-router, service-splitter and service-resolver config entries
// the tests write; real mesh-native instances of accounts in two versions
// (Meta version=1 or 2) answer through Portico, and say which instance
// answered (Grpc-Metadata-X-Instance).

const whoAmI = "/portico.examples.accounts.v1.AccountService/WhoAmI"

type trafficEnv struct {
	t     *testing.T
	agent *consulagent.Agent
	idp   *harness.IDP
	edge  *harness.Edge
	c     *http.Client
}

// newTrafficEnv starts Consul with accounts declared as gRPC with subsets
// v1 (default) and v2 and a v1/v2 split of weights w1/w2, the instances
// opts describe, and Portico (mutate may change its configuration).
func newTrafficEnv(t *testing.T, w1, w2 float32, instances []harness.NativeOptions, mutate func(*app.Config)) *trafficEnv {
	t.Helper()
	env := &trafficEnv{t: t, agent: harness.Consul(t), idp: harness.NewIDP(t), c: harness.Client(t)}
	env.write(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "accounts", Protocol: "grpc"})
	env.write(&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "accounts", DefaultSubset: "v1",
		Subsets: map[string]api.ServiceResolverSubset{
			"v1": {Filter: `Service.Meta.version == "1"`},
			"v2": {Filter: `Service.Meta.version == "2"`},
		}})
	env.split(w1, w2)
	for _, o := range instances {
		harness.Native(t, env.agent, "accounts", o)
	}
	env.edge = harness.Portico(t, func(cfg *app.Config) {
		harness.ConsulConfig(env.agent)(cfg)
		withIDP(env.idp)(cfg)
		if mutate != nil {
			mutate(cfg)
		}
	})
	env.waitWeight(w2)
	return env
}

func version(n int) harness.NativeOptions {
	return harness.NativeOptions{ID: fmt.Sprintf("accounts-v%d-%d", n, instanceN.Add(1)), Meta: map[string]string{"version": strconv.Itoa(n)}}
}

var instanceN atomic.Int64

func (env *trafficEnv) write(e api.ConfigEntry) {
	env.t.Helper()
	if ok, _, err := env.agent.Client().ConfigEntries().Set(e, nil); err != nil || !ok {
		env.t.Fatalf("writing %s %s: %v", e.GetKind(), e.GetName(), err)
	}
}

func (env *trafficEnv) split(w1, w2 float32) {
	env.t.Helper()
	env.write(&api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: "accounts", Splits: []api.ServiceSplit{
		{Weight: w1, ServiceSubset: "v1"}, {Weight: w2, ServiceSubset: "v2"},
	}})
}

// waitWeight waits (up to 10 s) until Portico routes with v2 at weight w2,
// and returns when it saw that.
func (env *trafficEnv) waitWeight(w2 float32) time.Time {
	env.t.Helper()
	return eventuallyOr(env.t, 10*time.Second, fmt.Sprintf("Portico routing accounts with v2 at %g%%", w2), func() (bool, string) {
		ex, err := env.edge.Mesh.Catalog.Explain("accounts", whoAmI, &mesh.StaticCaller{Sub: "probe"})
		if err != nil {
			return false, err.Error()
		}
		if ex.Split == nil {
			return false, fmt.Sprintf("%+v", ex)
		}
		for name, w := range ex.Split.Weights {
			if name == "v2" && w == w2 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", ex.Split)
	})
}

// subset is where Portico would send subject's WhoAmI now.
func (env *trafficEnv) subset(subject string) string {
	ex, err := env.edge.Mesh.Catalog.Explain("accounts", whoAmI, &mesh.StaticCaller{Sub: subject})
	if err != nil {
		env.t.Fatal(err)
	}
	return ex.Subset
}

func (env *trafficEnv) token(sub, scope string) string {
	return "Bearer " + env.idp.Token(sub, map[string]any{"scope": scope})
}

// whoami calls GET /v1/whoami and returns the version that answered
// ("v1", "v2") or the failure.
func (env *trafficEnv) whoami(ctx context.Context, auth string, hdr ...string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, env.edge.URL+"/v1/whoami", nil)
	req.Header.Set("Authorization", auth)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := env.c.Do(req)
	if err != nil {
		return "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	id := resp.Header.Get("Grpc-Metadata-X-Instance")
	switch {
	case strings.HasPrefix(id, "accounts-v1-"):
		return "v1", nil
	case strings.HasPrefix(id, "accounts-v2-"):
		return "v2", nil
	}
	return "", fmt.Errorf("answered by %q", id)
}

// perSubject has each subject (its own token) call WhoAmI requests times,
// 8 subjects at a time, and returns the versions that answered each, the
// failures and the first failure.
func (env *trafficEnv) perSubject(subjects []string, requests int) ([]map[string]int, int64, any) {
	seen := make([]map[string]int, len(subjects))
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(subjects); i = int(next.Add(1) - 1) {
				tok := env.token(subjects[i], "accounts")
				seen[i] = map[string]int{}
				for range requests {
					v, err := env.whoami(env.t.Context(), tok)
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						continue
					}
					seen[i][v]++
				}
			}
		})
	}
	wg.Wait()
	return seen, failed.Load(), firstErr.Load()
}

// randomSubjects returns n random subject names, the same on every run
// (a fixed seed): the hash is deterministic, so the shares the tests check
// are too, and a failure can be reproduced.
func randomSubjects(n int) []string {
	r := rand.New(rand.NewPCG(18, uint64(n)))
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("user-%016x", r.Uint64())
	}
	return out
}

// canaryShare returns the subjects Portico sends to v2, and their share.
func (env *trafficEnv) canaryShare(subjects []string) (map[string]bool, float64) {
	set := map[string]bool{}
	for _, s := range subjects {
		if env.subset(s) == "v2" {
			set[s] = true
		}
	}
	return set, float64(len(set)) / float64(len(subjects))
}

func TestTrafficStickySplit(t *testing.T) {
	t.Parallel()
	env := newTrafficEnv(t, 90, 10, []harness.NativeOptions{version(1), version(1), version(2)}, nil)

	// The split as Consul compiled it, over 100,000 random subjects.
	subjects := randomSubjects(100_000)
	canary, share := env.canaryShare(subjects)
	t.Logf("90/10 split over %d subjects: %.3f%% to v2", len(subjects), share*100)
	if share < 0.097 || share > 0.103 {
		t.Fatalf("v2 share %.3f%%, want 10%% ± 0.3%%", share*100)
	}

	// 1,000 subjects × 20 requests each through Portico: every subject is
	// answered by one version only, the one the split says.
	sample := subjects[:1000]
	seen, failed, firstErr := env.perSubject(sample, 20)
	if failed > 0 {
		t.Fatalf("%d of 20,000 requests failed; first: %v", failed, firstErr)
	}
	onV2 := 0
	for i, s := range sample {
		want := "v1"
		if canary[s] {
			want = "v2"
			onV2++
		}
		if len(seen[i]) != 1 || seen[i][want] != 20 {
			t.Fatalf("subject %s: answered by %v, want 20 × %s", s, seen[i], want)
		}
	}
	t.Logf("1,000 subjects × 20 requests: each on one side only; %d on v2", onV2)

	// Ramp 1 % → 5 % → 25 %: each canary set contains the one before.
	var prev map[string]bool
	for _, w := range []float32{1, 5, 25} {
		env.split(100-w, w)
		env.waitWeight(w)
		set, share := env.canaryShare(subjects)
		t.Logf("ramp to %g%%: %.3f%% of %d subjects on v2", w, share*100, len(subjects))
		if d := share*100 - float64(w); d < -0.3 || d > 0.3 {
			t.Fatalf("ramp to %g%%: v2 share %.3f%%", w, share*100)
		}
		for s := range prev {
			if !set[s] {
				t.Fatalf("ramp to %g%%: subject %s left the canary", w, s)
			}
		}
		prev = set
	}
}

func TestTrafficWeightChangeUnderLoad(t *testing.T) {
	t.Parallel()
	env := newTrafficEnv(t, 90, 10, []harness.NativeOptions{version(1), version(1), version(2)}, nil)
	subjects := randomSubjects(400)
	tokens := make([]string, len(subjects))
	for i, s := range subjects {
		tokens[i] = env.token(s, "accounts")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var ok, failed, after, afterV2 atomic.Int64
	var changed atomic.Bool
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i += 8 {
				v, err := env.whoami(ctx, tokens[i%len(tokens)])
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				ok.Add(1)
				if changed.Load() {
					after.Add(1)
					if v == "v2" {
						afterV2.Add(1)
					}
				}
			}
		})
	}
	defer wg.Wait()
	eventually(t, 10*time.Second, "load running", func() bool { return ok.Load() > 500 })
	start := time.Now()
	env.split(50, 50)
	written := time.Now()
	seen := env.waitWeight(50)
	changed.Store(true)
	t.Logf("weight change 90/10 → 50/50: written in %s, in force %s after the write", written.Sub(start).Round(time.Millisecond), seen.Sub(written).Round(time.Millisecond))
	if seen.Sub(written) > time.Second {
		t.Fatalf("the new split took %s to be in force, want within 1 s", seen.Sub(written))
	}
	eventually(t, 20*time.Second, "1,000 requests under the new split", func() bool { return after.Load() >= 1000 })
	cancel()
	wg.Wait()
	t.Logf("8 clients: %d requests, %d failed; after the change %.1f%% on v2", ok.Load(), failed.Load(), 100*float64(afterV2.Load())/float64(after.Load()))
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d requests failed; first: %v", n, firstErr.Load())
	}
	if share := float64(afterV2.Load()) / float64(after.Load()); share < 0.35 || share > 0.65 {
		t.Fatalf("after 90/10 → 50/50, %.1f%% of requests on v2", share*100)
	}
}

func TestTrafficRouterAndOverride(t *testing.T) {
	t.Parallel()
	env := newTrafficEnv(t, 100, 0, []harness.NativeOptions{version(1), version(2)}, func(cfg *app.Config) {
		cfg.Mesh.Traffic.Override.TrustedScopes = []string{"canary-tester"}
	})
	trusted := env.token("tess", "accounts canary-tester")
	plain := env.token("paul", "accounts")
	all := func(auth string, hdr ...string) string {
		t.Helper()
		got := map[string]int{}
		for range 10 {
			v, err := env.whoami(t.Context(), auth, hdr...)
			if err != nil {
				t.Fatal(err)
			}
			got[v]++
		}
		if len(got) != 1 {
			t.Fatalf("answered by %v, want one version", got)
		}
		for v := range got {
			return v
		}
		return ""
	}
	type ask struct {
		auth string
		hdr  []string
		want string
		what string
	}
	check := func(asks []ask) {
		t.Helper()
		for _, a := range asks {
			if v := all(a.auth, a.hdr...); v != a.want {
				t.Fatalf("%s: answered by %s, want %s", a.what, v, a.want)
			}
		}
	}
	// v2 at 0 %: only a trusted caller that asks reaches it.
	check([]ask{
		{trusted, []string{"Portico-Subset", "v2"}, "v2", "trusted caller asking for v2 at 0 %"},
		{plain, []string{"Portico-Subset", "v2"}, "v1", "untrusted caller asking for v2 (not honoured)"},
		{trusted, nil, "v1", "trusted caller not asking"},
		{trusted, []string{"Portico-Subset", "nope"}, "v1", "trusted caller asking for an unknown subset"},
	})

	// A router rule on a header sends matching calls to v2.
	env.write(&api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: "accounts", Routes: []api.ServiceRoute{{
		Match:       &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-beta", Exact: "1"}}}},
		Destination: &api.ServiceRouteDestination{ServiceSubset: "v2"},
	}}})
	eventuallyOr(t, 10*time.Second, "the router rule in force", func() (bool, string) {
		ex, err := env.edge.Mesh.Catalog.Explain("accounts", whoAmI, &mesh.StaticCaller{Headers: map[string]string{"X-Beta": "1"}})
		return err == nil && ex.Route != nil && ex.Subset == "v2", fmt.Sprintf("%+v %v", ex, err)
	})
	check([]ask{
		{plain, []string{"X-Beta", "1"}, "v2", "X-Beta: 1"},
		{plain, []string{"X-Beta", "2"}, "v1", "X-Beta: 2 (no match)"},
		{plain, nil, "v1", "no header"},
	})

	// The admin endpoint explains a decision.
	r := do(t, env.c, "GET", env.edge.AdminURL+"/traffic?service=accounts&method="+whoAmI+"&subject=paul&header=X-Beta:1", "")
	ex := jsonOf(t, r.body)
	if r.code != 200 || ex["subset"] != "v2" || ex["route"] == nil || len(ex["instances"].([]any)) != 1 {
		t.Fatalf("explain: %d %s", r.code, r.body)
	}
	if r := do(t, env.c, "GET", env.edge.AdminURL+"/traffic?service=nope", ""); r.code != 404 || !strings.Contains(r.body, "accounts") {
		t.Fatalf("explain of an unknown service: %d %s", r.code, r.body)
	}
}

func TestTrafficCanaryFallback(t *testing.T) {
	t.Parallel()
	broken := version(2)
	broken.FailWith = codes.Unavailable
	env := newTrafficEnv(t, 80, 20, []harness.NativeOptions{version(1), version(1), broken}, nil)
	subjects := randomSubjects(600)
	canary, _ := env.canaryShare(subjects)
	if len(canary) < 60 {
		t.Fatalf("only %d of %d subjects on the canary", len(canary), len(subjects))
	}
	seen, failed, firstErr := env.perSubject(subjects, 5)
	ok := 0
	for _, vs := range seen {
		ok += vs["v1"]
		if vs["v2"] > 0 {
			failed += int64(vs["v2"])
			firstErr = "answered by the broken canary"
		}
	}
	metrics := do(t, env.c, "GET", env.edge.AdminURL+"/metrics", "").body
	fallbacks := metricValue(metrics, `portico_traffic_fallbacks_total{from="v2",service="accounts",to="v1"}`)
	t.Logf("canary answering UNAVAILABLE: %d GETs ok, %d failed; %g fell back to v1", ok, failed, fallbacks)
	if failed > 0 {
		t.Fatalf("%d GETs failed; first: %v", failed, firstErr)
	}
	if fallbacks < float64(len(canary)) {
		t.Fatalf("fallbacks counted %g, want at least one per canary subject (%d)", fallbacks, len(canary))
	}
}

// metricValue reads one sample of a Prometheus text exposition; 0 if absent.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// The rollout service: v1 serves GetItem (and GetLegacy when legacy);
// v2 serves GetItem and GetReview.
func rolloutProto(methods ...string) string {
	var rpcs strings.Builder
	for _, m := range methods {
		path := map[string]string{"GetItem": "/v1/items/{id}", "GetReview": "/v1/items/{id}/review", "GetLegacy": "/v1/items/{id}/legacy"}[m]
		fmt.Fprintf(&rpcs, "  rpc %s(GetItemRequest) returns (Item) { option (google.api.http) = {get: %q}; }\n", m, path)
	}
	return `syntax = "proto3";
package rollout.v1;
import "google/api/annotations.proto";
service Catalog {
` + rpcs.String() + `}
message GetItemRequest { string id = 1; }
message Item { string id = 1; string served_by = 2; }
`
}

// rolloutInstance is one instance of the rollout service, registered in
// Consul by the test (plaintext, no check: passing while registered).
type rolloutInstance struct {
	id      string
	backend *harness.Backend
	calls   sync.Map // method name → *atomic.Int64
}

func startRollout(t *testing.T, agent *consulagent.Agent, id, src, hash string, meta ...string) *rolloutInstance {
	t.Helper()
	in := &rolloutInstance{id: id}
	in.backend = harness.Dynamic(t, "", src, func(md protoreflect.MethodDescriptor, req *dynamicpb.Message) (proto.Message, error) {
		c, _ := in.calls.LoadOrStore(string(md.Name()), new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
		out := dynamicpb.NewMessage(md.Output())
		out.Set(md.Output().Fields().ByName("id"), req.Get(md.Input().Fields().ByName("id")))
		out.Set(md.Output().Fields().ByName("served_by"), protoreflect.ValueOfString(id))
		return out, nil
	})
	host, port, _ := net.SplitHostPort(in.backend.Addr)
	p, _ := strconv.Atoi(port)
	m := map[string]string{mesh.MetaDescriptors: hash}
	for i := 0; i+1 < len(meta); i += 2 {
		m[meta[i]] = meta[i+1]
	}
	if err := agent.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: "rollout", Address: host, Port: p, Tags: []string{"portico"}, Meta: m,
	}); err != nil {
		t.Fatal(err)
	}
	return in
}

func (in *rolloutInstance) served(method string) int64 {
	c, ok := in.calls.Load(method)
	if !ok {
		return 0
	}
	return c.(*atomic.Int64).Load()
}

// pathLoad is 2 clients calling one path while on, until the test's load ends.
type pathLoad struct {
	path       string
	on         atomic.Bool
	ok, failed atomic.Int64
	firstErr   atomic.Value
}

func (l *pathLoad) run(ctx context.Context, c *http.Client, base string, wg *sync.WaitGroup) {
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if !l.on.Load() {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+l.path, nil)
				resp, err := c.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						l.failed.Add(1)
						l.firstErr.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, b))
					continue
				}
				l.ok.Add(1)
			}
		})
	}
}

// until waits (up to 10 s) for n more successful calls.
func (l *pathLoad) until(t *testing.T, n int64) {
	t.Helper()
	before := l.ok.Load()
	eventually(t, 10*time.Second, fmt.Sprintf("%d more calls of %s", n, l.path), func() bool { return l.ok.Load() >= before+n })
}

func TestTrafficRollingDeploy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		legacy bool // v1 also serves GetLegacy, which v2 drops
	}{{"adds a method", false}, {"adds one, drops one", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			oldMethods := []string{"GetItem"}
			if tc.legacy {
				oldMethods = append(oldMethods, "GetLegacy")
			}
			agent := harness.Consul(t)
			var old []*rolloutInstance
			for i := range 3 {
				old = append(old, startRollout(t, agent, fmt.Sprintf("rollout-old-%d", i), rolloutProto(oldMethods...), "old"))
			}
			e := harness.Portico(t, func(cfg *app.Config) {
				harness.ConsulConfig(agent)(cfg)
				cfg.Mesh.TLS.Mode = mesh.TLSModePlaintext
			})
			c := harness.Client(t)
			eventually(t, 10*time.Second, "GetItem served", func() bool { return do(t, c, "GET", e.URL+"/v1/items/a", "").code == 200 })
			if r := do(t, c, "GET", e.URL+"/v1/items/a/review", ""); r.code != 404 {
				t.Fatalf("GetReview before the rollout: %d %s", r.code, r.body)
			}

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var wg sync.WaitGroup
			defer wg.Wait()
			item, review, legacy := &pathLoad{path: "/v1/items/a"}, &pathLoad{path: "/v1/items/a/review"}, &pathLoad{path: "/v1/items/a/legacy"}
			item.on.Store(true)
			legacy.on.Store(tc.legacy)
			for _, l := range []*pathLoad{item, review, legacy} {
				l.run(ctx, c, e.URL, &wg)
			}

			var fresh []*rolloutInstance
			for i := range 3 {
				n := startRollout(t, agent, fmt.Sprintf("rollout-new-%d", i), rolloutProto("GetItem", "GetReview"), "new")
				fresh = append(fresh, n)
				registered := time.Now()
				if i == 0 {
					at := eventually(t, 10*time.Second, "GetReview's route", func() bool {
						return do(t, c, "GET", e.URL+"/v1/items/b/review", "").code == 200
					})
					t.Logf("GetReview served %s after the first new instance registered", at.Sub(registered).Round(time.Millisecond))
					review.on.Store(true)
				}
				if i == 2 && tc.legacy {
					legacy.until(t, 100)
					legacy.on.Store(false) // its last instance leaves now
				}
				// The old instance leaves as a deploy takes it down:
				// deregistered, then stopped once Portico no longer lists it.
				if err := agent.Client().Agent().ServiceDeregister(old[i].id); err != nil {
					t.Fatal(err)
				}
				eventually(t, 10*time.Second, old[i].id+" out of Portico's instances", func() bool {
					return e.Mesh.Catalog.Instances("rollout") == 3
				})
				time.Sleep(100 * time.Millisecond) // calls already picked finish
				old[i].backend.Server.GracefulStop()
				item.until(t, 200)
			}
			review.until(t, 200)
			cancel()
			wg.Wait()
			t.Logf("rolling deploy of 3 instances: GetItem %d ok / %d failed, GetReview %d ok / %d failed, GetLegacy %d ok / %d failed",
				item.ok.Load(), item.failed.Load(), review.ok.Load(), review.failed.Load(), legacy.ok.Load(), legacy.failed.Load())
			for _, l := range []*pathLoad{item, review, legacy} {
				if l.failed.Load() > 0 {
					t.Fatalf("%s: %d failed during the rollout; first: %v", l.path, l.failed.Load(), l.firstErr.Load())
				}
			}
			for _, o := range old {
				if n := o.served("GetReview"); n > 0 {
					t.Fatalf("old instance %s was sent GetReview %d times", o.id, n)
				}
			}
			for _, n := range fresh {
				if n.served("GetItem") == 0 {
					t.Fatalf("new instance %s served no GetItem: the old method should go to every instance", n.id)
				}
				if n.served("GetLegacy") > 0 {
					t.Fatalf("new instance %s was sent GetLegacy", n.id)
				}
			}
			if tc.legacy {
				// Gone with its last instance: 404 once the table follows.
				eventually(t, 10*time.Second, "GetLegacy's route removed", func() bool {
					return do(t, c, "GET", e.URL+"/v1/items/a/legacy", "").code == 404
				})
			}
		})
	}
}

// A canary that adds a method, behind a 90/10 split: the method only the
// canary's instances serve is answered for every caller (by them), not
// refused for the 90 % the split sends to the stable subset.
func TestTrafficMethodOnlyInCanary(t *testing.T) {
	t.Parallel()
	agent := harness.Consul(t)
	env := &trafficEnv{t: t, agent: agent}
	env.write(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "rollout", Protocol: "grpc"})
	env.write(&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "rollout", DefaultSubset: "v1",
		Subsets: map[string]api.ServiceResolverSubset{"v1": {Filter: `Service.Meta.version == "1"`}, "v2": {Filter: `Service.Meta.version == "2"`}}})
	env.write(&api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: "rollout", Splits: []api.ServiceSplit{
		{Weight: 90, ServiceSubset: "v1"}, {Weight: 10, ServiceSubset: "v2"}}})
	old := startRollout(t, agent, "rollout-v1", rolloutProto("GetItem"), "old", "version", "1")
	canary := startRollout(t, agent, "rollout-v2", rolloutProto("GetItem", "GetReview"), "new", "version", "2")
	e := harness.Portico(t, func(cfg *app.Config) {
		harness.ConsulConfig(agent)(cfg)
		cfg.Mesh.TLS.Mode = mesh.TLSModePlaintext
	})
	c := harness.Client(t)
	eventually(t, 10*time.Second, "GetReview's route", func() bool { return do(t, c, "GET", e.URL+"/v1/items/a/review", "").code == 200 })
	for i := range 200 {
		if r := do(t, c, "GET", fmt.Sprintf("%s/v1/items/%d/review", e.URL, i), ""); r.code != 200 {
			t.Fatalf("GetReview %d: %d %s", i, r.code, r.body)
		}
		if r := do(t, c, "GET", fmt.Sprintf("%s/v1/items/%d", e.URL, i), ""); r.code != 200 {
			t.Fatalf("GetItem %d: %d %s", i, r.code, r.body)
		}
	}
	moved := metricValue(do(t, c, "GET", e.AdminURL+"/metrics", "").body, `portico_traffic_fallbacks_total{from="v1",service="rollout",to="any"}`)
	t.Logf("200 GetReview: v2 served %d (the stable v1 lacks it; %g moved from v1); 200 GetItem: v1 served %d, v2 %d",
		canary.served("GetReview"), moved, old.served("GetItem"), canary.served("GetItem"))
	if old.served("GetReview") > 0 || moved < 100 {
		t.Fatalf("GetReview: %d sent to v1, %g moved from v1", old.served("GetReview"), moved)
	}
	if old.served("GetItem") < 140 || canary.served("GetItem") == 0 {
		t.Fatalf("GetItem split v1 %d / v2 %d, want about 90/10", old.served("GetItem"), canary.served("GetItem"))
	}
}
