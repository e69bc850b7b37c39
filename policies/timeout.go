package policies

import (
	"context"
	"math"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/policies/chain"
)

// GrpcTimeoutHeader lets a client shorten the upstream deadline, in gRPC's
// own format ("100m", "5S").
const GrpcTimeoutHeader = "Grpc-Timeout"

// timeoutStage chooses the upstream deadline: a composition's budget, else
// the method's timeout option, else the edge's default; shortened by the
// client's Grpc-Timeout. A
// malformed Grpc-Timeout is a 400. The deadline stage applies it, inside
// the cache, so a cache lookup is not bound by it and a coalesced fill is
// bound by its own leader's.
func (p *Policy) timeoutStage(t Target) chain.Stage {
	if t.Stream {
		return nil
	}
	timeout := t.Timeout
	if p.timeout > 0 {
		timeout = p.timeout
	}
	if t.Budget > 0 {
		timeout = t.Budget
	}
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		c.Timeout = timeout
		if v := c.R.Header.Get(GrpcTimeoutHeader); v != "" {
			d, ok := clientTimeout(v)
			if !ok {
				return status.Error(codes.InvalidArgument, "Grpc-Timeout header "+strconv.Quote(v[:min(len(v), 32)])+" is malformed")
			}
			if d <= 0 {
				d = time.Nanosecond // "0S": the deadline has passed already
			}
			if c.Timeout <= 0 || d < c.Timeout {
				c.Timeout = d
			}
		}
		return next(ctx, c)
	}
}

// deadlineStage bounds the upstream call, all its retries included, by the
// deadline the timeout stage chose.
func deadlineStage(t Target) chain.Stage {
	if t.Stream {
		return nil
	}
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		if c.Timeout <= 0 { // no deadline configured anywhere
			return next(ctx, c)
		}
		ctx, cancel := context.WithTimeout(ctx, c.Timeout)
		defer cancel()
		return next(ctx, c)
	}
}

// clientTimeout parses a Grpc-Timeout header ("100m", "5S"): the client
// may shorten the configured deadline. The gRPC spec allows up to 8 digits
// with any unit; values beyond what a time.Duration holds (from 2562048H)
// mean "no shorter than the configured deadline", never an overflow.
func clientTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(math.MaxInt64/unit) {
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(n) * unit, true
}
