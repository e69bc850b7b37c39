package mesh

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Backoff after a failed Consul query: from watchRetryMin doubling to
// watchRetryMax, with ±25 % jitter so that many edges do not retry in step.
const (
	watchRetryMin = 250 * time.Millisecond
	watchRetryMax = 10 * time.Second
)

// watch runs one Consul blocking query in a loop, the way Consul's own watch
// package does: it resets the index when Consul's goes backwards (a snapshot
// restore or a new leader) and never blocks on index 0, backs off (with
// jitter) after errors and then reads without blocking so that recovery is
// seen at once, waits on lim between queries so that a busy key
// cannot spin, and stops when ctx ends. deliver runs only when the index
// moved (or on the first answer), never concurrently with itself.
func watch[T any](ctx context.Context, name string, lim *rate.Limiter, health *watchHealth, log *zap.Logger, wait time.Duration,
	fetch func(q *api.QueryOptions) (T, *api.QueryMeta, error), deliver func(T)) {
	watchResync(ctx, name, lim, health, log, wait, fetch, func(v T, _ bool) { deliver(v) })
}

// watchResync is watch whose deliver also learns whether the answer is a
// resync: the first one after a failed query, or one whose index went
// backwards. A Consul that just came back (an agent restart, a new leader,
// a snapshot restore) may answer before it holds every registration again,
// so a resync that lacks something is a hint, not a fact.
func watchResync[T any](ctx context.Context, name string, lim *rate.Limiter, health *watchHealth, log *zap.Logger, wait time.Duration,
	fetch func(q *api.QueryOptions) (T, *api.QueryMeta, error), deliver func(v T, resync bool)) {
	var index uint64
	first := true
	failed := false
	backoff := watchRetryMin
	for {
		if err := lim.Wait(ctx); err != nil {
			return
		}
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
		v, meta, err := fetch(q)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			health.fail(name, err, log)
			failed = true
			// Read at once (no blocking) after the error, so a recovered
			// Consul is noticed now, not when the next change happens.
			index = 0
			d := time.Duration(float64(backoff) * (0.75 + rand.Float64()/2))
			backoff = min(backoff*2, watchRetryMax)
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		health.ok(name, log)
		backoff = watchRetryMin
		next := meta.LastIndex
		resync := failed
		switch {
		case next < index:
			next = 0 // went backwards: start over with a fresh read
			resync = true
		case next == 0:
			next = 1 // never block on 0, which returns at once
		}
		if first || next != index {
			deliver(v, resync && !first)
		}
		first, failed = false, false
		index = next
	}
}

// watchHealth tracks whether every Consul watch of a component is currently
// answering; the edge reports it on /readyz and as a metric.
type watchHealth struct {
	mu       sync.Mutex
	failing  map[string]error
	since    time.Time // when the first currently failing watch started failing
	errors   uint64
	onChange func(healthy bool)
}

func newWatchHealth() *watchHealth { return &watchHealth{failing: map[string]error{}} }

func (h *watchHealth) fail(name string, err error, log *zap.Logger) {
	h.mu.Lock()
	h.errors++
	_, already := h.failing[name]
	h.failing[name] = err
	wasHealthy := len(h.failing) == 1 && !already
	if wasHealthy {
		h.since = time.Now()
	}
	cb := h.onChange
	h.mu.Unlock()
	if !already {
		log.Warn("consul watch failing; serving the last known state and retrying", zap.String("watch", name), zap.Error(err))
	}
	if wasHealthy && cb != nil {
		cb(false)
	}
}

func (h *watchHealth) ok(name string, log *zap.Logger) {
	h.mu.Lock()
	_, was := h.failing[name]
	delete(h.failing, name)
	recovered := was && len(h.failing) == 0
	cb := h.onChange
	h.mu.Unlock()
	if was {
		log.Info("consul watch recovered", zap.String("watch", name))
	}
	if recovered && cb != nil {
		cb(true)
	}
}

func (h *watchHealth) forget(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.failing, name)
}

// WatchStatus describes the Consul watches of a component.
type WatchStatus struct {
	// Healthy is true when every watch answered its last query.
	Healthy bool
	// Since is when the oldest current failure started (zero when healthy).
	Since time.Time
	// Err describes one current failure.
	Err error
	// Errors counts failed queries since start.
	Errors uint64
}

func (h *watchHealth) status() WatchStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := WatchStatus{Healthy: len(h.failing) == 0, Errors: h.errors}
	if !st.Healthy {
		st.Since = h.since
		for name, err := range h.failing {
			st.Err = fmt.Errorf("%s: %w", name, err)
			break
		}
	}
	return st
}

// sleep waits d unless ctx ends first; it reports whether it waited.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
