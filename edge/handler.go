package edge

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/transcode"
)

// Handler serves every public request from the current route table.
type Handler struct {
	tables            *Tables
	md                *metadataMapper
	upstreamTimeout   time.Duration
	maxStreamDuration time.Duration
	streamIdle        time.Duration
	log               *zap.Logger
}

// NewHandler returns the public handler.
func NewHandler(cfg Config, tcfg transcode.Config, tables *Tables, log *zap.Logger) *Handler {
	return &Handler{
		tables:            tables,
		md:                newMetadataMapper(cfg.ForwardHeaders),
		upstreamTimeout:   cfg.UpstreamTimeout,
		maxStreamDuration: cfg.MaxStreamDuration,
		streamIdle:        tcfg.StreamIdleTimeout,
		log:               log,
	}
}

var varsPool = sync.Pool{New: func() any { s := make([]string, 0, 8); return &s }}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	reqID := requestID(r)
	w.Header().Set(requestIDHeader, reqID)
	var (
		route *Route
		err   error
	)
	t := h.tables.Load()
	if t == nil {
		err = status.Error(codes.Unavailable, "no route table yet: upstreams are still being reflected")
	} else {
		vp := varsPool.Get().(*[]string)
		var vars []string
		if h.preflight(w, r, t) {
			*vp = (*vp)[:0]
			varsPool.Put(vp)
			return
		}
		route, vars, err = t.Match(r.Method, r.URL.EscapedPath(), (*vp)[:0])
		if err == nil {
			err = h.serve(w, r, route, vars, reqID)
		} else {
			err = matchError(r, err)
		}
		clear(vars)
		*vp = vars[:0]
		varsPool.Put(vp)
	}
	if err == nil {
		return
	}
	var types transcode.Resolver
	if route != nil {
		types = route.Codec.Types()
	}
	if errors.Is(err, transcode.ErrResponseStarted) {
		if ce := h.log.Check(zapcore.DebugLevel, "response cut short"); ce != nil {
			ce.Write(zap.String("path", r.URL.Path), zap.String("request_id", reqID), zap.Error(err))
		}
		return
	}
	code, st := transcode.WriteError(w, err, types)
	h.logError(r, route, code, st, reqID, start)
}

// preflight answers a CORS preflight with the policy of the route the
// browser asks about; without one it falls through (405 for OPTIONS).
func (h *Handler) preflight(w http.ResponseWriter, r *http.Request, t *RouteTable) bool {
	if r.Method != http.MethodOptions || r.Header.Get("Origin") == "" {
		return false
	}
	want := r.Header.Get("Access-Control-Request-Method")
	if want == "" {
		return false
	}
	route, _, err := t.Match(want, r.URL.EscapedPath(), nil)
	return err == nil && route.Policy.Preflight(w, r, want)
}

func matchError(r *http.Request, err error) error {
	var mna *transcode.MethodNotAllowedError
	switch {
	case errors.As(err, &mna):
		e := transcode.NewError(http.StatusMethodNotAllowed, codes.Unimplemented, "method "+r.Method+" is not allowed on "+r.URL.Path)
		e.Allow = mna.Allow
		return e
	case errors.Is(err, transcode.ErrBadPathEncoding):
		return transcode.NewError(http.StatusBadRequest, codes.InvalidArgument, "invalid path: "+err.Error())
	default:
		return transcode.NewError(http.StatusNotFound, codes.NotFound, "no route for "+r.Method+" "+r.URL.Path)
	}
}

func (h *Handler) logError(r *http.Request, route *Route, code int, st *status.Status, reqID string, start time.Time) {
	lvl := zapcore.DebugLevel
	if code >= 500 {
		lvl = zapcore.WarnLevel
	}
	ce := h.log.Check(lvl, "request failed")
	if ce == nil {
		return
	}
	method := ""
	if route != nil {
		method = route.FullMethod
	}
	ce.Write(zap.String("http_method", r.Method), zap.String("path", r.URL.Path), zap.String("grpc_method", method),
		zap.Int("status", code), zap.Stringer("grpc_code", st.Code()), zap.String("message", st.Message()),
		zap.String("request_id", reqID), zap.Duration("latency", time.Since(start)))
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, route *Route, vars []string, reqID string) error {
	// The policy stages run in the order policies' package comment gives:
	// those that need only headers first, so a rejected request is never
	// decoded; then the ones that need the request message.
	pol := route.Policy
	caller, err := pol.Admit(r.Context(), w, r)
	if err != nil {
		return err
	}
	req, err := route.Codec.DecodeRequest(r, vars)
	if err != nil {
		return err
	}
	if err := pol.Check(r.Context(), r, caller, req); err != nil {
		return err
	}
	md, err := h.md.outgoing(r, reqID)
	if err != nil {
		return err
	}
	pol.Identify(md, caller)
	ctx := metadata.NewOutgoingContext(r.Context(), md)
	if route.streamDesc != nil {
		return h.serveStream(ctx, w, r, route, req)
	}
	timeout := pol.Timeout(h.upstreamTimeout)
	if v := r.Header.Get(grpcTimeoutInput); v != "" {
		d, ok := clientTimeout(v)
		if !ok {
			return transcode.NewError(http.StatusBadRequest, codes.InvalidArgument, "Grpc-Timeout header "+v+" is malformed")
		}
		timeout = min(timeout, d)
	}
	if pol.Cached() {
		return pol.ServeCached(ctx, w, r, caller, req, func(ctx context.Context) (*policies.Response, error) {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			resp, header, trailer, err := h.invoke(ctx, route, req)
			if err != nil {
				return nil, upstreamError(ctx, err)
			}
			body, ct, err := route.Codec.EncodeResponse(nil, resp)
			if err != nil {
				return nil, err
			}
			hdr := http.Header{}
			writeMetadata(hdr, header)
			writeMetadata(hdr, trailer)
			if ct != "application/json" {
				hdr.Set("X-Content-Type-Options", "nosniff")
			}
			return &policies.Response{Body: body, ContentType: ct, Header: hdr}, nil
		})
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, header, trailer, err := h.invoke(ctx, route, req)
	writeMetadata(w.Header(), header)
	writeMetadata(w.Header(), trailer)
	if err != nil {
		return upstreamError(ctx, err)
	}
	return route.Codec.WriteResponse(w, r, resp)
}

// invoke calls the upstream with the route's retries: only methods safe to
// repeat are retried (GET bindings and methods declared idempotent), on
// UNAVAILABLE and the codes the method lists, within the retry budget.
// round_robin sends each retry to the next instance.
func (h *Handler) invoke(ctx context.Context, route *Route, req proto.Message) (resp proto.Message, header, trailer metadata.MD, err error) {
	err = route.Policy.Call(ctx, func(ctx context.Context) error {
		resp, header, trailer = route.Codec.NewResponse(), nil, nil
		return route.Conn.Invoke(ctx, route.FullMethod, req, resp, grpc.Header(&header), grpc.Trailer(&trailer))
	})
	return resp, header, trailer, err
}

var (
	errStreamIdle    = status.Error(codes.DeadlineExceeded, "stream ended: upstream sent nothing for transcode.stream_idle_timeout")
	errStreamTooLong = status.Error(codes.DeadlineExceeded, "stream ended: edge.max_stream_duration reached")
)

// upstreamError keeps the upstream's status, naming deadline and
// cancellation by the edge's own context.
func upstreamError(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause == errStreamIdle || cause == errStreamTooLong {
		return cause
	}
	if st, ok := status.FromError(err); ok {
		if st.Code() == codes.DeadlineExceeded && ctx.Err() != nil {
			return status.Error(codes.DeadlineExceeded, "upstream call exceeded its deadline")
		}
		return err
	}
	return transcode.FromContextError(err)
}

func (h *Handler) serveStream(ctx context.Context, w http.ResponseWriter, r *http.Request, route *Route, req any) error {
	ctx, cancelMax := context.WithTimeoutCause(ctx, h.maxStreamDuration, errStreamTooLong)
	defer cancelMax()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The idle timer ends the call when the upstream goes quiet.
	idle := time.AfterFunc(h.streamIdle, func() { cancel(errStreamIdle) })
	defer idle.Stop()
	cs, err := route.Conn.NewStream(ctx, route.streamDesc, route.FullMethod)
	if err != nil {
		return upstreamError(ctx, err)
	}
	if err := cs.SendMsg(req); err != nil {
		return upstreamError(ctx, cs.RecvMsg(route.Codec.NewResponse()))
	}
	if err := cs.CloseSend(); err != nil {
		return upstreamError(ctx, err)
	}
	sw := route.Codec.NewStreamWriter(w, r)
	started := false
	for {
		msg := route.Codec.NewResponse()
		err := cs.RecvMsg(msg)
		idle.Reset(h.streamIdle)
		if !started {
			if hdr, herr := cs.Header(); herr == nil {
				writeMetadata(w.Header(), hdr)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if !started {
					sw.Start()
				}
				writeTrailers(w, cs.Trailer())
				return nil
			}
			err = upstreamError(ctx, err)
			if !started {
				return err
			}
			sw.SendError(err)
			return transcode.ErrResponseStarted
		}
		started = true
		if err := sw.Send(msg); err != nil {
			// The client went away: returning cancels the upstream call.
			return transcode.ErrResponseStarted
		}
	}
}

// writeTrailers sends upstream trailers as HTTP trailers.
func writeTrailers(w http.ResponseWriter, md metadata.MD) {
	tr := http.Header{}
	writeMetadata(tr, md)
	for k, vs := range tr {
		for _, v := range vs {
			w.Header().Add(http.TrailerPrefix+k, v)
		}
	}
}
