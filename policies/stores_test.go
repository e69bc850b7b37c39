package policies

import (
	"strings"
	"testing"
	"time"
)

func TestMemoryLimiterGCRA(t *testing.T) {
	now := time.Unix(1000, 0)
	m := newMemoryLimiter()
	m.now = func() time.Time { return now }
	l := limit{name: "default", rate: 10, period: time.Second, burst: 5}
	ctx := t.Context()
	for i := range 5 {
		d, _ := m.allow(ctx, "k", l)
		if !d.allowed || d.remaining != 4-i {
			t.Fatalf("call %d: %+v", i, d)
		}
	}
	d, _ := m.allow(ctx, "k", l)
	if d.allowed || d.retryAfter != 100*time.Millisecond {
		t.Fatalf("6th call: %+v; want refused with retry after 100ms", d)
	}
	if d, _ := m.allow(ctx, "other", l); !d.allowed {
		t.Fatal("keys share a bucket")
	}
	now = now.Add(100 * time.Millisecond)
	if d, _ := m.allow(ctx, "k", l); !d.allowed {
		t.Fatalf("after the refill: %+v", d)
	}
	if d, _ := m.allow(ctx, "k", l); d.allowed {
		t.Fatal("one refill allowed two calls")
	}
	// Buckets that refilled completely are swept.
	for i := range 5000 {
		_, _ = m.allow(ctx, "sweep-"+itoa(i), l)
	}
	now = now.Add(time.Hour)
	_, _ = m.allow(ctx, "fresh", l)
	total := 0
	for i := range m.shards {
		m.shards[i].sweep(now)
		total += len(m.shards[i].tat)
	}
	if total != 1 {
		t.Fatalf("%d buckets kept after an hour; only the one in use should stay", total)
	}
}

func TestRetryBudget(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newRetryBudget(0.2, 1)
	b.now = func() time.Time { return now }
	for range 100 {
		b.call()
	}
	allowed := 0
	for range 100 {
		if b.withdraw() {
			allowed++
		}
	}
	// 20 % of 100 calls plus 1/s over the 10 s window.
	if allowed != 30 {
		t.Fatalf("allowed %d retries; want 30", allowed)
	}
	now = now.Add(11 * time.Second) // the window moved on
	if !b.withdraw() {
		t.Fatal("the minimum allowance did not come back")
	}
}

func TestMemoryCacheBudget(t *testing.T) {
	c := newMemoryCache(10_000)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	ctx := t.Context()
	body := make([]byte, 1000)
	for i := range 20 {
		_ = c.set(ctx, "k"+itoa(i), &Response{Body: body}, time.Minute)
		if c.bytes() > 10_000 {
			t.Fatalf("cache holds %d bytes over its 10000 budget", c.bytes())
		}
	}
	if e, _ := c.get(ctx, "k0"); e != nil {
		t.Fatal("least recently used entry survived")
	}
	if e, _ := c.get(ctx, "k19"); e == nil {
		t.Fatal("newest entry evicted")
	}
	now = now.Add(2 * time.Minute)
	if e, _ := c.get(ctx, "k19"); e != nil {
		t.Fatal("expired entry served")
	}
	_ = c.set(ctx, "huge", &Response{Body: make([]byte, 20_000)}, time.Minute)
	if e, _ := c.get(ctx, "huge"); e != nil {
		t.Fatal("an entry larger than the whole budget was kept")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mut  func(*Config)
		want string
	}{
		{"defaults", func(*Config) {}, ""},
		{"jwt without issuer", func(c *Config) { c.JWT = []JWTProvider{{Name: "a", JWKSFile: "x"}} }, "issuer is required"},
		{"jwt with both sources", func(c *Config) { c.JWT = []JWTProvider{{Name: "a", Issuer: "i", JWKSFile: "x", JWKSURL: "https://x"}} }, "exactly one of jwks_url and jwks_file"},
		{"jwt alg none", func(c *Config) {
			c.JWT = []JWTProvider{{Name: "a", Issuer: "i", JWKSFile: "x", Algorithms: []string{"none"}}}
		}, `algorithm "none" is not allowed`},
		{"jwt HS256", func(c *Config) {
			c.JWT = []JWTProvider{{Name: "a", Issuer: "i", JWKSFile: "x", Algorithms: []string{"HS256"}}}
		}, `algorithm "HS256" is not allowed`},
		{"duplicate names", func(c *Config) {
			c.JWT = []JWTProvider{{Name: "a", Issuer: "i", JWKSFile: "x"}}
			c.APIKeys = []APIKeySource{{Name: "a", File: "k"}}
		}, `name "a" is used twice`},
		{"redis store without address", func(c *Config) { c.RateLimit.Store = "redis" }, "redis.address is empty"},
		{"unknown failure mode", func(c *Config) { c.RateLimit.OnStoreError = "maybe" }, "on_store_error must be allow or deny"},
		{"retry attempts", func(c *Config) { c.Retry.Attempts = 9 }, "retry.attempts must be within 1..5"},
		{"cors credentials with *", func(c *Config) { c.CORS = &CORSConfig{AllowOrigins: []string{"*"}, AllowCredentials: true} }, "allow_credentials cannot go"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mut(&c)
			err := c.Validate()
			if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate() = %v; want %q", err, tt.want)
			}
		})
	}
}
