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
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestCacheStaleWhileRevalidateAndNoCache(t *testing.T) {
	var (
		calls atomic.Int64
		bg    sync.WaitGroup
		group singleflight.Group
	)
	fetch := func(context.Context) (*Response, error) {
		n := calls.Add(1)
		return &Response{Body: []byte(itoa(int(n))), ContentType: "application/json"}, nil
	}
	newPolicy := func(allowNoCache bool) *cachePolicy {
		return &cachePolicy{
			route: "GET /x", ttl: 50 * time.Millisecond, swr: time.Minute, maxEntry: 1 << 20, timeout: time.Second,
			allowNoCache: allowNoCache, store: newMemoryCache(1 << 20), flight: &group, metrics: NewMetrics(nil),
			errLog: rate.NewLimiter(1, 1), log: zap.NewNop(), bg: &bg,
		}
	}
	cp := newPolicy(false)
	req := wrapperspb.String("same")
	serve := func(cp *cachePolicy, hdr ...string) (string, string) {
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		if err := cp.serve(t.Context(), w, r, nil, req, fetch); err != nil {
			t.Fatal(err)
		}
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
	req := wrapperspb.String("same")
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
