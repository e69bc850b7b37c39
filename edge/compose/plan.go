package compose

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"

	"google.golang.org/protobuf/encoding/protowire"
)

// Invoke makes one upstream call: request and answer as wire bytes. The
// edge supplies it (mesh connection, metadata, metrics, span); ctx carries
// the call's deadline.
type Invoke func(ctx context.Context, req []byte) ([]byte, error)

// Plan is one composed method, checked and ordered when it is compiled.
type Plan struct {
	// Calls in dependency order: a call's After indexes come before it.
	Calls []Call
	// Budget bounds the whole composite request; every call's deadline
	// is within what is left of it. 0: no budget of its own (the
	// request's context still bounds it).
	Budget time.Duration
	// Observe, when set, is told how each call ended: its code (OK or the
	// failure's) and, for an optional call that failed, its fallback
	// ("none", "empty", "literal", "last_good"; "" otherwise). A run that fails
	// reports the calls that ended before it did.
	Observe func(call string, code codes.Code, fallback string)
	// Trace, when set, starts a span for each call made (its retries and
	// a fan-out's calls within it); end is told how the call ended.
	Trace func(ctx context.Context, call string) (_ context.Context, end func(codes.Code, string))
}

// Call is one upstream call of a plan.
type Call struct {
	// Name identifies the call in errors, in Result.Degraded and in the
	// Portico-Partial header.
	Name   string
	Invoke Invoke
	// After are the calls whose answers Build reads, by index (each
	// smaller than this call's).
	After []int
	// Build makes the call's requests from the composite request and the
	// answers of After, in that order: one request, or for a fan-out one
	// per element (at most MaxFanOut).
	Build func(ctx context.Context, req []byte, answers [][]byte) ([][]byte, error)
	// FanOut: the call is made once per request Build returns, at most
	// Concurrency at a time (0: all at once), and its answer is the list
	// of theirs, in order. A fan-out's target is a repeated field.
	FanOut      bool
	MaxFanOut   int
	Concurrency int
	// Target is the field path of the composite response that receives
	// the answer (empty: none; the answer only feeds other calls).
	Target []protowire.Number
	// Timeout is the call's own deadline (0: the budget left). A fan-out's
	// bounds all its calls together.
	Timeout time.Duration
	// Optional: a failure degrades the answer instead of failing it.
	Optional bool
	// Fallback is what an optional call's target gets when it fails.
	Fallback Fallback
}

// Fallback is an optional call's answer when it fails.
type Fallback struct {
	// Literal is the answer (wire bytes of the target's type; nil: the
	// target is left unset).
	Literal []byte
	// Empty: Literal is the target's empty message, reported as "empty".
	Empty bool
	// LastGood, when set, keeps the call's last answer per request and
	// gives it back for up to MaxAge.
	LastGood LastGood
	MaxAge   time.Duration
}

// LastGood stores a call's last good answers (memory or Redis, through
// the policies' cache stores), keyed by call and request.
type LastGood interface {
	Get(ctx context.Context, key string) (answer []byte, stored time.Time, ok bool)
	Put(ctx context.Context, key string, answer []byte, keep time.Duration)
}

// Check verifies what the compiler must guarantee: names, dependency
// order, and a fan-out's bounds.
func (p *Plan) Check() error {
	seen := map[string]bool{}
	for i, c := range p.Calls {
		switch {
		case c.Name == "" || seen[c.Name]:
			return fmt.Errorf("call %d: name %q is empty or taken", i, c.Name)
		case c.Invoke == nil || c.Build == nil:
			return fmt.Errorf("call %s: no Invoke or Build", c.Name)
		case c.FanOut && c.MaxFanOut < 1:
			return fmt.Errorf("call %s: a fan-out needs a maximum count", c.Name)
		}
		seen[c.Name] = true
		for _, j := range c.After {
			if j < 0 || j >= i {
				return fmt.Errorf("call %s: depends on call %d, which does not come before it", c.Name, j)
			}
		}
	}
	return nil
}
