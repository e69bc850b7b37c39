package edge

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// Telemetry is what every request reports: Prometheus request metrics, one
// access-log line, and OpenTelemetry spans (a server span per request; the
// upstream connections add a client span per call through ClientHandler).
type Telemetry struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	upstream *prometheus.HistogramVec
	composed *prometheus.CounterVec
	inFlight prometheus.Gauge

	access      *zap.Logger // nil: no access log
	sample      float64
	tp          *sdktrace.TracerProvider
	tracer      trace.Tracer
	prop        propagation.TextMapPropagator
	trust       trustNets
	traceHeader string
	exporting   bool                   // spans leave the process: client spans via otelgrpc
	otlp        []otlptracegrpc.Option // the exporter Start connects; nil: none
}

// latencyBuckets span loopback calls (sub-millisecond) to slow upstreams.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// NewTelemetry registers the request metrics on reg and builds the tracer
// provider: with the "none" exporter spans are never exported, but trace
// ids are made, propagated and returned all the same. With the "otlp"
// exporter, Start connects it and Shutdown flushes and closes it.
//
// access receives the access log at info; nil means none.
func NewTelemetry(cfg Config, reg prometheus.Registerer, access *zap.Logger) (*Telemetry, error) {
	tc := cfg.Tracing
	t := &Telemetry{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_http_requests_total",
			Help: "Requests answered, by route template (\"unmatched\" without one), HTTP method, HTTP status code and gRPC status code.",
		}, []string{"route", "method", "code", "grpc_code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "portico_http_request_duration_seconds",
			Help:    "Time from the request's arrival to its last response byte, by route template and HTTP method.",
			Buckets: latencyBuckets,
		}, []string{"route", "method"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "portico_upstream_request_duration_seconds",
			Help:    "Duration of each upstream gRPC call attempt, by gRPC method and status code.",
			Buckets: latencyBuckets,
		}, []string{"grpc_method", "grpc_code"}),
		composed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_compose_calls_total",
			Help: "Calls of composed routes, by route template, call name, gRPC status code and, for optional calls that failed, the fallback the answer got (none, empty, literal, last_good).",
		}, []string{"route", "call", "grpc_code", "fallback"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portico_http_requests_in_flight",
			Help: "Requests being served now.",
		}),
		sample:      cfg.AccessLog.SampleRatio,
		prop:        propagation.TraceContext{},
		traceHeader: tc.ResponseHeader,
	}
	if t.traceHeader == "-" {
		t.traceHeader = ""
	}
	// Canonical once, so that setting it per request is a map store.
	t.traceHeader = textproto.CanonicalMIMEHeaderKey(t.traceHeader)
	if reg != nil {
		reg.MustRegister(t.requests, t.duration, t.upstream, t.composed, t.inFlight)
	}
	if cfg.AccessLog.On() && access != nil && access.Core().Enabled(zapcore.InfoLevel) {
		t.access = access
	}
	var err error
	if t.trust, err = parseTrust(tc.TrustIncoming); err != nil {
		return nil, err
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", tc.ServiceName))),
	}
	switch tc.Exporter {
	case "otlp":
		t.exporting = true
		t.otlp = []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(tc.Endpoint), otlptracegrpc.WithTimeout(10 * time.Second)}
		if tc.Insecure {
			t.otlp = append(t.otlp, otlptracegrpc.WithInsecure())
		}
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(tc.SampleRatio))))
	default:
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	}
	t.tp = sdktrace.NewTracerProvider(opts...)
	t.tracer = t.tp.Tracer("github.com/portico-dev/portico/edge")
	return t, nil
}

// ClientHandler is the stats handler the upstream connections use when
// spans are exported: a client span per call, its context sent as
// traceparent metadata. Without an exporter it is a no-op and the edge
// sends the server span's context itself (see propagate), which costs one
// string instead of otelgrpc's per-call work.
func (t *Telemetry) ClientHandler() grpc.DialOption {
	if !t.exporting {
		return grpc.EmptyDialOption{}
	}
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithPropagators(t.prop),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
	))
}

// Start connects the OTLP exporter, if there is one, and exports spans
// from now on in batches (at least every second), from a goroutine the
// tracer provider owns until Shutdown.
func (t *Telemetry) Start(ctx context.Context) error {
	if t.otlp == nil {
		return nil
	}
	// New does not wait for the collector: it connects in the background.
	exp, err := otlptracegrpc.New(ctx, t.otlp...)
	if err != nil {
		return fmt.Errorf("edge.tracing: %w", err)
	}
	t.tp.RegisterSpanProcessor(sdktrace.NewBatchSpanProcessor(exp, sdktrace.WithBatchTimeout(time.Second)))
	return nil
}

// Shutdown exports the spans still buffered and closes the exporter.
func (t *Telemetry) Shutdown(ctx context.Context) error { return t.tp.Shutdown(ctx) }

// startSpan continues a trusted client's trace or starts one, and returns
// the trace id to send back.
func (t *Telemetry) startSpan(r *http.Request) (context.Context, trace.Span) {
	ctx := r.Context()
	if t.trust.trusts(r.RemoteAddr) {
		ctx = t.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	if !t.exporting {
		return continueTrace(ctx)
	}
	// Named by the bounded method until a route names it better.
	return t.tracer.Start(ctx, metricMethod(r.Method), trace.WithSpanKind(trace.SpanKindServer))
}

// continueTrace is the server span when no span leaves the process: a
// span context only, in the trusted client's trace (its flags and state
// passed on, so that a sampled trace stays sampled downstream) or in a new
// one, with ids from the runtime's generator. The SDK would build a span to
// record attributes nothing exports.
func continueTrace(ctx context.Context) (context.Context, trace.Span) {
	parent := trace.SpanContextFromContext(ctx)
	cfg := trace.SpanContextConfig{TraceID: parent.TraceID(), TraceFlags: parent.TraceFlags(), TraceState: parent.TraceState()}
	for !cfg.TraceID.IsValid() {
		binary.BigEndian.PutUint64(cfg.TraceID[:8], rand.Uint64())
		binary.BigEndian.PutUint64(cfg.TraceID[8:], rand.Uint64())
	}
	for !cfg.SpanID.IsValid() {
		binary.BigEndian.PutUint64(cfg.SpanID[:], rand.Uint64())
	}
	ctx = trace.ContextWithSpanContext(ctx, trace.NewSpanContext(cfg))
	return ctx, trace.SpanFromContext(ctx)
}

// propagate adds the request's trace context to the upstream metadata when
// no client span does it.
func (t *Telemetry) propagate(ctx context.Context, md map[string][]string) {
	if t.exporting {
		return
	}
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return
	}
	var b [55]byte // 00-<32 hex>-<16 hex>-<2 hex>
	tid, sid := sc.TraceID(), sc.SpanID()
	copy(b[:], "00-")
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	flags := [1]byte{byte(sc.TraceFlags())}
	hex.Encode(b[53:55], flags[:])
	md["traceparent"] = []string{string(b[:])}
}

// finish records the request's metrics, span attributes and access log.
func (t *Telemetry) finish(r *http.Request, ex *exchange, span trace.Span) {
	elapsed := time.Since(ex.start)
	route := "unmatched"
	if ex.route != nil {
		route = ex.route.Binding.Template.Raw
	}
	method := metricMethod(r.Method)
	status := ex.rec.status
	if status == 0 {
		status = http.StatusOK
	}
	code := ex.code.String()
	t.requests.WithLabelValues(route, method, statusText(status), code).Inc()
	t.duration.WithLabelValues(route, method).Observe(elapsed.Seconds())
	if span.IsRecording() {
		if ex.route != nil {
			span.SetName(r.Method + " " + route)
		}
		span.SetAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("http.route", route),
			attribute.String("url.path", r.URL.Path),
			attribute.Int("http.response.status_code", status),
			attribute.String("rpc.grpc.status", code),
			attribute.String("portico.request_id", ex.reqID),
		)
		if ex.upstream != "" {
			span.SetAttributes(attribute.String("portico.upstream", ex.upstream))
		}
		if status >= 500 {
			span.SetStatus(otelcodes.Error, code)
		}
	}
	span.End()
	if t.access == nil || (status < 500 && t.sample < 1 && rand.Float64() >= t.sample) {
		return
	}
	ce := t.access.Check(zapcore.InfoLevel, "request")
	if ce == nil {
		return
	}
	// The fields live in the pooled exchange: a line costs no allocation
	// beyond zap's own buffer.
	f := &ex.logFields
	f[0] = zap.String("route", route)
	f[1] = zap.String("http_method", r.Method)
	f[2] = zap.String("path", truncateLog(r.URL.Path)) // never the query: it may carry keys
	f[3] = zap.Int("status", status)
	f[4] = zap.String("grpc_code", code)
	f[5] = zap.String("upstream", ex.upstream)
	f[6] = zap.Duration("latency", elapsed)
	f[7] = zap.Int64("bytes_in", ex.body.charged) // read, not declared
	f[8] = zap.Int64("bytes_out", ex.rec.bytes)
	f[9] = zap.String("request_id", ex.reqID)
	f[10] = zap.String("trace_id", ex.traceID(span))
	f[11] = zap.String("subject", ex.subject)
	f[12] = zap.String("client", clientIP(r.RemoteAddr))
	f[13] = zap.String("proto", r.Proto)
	f[14] = zap.String("error", truncateLog(ex.message))
	// What the client was not told: the upstream's address, Go errors.
	f[15] = zap.String("detail", truncateLog(ex.detail))
	// A composed answer's degraded calls (its Portico-Partial header).
	f[16] = zap.String("degraded", truncateLog(ex.rec.Header().Get(PartialHeader)))
	ce.Write(f[:]...)
}

// truncateLog keeps an access log line short whatever the client sent.
func truncateLog(s string) string {
	if len(s) <= maxLogField {
		return s
	}
	return s[:maxLogField] + "…"
}

const maxLogField = 512

// observeUpstream records one upstream attempt.
// observeComposed returns the route's counter of composed calls.
func (t *Telemetry) observeComposed(route string) func(call string, code codes.Code, fallback string) {
	return func(call string, code codes.Code, fallback string) {
		t.composed.WithLabelValues(route, call, code.String(), fallback).Inc()
	}
}

// traceComposed returns the route's span per composed call when spans
// are exported (nil otherwise: nothing to pay for): a child of the
// request's server span and the parent of the call's client spans.
func (t *Telemetry) traceComposed(route string) func(context.Context, string) (context.Context, func(codes.Code, string)) {
	if t == nil || !t.exporting {
		return nil
	}
	return func(ctx context.Context, call string) (context.Context, func(codes.Code, string)) {
		ctx, span := t.tracer.Start(ctx, "compose "+call, trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithAttributes(attribute.String("portico.compose.route", route), attribute.String("portico.compose.call", call)))
		return ctx, func(code codes.Code, msg string) {
			span.SetAttributes(attribute.String("rpc.grpc.status_code", code.String()))
			if code != codes.OK {
				span.SetStatus(otelcodes.Error, msg)
			}
			span.End()
		}
	}
}

func (t *Telemetry) observeUpstream(method string, code codes.Code, d time.Duration) {
	t.upstream.WithLabelValues(method, code.String()).Observe(d.Seconds())
}

// metricMethod bounds the method label to the standard methods.
func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodHead, http.MethodOptions:
		return m
	}
	return "OTHER"
}

var statusTexts = func() (s [600]string) {
	for i := range s {
		s[i] = fmt.Sprint(i)
	}
	return s
}()

func statusText(code int) string {
	if code >= 0 && code < len(statusTexts) {
		return statusTexts[code]
	}
	return fmt.Sprint(code)
}

func clientIP(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// recorder remembers the status and counts the body bytes of a response.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	// dl sets the connection's (HTTP/1.1) or stream's (HTTP/2) write
	// deadline: every write to a client gets edge.write_timeout to make
	// progress, so a client that stops reading ends its response instead
	// of holding a handler (and an upstream stream) forever.
	dl      writeDeadliner
	timeout time.Duration
	armed   time.Time // HTTP/1.1: when the deadline was last pushed out
	// h2: on HTTP/2 a write deadline is a timer that resets the stream when
	// it fires, writing or not, so it is set around each write and cleared
	// after it; a slow upstream or a quiet stream is never cut by it.
	h2 bool
}

type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// writeChunk is the most written under one deadline: a large response
// to a slow client needs progress, not speed.
const writeChunk = 64 << 10

func (w *recorder) init(rw http.ResponseWriter, r *http.Request, timeout time.Duration) {
	*w = recorder{ResponseWriter: rw, timeout: timeout, h2: r.ProtoMajor == 2}
	w.dl, _ = rw.(writeDeadliner)
	if w.timeout <= 0 {
		w.dl = nil
	}
	if !w.h2 {
		w.arm(time.Now())
	}
}

// arm pushes the write deadline out to now + timeout before a write. On
// HTTP/1.1 the deadline only matters while a write is in progress, so it
// is left set and refreshed at most every eighth of the timeout; on
// HTTP/2 it is set for the write (and cleared by disarm after it).
func (w *recorder) arm(now time.Time) {
	if w.dl == nil || (!w.h2 && now.Sub(w.armed) < w.timeout/8) {
		return
	}
	w.armed = now
	_ = w.dl.SetWriteDeadline(now.Add(w.timeout))
}

func (w *recorder) disarm() {
	if w.dl != nil && w.h2 {
		_ = w.dl.SetWriteDeadline(time.Time{})
	}
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code) // buffered: never blocks on the client
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	total := 0
	defer w.disarm()
	for {
		chunk := b
		if len(chunk) > writeChunk {
			chunk = chunk[:writeChunk]
		}
		w.arm(time.Now())
		n, err := w.ResponseWriter.Write(chunk)
		total += n
		w.bytes += int64(n)
		b = b[n:]
		if err != nil || len(b) == 0 {
			return total, err
		}
	}
}

// Flush keeps streaming working through the recorder; flushing may wait
// for the client, so it runs under the write deadline.
func (w *recorder) Flush() {
	w.arm(time.Now())
	_ = http.NewResponseController(w.ResponseWriter).Flush()
	w.disarm()
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// trustNets decides whose traceparent is continued.
type trustNets struct {
	any      bool
	prefixes []netip.Prefix
}

var privateNets = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("fc00::/7"),
}

func parseTrust(list []string) (trustNets, error) {
	var t trustNets
	for _, s := range list {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "any":
			t.any = true
		case "none":
		case "private":
			t.prefixes = append(t.prefixes, privateNets...)
		default:
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return t, fmt.Errorf("edge.tracing.trust_incoming %q: want a CIDR, private, any or none", s)
			}
			t.prefixes = append(t.prefixes, p.Masked())
		}
	}
	return t, nil
}

func (t trustNets) trusts(remote string) bool {
	if t.any {
		return true
	}
	if len(t.prefixes) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	for _, p := range t.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (c TracingConfig) validate() error {
	switch c.Exporter {
	case "", "none":
	case "otlp":
		if _, _, err := net.SplitHostPort(c.Endpoint); err != nil {
			return fmt.Errorf("edge.tracing.endpoint %q: want host:port of an OTLP/gRPC collector", c.Endpoint)
		}
	default:
		return fmt.Errorf("edge.tracing.exporter must be none or otlp, got %q", c.Exporter)
	}
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return fmt.Errorf("edge.tracing.sample_ratio must be within [0, 1], got %g", c.SampleRatio)
	}
	if c.ServiceName == "" {
		return fmt.Errorf("edge.tracing.service_name must not be empty")
	}
	_, err := parseTrust(c.TrustIncoming)
	return err
}
