package edge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-dev/portico/edge/compose"
	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/transcode"
)

// retryMin and retryMax bound the backoff after a failed reflection.
const (
	retryMin = 500 * time.Millisecond
	retryMax = 30 * time.Second
)

// Builder keeps the route table current: it reflects the upstreams of every
// discovery source, rebuilds the table when a descriptor set changed, and
// swaps it in.
type Builder struct {
	sources  []mesh.Discovery
	compiler *transcode.Compiler
	policies *policies.Compiler
	calls    *Calls
	tables   *Tables
	log      *zap.Logger
	interval time.Duration
	compose  ComposeConfig

	frontends       []FrontendConfig
	defaultFrontend string

	mu   sync.Mutex // serialises Refresh
	last map[string]*mesh.Reflection
	key  string

	cancel context.CancelFunc
	done   chan struct{}
}

// BuilderParams is what a Builder works from.
type BuilderParams struct {
	// Sources are the discovery sources, in route-table order.
	Sources []mesh.Discovery
	// Compiler compiles each service's methods into routes.
	Compiler *transcode.Compiler
	// Policies compiles each route's policies; nil: none.
	Policies *policies.Compiler
	// Calls makes each route's upstream call.
	Calls *Calls
	// Tables receives every table built.
	Tables *Tables
	// Interval is how often every upstream is reflected again, whatever
	// the sources signal (mesh.refresh_interval).
	Interval time.Duration
	// Compose says where the frontend protos of composed methods are.
	Compose ComposeConfig
	// Frontends, when set, get a table each (edge.frontends).
	Frontends       []FrontendConfig
	DefaultFrontend string
	Log             *zap.Logger
}

// NewBuilder returns a builder; nothing runs until Start.
func NewBuilder(p BuilderParams) *Builder {
	return &Builder{sources: p.Sources, compiler: p.Compiler, policies: p.Policies, calls: p.Calls, tables: p.Tables, log: p.Log, interval: p.Interval,
		compose: p.Compose, frontends: p.Frontends, defaultFrontend: p.DefaultFrontend, last: map[string]*mesh.Reflection{}}
}

// Refresh reflects what the sources say needs it (everything with force)
// and swaps in a new table if anything changed. A target that fails keeps
// its last good services; a target its source no longer lists loses its
// routes. It reports whether every reflection it tried succeeded.
func (b *Builder) Refresh(ctx context.Context, force bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refresh(ctx, force)
}

// ReloadFrontends reads the frontend protos again (SIGHUP) and swaps in a
// new table if they changed; it reports whether they did.
func (b *Builder) ReloadFrontends(ctx context.Context) bool {
	if b.compose.ProtosDir == "" {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	before := b.key
	b.refresh(ctx, false)
	return b.key != before
}

// Reconfigure runs apply (which changes what the compilers produce: the
// policies' operator config) between two refreshes and compiles a new table
// from the descriptors it has. If that table would drop a service the
// current one serves (a provider its options name is gone), it calls
// rollback and keeps the current table; otherwise it swaps the table in and
// calls commit (which stops what the old table used). An error from apply
// changes nothing.
func (b *Builder) Reconfigure(ctx context.Context, apply func() (commit, rollback func(), err error)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	commit, rollback, err := apply()
	if err != nil {
		return err
	}
	t := b.build(ctx, b.ordered())
	if lost := lostServices(b.tables.Load(), t); len(lost) > 0 {
		rollback()
		return fmt.Errorf("the new config would stop serving %s: %w", strings.Join(lost, ", "), errors.Join(t.Rejected...))
	}
	b.tables.Store(t)
	b.log.Info("route table rebuilt for the new config", zap.Int("routes", len(t.routes)), zap.Int("rejected", len(t.Rejected)))
	commit()
	return nil
}

// ordered lists the last good reflections in the sources' target order.
func (b *Builder) ordered() []*mesh.Reflection {
	var out []*mesh.Reflection
	for _, src := range b.sources {
		for _, t := range src.Targets() {
			if r := b.last[t]; r != nil {
				out = append(out, r)
			}
		}
	}
	return out
}

// lostServices lists the gRPC services with routes in old and none in new.
func lostServices(old, new *RouteTable) []string {
	if old == nil {
		return nil
	}
	serves := func(t *RouteTable) map[string]bool {
		m := map[string]bool{}
		for _, r := range t.routes {
			svc, _, _ := strings.Cut(strings.TrimPrefix(r.FullMethod, "/"), "/")
			m[svc] = true
		}
		return m
	}
	now := serves(new)
	var lost []string
	for svc := range serves(old) {
		if !now[svc] {
			lost = append(lost, svc)
		}
	}
	slices.Sort(lost)
	return lost
}

func (b *Builder) refresh(ctx context.Context, force bool) bool {
	allOK := true
	var targets []string
	for _, src := range b.sources {
		for _, r := range src.Reflect(ctx, force) {
			if r.Err != nil {
				allOK = false
				fields := []zap.Field{zap.String("upstream", r.Target), zap.Error(r.Err)}
				if b.last[r.Target] != nil {
					fields = append(fields, zap.String("serving", "last known descriptors"))
				}
				b.log.Warn("reflection failed", fields...)
				continue
			}
			b.last[r.Target] = r.Reflection
		}
		targets = append(targets, src.Targets()...)
	}
	listed := map[string]bool{}
	for _, t := range targets {
		listed[t] = true
	}
	for t := range b.last {
		if !listed[t] {
			b.log.Info("upstream gone; removing its routes", zap.String("upstream", t))
			delete(b.last, t)
		}
	}
	ordered := make([]*mesh.Reflection, 0, len(b.last))
	var key strings.Builder
	for _, t := range targets {
		if r := b.last[t]; r != nil {
			ordered = append(ordered, r)
			key.WriteString(t + "=" + r.Hash + ";")
		}
	}
	if b.compose.ProtosDir != "" {
		key.WriteString("compose=" + compose.Fingerprint(b.compose.ProtosDir))
	}
	if b.tables.Load() != nil && key.String() == b.key {
		return allOK
	}
	if len(ordered) == 0 && b.tables.Load() == nil {
		// Nothing was ever reflected: no table, so requests get 503 (not
		// 404) until an upstream answers.
		return allOK
	}
	t := b.build(ctx, ordered)
	for _, err := range t.Rejected {
		b.log.Error("service not exposed", zap.Error(err))
	}
	if ce := b.log.Check(zap.DebugLevel, "route served by protojson, not the fast codec"); ce != nil {
		for _, r := range t.routes {
			if why := r.Binding.Fallback(); why != "" {
				b.log.Debug("route served by protojson, not the fast codec", zap.String("route", r.Binding.String()), zap.String("why", why))
			}
		}
	}
	b.tables.Store(t)
	b.key = key.String()
	b.log.Info("route table built", zap.Int("routes", len(t.routes)), zap.Int("rejected", len(t.Rejected)))
	return allOK
}

// Build compiles the table of refls as a refresh does (a table per
// frontend, the frontend protos' composed methods), without serving it or
// keeping it: what tools such as `portico openapi` describe. The table
// returned is the default frontend's (else the first's); Frontends lists
// them all.
func (b *Builder) Build(ctx context.Context, refls []*mesh.Reflection) *RouteTable {
	return b.build(ctx, refls)
}

// build compiles a table from the reflections: one per frontend when
// frontends are configured (the one returned holds them all, and their
// rejections, each named after its frontend).
func (b *Builder) build(ctx context.Context, ordered []*mesh.Reflection) *RouteTable {
	if len(b.frontends) == 0 {
		return b.buildFor(ctx, ordered, nil)
	}
	set := &frontendSet{byListener: map[string]*RouteTable{}}
	var rejected []error
	for _, f := range b.frontends {
		t := b.buildFor(ctx, ordered, &policies.Audience{Frontend: f.Name, Include: f.Mode == "include", CORS: f.CORS, Providers: f.Providers, Tier: f.RateLimitTier})
		t.Frontend = f.Name
		for _, err := range t.Rejected {
			rejected = append(rejected, fmt.Errorf("frontend %s: %w", f.Name, err))
		}
		rule := frontendRule{t: t, keySource: f.APIKeySource}
		rule.claim, rule.value, _ = strings.Cut(f.Claim, "=")
		for _, h := range f.Hosts {
			rule.hosts = append(rule.hosts, strings.TrimPrefix(h, "*"))
		}
		set.rules = append(set.rules, rule)
		if f.Name == b.defaultFrontend {
			set.def = t
		}
		if f.Listen != "" {
			set.byListener[f.Name] = t
		}
		set.all = append(set.all, t)
	}
	// The table Tables holds is the default frontend's, else the first's:
	// its routes are the ones metrics count.
	top := set.all[0]
	if set.def != nil {
		top = set.def
	}
	top.set, top.Rejected = set, rejected
	return top
}

// buildFor compiles the table aud sees (nil: everything) and, when a
// protos directory is configured, the frontend protos as they are now:
// what does not load is rejected with its position, beside the services'
// rejections.
func (b *Builder) buildFor(ctx context.Context, ordered []*mesh.Reflection, aud *policies.Audience) *RouteTable {
	if b.compose.ProtosDir == "" {
		return buildTable(ordered, nil, aud, b.compiler, b.policies, b.calls)
	}
	// Frontend protos see the services as clients do: without their
	// internal fields, and as the frontend sees them.
	var services []protoreflect.ServiceDescriptor
	var errs []error
	for _, r := range ordered {
		// As the table sees each upstream (upstreamView): one view of its
		// files, so that two services of one file agree.
		views, _, err := upstreamView(r, b.policies != nil || aud != nil, aud)
		if err != nil {
			errs = append(errs, fmt.Errorf("frontend protos: the services of %s: %w", r.Upstream, err))
			continue
		}
		services = append(services, views...)
	}
	schema, err := compose.Schema(services)
	if err != nil {
		errs = append(errs, fmt.Errorf("frontend protos: the services' files: %w", err))
	}
	fronts, loadErrs := compose.Load(ctx, b.compose.ProtosDir, schema)
	for _, e := range loadErrs {
		errs = append(errs, fmt.Errorf("frontend protos: %w", e))
	}
	t := buildTable(ordered, fronts, aud, b.compiler, b.policies, b.calls)
	t.Rejected = append(errs, t.Rejected...)
	return t
}

// Start runs a first refresh (bounded by ctx) and then keeps refreshing in
// a goroutine owned by the builder until Stop.
func (b *Builder) Start(ctx context.Context) {
	ok := b.Refresh(ctx, true)
	loopCtx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.done = make(chan struct{})
	go b.loop(loopCtx, ok)
}

func (b *Builder) loop(ctx context.Context, ok bool) {
	defer close(b.done)
	var changed []<-chan struct{}
	for _, src := range b.sources {
		if ch := src.Changed(); ch != nil {
			changed = append(changed, ch)
		}
	}
	// Each source signals on its own channel; merge them into one.
	notify := make(chan struct{}, 1)
	var fan sync.WaitGroup
	for _, ch := range changed {
		fan.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-ch:
					select {
					case notify <- struct{}{}:
					default:
					}
				}
			}
		})
	}
	defer fan.Wait()
	if dir := b.compose.ProtosDir; dir != "" && b.compose.PollInterval > 0 {
		// A changed frontend proto makes the next refresh rebuild (its
		// fingerprint is part of the table's key).
		fan.Go(func() {
			seen := compose.Fingerprint(dir)
			tick := time.NewTicker(b.compose.PollInterval)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if fp := compose.Fingerprint(dir); fp != seen {
						seen = fp
						select {
						case notify <- struct{}{}:
						default:
						}
					}
				}
			}
		})
	}
	backoff := retryMin
	full := time.Now().Add(b.interval)
	for {
		wait := time.Until(full)
		if !ok {
			wait = min(backoff, wait)
			backoff = min(backoff*2, retryMax)
		} else {
			backoff = retryMin
		}
		t := time.NewTimer(max(wait, 0))
		force := false
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-notify:
			t.Stop()
		case <-t.C:
			force = !time.Now().Before(full)
		}
		if force {
			full = time.Now().Add(b.interval)
		}
		ok = b.Refresh(ctx, force)
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
