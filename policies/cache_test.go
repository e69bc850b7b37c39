package policies

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-dev/portico/policies/chain"
)

func TestCacheStaleWhileRevalidateAndNoCache(t *testing.T) {
	var (
		calls atomic.Int64
		bg    sync.WaitGroup
		group singleflight.Group
	)
	fetch := upstream(func(context.Context, *chain.Call) string { return itoa(int(calls.Add(1))) })
	newPolicy := func(allowNoCache bool) *cachePolicy {
		return &cachePolicy{
			route: "GET /x", ttl: 50 * time.Millisecond, swr: time.Minute, maxEntry: 1 << 20, timeout: time.Second,
			allowNoCache: allowNoCache, store: newMemoryCache(1 << 20), flight: &group, metrics: NewMetrics(nil),
			errLog: rate.NewLimiter(1, 1), log: zap.NewNop(), bg: &bg,
		}
	}
	cp := newPolicy(false)
	req := chain.MessagePayload(wrapperspb.String("same"))
	serve := func(cp *cachePolicy, hdr ...string) (string, string) {
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := serveCached(t, t.Context(), cp, &chain.Call{R: r, Req: req}, fetch)
		return w.Header().Get(CacheStatusHeader), w.Body.String()
	}
	for i, want := range []string{"MISS", "HIT"} {
		if st, body := serve(cp); st != want || body != "1" {
			t.Fatalf("call %d: %s %s; want %s 1", i, st, body, want)
		}
	}
	if st, _ := serve(cp, "Cache-Control", "no-cache"); st != "HIT" {
		t.Fatalf("no-cache honoured although the option does not allow it: %s", st)
	}
	time.Sleep(80 * time.Millisecond)
	if st, body := serve(cp); st != "STALE" || body != "1" {
		t.Fatalf("after ttl: %s %s; want STALE 1", st, body)
	}
	bg.Wait() // the background refresh
	if st, body := serve(cp); st != "HIT" || body != "2" {
		t.Fatalf("after the refresh: %s %s; want HIT 2", st, body)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d upstream calls; want 2", calls.Load())
	}
	allow := newPolicy(true)
	if st, _ := serve(allow); st != "MISS" {
		t.Fatal(st)
	}
	if st, body := serve(allow, "Cache-Control", "no-cache"); st != "BYPASS" || body != "4" {
		t.Fatalf("no-cache allowed: %s %s; want BYPASS 4", st, body)
	}
}

// A private (non-public) cache never serves one caller's entry to another:
// verified callers by identity, anonymous ones by the credentials the
// upstream would see.
func TestCacheKeySeparatesCallers(t *testing.T) {
	cp := &cachePolicy{route: "GET /x"}
	req := chain.MessagePayload(wrapperspb.String("same"))
	key := func(c *Caller, hdr ...string) string {
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		k, err := cp.key(r, c, req)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	alice := &Caller{Subject: "alice", Provider: "corp"}
	bob := &Caller{Subject: "bob", Provider: "corp"}
	if key(alice) == key(bob) || key(alice) != key(alice, "Authorization", "Bearer other") {
		t.Fatal("verified callers: keyed by identity only")
	}
	if key(nil, "Authorization", "Bearer a") == key(nil, "Authorization", "Bearer b") || key(nil, "Cookie", "s=1") == key(nil) {
		t.Fatal("anonymous callers with different credentials share an entry")
	}
	cp.public = true
	if key(alice) != key(bob) {
		t.Fatal("public: one entry for everyone")
	}
}

// The stale-while-revalidate refresh calls the upstream as the caller whose
// request found the entry stale: with its outgoing metadata (identity,
// forwarded credentials, request id) and its other context values, even
// after that request ended.
func TestCacheRefreshCarriesCallerMetadata(t *testing.T) {
	var (
		bg    sync.WaitGroup
		group singleflight.Group
		seen  = make(chan metadata.MD, 4)
	)
	type traceKey struct{}
	fetch := upstream(func(ctx context.Context, c *chain.Call) string {
		md := c.MD
		if ctx.Value(traceKey{}) != "trace-1" {
			md = metadata.Join(md, metadata.Pairs("lost-context-value", "1"))
		}
		seen <- md
		return "{}"
	})
	cp := &cachePolicy{
		route: "GET /x", ttl: 20 * time.Millisecond, swr: time.Minute, maxEntry: 1 << 20, timeout: time.Second,
		store: newMemoryCache(1 << 20), flight: &group, metrics: NewMetrics(nil),
		errLog: rate.NewLimiter(1, 1), log: zap.NewNop(), bg: &bg,
	}
	serve := func(id string) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel() // the request ends as soon as it is answered
		ctx = context.WithValue(ctx, traceKey{}, "trace-1")
		md := metadata.Pairs("x-portico-subject", "alice", "authorization", "Bearer a", "x-request-id", id)
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		serveCached(t, ctx, cp, &chain.Call{R: r, MD: md, Caller: &Caller{Provider: "corp", Subject: "alice"}, Req: chain.MessagePayload(wrapperspb.String("k"))}, fetch)
	}
	serve("fill")
	<-seen
	time.Sleep(40 * time.Millisecond)
	serve("stale") // answered from the stale entry; the refresh runs behind
	bg.Wait()
	select {
	case md := <-seen:
		for k, want := range map[string]string{"x-portico-subject": "alice", "authorization": "Bearer a", "x-request-id": "stale"} {
			if got := md.Get(k); len(got) != 1 || got[0] != want {
				t.Errorf("refresh sent %s=%q, want %q", k, got, want)
			}
		}
		if len(md.Get("lost-context-value")) > 0 {
			t.Error("the refresh lost the caller's context values (its trace)")
		}
	default:
		t.Fatal("no background refresh ran")
	}
}

// Concurrent misses make one upstream call, even when a caller's store
// lookup misses just before another caller's flight stores its answer and
// ends (it then starts a flight of its own, which must find the answer).
func TestCacheFillRechecksTheStore(t *testing.T) {
	var (
		bg    sync.WaitGroup
		group singleflight.Group
		calls atomic.Int64
	)
	cp := &cachePolicy{
		route: "GET /x", ttl: time.Minute, maxEntry: 1 << 20, timeout: time.Second,
		store: newMemoryCache(1 << 20), flight: &group, metrics: NewMetrics(nil),
		errLog: rate.NewLimiter(1, 1), log: zap.NewNop(), bg: &bg,
	}
	fetch := upstream(func(context.Context, *chain.Call) string { calls.Add(1); return "{}" })
	key := "k"
	// The first flight stores and ends; a late caller that had missed
	// calls fill afterwards, exactly the window of the race.
	if _, err := cp.fill(t.Context(), key, &chain.Call{}, fetch, true); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.fill(t.Context(), key, &chain.Call{}, fetch, true); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d upstream calls for one fresh key; want 1", n)
	}
	// A refresh (no recheck) does call again.
	if _, err := cp.fill(t.Context(), key, &chain.Call{}, fetch, false); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("refresh: %d calls, want 2", n)
	}
}

// upstream is a fetcher whose upstream answers body, rendered as is.
func upstream(body func(ctx context.Context, c *chain.Call) string) fetcher {
	return fetcher{codec: rawCodec{}, next: func(ctx context.Context, c *chain.Call) error {
		c.Resp = chain.MessagePayload(wrapperspb.String(body(ctx, c)))
		return nil
	}}
}

// rawCodec renders a wrapperspb.StringValue response as its bytes.
type rawCodec struct{}

func (rawCodec) DecodeRequest(*http.Request, []string) (*chain.Payload, error) {
	return chain.MessagePayload(wrapperspb.String("")), nil
}

func (rawCodec) EncodeResponse(dst []byte, resp *chain.Payload) ([]byte, string, error) {
	m, err := resp.Message()
	if err != nil {
		return nil, "", err
	}
	return append(dst, m.(*wrapperspb.StringValue).GetValue()...), "application/json", nil
}

// serveCached runs the cache stage for c and writes its answer as the
// writer would.
func serveCached(t *testing.T, ctx context.Context, cp *cachePolicy, c *chain.Call, f fetcher) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	c.W = w
	if err := cp.serve(ctx, c, f); err != nil {
		t.Fatal(err)
	}
	if err := chain.WriteResponse(w, c.Out); err != nil {
		t.Fatal(err)
	}
	return w
}
