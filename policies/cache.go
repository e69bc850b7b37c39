package policies

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/portico-dev/portico/policies/chain"
)

// CacheStatusHeader tells clients how the cache answered: HIT, STALE, MISS
// or BYPASS.
const CacheStatusHeader = "Portico-Cache"

// Response is a rendered unary response, as the cache keeps it.
type Response = chain.Response

func responseSize(e *Response) int64 {
	n := int64(len(e.Body)+len(e.ContentType)) + 128
	for k, vs := range e.Header {
		n += int64(len(k))
		for _, v := range vs {
			n += int64(len(v))
		}
	}
	return n
}

// cacheStore keeps responses by key.
type cacheStore interface {
	get(ctx context.Context, key string) (*Response, error)
	set(ctx context.Context, key string, e *Response, keep time.Duration) error
}

// memoryCache is an LRU bounded by bytes.
type memoryCache struct {
	mu       sync.Mutex
	max, cur int64
	ll       *list.List
	items    map[string]*list.Element
	now      func() time.Time
}

type memItem struct {
	key     string
	e       *Response
	expires time.Time
	size    int64
}

func newMemoryCache(maxBytes int64) *memoryCache {
	return &memoryCache{max: maxBytes, ll: list.New(), items: map[string]*list.Element{}, now: time.Now}
}

func (c *memoryCache) get(_ context.Context, key string) (*Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, nil
	}
	it := el.Value.(*memItem)
	if c.now().After(it.expires) {
		c.remove(el)
		return nil, nil
	}
	c.ll.MoveToFront(el)
	return it.e, nil
}

func (c *memoryCache) set(_ context.Context, key string, e *Response, keep time.Duration) error {
	it := &memItem{key: key, e: e, expires: c.now().Add(keep), size: responseSize(e) + int64(len(key))}
	if it.size > c.max {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.remove(el)
	}
	c.items[key] = c.ll.PushFront(it)
	c.cur += it.size
	for c.cur > c.max {
		c.remove(c.ll.Back())
	}
	return nil
}

func (c *memoryCache) remove(el *list.Element) {
	it := c.ll.Remove(el).(*memItem)
	delete(c.items, it.key)
	c.cur -= it.size
}

// bytes reports the bytes held, for tests and metrics.
func (c *memoryCache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// redisCache shares responses between edge instances.
type redisCache struct {
	rdb     *redis.Client
	timeout time.Duration
}

func (c *redisCache) get(ctx context.Context, key string) (*Response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	raw, err := c.rdb.Get(ctx, "portico:cache:"+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var e Response
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, nil // a foreign or corrupt value is a miss
	}
	return &e, nil
}

func (c *redisCache) set(ctx context.Context, key string, e *Response, keep time.Duration) error {
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.rdb.Set(ctx, "portico:cache:"+key, raw, keep).Err()
}

// cachePolicy is a route's compiled cache option.
type cachePolicy struct {
	route        string
	ttl, swr     time.Duration
	vary         []string
	public       bool
	allowNoCache bool
	maxEntry     int
	timeout      time.Duration // of a coalesced (detached) upstream call
	store        cacheStore
	flight       *singleflight.Group
	metrics      *Metrics
	errLog       *rate.Limiter
	log          *zap.Logger
	bg           *sync.WaitGroup // background refreshes; Compiler.Stop waits
}

// key is route + bound request + vary headers (+ the caller unless public).
// The request is keyed by the wire bytes the upstream would get: the same
// key is the same request (two spellings of one request may miss each
// other, never share an answer).
func (cp *cachePolicy) key(r *http.Request, c *Caller, req *chain.Payload) (string, error) {
	raw, err := req.Wire()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(cp.route))
	h.Write([]byte{0})
	h.Write(raw)
	for _, v := range cp.vary {
		h.Write([]byte{0})
		h.Write([]byte(strings.Join(r.Header.Values(v), ",")))
	}
	if !cp.public {
		h.Write([]byte{1})
		if !c.Anonymous() {
			h.Write([]byte(c.Provider + "\x00" + c.Subject))
		} else {
			// No identity the edge verified, but the upstream may tell
			// callers apart by the credentials it is forwarded: keep them
			// apart here too.
			for _, name := range []string{"Authorization", "Cookie", "X-Api-Key"} {
				h.Write([]byte{0})
				h.Write([]byte(strings.Join(r.Header.Values(name), ",")))
			}
		}
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)), nil
}

// stage answers a GET from the store while the answer is fresh (and,
// within stale_while_revalidate, while one background call refreshes it);
// misses of the same key are coalesced into one upstream call. The rest of
// the chain (retries, the upstream call) runs on a detached copy of the
// call, so it carries the caller's metadata even when it outlives the
// request.
func (cp *cachePolicy) stage(codec Codec) chain.Stage {
	if cp == nil {
		return nil
	}
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		return cp.serve(ctx, c, fetcher{codec: codec, next: next})
	}
}

// fetcher runs the rest of the chain and renders its answer for the store.
type fetcher struct {
	codec Codec
	next  chain.Next
}

// filled is a flight's result: the answer and the instance that gave it.
type filled struct {
	e        *Response
	upstream string
	partial  bool // a composed answer with degraded calls: never stored
}

func (f fetcher) fetch(ctx context.Context, c *chain.Call) (filled, error) {
	if err := f.next(ctx, c); err != nil {
		return filled{}, err
	}
	body, ct, err := f.codec.EncodeResponse(nil, c.Resp)
	c.Resp.Release()
	if err != nil {
		return filled{}, err
	}
	return filled{&Response{Body: body, ContentType: ct, Header: c.Header}, c.Upstream, c.Partial}, nil
}

// serve answers from the cache or through one coalesced upstream call.
func (cp *cachePolicy) serve(ctx context.Context, c *chain.Call, f fetcher) error {
	key, err := cp.key(c.R, c.Caller, c.Req)
	if err != nil {
		return err
	}
	if cp.allowNoCache && noCache(c.R.Header) {
		cp.metrics.cache.WithLabelValues("bypass").Inc()
		return cp.answer(ctx, c, key, f, "BYPASS", false)
	}
	e, err := cp.store.get(ctx, key)
	if err != nil {
		cp.storeFailed(err)
	}
	if e != nil {
		age := time.Since(e.Stored)
		if age <= cp.ttl {
			cp.metrics.cache.WithLabelValues("hit").Inc()
			cached(c, e, "HIT", age)
			return nil
		}
		if age <= cp.ttl+cp.swr {
			cp.metrics.cache.WithLabelValues("stale").Inc()
			// One background refresh per key; the caller is not kept waiting.
			// It runs as this caller (its identity metadata, forwarded
			// credentials, request id and trace: the call's metadata and the
			// context's values), which is whose private key it refreshes,
			// but outlives it.
			rctx, rc := context.WithoutCancel(ctx), c.Detach()
			cp.bg.Go(func() { cp.refresh(rctx, key, rc, f) })
			cached(c, e, "STALE", age)
			return nil
		}
	}
	cp.metrics.cache.WithLabelValues("miss").Inc()
	return cp.answer(ctx, c, key, f, "MISS", true)
}

// answer fills key and makes the result the call's answer.
func (cp *cachePolicy) answer(ctx context.Context, c *chain.Call, key string, f fetcher, state string, recheck bool) error {
	res, err := cp.fill(ctx, key, c.Detach(), f, recheck)
	if err != nil {
		return err
	}
	c.Upstream = res.upstream
	cached(c, res.e, state, 0)
	return nil
}

// cached makes e the call's answer, saying how the cache gave it.
func cached(c *chain.Call, e *Response, state string, age time.Duration) {
	h := c.W.Header()
	h.Set("Age", strconv.FormatInt(int64(age/time.Second), 10))
	h.Set(CacheStatusHeader, state)
	c.Out = e
}

// fill runs the rest of the chain once for all concurrent callers of key
// (detached from any one caller, bounded by the route's timeout) and
// stores a success.
//
// With recheck, the flight first looks in the store again: a caller that
// missed just before another caller's flight stored its answer and ended
// would otherwise start a second upstream call for a key that is fresh by
// now (the window that let 100 concurrent misses make 2 calls).
func (cp *cachePolicy) fill(ctx context.Context, key string, fc *chain.Call, f fetcher, recheck bool) (filled, error) {
	ch := cp.flight.DoChan(key, func() (any, error) {
		timeout := cp.timeout
		if fc.Timeout > 0 {
			timeout = min(timeout, fc.Timeout)
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		if recheck {
			if e, err := cp.store.get(fctx, key); err == nil && e != nil && time.Since(e.Stored) <= cp.ttl {
				return filled{e: e}, nil
			}
		}
		res, err := f.fetch(fctx, fc)
		if err != nil {
			return nil, err
		}
		res.e.Stored = time.Now()
		if len(res.e.Body) <= cp.maxEntry && !res.partial {
			if err := cp.store.set(fctx, key, res.e, cp.ttl+cp.swr); err != nil {
				cp.storeFailed(err)
			}
		}
		return res, nil
	})
	select {
	case <-ctx.Done():
		return filled{}, chain.FromContextError(ctx.Err())
	case res := <-ch:
		if res.Err != nil {
			return filled{}, res.Err
		}
		return res.Val.(filled), nil
	}
}

func (cp *cachePolicy) refresh(ctx context.Context, key string, c *chain.Call, f fetcher) {
	if _, err := cp.fill(ctx, key, c, f, false); err != nil && cp.errLog.Allow() {
		cp.log.Info("background cache refresh failed; the stale response stays until it expires", zap.String("route", cp.route), zap.Error(err))
	}
}

func (cp *cachePolicy) storeFailed(err error) {
	cp.metrics.storeErrors.WithLabelValues("cache").Inc()
	if cp.errLog.Allow() {
		cp.log.Warn("cache store failed; serving without it", zap.Error(err))
	}
}

func noCache(h http.Header) bool {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			if d == "no-cache" || d == "no-store" || d == "max-age=0" {
				return true
			}
		}
	}
	return h.Get("Pragma") == "no-cache"
}
