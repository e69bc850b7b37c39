package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
	"github.com/portico-dev/portico/policies"
)

// counter counts calls per gRPC method on a backend.
type counter struct {
	mu    sync.Mutex
	calls map[string]int
}

func (c *counter) interceptor() grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		c.mu.Lock()
		c.calls[info.FullMethod]++
		c.mu.Unlock()
		return h(ctx, req)
	})
}

func (c *counter) get(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls["/portico.examples.accounts.v1.AccountService/"+method]
}

// policyEnv is the accounts example behind Portico with a JWT provider.
type policyEnv struct {
	idp    *harness.IDP
	edge   *harness.Edge
	calls  *counter
	client *http.Client
	addr   string // the accounts backend
}

func withIDP(idp *harness.IDP) func(*app.Config) {
	return func(cfg *app.Config) {
		cfg.Policies.JWT = []policies.JWTProvider{{Name: "corp", Issuer: idp.Issuer, Audiences: []string{"portico"}, JWKSURL: idp.URL}}
	}
}

func newPolicyEnv(t *testing.T, mutate ...func(*app.Config)) *policyEnv {
	t.Helper()
	env := &policyEnv{idp: harness.NewIDP(t), calls: &counter{calls: map[string]int{}}, client: harness.Client(t)}
	b := harness.Services(t, []string{"accounts"}, nil, env.calls.interceptor())
	env.addr = b.Addr
	env.edge = harness.Portico(t, func(cfg *app.Config) {
		withIDP(env.idp)(cfg)
		cfg.Edge.ForwardHeaders = append(cfg.Edge.ForwardHeaders, "X-Portico-Subject")
		for _, m := range mutate {
			m(cfg)
		}
	}, b.Addr)
	if rej := env.edge.Tables.Load().Rejected; len(rej) > 0 {
		t.Fatalf("rejected services: %v", rej)
	}
	return env
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

func TestAuthIdentityAndForgedHeaders(t *testing.T) {
	t.Parallel()
	env := newPolicyEnv(t)
	alice := env.idp.Token("alice", map[string]any{"scope": "accounts", "plan": "paid", "email": "alice@example.com"})
	noScope := env.idp.Token("alice", map[string]any{"scope": "other"})
	admin := env.idp.Token("root", map[string]any{"scope": "accounts", "roles": []string{"admin"}})

	// No credentials: 401 with a challenge and a google.rpc.Status body.
	r := do(t, env.client, "GET", env.edge.URL+"/v1/whoami", "")
	if r.code != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer realm=") {
		t.Fatalf("no token: %d %v %s", r.code, r.header, r.body)
	}
	if st := jsonOf(t, r.body); st["code"] != float64(16) || !strings.Contains(st["message"].(string), "needs credentials") {
		t.Fatalf("no token body: %s", r.body)
	}
	// A bad token: 401 with error="invalid_token".
	r = do(t, env.client, "GET", env.edge.URL+"/v1/whoami", "", bearer(alice[:len(alice)-4]+"AAAA")...)
	if r.code != 401 || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("tampered token: %d %v %s", r.code, r.header, r.body)
	}
	// Missing scope: 403.
	r = do(t, env.client, "GET", env.edge.URL+"/v1/whoami", "", bearer(noScope)...)
	if r.code != 403 || !strings.Contains(r.body, `lacks scope \"accounts\"`) {
		t.Fatalf("no scope: %d %s", r.code, r.body)
	}

	// Forged identity: every way a client could set x-portico-* is tried.
	forged := append(bearer(alice),
		"Grpc-Metadata-X-Portico-Subject", "root",
		"Grpc-Metadata-X-Portico-Claim-Plan", "enterprise",
		"Grpc-Metadata-X-Portico-Provider", "forged",
		"X-Portico-Subject", "root", // forwarded header by config
		"Grpc-Metadata-X-Forged", "kept")
	r = do(t, env.client, "GET", env.edge.URL+"/v1/whoami", "", forged...)
	if r.code != 200 {
		t.Fatalf("whoami: %d %s", r.code, r.body)
	}
	md := jsonOf(t, r.body)["metadata"].(map[string]any)
	want := map[string]any{
		"x-portico-subject": "alice", "x-portico-provider": "corp",
		"x-portico-claim-plan": "paid", "x-portico-claim-email": "alice@example.com",
		"x-forged": "kept", // ordinary metadata still passes
	}
	if fmt.Sprint(md) != fmt.Sprint(want) {
		t.Fatalf("upstream saw %v; want %v", md, want)
	}
	// Anonymous calls of a public method carry no identity even if forged.
	r = do(t, env.client, "GET", env.edge.URL+"/v1/echo/hi", "", "Grpc-Metadata-X-Portico-Subject", "root")
	if r.code != 200 {
		t.Fatalf("echo: %d %s", r.code, r.body)
	}

	// allow_if: owners and admins only.
	if r := do(t, env.client, "GET", env.edge.URL+"/v1/accounts/alice", "", bearer(alice)...); r.code != 200 || strings.Contains(r.body, "risk") {
		t.Fatalf("own account: %d %s", r.code, r.body)
	}
	if r := do(t, env.client, "GET", env.edge.URL+"/v1/accounts/bob", "", bearer(alice)...); r.code != 403 || !strings.Contains(r.body, "access rule") {
		t.Fatalf("other account: %d %s", r.code, r.body)
	}
	if r := do(t, env.client, "GET", env.edge.URL+"/v1/accounts/bob", "", bearer(admin)...); r.code != 200 {
		t.Fatalf("admin: %d %s", r.code, r.body)
	}
}

func TestValidationAndInternalFields(t *testing.T) {
	t.Parallel()
	env := newPolicyEnv(t)
	tok := bearer(env.idp.Token("carol", map[string]any{"scope": "accounts"}))
	r := do(t, env.client, "POST", env.edge.URL+"/v1/accounts", `{"id":"9x","email":"nope","displayName":"","age":7,"plan":"gold"}`, tok...)
	if r.code != 400 {
		t.Fatalf("invalid create: %d %s", r.code, r.body)
	}
	st := jsonOf(t, r.body)
	details := st["details"].([]any)
	if len(details) != 1 {
		t.Fatalf("details: %s", r.body)
	}
	d := details[0].(map[string]any)
	if d["@type"] != "type.googleapis.com/google.rpc.BadRequest" {
		t.Fatalf("detail type: %s", r.body)
	}
	var fields []string
	for _, v := range d["fieldViolations"].([]any) {
		fields = append(fields, v.(map[string]any)["field"].(string))
	}
	if got := strings.Join(fields, ","); got != "id,email,displayName,age,plan" {
		t.Fatalf("violations on %s; want every invalid field: %s", got, r.body)
	}
	if n := env.calls.get("CreateAccount"); n != 0 {
		t.Fatalf("invalid requests reached the service %d times", n)
	}
	// An internal field does not exist for clients: sending one is the same
	// 400 as any unknown field, and the service's value is never rendered.
	r = do(t, env.client, "POST", env.edge.URL+"/v1/accounts", `{"id":"carol","email":"carol@example.com","displayName":"Carol","age":30,"plan":"paid","riskScore":"99"}`, tok...)
	if r.code != 400 || !strings.Contains(r.body, `unknown field \"riskScore\"`) {
		t.Fatalf("create with an internal field: %d %s", r.code, r.body)
	}
	r = do(t, env.client, "POST", env.edge.URL+"/v1/accounts", `{"id":"carol","email":"carol@example.com","displayName":"Carol","age":30,"plan":"paid"}`, tok...)
	if r.code != 200 || strings.Contains(r.body, "risk") {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	// Body limit of the method: 4096 bytes.
	big := `{"id":"dave","displayName":"` + strings.Repeat("x", 5000) + `"}`
	if r := do(t, env.client, "POST", env.edge.URL+"/v1/accounts", big, tok...); r.code != 413 || !strings.Contains(r.body, "4096") {
		t.Fatalf("big body: %d %s", r.code, r.body)
	}
}

func TestCacheStampedeAndHeaders(t *testing.T) {
	t.Parallel()
	env := newPolicyEnv(t)
	const n = 100
	var (
		wg     sync.WaitGroup
		states sync.Map
		bad    atomic.Int64
		start  = make(chan struct{})
	)
	for range n {
		wg.Go(func() {
			<-start
			r := do(t, env.client, "GET", env.edge.URL+"/v1/plans", "")
			if r.code != 200 {
				bad.Add(1)
				return
			}
			v, _ := states.LoadOrStore(r.header.Get(policies.CacheStatusHeader), new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		})
	}
	close(start)
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d requests failed", bad.Load())
	}
	if got := env.calls.get("ListPlans"); got != 1 {
		t.Fatalf("%d concurrent identical requests made %d upstream calls; want 1", n, got)
	}
	states.Range(func(k, v any) bool { t.Logf("cache %s: %d", k, v.(*atomic.Int64).Load()); return true })
	// Age counts whole seconds: a second has to pass for it to read 1 (the
	// wait is the behaviour under test, not a guess at an event).
	time.Sleep(1100 * time.Millisecond)
	r := do(t, env.client, "GET", env.edge.URL+"/v1/plans", "", "Cache-Control", "no-cache")
	if r.header.Get(policies.CacheStatusHeader) != "HIT" || r.header.Get("Age") < "1" {
		t.Fatalf("after 1 s: %s Age %q", r.header.Get(policies.CacheStatusHeader), r.header.Get("Age"))
	}
	if got := env.calls.get("ListPlans"); got != 1 {
		t.Fatalf("no-cache from a client reached the upstream (%d calls) though the method does not allow it", got)
	}

	// Per-caller cache: GetAccount is not public, so alice and an admin
	// each get their own entry.
	alice := bearer(env.idp.Token("alice", map[string]any{"scope": "accounts"}))
	admin := bearer(env.idp.Token("root", map[string]any{"scope": "accounts", "roles": []string{"admin"}}))
	for i, h := range [][]string{alice, alice, admin} {
		r := do(t, env.client, "GET", env.edge.URL+"/v1/accounts/alice", "", h...)
		want := []string{"MISS", "HIT", "MISS"}[i]
		if r.code != 200 || r.header.Get(policies.CacheStatusHeader) != want {
			t.Fatalf("call %d: %d %s; want %s", i, r.code, r.header.Get(policies.CacheStatusHeader), want)
		}
	}
	if got := env.calls.get("GetAccount"); got != 2 {
		t.Fatalf("GetAccount upstream calls = %d; want 2 (one per caller)", got)
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	env := newPolicyEnv(t)
	pre := func(origin, method, headers string) response {
		return do(t, env.client, "OPTIONS", env.edge.URL+"/v1/accounts/alice", "",
			"Origin", origin, "Access-Control-Request-Method", method, "Access-Control-Request-Headers", headers)
	}
	r := pre("https://app.example.com", "GET", "authorization")
	if r.code != 204 || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		r.header.Get("Access-Control-Allow-Methods") != "GET" || r.header.Get("Access-Control-Max-Age") != "600" {
		t.Fatalf("allowed preflight: %d %v", r.code, r.header)
	}
	if r := pre("https://evil.example.com", "GET", ""); r.code != 403 || r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign origin: %d %v", r.code, r.header)
	}
	if r := pre("https://app.example.com", "GET", "x-secret"); r.code != 403 {
		t.Fatalf("unlisted header: %d %v", r.code, r.header)
	}
	if n := env.calls.get("GetAccount"); n != 0 {
		t.Fatalf("preflights reached the service %d times", n)
	}
	tok := env.idp.Token("alice", map[string]any{"scope": "accounts"})
	r = do(t, env.client, "GET", env.edge.URL+"/v1/accounts/alice", "", append(bearer(tok), "Origin", "https://app.example.com")...)
	if r.code != 200 || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || r.header.Get("Access-Control-Expose-Headers") == "" {
		t.Fatalf("actual request: %d %v", r.code, r.header)
	}
}

// TestSharedRedisCache: two edges share one Redis cache; Redis stopping
// turns the cache off without failing a request.
func TestSharedRedisCache(t *testing.T) {
	t.Parallel()
	redis := harness.StartRedis(t)
	shared := func(cfg *app.Config) {
		cfg.Policies.Redis.Address = redis.Addr
		cfg.Policies.Cache.Store = "redis"
	}
	env := newPolicyEnv(t, shared)
	second := harness.Portico(t, func(cfg *app.Config) { withIDP(env.idp)(cfg); shared(cfg) }, env.addr)
	if r := do(t, env.client, "GET", env.edge.URL+"/v1/plans", ""); r.header.Get(policies.CacheStatusHeader) != "MISS" {
		t.Fatalf("first edge: %d %s", r.code, r.header.Get(policies.CacheStatusHeader))
	}
	r := do(t, env.client, "GET", second.URL+"/v1/plans", "")
	if r.code != 200 || r.header.Get(policies.CacheStatusHeader) != "HIT" {
		t.Fatalf("second edge: %d %s", r.code, r.header.Get(policies.CacheStatusHeader))
	}
	if n := env.calls.get("ListPlans"); n != 1 {
		t.Fatalf("%d upstream calls for two edges; want 1", n)
	}
	redis.Stop()
	for range 5 {
		if r := do(t, env.client, "GET", second.URL+"/v1/plans", ""); r.code != 200 || r.header.Get(policies.CacheStatusHeader) != "MISS" {
			t.Fatalf("with Redis down: %d %s", r.code, r.header.Get(policies.CacheStatusHeader))
		}
	}
}
