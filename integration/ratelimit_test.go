package integration

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
)

// GetQuota's option: 600 calls a minute (burst 600) per subject; 60 on the
// free plan.
const quotaN, quotaPeriod = 600, time.Minute

type tally struct {
	ok, limited, other atomic.Int64
	elapsed            time.Duration
	// minSpan is the least time the edges can have seen between the first
	// request and the last: from the first answer received to the last
	// request sent (elapsed is the most). On a busy machine the two differ
	// by the latency of the first and last calls.
	minSpan   time.Duration
	latencies []time.Duration
	firstDone time.Time
	lastSent  time.Time
}

// hammer sends GET /v1/quota as fast as 8 clients can, spread over the
// edges, for d; with untilLimited, also on until the first 429 (at most 20 s
// more: a busy machine may need longer than d to spend the quota); it
// returns the counts and the span from the first request sent to the last
// answer received.
func hammer(t *testing.T, c *http.Client, edges []string, tok string, d time.Duration, untilLimited bool) *tally {
	t.Helper()
	var (
		res tally
		mu  sync.Mutex
		wg  sync.WaitGroup
		n   atomic.Int64
	)
	start := time.Now()
	stop, limit := start.Add(d), start.Add(d+20*time.Second)
	more := func() bool {
		now := time.Now()
		return now.Before(stop) || untilLimited && res.limited.Load() == 0 && now.Before(limit)
	}
	for range 8 {
		wg.Go(func() {
			for more() {
				i := n.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				req, _ := http.NewRequestWithContext(ctx, "GET", edges[int(i)%len(edges)]+"/v1/quota", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				t0 := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					cancel()
					res.other.Add(1)
					t.Errorf("request failed (a hang or a crash): %v", err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				cancel()
				done := time.Now()
				mu.Lock()
				res.latencies = append(res.latencies, done.Sub(t0))
				if res.firstDone.IsZero() || done.Before(res.firstDone) {
					res.firstDone = done
				}
				if t0.After(res.lastSent) {
					res.lastSent = t0
				}
				mu.Unlock()
				switch resp.StatusCode {
				case 200:
					res.ok.Add(1)
				case 429:
					res.limited.Add(1)
				default:
					res.other.Add(1)
				}
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.minSpan = max(res.lastSent.Sub(res.firstDone), 0)
	return &res
}

func (r *tally) p99() time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	slices.Sort(r.latencies)
	return r.latencies[len(r.latencies)*99/100]
}

// expected is what an exact limiter accepts in the span: the burst plus the
// refill.
func expected(n int, period, span time.Duration) float64 {
	return float64(n) + float64(n)*span.Seconds()/period.Seconds()
}

func withRedis(r *harness.Redis, onError string) func(*app.Config) {
	return func(cfg *app.Config) {
		cfg.Policies.Redis.Address = r.Addr
		cfg.Policies.Redis.Timeout = 100 * time.Millisecond
		cfg.Policies.RateLimit.Store = "redis"
		cfg.Policies.RateLimit.OnStoreError = onError
	}
}

func TestRateLimitAccuracy(t *testing.T) {
	redis := harness.StartRedis(t)
	idp := harness.NewIDP(t)
	b := harness.Services(t, []string{"accounts"}, nil)
	client := harness.Client(t)
	start := func(mut ...func(*app.Config)) string {
		e := harness.Portico(t, func(cfg *app.Config) {
			withIDP(idp)(cfg)
			for _, m := range mut {
				m(cfg)
			}
		}, b.Addr)
		return e.URL
	}
	memory := start()
	// What is measured is the limiter's accuracy: a Redis call that times
	// out (100 ms in withRedis, reachable on a busy machine) fails open and
	// lets extra calls in, which is TestRateLimitRedisStoppedMidTest's
	// subject, not this one's.
	patient := func(cfg *app.Config) { cfg.Policies.Redis.Timeout = 2 * time.Second }
	shared1, shared2 := start(withRedis(redis, "allow"), patient), start(withRedis(redis, "allow"), patient)

	for i, tc := range []struct {
		name  string
		edges []string
	}{
		{"one instance, memory store", []string{memory}},
		{"one instance, redis store", []string{shared1}},
		{"two instances, one redis limit", []string{shared1, shared2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := idp.Token("user-"+strconv.Itoa(i), map[string]any{"scope": "accounts", "plan": "paid"})
			res := hammer(t, client, tc.edges, tok, 1500*time.Millisecond, true)
			want := expected(quotaN, quotaPeriod, res.elapsed)
			got := float64(res.ok.Load())
			t.Logf("%s: accepted %d, limited %d, other %d in %s; exact limiter: %.1f; off by %.2f%% of N; p99 %s",
				tc.name, res.ok.Load(), res.limited.Load(), res.other.Load(), res.elapsed.Round(time.Millisecond), want, 100*(got-want)/quotaN, res.p99())
			if res.other.Load() != 0 {
				t.Fatalf("%d answers were neither 200 nor 429", res.other.Load())
			}
			if res.limited.Load() == 0 {
				t.Fatal("nothing was limited: the load did not reach the limit")
			}
			if diff := got - want; diff > 0.01*quotaN || diff < -0.01*quotaN {
				t.Fatalf("accepted %v; want %.1f ± 1%% of %d", got, want, quotaN)
			}
		})
	}

	t.Run("tier from a claim", func(t *testing.T) {
		tok := idp.Token("free-user", map[string]any{"scope": "accounts", "plan": "free"})
		res := hammer(t, client, []string{shared1, shared2}, tok, time.Second, true)
		// The tokens refilled while the edges saw the load: between
		// minSpan and elapsed, one call either way (the refill's last token
		// may land just outside the span).
		lo, hi := expected(60, quotaPeriod, res.minSpan), expected(60, quotaPeriod, res.elapsed)
		if got := float64(res.ok.Load()); got < lo-1.01 || got > hi+1.01 {
			t.Fatalf("free tier accepted %v; want %.1f to %.1f (spans %s to %s)", got, lo, hi, res.minSpan, res.elapsed)
		}
	})

	t.Run("429 body and headers", func(t *testing.T) {
		// free-user spent the free tier above; a token may have refilled.
		tok := idp.Token("free-user", map[string]any{"scope": "accounts", "plan": "free"})
		var r response
		for range 5 {
			if r = do(t, client, "GET", shared1+"/v1/quota", "", bearer(tok)...); r.code != 200 {
				break
			}
		}
		if r.code != 429 {
			t.Fatalf("status %d", r.code)
		}
		if r.header.Get("Retry-After") == "" || r.header.Get("RateLimit-Policy") != `"free";q=60;w=60` ||
			!strings.HasPrefix(r.header.Get("RateLimit"), `"free";r=0;t=`) {
			t.Fatalf("headers: %v", r.header)
		}
		st := jsonOf(t, r.body)
		d := st["details"].([]any)[0].(map[string]any)
		if st["code"] != float64(8) || d["@type"] != "type.googleapis.com/google.rpc.RetryInfo" || d["retryDelay"] == "" {
			t.Fatalf("body: %s", r.body)
		}
	})
}

func TestRateLimitRedisStoppedMidTest(t *testing.T) {
	redis := harness.StartRedis(t)
	idp := harness.NewIDP(t)
	b := harness.Services(t, []string{"accounts"}, nil)
	client := harness.Client(t)
	open := harness.Portico(t, func(cfg *app.Config) { withIDP(idp)(cfg); withRedis(redis, "allow")(cfg) }, b.Addr)
	closed := harness.Portico(t, func(cfg *app.Config) { withIDP(idp)(cfg); withRedis(redis, "deny")(cfg) }, b.Addr)
	tok := idp.Token("dora", map[string]any{"scope": "accounts", "plan": "free"})

	// Spend the free tier's 60 through Redis: both edges now refuse.
	res := hammer(t, client, []string{open.URL, closed.URL}, tok, 500*time.Millisecond, true)
	if res.limited.Load() == 0 {
		t.Fatalf("limit not reached: %d accepted", res.ok.Load())
	}

	redis.Stop()
	failOpen := hammer(t, client, []string{open.URL}, tok, 500*time.Millisecond, false)
	failClosed := 0
	for range 20 {
		r := do(t, client, "GET", closed.URL+"/v1/quota", "", bearer(tok)...)
		if r.code != 503 || !strings.Contains(r.body, "rate limit store is unavailable") {
			t.Fatalf("fail-closed edge answered %d %s; want 503", r.code, r.body)
		}
		failClosed++
	}
	t.Logf("redis down: fail-open edge accepted %d of %d (p99 %s); fail-closed edge refused %d with 503",
		failOpen.ok.Load(), failOpen.ok.Load()+failOpen.limited.Load()+failOpen.other.Load(), failOpen.p99(), failClosed)
	if failOpen.other.Load() != 0 || failOpen.limited.Load() != 0 || failOpen.ok.Load() == 0 {
		t.Fatalf("fail-open edge: ok %d limited %d other %d", failOpen.ok.Load(), failOpen.limited.Load(), failOpen.other.Load())
	}
	m := do(t, client, "GET", open.AdminURL+"/metrics", "")
	if !strings.Contains(m.body, `portico_policy_store_errors_total{store="rate_limit"}`) {
		t.Fatal("no store error metric")
	}

	// Redis back (empty): limits apply again without restarting the edges.
	redis.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := hammer(t, client, []string{closed.URL}, tok, 300*time.Millisecond, true)
		if res.limited.Load() > 0 && res.other.Load() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("limits never applied again after Redis came back: ok %d other %d", res.ok.Load(), res.other.Load())
		}
	}
}
