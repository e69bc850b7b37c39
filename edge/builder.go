package edge

import (
	"context"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/transcode"
)

// retryMin and retryMax bound the backoff after a failed reflection.
const (
	retryMin = 500 * time.Millisecond
	retryMax = 30 * time.Second
)

// Builder keeps the route table current: it reflects the upstreams, rebuilds
// the table when a descriptor set changed, and swaps it in.
type Builder struct {
	ups      *mesh.Upstreams
	compiler *transcode.Compiler
	tables   *Tables
	log      *zap.Logger
	interval time.Duration

	mu   sync.Mutex // serialises Refresh
	last map[string]*mesh.Reflection
	key  string
	ok   bool // every upstream answered on the last refresh

	cancel context.CancelFunc
	done   chan struct{}
}

// NewBuilder returns a builder; nothing runs until Start.
func NewBuilder(ups *mesh.Upstreams, c *transcode.Compiler, tables *Tables, interval time.Duration, log *zap.Logger) *Builder {
	return &Builder{ups: ups, compiler: c, tables: tables, log: log, interval: interval, last: map[string]*mesh.Reflection{}}
}

// Refresh reflects every upstream once and swaps in a new table if anything
// changed. An upstream that fails keeps its last good services. It reports
// whether every upstream answered.
func (b *Builder) Refresh(ctx context.Context) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	refls, errs := b.ups.Reflect(ctx)
	allOK := true
	for i, addr := range b.ups.Addresses() {
		if errs[i] != nil {
			allOK = false
			fields := []zap.Field{zap.String("upstream", addr), zap.Error(errs[i])}
			if b.last[addr] != nil {
				fields = append(fields, zap.String("serving", "last known descriptors"))
			}
			b.log.Warn("reflection failed", fields...)
			continue
		}
		b.last[addr] = refls[i]
	}
	b.ok = allOK
	ordered := make([]*mesh.Reflection, 0, len(b.last))
	var key strings.Builder
	for _, addr := range b.ups.Addresses() {
		if r := b.last[addr]; r != nil {
			ordered = append(ordered, r)
			key.WriteString(addr + "=" + r.Hash + ";")
		}
	}
	if b.tables.Load() != nil && key.String() == b.key {
		return allOK
	}
	if len(ordered) == 0 {
		// Nothing was ever reflected: no table, so requests get 503 (not
		// 404) until an upstream answers.
		return allOK
	}
	t := BuildTable(ordered, b.compiler)
	for _, err := range t.Rejected {
		b.log.Error("service not exposed", zap.Error(err))
	}
	b.tables.Store(t)
	b.key = key.String()
	b.log.Info("route table built", zap.Int("routes", len(t.routes)), zap.Int("rejected", len(t.Rejected)))
	return allOK
}

// Start runs a first refresh (bounded by ctx) and then keeps refreshing in
// a goroutine owned by the builder until Stop.
func (b *Builder) Start(ctx context.Context) {
	ok := b.Refresh(ctx)
	loopCtx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.done = make(chan struct{})
	go b.loop(loopCtx, ok)
}

func (b *Builder) loop(ctx context.Context, ok bool) {
	defer close(b.done)
	backoff := retryMin
	for {
		wait := b.interval
		if !ok {
			wait = min(backoff, b.interval)
			backoff = min(backoff*2, retryMax)
		} else {
			backoff = retryMin
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		ok = b.Refresh(ctx)
	}
}

// Stop ends the refresh loop and waits for it.
func (b *Builder) Stop() {
	if b.cancel == nil {
		return
	}
	b.cancel()
	<-b.done
}

// Ready reports whether a table has been built.
func (b *Builder) Ready() bool { return b.tables.Load() != nil }
