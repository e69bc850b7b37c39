package compose

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// Result is one composite answer.
type Result struct {
	// Wire is the composite response message.
	Wire []byte
	// Degraded are the optional calls that failed, in plan order.
	Degraded []Degraded
}

// Degraded is an optional call that failed, and what took its place.
type Degraded struct {
	Call    string
	Code    codes.Code
	Message string
	// Fallback is what the target got: "none" (left unset), "empty",
	// "literal" or "last_good".
	Fallback string
}

// outcome is one call's part of a run.
type outcome struct {
	done    chan struct{} // closed when the call has returned
	answers [][]byte      // its answers (one, or one per fan-out element); nil: none
}

// run is one Run: the plan's calls, their outcomes and the first failure.
type run struct {
	p        *Plan
	req      []byte
	scope    string
	outs     []outcome
	degraded []*Degraded
	failed   atomic.Bool

	abort    context.CancelCauseFunc
	failOnce sync.Once
	failure  error
}

// Run answers one composite request: req is its wire bytes; scope keys
// the last good answers it keeps and reads (the route and the caller, so
// that no caller gets another's). It returns the composite response, or
// the status of the first required call that failed (the calls still
// running are cancelled first, and Run waits for them to return).
func (p *Plan) Run(ctx context.Context, req []byte, scope string) (*Result, error) {
	if p.Budget > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, p.Budget, budgetError(p.Budget))
		defer cancel()
	}
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	r := &run{p: p, req: req, scope: scope, outs: make([]outcome, len(p.Calls)), degraded: make([]*Degraded, len(p.Calls)), abort: abort}
	for i := range r.outs {
		r.outs[i].done = make(chan struct{})
	}
	var wg sync.WaitGroup
	for i := range p.Calls {
		wg.Go(func() {
			defer close(r.outs[i].done)
			defer func() {
				// A panic in a store or a hook fails the request, not the
				// process.
				if v := recover(); v != nil {
					r.fail(status.Errorf(codes.Internal, "call %s: %v", p.Calls[i].Name, v))
				}
			}()
			r.call(ctx, i)
		})
	}
	wg.Wait()
	if r.failure != nil {
		return nil, r.failure
	}
	res := &Result{Wire: r.assemble()}
	for _, d := range r.degraded {
		if d != nil {
			res.Degraded = append(res.Degraded, *d)
		}
	}
	return res, nil
}

// fail records the first required failure and cancels every other call.
func (r *run) fail(err error) {
	r.failOnce.Do(func() {
		r.failure = err
		r.failed.Store(true)
		r.abort(err)
	})
}

// call runs call i once the calls it depends on have returned.
func (r *run) call(ctx context.Context, i int) {
	c := &r.p.Calls[i]
	deps := make([][]byte, len(c.After))
	var err error
	for k, j := range c.After {
		<-r.outs[j].done // every call returns, cancelled or not
		if r.outs[j].answers == nil && err == nil {
			// Failed with nothing to fall back to: this call cannot be
			// built. (A fallback's answer is built from like any other.)
			name := r.p.Calls[j].Name
			err = status.Errorf(codes.FailedPrecondition, "needs the answer of call %s, which failed", name)
			if d := r.degraded[j]; d != nil {
				err = status.Errorf(d.Code, "needs the answer of call %s, which failed: %s", name, d.Message)
			}
		}
		deps[k] = answerOf(&r.p.Calls[j], r.outs[j].answers)
	}
	if r.failed.Load() {
		return // the request already failed: nothing to call
	}
	// A call whose turn comes after the budget ran out still goes through
	// Invoke, which fails at once: an optional one is then reported.
	var reqs [][]byte
	if err == nil {
		reqs, err = c.Build(ctx, r.req, deps)
	}
	if err == nil && c.FanOut && len(reqs) > c.MaxFanOut {
		err = status.Errorf(codes.OutOfRange, "fans out over %d elements, more than its maximum of %d", len(reqs), c.MaxFanOut)
	}
	var answers [][]byte
	own := false // the call's own timeout is the deadline that binds it
	if err == nil {
		dl, bounded := ctx.Deadline()
		own = c.Timeout > 0 && (!bounded || time.Now().Add(c.Timeout).Before(dl))
		callCtx := ctx
		var end func(codes.Code, string)
		if r.p.Trace != nil {
			callCtx, end = r.p.Trace(ctx, c.Name)
		}
		answers, err = r.invoke(callCtx, c, reqs)
		if end != nil {
			st := status.Convert(err)
			end(st.Code(), st.Message())
		}
	}
	if err == nil {
		r.outs[i].answers = answers
		r.observe(c.Name, codes.OK, "")
		if c.Fallback.LastGood != nil {
			c.Fallback.LastGood.Put(context.WithoutCancel(ctx), lastGoodKey(r.scope, c.Name, reqs), answerOf(c, answers), c.Fallback.MaxAge)
		}
		return
	}
	st := callStatus(ctx, c, err, own)
	if !c.Optional {
		r.observe(c.Name, st.Code(), "")
		r.fail(st.Err())
		return
	}
	d := &Degraded{Call: c.Name, Code: st.Code(), Message: st.Message(), Fallback: "none"}
	if lg := c.Fallback.LastGood; lg != nil && reqs != nil && !r.failed.Load() {
		// The store is asked even after the budget ran out.
		if a, at, ok := lg.Get(context.WithoutCancel(ctx), lastGoodKey(r.scope, c.Name, reqs)); ok && time.Since(at) <= c.Fallback.MaxAge {
			r.outs[i].answers, d.Fallback = splitAnswer(c, a), "last_good"
		}
	}
	if d.Fallback == "none" && c.Fallback.Literal != nil {
		r.outs[i].answers, d.Fallback = [][]byte{c.Fallback.Literal}, "literal"
		if c.Fallback.Empty {
			d.Fallback = "empty"
		}
	}
	r.degraded[i] = d
	r.observe(c.Name, d.Code, d.Fallback)
}

func (r *run) observe(call string, code codes.Code, fallback string) {
	if r.p.Observe != nil {
		r.p.Observe(call, code, fallback)
	}
}

// invoke makes the call's requests, a fan-out's at most Concurrency at a
// time, within the call's own timeout; the first failure stops the rest.
func (r *run) invoke(ctx context.Context, c *Call, reqs [][]byte) ([][]byte, error) {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	if !c.FanOut {
		if len(reqs) != 1 {
			return nil, status.Errorf(codes.Internal, "built %d requests, want 1", len(reqs))
		}
		a, err := c.Invoke(ctx, reqs[0])
		return [][]byte{a}, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	answers := make([][]byte, len(reqs))
	limit := c.Concurrency
	if limit <= 0 || limit > len(reqs) {
		limit = len(reqs)
	}
	sem := make(chan struct{}, limit)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for k, req := range reqs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			a, err := c.Invoke(ctx, req)
			if err != nil {
				once.Do(func() {
					st := status.Convert(err)
					first = status.Errorf(st.Code(), "element %d: %s", k, st.Message())
					cancel(first)
				})
				return
			}
			answers[k] = a
		})
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return answers, nil
}

// callStatus is a call's failure as the status the client sees, named
// after the call; a deadline says whose it was (own: the call's timeout
// was the nearer one). The upstream may report a deadline a moment
// before this side's timer fires, so the code decides, not ctx.Err alone.
func callStatus(ctx context.Context, c *Call, err error, own bool) *status.Status {
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err)
	}
	if st.Code() == codes.DeadlineExceeded && own {
		return status.New(codes.DeadlineExceeded, fmt.Sprintf("call %s: no answer within its timeout of %s", c.Name, c.Timeout))
	}
	if dl, bounded := ctx.Deadline(); st.Code() == codes.DeadlineExceeded && bounded && ctx.Err() == nil && time.Until(dl) < deadlineSlack {
		// The composite's deadline, reported by the upstream a moment
		// before this side's timer fires: wait for it.
		t := time.NewTimer(time.Until(dl) + deadlineSlack)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	if ctx.Err() != nil {
		var b *budgetErr
		switch cause := context.Cause(ctx); {
		case errors.As(cause, &b):
			return status.New(codes.DeadlineExceeded, "call "+c.Name+": "+b.Error())
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			// The route's deadline: the composition's timeout.
			return status.New(codes.DeadlineExceeded, "call "+c.Name+": the composite request's deadline passed")
		}
	}
	return status.New(st.Code(), "call "+c.Name+": "+st.Message())
}

// deadlineSlack is how far ahead of this side's deadline an upstream's
// DEADLINE_EXCEEDED is taken for it (timers on two sides, network time).
const deadlineSlack = 20 * time.Millisecond

// budgetErr is the cause of a run's context when its budget runs out.
type budgetErr struct{ d time.Duration }

func (b *budgetErr) Error() string {
	return "the composite request's budget of " + b.d.String() + " ran out"
}

func budgetError(d time.Duration) error { return &budgetErr{d} }

// answerOf is a call's answer as its dependents read it: a fan-out's is
// its answers framed as field 1, the wire form of a message whose field 1
// is the repeated answer type.
func answerOf(c *Call, answers [][]byte) []byte {
	if !c.FanOut {
		if len(answers) == 0 {
			return nil
		}
		return answers[0]
	}
	var b []byte
	for _, a := range answers {
		b = appendRecord(b, 1, a)
	}
	return b
}

// splitAnswer undoes answerOf for a stored answer.
func splitAnswer(c *Call, a []byte) [][]byte {
	if !c.FanOut {
		return [][]byte{a}
	}
	var out [][]byte
	for len(a) > 0 {
		num, typ, n := protowire.ConsumeTag(a)
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return out
		}
		v, m := protowire.ConsumeBytes(a[n:])
		if m < 0 {
			return out
		}
		out = append(out, v)
		a = a[n+m:]
	}
	return out
}

// lastGoodKey names a call's answer to these requests in the store, in
// scope (the route and the caller).
func lastGoodKey(scope, name string, reqs [][]byte) string {
	h := sha256.New()
	h.Write(protowire.AppendString(nil, scope))
	for _, r := range reqs {
		h.Write(protowire.AppendVarint(nil, uint64(len(r))))
		h.Write(r)
	}
	return "compose:" + name + ":" + hex.EncodeToString(h.Sum(nil))
}

// assemble writes every answer into its target field, in plan order.
func (r *run) assemble() []byte {
	var wire []byte
	for i := range r.p.Calls {
		c := &r.p.Calls[i]
		if len(c.Target) == 0 || r.outs[i].answers == nil {
			continue
		}
		last := c.Target[len(c.Target)-1]
		var inner []byte
		for _, a := range r.outs[i].answers {
			inner = appendRecord(inner, last, a)
		}
		for k := len(c.Target) - 2; k >= 0; k-- {
			inner = appendRecord(nil, c.Target[k], inner)
		}
		wire = append(wire, inner...)
	}
	return wire
}

func appendRecord(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}
