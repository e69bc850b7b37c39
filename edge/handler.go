package edge

import (
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/policies/chain"
	"github.com/portico-dev/portico/transcode"
)

// Handler serves every public request from the current route table: it
// finds the route, runs its chain and renders whatever error comes back,
// in one place. It knows no stage of the chain.
type Handler struct {
	tables       *Tables
	md           *metadataMapper
	tel          *Telemetry
	writeTimeout time.Duration
	proxies      proxies
	budget       *bodyBudget
	openapi      bool
	docs         bool
	pc           *policies.Compiler // verifies callers for frontends chosen by who calls
	log          *zap.Logger
}

// NewHandler returns the public handler; tel reports every request.
func NewHandler(cfg Config, tables *Tables, tel *Telemetry, pc *policies.Compiler, log *zap.Logger) *Handler {
	return &Handler{
		tables:       tables,
		md:           newMetadataMapper(cfg.ForwardHeaders),
		tel:          tel,
		writeTimeout: cfg.WriteTimeout,
		proxies:      newProxies(cfg.TrustedProxies),
		budget:       &bodyBudget{limit: cfg.MaxInflightBodyBytes},
		openapi:      cfg.OpenAPI,
		docs:         cfg.Docs && cfg.OpenAPI,
		pc:           pc,
		log:          log,
	}
}

// exchange is what one request reports when it ends.
type exchange struct {
	start    time.Time
	route    *Route
	reqID    string
	code     codes.Code // the gRPC status the answer carries
	message  string     // its message, for errors
	upstream string     // the instance that answered, host:port
	subject  string
	detail   string // what the client was not told (addresses, Go errors), for the log
	fwd      forwarded
	body     budgetedBody
	rec      recorder
	call     chain.Call // the route's chain works on it
	trace    string     // the trace id in hex, once made (see traceID)

	logFields [17]zap.Field // the access-log line's, reused
}

// traceID is the span's trace id in hex, made once for the response
// header and the access log; "" without one.
func (ex *exchange) traceID(span trace.Span) string {
	if ex.trace == "" {
		if sc := span.SpanContext(); sc.HasTraceID() {
			ex.trace = sc.TraceID().String()
		}
	}
	return ex.trace
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
	hdr[requestIDHeader] = []string{ex.reqID}
	if h.tel.traceHeader != "" {
		if id := ex.traceID(span); id != "" {
			hdr[h.tel.traceHeader] = []string{id}
		}
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

// handle answers one request: a refusal before any route, a CORS
// preflight, or the route's chain; then the one exit for errors.
func (h *Handler) handle(w http.ResponseWriter, r *http.Request, ex *exchange) {
	var err error
	t := h.tables.Load()
	if flaw := requestFlaw(r.Context()); flaw != "" {
		// RFC 9112 §6.1: a request framed two ways may be read differently
		// by a proxy in front; answer it alone and close the connection so
		// that nothing pipelined behind it is served.
		w.Header().Set("Connection", "close")
		err = status.Error(codes.InvalidArgument, "malformed request framing: "+flaw+"; the connection is closed")
	} else if t == nil {
		err = status.Error(codes.Unavailable, "no route table yet: upstreams are still being reflected")
	} else if t, r = t.For(r, h.pc); t == nil {
		err = status.Error(codes.NotFound, "no frontend serves host "+strconv.Quote(truncateLog(r.Host)))
	} else if route, handled, perr := h.preflight(w, r, t); handled {
		ex.route, err = route, perr
	} else {
		err = h.route(w, r, t, ex)
	}
	if err == nil {
		return
	}
	if errors.Is(err, chain.ErrResponseStarted) {
		if st, ok := status.FromError(err); ok {
			ex.code, ex.message = st.Code(), st.Message()
		}
		if ce := h.log.Check(zapcore.DebugLevel, "response cut short"); ce != nil {
			ce.Write(zap.String("path", truncateLog(r.URL.Path)), zap.String("request_id", ex.reqID), zap.Error(err))
		}
		return
	}
	h.writeError(w, r, ex, err)
}

// route matches the request and runs the route's chain.
func (h *Handler) route(w http.ResponseWriter, r *http.Request, t *RouteTable, ex *exchange) error {
	method := r.Method
	if method == http.MethodHead {
		// RFC 9110 §9.3.2: HEAD is GET without the body; the servers
		// (HTTP/1.1 and HTTP/2) drop the body bytes and keep the
		// Content-Length the GET would have sent.
		method = http.MethodGet
	}
	vp := varsPool.Get().(*[]string)
	route, vars, err := t.Match(method, r.URL.EscapedPath(), (*vp)[:0])
	switch {
	case err == nil:
		ex.route = route
		err = h.serve(w, r, ex, vars)
	case h.openapi && method == http.MethodGet && (r.URL.Path == openAPIJSON || r.URL.Path == openAPIYAML):
		err = serveOpenAPI(w, r, t)
	case h.docs && method == http.MethodGet && docsAssets[r.URL.Path].body != nil:
		err = serveDocs(w, r)
	default:
		err = matchError(r, err)
	}
	clear(vars)
	*vp = vars[:0]
	varsPool.Put(vp)
	return err
}

// serve runs the route's chain with the call's upstream metadata (the
// client's mapped headers, the request id, the trace). A header that cannot
// become metadata is handed to the chain, which refuses the call with it
// after its header stages.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, ex *exchange, vars []string) error {
	md, invalid := h.md.outgoing(r, ex.reqID, &ex.fwd, r.TLS != nil || connTLS(r.Context()) != nil)
	if invalid == nil {
		h.tel.propagate(r.Context(), md)
	}
	c := &ex.call
	*c = chain.Call{W: w, R: r, Vars: vars, MD: md, Invalid: invalid}
	err := ex.route.Chain.Serve(r.Context(), c)
	ex.upstream = c.Upstream
	if c.Caller != nil {
		ex.subject = c.Caller.Subject
	}
	if err != nil {
		// An upstream's failure carries its metadata too.
		for k, vs := range c.Header {
			w.Header()[k] = vs
		}
	}
	return err
}

// writeError is the one place an error becomes an answer: what came from
// the edge's internals is replaced by a plain sentence, a 401 gets its
// challenge, and the error is rendered as google.rpc.Status JSON.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, ex *exchange, err error) {
	var types transcode.Resolver
	if ex.route != nil {
		types = ex.route.Codec.Types()
	}
	err = h.public(err, ex)
	challenge(w, r, err, ex.route)
	_, st := chain.WriteError(w, err, types)
	ex.code, ex.message = st.Code(), st.Message()
}

// public is the error the client gets. Errors the edge wrote for clients
// pass as they are; what came from grpc-go's transport or from Go (dial
// errors with the instance's address, TLS and reset errors, Go error
// chains) becomes a plain sentence for its code plus a
// google.rpc.RequestInfo with the request id, and the detail goes to the
// access log only.
func (h *Handler) public(err error, ex *exchange) error {
	if _, ok := errors.AsType[*chain.Error](err); ok {
		return err
	}
	err = chain.FromContextError(err)
	st, ok := status.FromError(err)
	if !ok {
		ex.detail = err.Error()
		return withRequestInfo(status.New(codes.Internal, "the edge could not complete the request"), ex.reqID)
	}
	if internal, ok := errors.AsType[*internalError](err); ok {
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
	if _, code := chain.StatusOf(err); code != http.StatusUnauthorized {
		return
	}
	if e, ok := errors.AsType[*chain.Error](err); ok && e.Header().Get("Www-Authenticate") != "" {
		return
	}
	var cs []string
	if route != nil {
		cs = route.Chain.Challenges()
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
// browser asks about (204, or a 403 error), and returns that route; without
// one the request is not handled here and falls through (405 for OPTIONS).
func (h *Handler) preflight(w http.ResponseWriter, r *http.Request, t *RouteTable) (*Route, bool, error) {
	if r.Method != http.MethodOptions || r.Header.Get("Origin") == "" {
		return nil, false, nil
	}
	want := r.Header.Get("Access-Control-Request-Method")
	if want == "" {
		return nil, false, nil
	}
	route, _, err := t.Match(want, r.URL.EscapedPath(), nil)
	if err != nil {
		return nil, false, nil
	}
	handled, err := route.Chain.Preflight(w, r, want)
	if !handled {
		return nil, false, nil
	}
	return route, true, err
}

func matchError(r *http.Request, err error) error {
	var mna *transcode.MethodNotAllowedError
	path := truncateLog(r.URL.Path)
	switch {
	case errors.As(err, &mna):
		allow := mna.Allow
		if slices.Contains(allow, http.MethodGet) && !slices.Contains(allow, http.MethodHead) {
			allow = append(slices.Clone(allow), http.MethodHead)
			slices.Sort(allow)
		}
		return chain.HTTPError(http.StatusMethodNotAllowed, codes.Unimplemented, "method "+truncateLog(r.Method)+" is not allowed on "+path).
			WithHeader("Allow", allow...)
	case errors.Is(err, transcode.ErrBadPathEncoding), errors.Is(err, transcode.ErrDotSegment):
		return status.Error(codes.InvalidArgument, "invalid path: "+err.Error())
	default:
		return status.Error(codes.NotFound, "no route for "+truncateLog(r.Method)+" "+path)
	}
}
