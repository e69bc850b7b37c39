package mesh

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
)

// OutlierConfig is `mesh.outlier_detection`: passive ejection of instances
// that keep failing, so one bad instance does not take a route down while
// Consul still reports it passing.
type OutlierConfig struct {
	// ConsecutiveFailures ejects an instance after this many calls in a row
	// failed with UNAVAILABLE, UNKNOWN, INTERNAL or DATA_LOSS (the codes of a
	// broken instance, not of a bad request). 0 turns ejection off.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// BaseEjection is the first ejection's length; each further ejection of
	// the same instance doubles it, up to MaxEjection.
	BaseEjection time.Duration `yaml:"base_ejection"`
	// MaxEjection caps an ejection's length.
	MaxEjection time.Duration `yaml:"max_ejection"`
	// MaxEjectedPercent caps the share of a service's instances ejected at
	// once (rounded down; a lone instance is never ejected).
	MaxEjectedPercent int `yaml:"max_ejected_percent"`
}

// outliers tracks call results per instance address of one service.
type outliers struct {
	cfg     OutlierConfig
	svc     string
	log     *zap.Logger
	push    func()
	now     func() time.Time
	mu      sync.Mutex
	hosts   map[string]*hostState
	total   int  // instances Consul reports
	stopped bool // stop was called: no more timers
	// timers counts ejection timers set and not yet done (stopped, or
	// their push returned); stop waits for them.
	timers sync.WaitGroup
}

type hostState struct {
	consecutive  int
	ejections    int // consecutive ejections; reset after a healthy spell
	ejectedUntil time.Time
	lastEjection time.Time
	timer        *time.Timer
}

func failureCode(c codes.Code) bool {
	return c == codes.Unavailable || c == codes.Unknown || c == codes.Internal || c == codes.DataLoss
}

// report records one call's result on addr and ejects it when it crosses
// the threshold; it reports whether the set of usable instances changed.
func (o *outliers) report(addr string, err error) {
	if o == nil || o.cfg.ConsecutiveFailures <= 0 || addr == "" {
		return
	}
	failed := err != nil && failureCode(status.Code(err))
	o.mu.Lock()
	h := o.hosts[addr]
	if h == nil {
		h = &hostState{}
		o.hosts[addr] = h
	}
	if !failed {
		h.consecutive = 0
		o.mu.Unlock()
		return
	}
	h.consecutive++
	now := o.now()
	if h.consecutive < o.cfg.ConsecutiveFailures || now.Before(h.ejectedUntil) || !o.canEject(now) {
		o.mu.Unlock()
		return
	}
	if now.Sub(h.lastEjection) > 2*o.cfg.MaxEjection {
		h.ejections = 0
	}
	h.ejections++
	d := o.cfg.BaseEjection << min(h.ejections-1, 20)
	if d > o.cfg.MaxEjection || d <= 0 {
		d = o.cfg.MaxEjection
	}
	h.consecutive = 0
	h.ejectedUntil, h.lastEjection = now.Add(d), now
	o.stopTimerLocked(h)
	if !o.stopped {
		o.timers.Add(1)
		h.timer = time.AfterFunc(d, func() {
			defer o.timers.Done()
			o.push()
		})
	}
	o.mu.Unlock()
	o.log.Warn("instance ejected after consecutive failures", zap.String("service", o.svc), zap.String("address", addr),
		zap.Duration("for", d), zap.Int("ejections", h.ejections))
	o.push()
}

// canEject holds the share cap; o.mu is held.
func (o *outliers) canEject(now time.Time) bool {
	ejected := 0
	for _, h := range o.hosts {
		if now.Before(h.ejectedUntil) {
			ejected++
		}
	}
	return ejected+1 <= o.total*o.cfg.MaxEjectedPercent/100
}

// filter drops ejected instances from st; it never empties the list.
func (o *outliers) filter(st resolver.State) resolver.State {
	if o == nil {
		return st
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.total = len(st.Endpoints)
	now := o.now()
	keep := make([]resolver.Endpoint, 0, len(st.Endpoints))
	live := map[string]bool{}
	for _, ep := range st.Endpoints {
		addr := ep.Addresses[0].Addr
		live[addr] = true
		if h := o.hosts[addr]; h != nil && now.Before(h.ejectedUntil) {
			continue
		}
		keep = append(keep, ep)
	}
	for addr, h := range o.hosts {
		if !live[addr] {
			o.stopTimerLocked(h)
			delete(o.hosts, addr) // a gone instance starts afresh if it returns
		}
	}
	if len(keep) == 0 {
		return st
	}
	st.Endpoints = keep
	return st
}

// Ejected lists the addresses ejected now.
func (o *outliers) ejected() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for addr, h := range o.hosts {
		if o.now().Before(h.ejectedUntil) {
			out = append(out, addr)
		}
	}
	return out
}

func (o *outliers) stop() {
	o.mu.Lock()
	o.stopped = true
	for _, h := range o.hosts {
		o.stopTimerLocked(h)
	}
	o.mu.Unlock()
	o.timers.Wait() // a push already running (it takes o.mu: not held here)
}

// stopTimerLocked stops h's ejection timer; o.mu is held.
func (o *outliers) stopTimerLocked(h *hostState) {
	if h.timer != nil && h.timer.Stop() {
		o.timers.Done()
	}
	h.timer = nil
}

// interceptors report each call's result and peer.
func (o *outliers) unary() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		var p peer.Peer
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
		if p.Addr != nil && ctx.Err() == nil {
			o.report(p.Addr.String(), err)
		}
		return err
	}
}
