package chain

import (
	"context"
	"net/http"
	"slices"
	"time"

	"google.golang.org/grpc/metadata"
)

// Call is one request on its way through a route's chain. Edge fills the
// request side; stages fill the rest as the call moves down the chain and
// the answer comes back up. A stage that lets work outlive the request (the
// cache's coalesced and background fills) runs it on a copy (Detach).
type Call struct {
	// W and R are the HTTP exchange. Stages set response headers on
	// W.Header(); only the last stage of a streaming route and the writer
	// write the body.
	W http.ResponseWriter
	R *http.Request
	// Vars are the path variables, in the order of the route's template.
	Vars []string
	// MD is the metadata the upstream call carries (the client's mapped
	// headers, request id, trace); stages add to it (the caller's identity).
	MD metadata.MD
	// Invalid is what the edge found wrong with the request before the
	// chain ran (a Grpc-Metadata-* header gRPC cannot carry): the decode
	// stage refuses the call with it, after the header stages (CORS,
	// limits, authn) had their say, as with a body that does not decode.
	Invalid error
	// Caller is who authenticated; nil for anonymous calls.
	Caller *Caller
	// Timeout is the upstream deadline the deadline stage chose; 0: none.
	Timeout time.Duration

	// Req is the upstream request, set by the decode stage.
	Req *Payload
	// Resp is the upstream's answer, set by the call stage; Header holds the
	// upstream's header and trailer metadata as HTTP headers.
	Resp   *Payload
	Header http.Header
	// Out is the rendered answer when a stage already has one (the cache);
	// the writer renders Resp otherwise.
	Out *Response
	// Upstream is the instance that answered (ip:port), for the access log.
	Upstream string
	// Streamed is set by a call stage that wrote the response itself (a
	// server stream); the writer then has nothing left to write.
	Streamed bool
	// Partial is set by a composed route's call stage when optional calls
	// degraded: the answer is not cached as if it were complete.
	Partial bool
}

// Detach returns a copy of c for work that may outlive the request (the
// cache's coalesced and background fills): it keeps what the upstream call
// needs (metadata, caller, timeout, request message) and nothing of the
// HTTP exchange, whose buffers go back to their pools when the request ends.
func (c *Call) Detach() *Call {
	return &Call{MD: c.MD, Caller: c.Caller, Timeout: c.Timeout, Req: c.Req}
}

// Next runs the rest of the chain.
type Next func(ctx context.Context, c *Call) error

// Stage is one step of a route's chain: it does its one job and calls next,
// or returns an error (or answers) without calling it.
type Stage func(ctx context.Context, c *Call, next Next) error

// Build links stages, outermost first, into one Next that ends in last.
// Nil stages are skipped, so a route pays only for what it declares.
func Build(stages []Stage, last Next) Next {
	next := last
	for _, s := range slices.Backward(stages) {
		if s == nil {
			continue
		}
		inner := next
		next = func(ctx context.Context, c *Call) error { return s(ctx, c, inner) }
	}
	return next
}

// Response is a rendered unary answer, as the writer sends it and the cache
// keeps it.
type Response struct {
	Body        []byte      `json:"b"`
	ContentType string      `json:"c"`
	Header      http.Header `json:"h,omitempty"`
	Stored      time.Time   `json:"t"`
}

// Caller is who the edge verified made a call (the authn stage sets it).
type Caller struct {
	// Subject is the token's subject claim or the API key's name; "" for
	// anonymous callers.
	Subject string
	// Provider is the name of the provider that authenticated the caller.
	Provider string
	// Claims are the verified token claims; an API key gets {"sub", "scope"}.
	Claims map[string]any
	// APIKey is the name of the API key used, if any.
	APIKey string
}

// Anonymous reports a caller that presented no credentials.
func (c *Caller) Anonymous() bool { return c == nil || c.Provider == "" }
