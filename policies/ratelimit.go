package policies

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/portico-dev/portico/policies/chain"
	porticov1 "github.com/portico-dev/portico/protos/portico/v1"
)

// limit is a GCRA limit: a bucket of burst calls refilled at rate per
// period. The memory and Redis stores implement the same arithmetic.
type limit struct {
	name   string // for RateLimit-Policy: the tier or "default"
	rate   int
	period time.Duration
	burst  int
}

// decision is a store's answer for one call.
type decision struct {
	allowed    bool
	remaining  int
	retryAfter time.Duration // until one call would be allowed
	resetAfter time.Duration // until the bucket is full again
}

// limiter is a rate-limit store.
type limiter interface {
	allow(ctx context.Context, key string, l limit) (decision, error)
}

// memoryLimiter keeps buckets in this process, in shards; a bucket that has
// refilled completely is the same as no bucket, so sweeps drop it.
type memoryLimiter struct {
	seed   maphash.Seed
	shards [64]memShard
	now    func() time.Time
}

type memShard struct {
	mu        sync.Mutex
	tat       map[string]time.Time // theoretical arrival time per key
	lastSweep int
}

func newMemoryLimiter() *memoryLimiter {
	m := &memoryLimiter{seed: maphash.MakeSeed(), now: time.Now}
	for i := range m.shards {
		m.shards[i].tat = map[string]time.Time{}
		m.shards[i].lastSweep = 1024
	}
	return m
}

func (m *memoryLimiter) allow(_ context.Context, key string, l limit) (decision, error) {
	s := &m.shards[maphash.String(m.seed, key)%uint64(len(m.shards))]
	now := m.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tat) > 2*s.lastSweep {
		s.sweep(now)
	}
	d, tat := gcra(now, s.tat[key], l)
	if d.allowed {
		s.tat[key] = tat
	}
	return d, nil
}

// sweep drops buckets that have refilled completely (same as no bucket), so
// memory follows the callers active within one period; s.mu is held.
func (s *memShard) sweep(now time.Time) {
	for k, t := range s.tat {
		if !t.After(now) {
			delete(s.tat, k)
		}
	}
	s.lastSweep = max(len(s.tat), 1024)
}

// gcra decides one call at now for a bucket whose theoretical arrival time
// is prev, returning the new arrival time to store when allowed.
func gcra(now, prev time.Time, l limit) (decision, time.Time) {
	emission := max(l.period/time.Duration(l.rate), 1) // compile rejects rates above 1/ns
	burstOffset := emission * time.Duration(l.burst)
	tat := prev
	if tat.Before(now) {
		tat = now
	}
	newTAT := tat.Add(emission)
	allowAt := newTAT.Add(-burstOffset)
	diff := now.Sub(allowAt)
	if diff < 0 {
		return decision{retryAfter: -diff, resetAfter: tat.Sub(now)}, prev
	}
	return decision{allowed: true, remaining: int(diff / emission), resetAfter: newTAT.Sub(now)}, newTAT
}

// redisLimiter shares buckets between edge instances through Redis (the
// same GCRA, run as a Lua script so each decision is atomic).
type redisLimiter struct {
	l       *redis_rate.Limiter
	timeout time.Duration
}

func (r *redisLimiter) allow(ctx context.Context, key string, l limit) (decision, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	res, err := r.l.Allow(ctx, key, redis_rate.Limit{Rate: l.rate, Burst: l.burst, Period: l.period})
	if err != nil {
		return decision{}, err
	}
	return decision{allowed: res.Allowed > 0, remaining: res.Remaining, retryAfter: max(res.RetryAfter, 0), resetAfter: max(res.ResetAfter, 0)}, nil
}

// redisLog sends go-redis's own log lines (dial failures) to zap at debug
// level; the store's failures are already counted and logged, rate-limited.
type redisLog struct{ log *zap.Logger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug("redis client", zap.String("message", fmt.Sprintf(format, v...)))
}

var setRedisLog sync.Once

// newRedisClient connects lazily with every timeout bounded and no retries:
// a store that does not answer costs one timeout, never a hang.
func newRedisClient(c RedisConfig) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: c.Address, Username: c.Username, Password: c.Password, DB: c.DB,
		DialTimeout: c.Timeout, ReadTimeout: c.Timeout, WriteTimeout: c.Timeout, PoolTimeout: c.Timeout,
		ContextTimeoutEnabled: true, MaxRetries: -1,
		DisableIdentity: true,
	})
}

// rateLimit is a route's compiled limit.
type rateLimit struct {
	prefix   string // store key prefix: the route
	key      keyFunc
	base     limit
	tierKey  string
	tiers    map[string]limit
	store    limiter
	failOpen bool
	metrics  *Metrics
	errLog   *rate.Limiter
	log      *zap.Logger
}

type keyFunc func(r *http.Request, c *Caller) string

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// stage takes one call from the caller's bucket before the request is
// decoded: 429 with Retry-After past the limit. The RateLimit headers go on
// every answer.
func (rl *rateLimit) stage() chain.Stage {
	if rl == nil {
		return nil
	}
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		if err := rl.check(ctx, c.W.Header(), c.R, c.Caller); err != nil {
			return err
		}
		return next(ctx, c)
	}
}

// check takes one call from the caller's bucket; it sets the RateLimit
// headers on h and returns a 429 (or, failing closed, a 503) error.
func (rl *rateLimit) check(ctx context.Context, h http.Header, r *http.Request, c *Caller) error {
	// The base is the frontend's tier where it picked one (forTier).
	l := rl.base
	if rl.tierKey != "" && c != nil {
		if v, ok := c.Claims[rl.tierKey].(string); ok {
			if t, ok := rl.tiers[v]; ok {
				l = t
			}
		}
	}
	if l.rate <= 0 {
		return nil
	}
	key := rl.key(r, c)
	if len(key) > 64 {
		sum := sha256.Sum256([]byte(key))
		key = hex.EncodeToString(sum[:16])
	}
	d, err := rl.store.allow(ctx, rl.prefix+l.name+":"+key, l)
	if err != nil {
		rl.metrics.storeErrors.WithLabelValues("rate_limit").Inc()
		if rl.errLog.Allow() {
			rl.log.Warn("rate-limit store failed", zap.Bool("fail_open", rl.failOpen), zap.Error(err))
		}
		if rl.failOpen {
			return nil
		}
		return status.Error(codes.Unavailable, "rate limit store is unavailable; try again shortly")
	}
	window := int64(math.Ceil(l.period.Seconds()))
	h.Set("RateLimit-Policy", `"`+l.name+`";q=`+strconv.Itoa(l.rate)+`;w=`+strconv.FormatInt(window, 10))
	h.Set("RateLimit", `"`+l.name+`";r=`+strconv.Itoa(d.remaining)+`;t=`+strconv.FormatInt(ceilSeconds(d.resetAfter), 10))
	if d.allowed {
		return nil
	}
	rl.metrics.rateLimited.Inc()
	retry := ceilSeconds(d.retryAfter)
	st, _ := status.New(codes.ResourceExhausted, "rate limit exceeded: "+strconv.Itoa(l.rate)+" calls per "+l.period.String()+"; retry in "+strconv.FormatInt(retry, 10)+"s").
		WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d.retryAfter)})
	return chain.NewError(st).WithHeader("Retry-After", strconv.FormatInt(retry, 10))
}

// forTier is rl for the routes of a frontend whose default tier is tier
// (edge.frontends[].rate_limit_tier): the tier's limit replaces the base
// for callers whose claim picks no tier. rl itself when it has no such
// tier.
func (rl *rateLimit) forTier(tier string) *rateLimit {
	if rl == nil || tier == "" {
		return rl
	}
	l, ok := rl.tiers[tier]
	if !ok {
		return rl
	}
	out := *rl
	out.base = l
	return &out
}

func ceilSeconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

func (c *Compiler) compileRateLimit(method string, rl *porticov1.RateLimit) (*rateLimit, error) {
	period := rl.GetPeriod().AsDuration()
	if period <= 0 {
		return nil, errors.New("period: must be a positive duration")
	}
	mk := func(name string, n, burst uint32, per time.Duration) limit {
		return limit{name: name, rate: int(n), period: per, burst: orInt(int(burst), int(n))}
	}
	base := mk("default", rl.GetRequests(), rl.GetBurst(), period)
	if rl.GetRequests() == 0 && len(rl.GetTiers()) == 0 {
		return nil, errors.New("requests: must be > 0")
	}
	if err := checkRate(int(rl.GetRequests()), period); err != nil {
		return nil, err
	}
	var key keyFunc
	name := rl.GetKeyName()
	switch rl.GetKey() {
	case porticov1.RateLimit_KEY_UNSPECIFIED:
		key = func(r *http.Request, c *Caller) string {
			if !c.Anonymous() {
				return "sub:" + c.Provider + ":" + c.Subject
			}
			return "ip:" + clientIP(r)
		}
	case porticov1.RateLimit_KEY_IP:
		key = func(r *http.Request, _ *Caller) string { return "ip:" + clientIP(r) }
	case porticov1.RateLimit_KEY_SUBJECT:
		key = func(_ *http.Request, c *Caller) string {
			if c.Anonymous() {
				return "anonymous"
			}
			return "sub:" + c.Provider + ":" + c.Subject
		}
	case porticov1.RateLimit_KEY_API_KEY:
		key = func(_ *http.Request, c *Caller) string {
			if c == nil || c.APIKey == "" {
				return "no-key"
			}
			return "key:" + c.Provider + ":" + c.APIKey
		}
	case porticov1.RateLimit_KEY_HEADER:
		if name == "" {
			return nil, errors.New("key_name: KEY_HEADER needs the header name")
		}
		h := http.CanonicalHeaderKey(name)
		key = func(r *http.Request, _ *Caller) string { return "h:" + r.Header.Get(h) }
	case porticov1.RateLimit_KEY_CLAIM:
		if name == "" {
			return nil, errors.New("key_name: KEY_CLAIM needs the claim name")
		}
		key = func(_ *http.Request, c *Caller) string {
			if c == nil {
				return "c:"
			}
			return "c:" + fmt.Sprint(c.Claims[name])
		}
	default:
		return nil, fmt.Errorf("key: unknown value %d", rl.GetKey())
	}
	out := c.newRateLimit(method+":", base, key)
	if len(rl.GetTiers()) > 0 {
		// Without a tier claim, only a frontend's default picks a tier.
		out.tierKey = rl.GetTierClaim()
		out.tiers = map[string]limit{}
		for i, t := range rl.GetTiers() {
			if t.GetValue() == "" || t.GetRequests() == 0 {
				return nil, fmt.Errorf("tiers[%d]: needs a value and requests > 0", i)
			}
			per := period
			if t.GetPeriod() != nil {
				if per = t.GetPeriod().AsDuration(); per <= 0 {
					return nil, fmt.Errorf("tiers[%d].period: must be a positive duration", i)
				}
			}
			if err := checkRate(int(t.GetRequests()), per); err != nil {
				return nil, fmt.Errorf("tiers[%d]: %w", i, err)
			}
			out.tiers[t.GetValue()] = mk(t.GetValue(), t.GetRequests(), t.GetBurst(), per)
		}
	}
	return out, nil
}

// checkRate refuses limits finer than the stores can count (one call per
// microsecond).
func checkRate(n int, period time.Duration) error {
	if n > 0 && period/time.Duration(n) < time.Microsecond {
		return fmt.Errorf("requests: %d per %s is more than one per microsecond", n, period)
	}
	return nil
}

func (c *Compiler) newRateLimit(prefix string, l limit, key keyFunc) *rateLimit {
	return &rateLimit{
		prefix: "portico:rl:" + prefix, key: key, base: l, store: c.stores.limits,
		failOpen: c.cfg.RateLimit.OnStoreError == "allow", metrics: c.metrics, errLog: c.stores.errLog, log: c.log,
	}
}
