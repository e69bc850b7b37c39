package edge

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/transcode"
)

// Handler serves every public request from the current route table.
type Handler struct {
	tables            *Tables
	md                *metadataMapper
	tel               *Telemetry
	drain             *Drain
	upstreamTimeout   time.Duration
	maxStreamDuration time.Duration
	streamIdle        time.Duration
	log               *zap.Logger
}

// NewHandler returns the public handler; tel reports every request, drain
// ends server streams when Portico stops.
func NewHandler(cfg Config, tcfg transcode.Config, tables *Tables, tel *Telemetry, drain *Drain, log *zap.Logger) *Handler {
	return &Handler{
		tables:            tables,
		md:                newMetadataMapper(cfg.ForwardHeaders),
		tel:               tel,
		drain:             drain,
		upstreamTimeout:   cfg.UpstreamTimeout,
		maxStreamDuration: cfg.MaxStreamDuration,
		streamIdle:        tcfg.StreamIdleTimeout,
		log:               log,
	}
}

var (
	varsPool     = sync.Pool{New: func() any { s := make([]string, 0, 8); return &s }}
	exchangePool = sync.Pool{New: func() any { return new(exchange) }}
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex := exchangePool.Get().(*exchange)
	*ex = exchange{start: time.Now(), rec: recorder{ResponseWriter: w}}
	h.tel.inFlight.Inc()
	defer h.tel.inFlight.Dec()
	ctx, span := h.tel.startSpan(r)
	r = r.WithContext(ctx)
	ex.reqID = requestID(r)
	hdr := w.Header()
	hdr.Set(requestIDHeader, ex.reqID)
	if sc := span.SpanContext(); h.tel.traceHeader != "" && sc.HasTraceID() {
		hdr.Set(h.tel.traceHeader, sc.TraceID().String())
	}
	h.handle(&ex.rec, r, ex)
	h.tel.finish(r, ex, span)
	*ex = exchange{}
	exchangePool.Put(ex)
}

func (h *Handler) handle(w http.ResponseWriter, r *http.Request, ex *exchange) {
	var err error
	t := h.tables.Load()
	if t == nil {
		err = status.Error(codes.Unavailable, "no route table yet: upstreams are still being reflected")
	} else {
		vp := varsPool.Get().(*[]string)
		var vars []string
		if route := h.preflight(w, r, t); route != nil {
			ex.route = route
			*vp = (*vp)[:0]
			varsPool.Put(vp)
			return
		}
		ex.route, vars, err = t.Match(r.Method, r.URL.EscapedPath(), (*vp)[:0])
		if err == nil {
			err = h.serve(w, r, ex, vars)
		} else {
			ex.route = nil
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
	if ex.route != nil {
		types = ex.route.Codec.Types()
	}
	if errors.Is(err, transcode.ErrResponseStarted) {
		if ce := h.log.Check(zapcore.DebugLevel, "response cut short"); ce != nil {
			ce.Write(zap.String("path", r.URL.Path), zap.String("request_id", ex.reqID), zap.Error(err))
		}
		return
	}
	_, st := transcode.WriteError(w, err, types)
	ex.code, ex.message = st.Code(), st.Message()
}

// preflight answers a CORS preflight with the policy of the route the
// browser asks about, and returns that route; without one it returns nil
// and the request falls through (405 for OPTIONS).
func (h *Handler) preflight(w http.ResponseWriter, r *http.Request, t *RouteTable) *Route {
	if r.Method != http.MethodOptions || r.Header.Get("Origin") == "" {
		return nil
	}
	want := r.Header.Get("Access-Control-Request-Method")
	if want == "" {
		return nil
	}
	route, _, err := t.Match(want, r.URL.EscapedPath(), nil)
	if err != nil || !route.Policy.Preflight(w, r, want) {
		return nil
	}
	return route
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

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, ex *exchange, vars []string) error {
	// The policy stages run in the order policies' package comment gives:
	// those that need only headers first, so a rejected request is never
	// decoded; then the ones that need the request message.
	route := ex.route
	pol := route.Policy
	caller, err := pol.Admit(r.Context(), w, r)
	if err != nil {
		return err
	}
	if caller != nil {
		ex.subject = caller.Subject
	}
	req, err := route.Codec.DecodeRequest(r, vars)
	if err != nil {
		return err
	}
	if err := pol.Check(r.Context(), r, caller, req); err != nil {
		return err
	}
	md, err := h.md.outgoing(r, ex.reqID)
	if err != nil {
		return err
	}
	pol.Identify(md, caller)
	h.tel.propagate(r.Context(), md)
	ctx := metadata.NewOutgoingContext(r.Context(), md)
	if route.streamDesc != nil {
		return h.serveStream(ctx, w, r, ex, req)
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
		// The fetch may outlive this request (stale-while-revalidate,
		// coalesced callers): it reports into an exchange of its own and
		// hands the instance that answered back through an atomic.
		var answered atomic.Pointer[string]
		defer func() {
			if p := answered.Load(); p != nil {
				ex.upstream = *p
			}
		}()
		return pol.ServeCached(ctx, w, r, caller, req, func(ctx context.Context) (*policies.Response, error) {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			fx := &exchange{route: route}
			resp, header, trailer, err := h.invoke(ctx, fx, req)
			answered.Store(&fx.upstream)
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
	resp, header, trailer, err := h.invoke(ctx, ex, req)
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
// Each attempt's duration and the instance that answered are recorded.
func (h *Handler) invoke(ctx context.Context, ex *exchange, req proto.Message) (resp proto.Message, header, trailer metadata.MD, err error) {
	route := ex.route
	var p peer.Peer
	err = route.Policy.Call(ctx, func(ctx context.Context) error {
		resp, header, trailer = route.Codec.NewResponse(), nil, nil
		start := time.Now()
		err := route.Conn.Invoke(ctx, route.FullMethod, req, resp, grpc.Header(&header), grpc.Trailer(&trailer), grpc.Peer(&p))
		h.tel.observeUpstream(route.FullMethod, status.Code(err), time.Since(start))
		return err
	})
	if p.Addr != nil {
		ex.upstream = p.Addr.String()
	}
	return resp, header, trailer, err
}

var (
	errStreamIdle    = status.Error(codes.DeadlineExceeded, "stream ended: upstream sent nothing for transcode.stream_idle_timeout")
	errStreamTooLong = status.Error(codes.DeadlineExceeded, "stream ended: edge.max_stream_duration reached")
	errDraining      = status.Error(codes.Unavailable, "stream ended: this Portico instance is shutting down; reconnect to continue")
)

// upstreamError keeps the upstream's status, naming deadline and
// cancellation by the edge's own context.
func upstreamError(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause == errStreamIdle || cause == errStreamTooLong || cause == errDraining {
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

func (h *Handler) serveStream(ctx context.Context, w http.ResponseWriter, r *http.Request, ex *exchange, req any) (err error) {
	route := ex.route
	ctx, cancelMax := context.WithTimeoutCause(ctx, h.maxStreamDuration, errStreamTooLong)
	defer cancelMax()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The idle timer ends the call when the upstream goes quiet; a drain
	// ends it with a final UNAVAILABLE message the client can act on.
	idle := time.AfterFunc(h.streamIdle, func() { cancel(errStreamIdle) })
	defer idle.Stop()
	stopDrain := context.AfterFunc(h.drain.Context(), func() { cancel(errDraining) })
	defer stopDrain()
	start := time.Now()
	// code is how the upstream call ended, for the metrics and the access
	// log (a stream that started answers 200 whatever happens next).
	code := codes.OK
	defer func() {
		h.tel.observeUpstream(route.FullMethod, code, time.Since(start))
		if code != codes.OK && errors.Is(err, transcode.ErrResponseStarted) {
			ex.code = code
		}
	}()
	fail := func(e error) error {
		e = upstreamError(ctx, e)
		code = status.Code(e)
		return e
	}
	cs, err := route.Conn.NewStream(ctx, route.streamDesc, route.FullMethod)
	if err != nil {
		return fail(err)
	}
	defer func() {
		if p, ok := peer.FromContext(cs.Context()); ok && p.Addr != nil {
			ex.upstream = p.Addr.String()
		}
	}()
	if err := cs.SendMsg(req); err != nil {
		return fail(cs.RecvMsg(route.Codec.NewResponse()))
	}
	if err := cs.CloseSend(); err != nil {
		return fail(err)
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
			err = fail(err)
			if !started {
				return err
			}
			ex.message = status.Convert(err).Message()
			sw.SendError(err)
			return transcode.ErrResponseStarted
		}
		started = true
		if err := sw.Send(msg); err != nil {
			// The client went away: returning cancels the upstream call.
			code, ex.message = codes.Canceled, "client went away mid-stream"
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
