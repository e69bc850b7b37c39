package edge

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
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

	"github.com/portico-dev/portico/transcode"
)

// Handler serves every public request from the current route table.
type Handler struct {
	tables            *Tables
	md                *metadataMapper
	upstreamTimeout   time.Duration
	maxStreamDuration time.Duration
	streamIdle        time.Duration
	safeRetries       int
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
		safeRetries:       cfg.SafeRetries,
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
	req, err := route.Codec.DecodeRequest(r, vars)
	if err != nil {
		return err
	}
	md, err := h.md.outgoing(r, reqID)
	if err != nil {
		return err
	}
	ctx := metadata.NewOutgoingContext(r.Context(), md)
	if route.streamDesc != nil {
		return h.serveStream(ctx, w, r, route, req)
	}
	timeout := h.upstreamTimeout
	if v := r.Header.Get(grpcTimeoutInput); v != "" {
		d, ok := clientTimeout(v)
		if !ok {
			return transcode.NewError(http.StatusBadRequest, codes.InvalidArgument, "Grpc-Timeout header "+v+" is malformed")
		}
		timeout = min(timeout, d)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		resp            proto.Message
		header, trailer metadata.MD
	)
	// A safe method (GET, HEAD) is retried on UNAVAILABLE, which round-robin
	// sends to another instance: an instance that died or left between the
	// pick and the call costs the client nothing. Other methods get grpc-go's
	// transparent retry only (the request never reached a server).
	attempts := 1
	if route.Binding.HTTPMethod == http.MethodGet || route.Binding.HTTPMethod == http.MethodHead {
		attempts += h.safeRetries
	}
	for try := 1; ; try++ {
		resp, header, trailer = route.Codec.NewResponse(), nil, nil
		err = route.Conn.Invoke(ctx, route.FullMethod, req, resp, grpc.Header(&header), grpc.Trailer(&trailer))
		if try >= attempts || status.Code(err) != codes.Unavailable || !sleepCtx(ctx, retryDelay(try)) {
			break
		}
	}
	writeMetadata(w.Header(), header)
	writeMetadata(w.Header(), trailer)
	if err != nil {
		return upstreamError(ctx, err)
	}
	return route.Codec.WriteResponse(w, r, resp)
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

// retryDelay is the pause before retry number try+1: 5 ms, 10 ms, 20 ms…
// with ±50 % jitter, capped at 200 ms.
func retryDelay(try int) time.Duration {
	d := min(5*time.Millisecond<<(try-1), 200*time.Millisecond)
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}

// sleepCtx waits d unless ctx ends first; it reports whether it waited.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
