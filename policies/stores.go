package policies

import (
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// stores is what the compiled routes share and what outlives every table
// swap and reload: the Redis client, the rate-limit and cache stores, the
// cache's coalesced fills and background refreshes. Changing them needs a
// restart (Compiler.Reconfigure keeps them).
type stores struct {
	rdb    *redis.Client // nil without Redis
	limits limiter
	cache  cacheStore
	flight singleflight.Group
	bg     sync.WaitGroup // stale-while-revalidate refreshes
	errLog *rate.Limiter  // one store-failure log line a second
}

// newStores prepares the stores named by cfg; nothing connects until used.
func newStores(cfg Config, log *zap.Logger) *stores {
	s := &stores{errLog: rate.NewLimiter(rate.Every(time.Second), 1)}
	if cfg.Redis.Address != "" {
		setRedisLog.Do(func() { redis.SetLogger(redisLog{log.Named("redis")}) })
		s.rdb = newRedisClient(cfg.Redis)
	}
	if cfg.RateLimit.Store == "redis" {
		s.limits = &redisLimiter{l: redis_rate.NewLimiter(s.rdb), timeout: cfg.Redis.Timeout}
	} else {
		s.limits = newMemoryLimiter()
	}
	if cfg.Cache.Store == "redis" {
		s.cache = &redisCache{rdb: s.rdb, timeout: cfg.Redis.Timeout}
	} else {
		s.cache = newMemoryCache(cfg.Cache.MaxBytes)
	}
	return s
}

// close waits for background refreshes and closes the Redis client.
func (s *stores) close() error {
	s.bg.Wait()
	if s.rdb != nil {
		return s.rdb.Close()
	}
	return nil
}
