package policies

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/policies/chain"
)

// retryPolicy repeats failed calls of a method that is safe to repeat.
type retryPolicy struct {
	attempts         int
	codes            map[codes.Code]bool
	initial, maxWait time.Duration
	budget           *retryBudget
	metrics          *Metrics
}

// stage repeats the rest of the chain (the upstream call) on a failure the
// method lists, within the attempts, the backoff and the method's budget.
// round_robin sends each attempt to the next instance.
func (p *retryPolicy) stage() chain.Stage {
	if p == nil {
		return nil
	}
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		return p.do(ctx, func(ctx context.Context) error { return next(ctx, c) })
	}
}

// do runs call until it succeeds, fails with a code not retried, runs out
// of attempts or of budget, or ctx ends. A nil policy calls once.
func (p *retryPolicy) do(ctx context.Context, call func(ctx context.Context) error) error {
	if p == nil {
		return call(ctx)
	}
	p.budget.call()
	for try := 1; ; try++ {
		err := call(ctx)
		if err == nil || try >= p.attempts || !p.codes[status.Code(err)] {
			return err
		}
		if !p.budget.withdraw() {
			p.metrics.retries.WithLabelValues("budget_exhausted").Inc()
			return err
		}
		if !sleepCtx(ctx, p.backoff(try)) {
			return err
		}
		p.metrics.retries.WithLabelValues("retried").Inc()
	}
}

// backoff before retry try+1: initial·2^(try−1), capped, ±50 % jitter.
func (p *retryPolicy) backoff(try int) time.Duration {
	d := min(p.initial<<min(try-1, 16), p.maxWait)
	return d/2 + time.Duration(rand.Int64N(int64(d)+1))
}

// retryBudget caps retries at ratio × calls over the last 10 s, plus
// minPerSecond × 10 always allowed: during an outage retries add at most
// that share of load instead of multiplying it.
type retryBudget struct {
	ratio  float64
	min    int
	now    func() time.Time
	mu     sync.Mutex
	window [10]budgetSlot
}

type budgetSlot struct {
	sec            int64
	calls, retries int
}

func newRetryBudget(ratio float64, minPerSecond int) *retryBudget {
	return &retryBudget{ratio: ratio, min: minPerSecond, now: time.Now}
}

func (b *retryBudget) slot() *budgetSlot {
	sec := b.now().Unix()
	s := &b.window[sec%int64(len(b.window))]
	if s.sec != sec {
		*s = budgetSlot{sec: sec}
	}
	return s
}

func (b *retryBudget) call() {
	b.mu.Lock()
	b.slot().calls++
	b.mu.Unlock()
}

func (b *retryBudget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.slot()
	oldest := cur.sec - int64(len(b.window)) + 1
	calls, retries := 0, 0
	for _, s := range b.window {
		if s.sec >= oldest {
			calls += s.calls
			retries += s.retries
		}
	}
	if float64(retries) >= b.ratio*float64(calls)+float64(b.min*len(b.window)) {
		return false
	}
	cur.retries++
	return true
}

// retryCodes parses code names; UNAVAILABLE is always in.
func retryCodes(names []string) (map[codes.Code]bool, error) {
	out := map[codes.Code]bool{codes.Unavailable: true}
	for _, n := range names {
		var code codes.Code
		if err := code.UnmarshalJSON([]byte(strconv.Quote(strings.ToUpper(n)))); err != nil {
			return nil, fmt.Errorf("%q is not a gRPC code name", n)
		}
		if code == codes.DeadlineExceeded || code == codes.OK {
			return nil, fmt.Errorf("%s cannot be retried", n)
		}
		out[code] = true
	}
	return out, nil
}

// retryBudget returns the method's retry budget, shared across table swaps.
func (c *Compiler) retryBudget(method string) *retryBudget {
	c.mu.Lock()
	budgets := c.budgets
	c.mu.Unlock()
	return budgets.get(method)
}

// retryBudgets holds one budget per method, made with one retry config.
type retryBudgets struct {
	cfg RetryConfig
	mu  sync.Mutex
	m   map[string]*retryBudget
}

func newRetryBudgets(cfg RetryConfig) *retryBudgets {
	return &retryBudgets{cfg: cfg, m: map[string]*retryBudget{}}
}

func (bs *retryBudgets) get(method string) *retryBudget {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	b := bs.m[method]
	if b == nil {
		b = newRetryBudget(bs.cfg.BudgetRatio, bs.cfg.BudgetMinPerSecond)
		bs.m[method] = b
	}
	return b
}
