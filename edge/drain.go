package edge

import (
	"context"
	"sync"
	"sync/atomic"
)

// Drain is the stopping state that readiness, the servers and open streams
// share. A stop runs, in this order:
//
//  1. Begin: /readyz answers 503 "draining" and Portico leaves Consul, so
//     balancers and peers stop opening connections to it;
//  2. for edge.drain_delay it keeps serving, answering on each keep-alive
//     connection with "Connection: close" (HTTP/2: GOAWAY) so clients move;
//  3. EndStreams: server streams still open get a final UNAVAILABLE
//     message, and the listener closes; in-flight requests finish within
//     edge.shutdown_grace, after which what is left is cut.
type Drain struct {
	draining atomic.Bool
	streams  context.Context
	end      context.CancelFunc
	once     sync.Once
}

// NewDrain returns a Drain that has not begun.
func NewDrain() *Drain {
	ctx, cancel := context.WithCancel(context.Background())
	return &Drain{streams: ctx, end: cancel}
}

// Begin marks Portico as draining.
func (d *Drain) Begin() { d.draining.Store(true) }

// Draining reports whether Begin was called.
func (d *Drain) Draining() bool { return d.draining.Load() }

// EndStreams ends every open server stream.
func (d *Drain) EndStreams() { d.once.Do(d.end) }

// Context is done once streams must end.
func (d *Drain) Context() context.Context { return d.streams }
