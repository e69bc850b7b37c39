package edge

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
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
	writeTimeout      time.Duration
	proxies           proxies
	budget            *bodyBudget
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
		writeTimeout:      cfg.WriteTimeout,
		proxies:           newProxies(cfg.TrustedProxies),
		budget:            &bodyBudget{limit: cfg.MaxInflightBodyBytes},
		log:               log,
	}
}

var (
	varsPool     = sync.Pool{New: func() any { s := make([]string, 0, 8); return &s }}
	exchangePool = sync.Pool{New: func() any { return new(exchange) }}
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex := exchangePool.Get().(*exchange)
	*ex = exchange{start: time.Now()}
	ex.rec.init(w, r, h.writeTimeout)
	h.tel.inFlight.Inc()
	defer h.tel.inFlight.Dec()
	// The client is the peer unless a trusted proxy speaks for it; rate
	// limits, trace trust and the access log all see that address.
	ex.fwd = h.proxies.resolve(r)
	if ex.fwd.client != ex.fwd.peer {
		r = r.WithContext(r.Context())
		r.RemoteAddr = net.JoinHostPort(ex.fwd.client, "0")
	}
	ctx, span := h.tel.startSpan(r)
	r = r.WithContext(ctx)
	if r.Body != nil && r.Body != http.NoBody {
		ex.body = budgetedBody{rc: r.Body, budget: h.budget}
		r.Body = &ex.body
	}
	ex.reqID = requestID(r)
	hdr := w.Header()
	hdr.Set(requestIDHeader, ex.reqID)
	if sc := span.SpanContext(); h.tel.traceHeader != "" && sc.HasTraceID() {
		hdr.Set(h.tel.traceHeader, sc.TraceID().String())
	}
	h.handle(&ex.rec, r, ex)
	if ex.body.rc != nil && !ex.body.eof && r.ProtoMajor == 1 {
		// Answered with the body unread: if the connection is closed
		// next, the client must still get this answer (lingerTimeout).
		lingerOnClose(r.Context())
	}
	h.tel.finish(r, ex, span)
	ex.body.release()
	*ex = exchange{}
	exchangePool.Put(ex)
}

func (h *Handler) handle(w http.ResponseWriter, r *http.Request, ex *exchange) {
	var err error
	t := h.tables.Load()
	if flaw := requestFlaw(r.Context()); flaw != "" {
		// RFC 9112 §6.1: a request framed two ways may be read differently
		// by a proxy in front; answer it alone and close the connection so
		// that nothing pipelined behind it is served.
		w.Header().Set("Connection", "close")
		err = transcode.NewError(http.StatusBadRequest, codes.InvalidArgument, "malformed request framing: "+flaw+"; the connection is closed")
	} else if t == nil {
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
		method := r.Method
		if method == http.MethodHead {
			// RFC 9110 §9.3.2: HEAD is GET without the body; the servers
			// (HTTP/1.1 and HTTP/2) drop the body bytes and keep the
			// Content-Length the GET would have sent.
			method = http.MethodGet
		}
		ex.route, vars, err = t.Match(method, r.URL.EscapedPath(), (*vp)[:0])
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
			ce.Write(zap.String("path", truncateLog(r.URL.Path)), zap.String("request_id", ex.reqID), zap.Error(err))
		}
		return
	}
	err = h.public(err, ex)
	challenge(w, r, err, ex.route)
	_, st := transcode.WriteError(w, err, types)
	ex.code, ex.message = st.Code(), st.Message()
}

// public is the error the client gets. Errors the edge wrote for clients
// pass as they are; what came from grpc-go's transport or from Go (dial
// errors with the instance's address, TLS and reset errors, Go error
// chains) becomes a plain sentence for its code plus a
// google.rpc.RequestInfo with the request id, and the detail goes to the
// access log only.
func (h *Handler) public(err error, ex *exchange) error {
	var te *transcode.Error
	if errors.As(err, &te) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		ex.detail = err.Error()
		return withRequestInfo(status.New(codes.Internal, "the edge could not complete the request"), ex.reqID)
	}
	var internal *internalError
	if errors.As(err, &internal) {
		ex.detail = internal.detail
		return withRequestInfo(st, ex.reqID)
	}
	return err
}

// challenge gives a 401 that has no WWW-Authenticate challenge (an
// upstream's UNAUTHENTICATED; the edge's own 401s carry theirs) one for each
// scheme the route accepts, as RFC 9110 §11.6.1 requires. A route without
// an auth option names the scheme of the client's Authorization header,
// or Bearer.
func challenge(w http.ResponseWriter, r *http.Request, err error, route *Route) {
	if _, code := transcode.StatusOf(err); code != http.StatusUnauthorized {
		return
	}
	if te, ok := errors.AsType[*transcode.Error](err); ok && te.Header.Get("Www-Authenticate") != "" {
		return
	}
	var cs []string
	if route != nil {
		cs = route.Policy.Challenges()
	}
	if len(cs) == 0 {
		scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if scheme == "" || !validToken(scheme) {
			scheme = "Bearer"
		}
		cs = []string{scheme + ` realm="portico"`}
	}
	w.Header()["Www-Authenticate"] = cs
}

// validToken reports whether s is an RFC 9110 token (an auth scheme).
func validToken(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// internalError is an upstream failure whose message is not for clients.
type internalError struct {
	st     *status.Status
	detail string
}

func (e *internalError) Error() string              { return e.detail }
func (e *internalError) GRPCStatus() *status.Status { return e.st }

func withRequestInfo(st *status.Status, reqID string) error {
	if d, err := st.WithDetails(&errdetails.RequestInfo{RequestId: reqID}); err == nil {
		st = d
	}
	return st.Err()
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
	path := truncateLog(r.URL.Path)
	switch {
	case errors.As(err, &mna):
		e := transcode.NewError(http.StatusMethodNotAllowed, codes.Unimplemented, "method "+truncateLog(r.Method)+" is not allowed on "+path)
		e.Allow = mna.Allow
		if slices.Contains(e.Allow, http.MethodGet) && !slices.Contains(e.Allow, http.MethodHead) {
			e.Allow = append(slices.Clone(e.Allow), http.MethodHead)
			slices.Sort(e.Allow)
		}
		return e
	case errors.Is(err, transcode.ErrBadPathEncoding), errors.Is(err, transcode.ErrDotSegment):
		return transcode.NewError(http.StatusBadRequest, codes.InvalidArgument, "invalid path: "+err.Error())
	default:
		return transcode.NewError(http.StatusNotFound, codes.NotFound, "no route for "+truncateLog(r.Method)+" "+path)
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
	md, err := h.md.outgoing(r, ex.reqID, &ex.fwd, r.TLS != nil || connTLS(r.Context()) != nil)
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
			return transcode.NewError(http.StatusBadRequest, codes.InvalidArgument, "Grpc-Timeout header "+strconv.Quote(truncateLog(v[:min(len(v), 32)]))+" is malformed")
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
// cancellation by the edge's own context. Errors grpc-go made on this side
// of the connection (no instance, dial and TLS failures, resets, messages
// over the size limit) carry addresses and Go error chains: they keep their
// code with a plain sentence, the detail going to the log.
func upstreamError(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause == errStreamIdle || cause == errStreamTooLong || cause == errDraining {
		return cause
	}
	if st, ok := status.FromError(err); ok {
		if st.Code() == codes.DeadlineExceeded && ctx.Err() != nil {
			return status.Error(codes.DeadlineExceeded, "upstream call exceeded its deadline")
		}
		if msg, internal := transportMessage(st); internal {
			return &internalError{st: status.New(st.Code(), msg), detail: st.Message()}
		}
		return err
	}
	return transcode.FromContextError(err)
}

// transportMessage recognises a status made by the gRPC client rather than
// returned by the service, and gives the sentence clients get instead.
func transportMessage(st *status.Status) (string, bool) {
	msg := st.Message()
	if !looksInternal(msg) {
		return "", false
	}
	switch st.Code() {
	case codes.Unavailable:
		return "the upstream service is unavailable; retry later", true
	case codes.ResourceExhausted:
		return "the upstream message is larger than the edge accepts", true
	case codes.DeadlineExceeded:
		return "upstream call exceeded its deadline", true
	case codes.Canceled:
		return "the upstream call was cancelled", true
	case codes.Unauthenticated, codes.PermissionDenied:
		return "the edge could not authenticate to the upstream service", true
	default:
		return "the upstream call failed", true
	}
}

// internalMarkers are phrases of grpc-go's and Go's own errors; a service's
// message containing one (or an IP address with a port) is not shown
// either: an edge never tells clients about its network.
var internalMarkers = []string{
	"transport:", "transport is closing", "connection error", "dial tcp", "dial unix", "connect:",
	"grpc:", "subconn", "name resolver", "resolver error", "produced zero addresses", "connection refused",
	"connection reset", "broken pipe", "i/o timeout", "eof", "rst_stream", "goaway", "tls:", "x509:",
	"handshake", "no such host", "read tcp", "write tcp", "desc =",
}

func looksInternal(msg string) bool {
	lower := strings.ToLower(msg)
	for _, m := range internalMarkers {
		if strings.Contains(lower, m) {
			return true
		}
	}
	return hasAddrPort(msg)
}

// hasAddrPort finds an IPv4 address with a port ("10.1.2.3:9000") or a
// bracketed IPv6 one.
func hasAddrPort(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '[' {
			if j := strings.Index(s[i:], "]:"); j > 1 {
				if _, err := netip.ParseAddr(s[i+1 : i+j]); err == nil {
					return true
				}
			}
			continue
		}
		if s[i] < '0' || s[i] > '9' || (i > 0 && (s[i-1] == '.' || (s[i-1] >= '0' && s[i-1] <= '9'))) {
			continue
		}
		j := i
		for j < len(s) && (s[j] == '.' || (s[j] >= '0' && s[j] <= '9')) {
			j++
		}
		if j < len(s) && s[j] == ':' && j+1 < len(s) && s[j+1] >= '0' && s[j+1] <= '9' {
			if _, err := netip.ParseAddr(s[i:j]); err == nil {
				return true
			}
		}
		i = j
	}
	return false
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
			// The client went away, or stopped reading for edge.write_timeout:
			// returning cancels the upstream call.
			code, ex.message = codes.Canceled, "client went away or stopped reading mid-stream"
			return transcode.ErrResponseStarted
		}
		if r.Method == http.MethodHead {
			// The status and headers are known: HEAD wants nothing more.
			return nil
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
