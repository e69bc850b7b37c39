package policies

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/portico-dev/portico/transcode"
)

// CacheStatusHeader tells clients how the cache answered: HIT, STALE, MISS
// or BYPASS.
const CacheStatusHeader = "Portico-Cache"

// Response is a rendered unary response, as the cache keeps it.
type Response struct {
	Body        []byte      `json:"b"`
	ContentType string      `json:"c"`
	Header      http.Header `json:"h,omitempty"`
	Stored      time.Time   `json:"t"`
}

func (e *Response) size() int64 {
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
	it := &memItem{key: key, e: e, expires: c.now().Add(keep), size: e.size() + int64(len(key))}
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

// Fetch calls the upstream and renders its response.
type Fetch func(ctx context.Context) (*Response, error)

var marshalDeterministic = proto.MarshalOptions{Deterministic: true}

// key is route + bound request + vary headers (+ the caller unless public).
func (cp *cachePolicy) key(r *http.Request, c *Caller, req proto.Message) (string, error) {
	raw, err := marshalDeterministic.Marshal(req)
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

// serve answers from the cache or through one coalesced upstream call.
func (cp *cachePolicy) serve(ctx context.Context, w http.ResponseWriter, r *http.Request, c *Caller, req proto.Message, fetch Fetch) error {
	key, err := cp.key(r, c, req)
	if err != nil {
		return err
	}
	if cp.allowNoCache && noCache(r.Header) {
		cp.metrics.cache.WithLabelValues("bypass").Inc()
		e, err := cp.fill(ctx, key, fetch, false)
		if err != nil {
			return err
		}
		return writeCached(w, e, "BYPASS", 0)
	}
	e, err := cp.store.get(ctx, key)
	if err != nil {
		cp.storeFailed(err)
	}
	now := time.Now()
	if e != nil {
		age := now.Sub(e.Stored)
		if age <= cp.ttl {
			cp.metrics.cache.WithLabelValues("hit").Inc()
			return writeCached(w, e, "HIT", age)
		}
		if age <= cp.ttl+cp.swr {
			cp.metrics.cache.WithLabelValues("stale").Inc()
			// One background refresh per key; the caller is not kept waiting.
			// It runs as this caller (its identity metadata, forwarded
			// credentials, request id and trace: the context's values),
			// which is whose private key it refreshes, but outlives it.
			rctx := context.WithoutCancel(ctx)
			cp.bg.Go(func() { cp.refresh(rctx, key, fetch) })
			return writeCached(w, e, "STALE", age)
		}
	}
	cp.metrics.cache.WithLabelValues("miss").Inc()
	e, err = cp.fill(ctx, key, fetch, true)
	if err != nil {
		return err
	}
	return writeCached(w, e, "MISS", 0)
}

// fill runs fetch once for all concurrent callers of key (detached from any
// one caller, bounded by the route's timeout) and stores a success.
//
// With recheck, the flight first looks in the store again: a caller that
// missed just before another caller's flight stored its answer and ended
// would otherwise start a second upstream call for a key that is fresh by
// now (the window that let 100 concurrent misses make 2 calls).
func (cp *cachePolicy) fill(ctx context.Context, key string, fetch Fetch, recheck bool) (*Response, error) {
	ch := cp.flight.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cp.timeout)
		defer cancel()
		if recheck {
			if e, err := cp.store.get(fctx, key); err == nil && e != nil && time.Since(e.Stored) <= cp.ttl {
				return e, nil
			}
		}
		e, err := fetch(fctx)
		if err != nil {
			return nil, err
		}
		e.Stored = time.Now()
		if len(e.Body) <= cp.maxEntry {
			if err := cp.store.set(fctx, key, e, cp.ttl+cp.swr); err != nil {
				cp.storeFailed(err)
			}
		}
		return e, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*Response), nil
	}
}

func (cp *cachePolicy) refresh(ctx context.Context, key string, fetch Fetch) {
	if _, err := cp.fill(ctx, key, fetch, false); err != nil && cp.errLog.Allow() {
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

func writeCached(w http.ResponseWriter, e *Response, state string, age time.Duration) error {
	h := w.Header()
	for k, vs := range e.Header {
		h[k] = vs
	}
	h.Set("Content-Type", e.ContentType)
	h.Set("Content-Length", strconv.Itoa(len(e.Body)))
	h.Set("Age", strconv.FormatInt(int64(age/time.Second), 10))
	h.Set(CacheStatusHeader, state)
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(e.Body); err != nil {
		return fmt.Errorf("%w: writing response: %v", transcode.ErrResponseStarted, err)
	}
	return nil
}
