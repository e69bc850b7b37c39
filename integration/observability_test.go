package integration

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
	"github.com/portico-dev/portico/policies"
)

// scrape parses the admin listener's /metrics.
func scrape(t *testing.T, adminURL string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := harness.Client(t).Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// sample finds the metric of family name whose labels include want; it
// returns nil when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is a counter's, gauge's or histogram's count; -1 when absent.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	m := sample(fams, name, labels)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

const accountsSvc = "/portico.examples.accounts.v1.AccountService/"

// TestMetricsAfterScriptedRequests: a known set of requests, then a scrape
// whose counters, histograms and gauges must say exactly that.
func TestMetricsAfterScriptedRequests(t *testing.T) {
	t.Parallel()
	env := newPolicyEnv(t)
	c := env.client
	free := env.idp.Token("bob", map[string]any{"scope": "accounts", "plan": "free"})
	for range 3 {
		if r := do(t, c, "GET", env.edge.URL+"/v1/echo/hi", ""); r.code != 200 {
			t.Fatalf("echo: %d %s", r.code, r.body)
		}
	}
	for range 2 { // a miss, then a hit
		if r := do(t, c, "GET", env.edge.URL+"/v1/plans", ""); r.code != 200 {
			t.Fatalf("plans: %d %s", r.code, r.body)
		}
	}
	if r := do(t, c, "GET", env.edge.URL+"/v1/whoami", ""); r.code != 401 {
		t.Fatalf("whoami without a token: %d %s", r.code, r.body)
	}
	limited := 0
	for range 61 { // the free tier allows 60 a minute
		if do(t, c, "GET", env.edge.URL+"/v1/quota", "", bearer(free)...).code == 429 {
			limited++
		}
	}
	if limited != 1 {
		t.Fatalf("want exactly 1 of 61 free-tier calls limited, got %d", limited)
	}
	if r := do(t, c, "GET", env.edge.URL+"/nowhere", ""); r.code != 404 {
		t.Fatalf("unmatched: %d", r.code)
	}

	fams := scrape(t, env.edge.AdminURL)
	req := "portico_http_requests_total"
	for _, w := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"route": "/v1/echo/{text}", "method": "GET", "code": "200", "grpc_code": "OK"}, 3},
		{map[string]string{"route": "/v1/plans", "method": "GET", "code": "200", "grpc_code": "OK"}, 2},
		{map[string]string{"route": "/v1/whoami", "method": "GET", "code": "401", "grpc_code": "Unauthenticated"}, 1},
		{map[string]string{"route": "/v1/quota", "method": "GET", "code": "200", "grpc_code": "OK"}, 60},
		{map[string]string{"route": "/v1/quota", "method": "GET", "code": "429", "grpc_code": "ResourceExhausted"}, 1},
		{map[string]string{"route": "unmatched", "method": "GET", "code": "404", "grpc_code": "NotFound"}, 1},
	} {
		if got := value(fams, req, w.labels); got != w.want {
			t.Errorf("%s%v = %v, want %v", req, w.labels, got, w.want)
		}
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"portico_http_request_duration_seconds", map[string]string{"route": "/v1/quota", "method": "GET"}, 61},
		{"portico_http_request_duration_seconds", map[string]string{"route": "/v1/echo/{text}"}, 3},
		// Upstream attempts: the cache hit, the 401 and the 429 never left.
		{"portico_upstream_request_duration_seconds", map[string]string{"grpc_method": accountsSvc + "Echo", "grpc_code": "OK"}, 3},
		{"portico_upstream_request_duration_seconds", map[string]string{"grpc_method": accountsSvc + "ListPlans", "grpc_code": "OK"}, 1},
		{"portico_upstream_request_duration_seconds", map[string]string{"grpc_method": accountsSvc + "GetQuota", "grpc_code": "OK"}, 60},
		{"portico_http_requests_in_flight", nil, 0},
		{"portico_cache_requests_total", map[string]string{"result": "miss"}, 1},
		{"portico_cache_requests_total", map[string]string{"result": "hit"}, 1},
		{"portico_rate_limited_total", nil, 1},
		{"portico_auth_denied_total", nil, 1},
		{"portico_route_table_rejected_services", nil, 0},
		{"portico_route_table_routes", nil, 6},
	}
	for _, w := range checks {
		if got := value(fams, w.name, w.labels); got != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.want)
		}
	}
	if got := value(fams, "portico_route_table_builds_total", nil); got < 1 {
		t.Errorf("portico_route_table_builds_total = %v, want >= 1", got)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	// Names follow the conventions: the portico_ prefix, base units, and
	// _total on counters only.
	for name, f := range fams {
		if !strings.HasPrefix(name, "portico_") {
			continue
		}
		if (f.GetType() == dto.MetricType_COUNTER) != strings.HasSuffix(name, "_total") {
			t.Errorf("%s: a %s; _total is for counters only", name, f.GetType())
		}
		if strings.Contains(name, "_milliseconds") || strings.Contains(name, "_ms") {
			t.Errorf("%s: use base units (seconds)", name)
		}
	}
}

// TestAccessLogHasTheFieldsAndNoSecrets: one JSON line per request with
// what an operator needs to find it, and no token or API key anywhere in
// any log line, even when the request fails.
func TestAccessLogHasTheFieldsAndNoSecrets(t *testing.T) {
	t.Parallel()
	idp := harness.NewIDP(t)
	const apiKey = "sk-live-4c1d2f9b8e7a6d5c4b3a29180716f5e4"
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(keys, []byte("- name: partner-acme\n  sha256: "+keyHash(apiKey)+"\n  scopes: [accounts]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := harness.Services(t, []string{"accounts"}, nil)
	e, logs := harness.PorticoLogged(t, func(cfg *app.Config) {
		withIDP(idp)(cfg)
		cfg.Policies.APIKeys = []policies.APIKeySource{{Name: "partners", File: keys}}
	}, b.Addr)
	c := harness.Client(t)
	tok := idp.Token("alice", map[string]any{"scope": "accounts", "plan": "paid"})
	ok := do(t, c, "GET", e.URL+"/v1/whoami?api_key="+apiKey, "", bearer(tok)...)
	if ok.code != 200 {
		t.Fatalf("whoami: %d %s", ok.code, ok.body)
	}
	// Failures that carry secrets: a tampered token, a wrong key.
	do(t, c, "GET", e.URL+"/v1/whoami", "", bearer(tok+"x")...)
	do(t, c, "GET", e.URL+"/v1/whoami", "", "X-Api-Key", apiKey+"-wrong")
	if r := do(t, c, "GET", e.URL+"/v1/whoami", "", "X-Api-Key", apiKey); r.code != 200 {
		t.Fatalf("whoami with the API key: %d %s", r.code, r.body)
	}

	var line map[string]any
	eventually(t, 5*time.Second, "the access log line of the first call", func() bool {
		for _, en := range logs.FilterMessage("request").All() {
			if f := en.ContextMap(); f["request_id"] == ok.header.Get("X-Request-Id") {
				line = f
				return true
			}
		}
		return false
	})
	want := map[string]any{
		"route": "/v1/whoami", "http_method": "GET", "path": "/v1/whoami", "status": int64(200),
		"grpc_code": "OK", "upstream": b.Addr, "subject": "alice", "client": "127.0.0.1",
		"trace_id": ok.header.Get("X-Trace-Id"), "bytes_out": int64(len(ok.body)),
	}
	for k, v := range want {
		if fmt.Sprint(line[k]) != fmt.Sprint(v) {
			t.Errorf("access log %s = %v, want %v (line %v)", k, line[k], v, line)
		}
	}
	if len(ok.header.Get("X-Trace-Id")) != 32 {
		t.Errorf("X-Trace-Id %q: want 32 hex digits", ok.header.Get("X-Trace-Id"))
	}
	if d, _ := line["latency"].(time.Duration); d <= 0 {
		t.Errorf("latency %v", line["latency"])
	}
	if n := len(logs.FilterMessage("request").All()); n != 4 {
		t.Errorf("%d access log lines for 4 requests", n)
	}
	denied := 0
	for _, en := range logs.All() {
		s := fmt.Sprint(en.Message, en.ContextMap())
		for _, secret := range []string{tok, apiKey, strings.SplitN(tok, ".", 3)[2]} {
			if strings.Contains(s, secret) {
				t.Fatalf("a secret reached the log: %s", s)
			}
		}
		if en.Message == "request" && en.ContextMap()["status"] == int64(401) {
			denied++
		}
	}
	if denied != 2 {
		t.Errorf("%d access log lines with 401, want 2", denied)
	}
}

// otlpReceiver is an in-process OTLP/gRPC trace collector.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	addr  string
	mu    sync.Mutex
	spans []*tracepb.Span
}

func startOTLP(t *testing.T) *otlpReceiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{addr: lis.Addr().String()}
	s := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(s, r)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return r
}

func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			r.spans = append(r.spans, ss.Spans...)
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// trace returns the spans of one trace.
func (r *otlpReceiver) trace(id string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if hex.EncodeToString(s.TraceId) == id {
			out = append(out, s)
		}
	}
	return out
}

// TestTracingToOTLP: a trusted client's traceparent is continued; Portico
// exports a server span and a client span to the collector, sends the
// client span's context to the service as metadata, and returns the trace
// id. An untrusted client's traceparent starts a new trace instead.
func TestTracingToOTLP(t *testing.T) {
	t.Parallel()
	recv := startOTLP(t)
	md := newMDRecorder()
	b := harness.Services(t, []string{"accounts"}, nil, md.options()...)
	idp := harness.NewIDP(t)
	tracing := func(trust ...string) func(*app.Config) {
		return func(cfg *app.Config) {
			withIDP(idp)(cfg)
			cfg.Edge.Tracing.Exporter, cfg.Edge.Tracing.Endpoint, cfg.Edge.Tracing.Insecure = "otlp", recv.addr, true
			cfg.Edge.Tracing.TrustIncoming = trust
		}
	}
	trusted := harness.Portico(t, tracing("private"), b.Addr)
	untrusted := harness.Portico(t, tracing("none"), b.Addr)
	c := harness.Client(t)

	const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	r := do(t, c, "GET", trusted.URL+"/v1/echo/hi", "", "Traceparent", "00-"+traceID+"-"+parent+"-01")
	if r.code != 200 || r.header.Get("X-Trace-Id") != traceID {
		t.Fatalf("trusted: %d, X-Trace-Id %q, want %s", r.code, r.header.Get("X-Trace-Id"), traceID)
	}
	var server, client *tracepb.Span
	eventually(t, 10*time.Second, "server and client spans at the collector", func() bool {
		server, client = nil, nil
		for _, s := range recv.trace(traceID) {
			switch s.Kind {
			case tracepb.Span_SPAN_KIND_SERVER:
				server = s
			case tracepb.Span_SPAN_KIND_CLIENT:
				client = s
			}
		}
		return server != nil && client != nil
	})
	if got := hex.EncodeToString(server.ParentSpanId); got != parent {
		t.Errorf("server span's parent %s, want the client's %s", got, parent)
	}
	if server.Name != "GET /v1/echo/{text}" {
		t.Errorf("server span name %q", server.Name)
	}
	if !hexEq(client.ParentSpanId, server.SpanId) {
		t.Errorf("client span's parent %x, want the server span %x", client.ParentSpanId, server.SpanId)
	}
	if !strings.HasSuffix(client.Name, "AccountService/Echo") {
		t.Errorf("client span name %q", client.Name)
	}
	tp := md.get(r.header.Get("X-Request-Id")).Get("traceparent")
	if len(tp) != 1 || tp[0] != fmt.Sprintf("00-%s-%x-01", traceID, client.SpanId) {
		t.Errorf("upstream traceparent %v, want the client span's context", tp)
	}

	r = do(t, c, "GET", untrusted.URL+"/v1/echo/hi", "", "Traceparent", "00-"+traceID+"-"+parent+"-01")
	other := r.header.Get("X-Trace-Id")
	if r.code != 200 || len(other) != 32 || other == traceID {
		t.Fatalf("untrusted: %d, X-Trace-Id %q: want a new trace", r.code, other)
	}
	eventually(t, 10*time.Second, "the untrusted request's new trace", func() bool { return len(recv.trace(other)) == 2 })
	for _, s := range recv.trace(other) {
		if s.Kind == tracepb.Span_SPAN_KIND_SERVER && len(s.ParentSpanId) != 0 {
			t.Errorf("untrusted traceparent was continued: parent %x", s.ParentSpanId)
		}
	}
}

func hexEq(a, b []byte) bool { return hex.EncodeToString(a) == hex.EncodeToString(b) }

// TestTraceContextWithoutExporter: with tracing off (the default) a trusted
// client's trace id still reaches the service and comes back to it, and a
// request without one gets a fresh id, so logs on both sides correlate.
func TestTraceContextWithoutExporter(t *testing.T) {
	t.Parallel()
	md := newMDRecorder()
	b := harness.Services(t, []string{"products"}, nil, md.options()...)
	e := harness.Portico(t, func(cfg *app.Config) { cfg.Edge.Tracing.TrustIncoming = []string{"127.0.0.0/8"} }, b.Addr)
	c := harness.Client(t)
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	r := do(t, c, "GET", e.URL+"/v1/products/p-1", "", "Traceparent", "00-"+traceID+"-b7ad6b7169203331-01")
	tp := md.get(r.header.Get("X-Request-Id")).Get("traceparent")
	if r.code != 200 || r.header.Get("X-Trace-Id") != traceID || len(tp) != 1 || !strings.HasPrefix(tp[0], "00-"+traceID+"-") || len(tp[0]) != 55 {
		t.Fatalf("%d, X-Trace-Id %q, upstream traceparent %v", r.code, r.header.Get("X-Trace-Id"), tp)
	}
	r = do(t, c, "GET", e.URL+"/v1/products/p-1", "")
	id := r.header.Get("X-Trace-Id")
	tp = md.get(r.header.Get("X-Request-Id")).Get("traceparent")
	if len(id) != 32 || id == traceID || len(tp) != 1 || !strings.Contains(tp[0], id) {
		t.Fatalf("new trace: X-Trace-Id %q, upstream traceparent %v", id, tp)
	}
}

// TestStreamMetrics: a stream that fails before its first message and one
// that fails after it are counted with the upstream's code, and a preflight
// with its route.
func TestStreamMetrics(t *testing.T) {
	t.Parallel()
	b := harness.Services(t, []string{"orders"}, nil)
	e, logs := harness.PorticoLogged(t, nil, b.Addr)
	c := harness.Client(t)
	if r := do(t, c, "GET", e.URL+"/v1/orders:stream?count=0&failCode=7", ""); r.code != 403 {
		t.Fatalf("failing before the first message: %d", r.code)
	}
	r := do(t, c, "GET", e.URL+"/v1/orders:stream?count=2&failCode=14", "")
	if r.code != 200 || !strings.Contains(r.body, `"code":14`) {
		t.Fatalf("failing after two messages: %d %s", r.code, r.body)
	}
	fams := scrape(t, e.AdminURL)
	const method = "/portico.examples.orders.v1.OrderService/StreamOrders"
	for _, w := range []struct {
		name   string
		labels map[string]string
	}{
		{"portico_http_requests_total", map[string]string{"route": "/v1/orders:stream", "code": "403", "grpc_code": "PermissionDenied"}},
		{"portico_http_requests_total", map[string]string{"route": "/v1/orders:stream", "code": "200", "grpc_code": "Unavailable"}},
		{"portico_upstream_request_duration_seconds", map[string]string{"grpc_method": method, "grpc_code": "PermissionDenied"}},
		{"portico_upstream_request_duration_seconds", map[string]string{"grpc_method": method, "grpc_code": "Unavailable"}},
	} {
		if got := value(fams, w.name, w.labels); got != 1 {
			t.Errorf("%s%v = %v, want 1", w.name, w.labels, got)
		}
	}
	var line map[string]any
	for _, en := range logs.FilterMessage("request").All() {
		if f := en.ContextMap(); f["request_id"] == r.header.Get("X-Request-Id") {
			line = f
		}
	}
	if line["grpc_code"] != "Unavailable" || !strings.Contains(fmt.Sprint(line["error"]), "stream failed") || line["upstream"] != b.Addr {
		t.Errorf("access log of the stream that failed midway: %v", line)
	}
}
