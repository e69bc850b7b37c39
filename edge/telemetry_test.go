package edge

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

func TestTrustIncoming(t *testing.T) {
	for _, tc := range []struct {
		list   []string
		remote string
		want   bool
	}{
		{[]string{"private"}, "127.0.0.1:5000", true},
		{[]string{"private"}, "10.1.2.3:5000", true},
		{[]string{"private"}, "[::1]:5000", true},
		{[]string{"private"}, "[::ffff:192.168.1.9]:5000", true},
		{[]string{"private"}, "203.0.113.7:5000", false},
		{[]string{"203.0.113.0/24"}, "203.0.113.7:5000", true},
		{[]string{"203.0.113.0/24"}, "198.51.100.7:5000", false},
		{[]string{"any"}, "198.51.100.7:5000", true},
		{[]string{"none"}, "127.0.0.1:5000", false},
		{nil, "127.0.0.1:5000", false},
		{[]string{"private"}, "not an address", false},
	} {
		tr, err := parseTrust(tc.list)
		if err != nil {
			t.Fatal(err)
		}
		if got := tr.trusts(tc.remote); got != tc.want {
			t.Errorf("trust %v, remote %s: %v, want %v", tc.list, tc.remote, got, tc.want)
		}
	}
	if _, err := parseTrust([]string{"10.0.0.0/33"}); err == nil || !strings.Contains(err.Error(), "trust_incoming") {
		t.Errorf("bad CIDR: %v", err)
	}
}

func TestObservabilityConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.Tracing.Exporter = "zipkin" }, "edge.tracing.exporter"},
		{func(c *Config) { c.Tracing.Exporter = "otlp" }, "edge.tracing.endpoint"},
		{func(c *Config) { c.Tracing.SampleRatio = 1.5 }, "edge.tracing.sample_ratio"},
		{func(c *Config) { c.Tracing.TrustIncoming = []string{"everyone"} }, "trust_incoming"},
		{func(c *Config) { c.AccessLog.SampleRatio = -0.1 }, "edge.access_log.sample_ratio"},
		{func(c *Config) { c.DrainDelay = -time.Second }, "edge.drain_delay"},
		{func(c *Config) { c.TLS.ClientCAFile = "ca.pem" }, "client_ca_file needs cert_file"},
		{func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile, c.TLS.ClientAuth = "c", "k", "sometimes" }, "client_auth"},
		{func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile, c.TLS.ReloadInterval = "c", "k", 0 }, "reload_interval"},
	} {
		c := DefaultConfig()
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %q, got %v", tc.want, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

func TestMetricLabelsAreBounded(t *testing.T) {
	if metricMethod("GET") != "GET" || metricMethod("BREW") != "OTHER" || metricMethod(strings.Repeat("X", 1000)) != "OTHER" {
		t.Error("methods outside the standard set must share one label value")
	}
	if statusText(204) != "204" || statusText(999) != "999" {
		t.Error("status text")
	}
}

func TestLostServices(t *testing.T) {
	table := func(methods ...string) *RouteTable {
		t := &RouteTable{}
		for _, m := range methods {
			t.routes = append(t.routes, &Route{FullMethod: m})
		}
		return t
	}
	old := table("/a.v1.Users/Get", "/a.v1.Users/List", "/b.v1.Orders/Get")
	if got := lostServices(old, table("/a.v1.Users/Get", "/b.v1.Orders/Get", "/c.v1.New/X")); len(got) != 0 {
		t.Errorf("nothing lost, got %v", got)
	}
	if got := lostServices(old, table("/a.v1.Users/Get")); len(got) != 1 || got[0] != "b.v1.Orders" {
		t.Errorf("want b.v1.Orders lost, got %v", got)
	}
	if got := lostServices(nil, table()); got != nil {
		t.Errorf("no table before: %v", got)
	}
}

// TestContinueTrace: without an exporter the server span is a span context
// only; it stays in a trusted parent's trace with its flags and state, or
// starts a trace of its own, and never reuses the parent's span id.
func TestContinueTrace(t *testing.T) {
	ts, err := trace.ParseTraceState("vendor=x")
	if err != nil {
		t.Fatal(err)
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
		TraceState: ts,
		Remote:     true,
	})
	ctx, span := continueTrace(trace.ContextWithRemoteSpanContext(context.Background(), parent))
	sc := trace.SpanContextFromContext(ctx)
	if !sc.Equal(span.SpanContext()) || span.IsRecording() {
		t.Fatalf("span %v (recording %v) is not the context's %v", span.SpanContext(), span.IsRecording(), sc)
	}
	if sc.TraceID() != parent.TraceID() || sc.SpanID() == parent.SpanID() || !sc.SpanID().IsValid() ||
		!sc.IsSampled() || sc.TraceState().String() != "vendor=x" {
		t.Fatalf("continued %v from parent %v", sc, parent)
	}
	seen := map[trace.TraceID]bool{}
	for range 100 {
		ctx, _ := continueTrace(context.Background())
		sc := trace.SpanContextFromContext(ctx)
		if !sc.IsValid() || sc.IsSampled() || seen[sc.TraceID()] {
			t.Fatalf("new trace %v (seen before: %v)", sc, seen[sc.TraceID()])
		}
		seen[sc.TraceID()] = true
	}
}
