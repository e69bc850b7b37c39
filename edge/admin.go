package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/portico-dev/portico/mesh"
)

// Admin is the operator listener, apart from the public one: /healthz
// (alive), /readyz (able to serve) and /metrics (Prometheus).
type Admin struct {
	addr  string
	srv   *http.Server
	ln    net.Listener
	log   *zap.Logger
	done  chan struct{}
	ready func() (bool, []mesh.Check)
	mux   *http.ServeMux
}

// NewRegistry returns the registry every component registers on, with the
// Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// RegisterMetrics adds the route-table gauges to reg (the mesh registers
// its own).
func RegisterMetrics(reg *prometheus.Registry, tables *Tables) {
	table := func(f func(*RouteTable) float64) func() float64 {
		return func() float64 {
			if t := tables.Load(); t != nil {
				return f(t)
			}
			return 0
		}
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portico_route_table_routes",
			Help: "Routes in the current route table.",
		}, table(func(t *RouteTable) float64 { return float64(len(t.routes)) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portico_route_table_rejected_services",
			Help: "Services left out of the current route table (invalid annotations, route conflicts); the log names each.",
		}, table(func(t *RouteTable) float64 { return float64(len(t.Rejected)) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portico_route_table_protojson_routes",
			Help: "Routes whose JSON goes through protojson over dynamic messages rather than the fast codec (transcode.codec: protojson, or message types the fast codec declines; the debug log says why).",
		}, table(func(t *RouteTable) float64 { return float64(t.protojson()) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portico_route_table_last_build_timestamp_seconds",
			Help: "When the current route table was built (Unix time).",
		}, table(func(t *RouteTable) float64 { return float64(t.Built.UnixNano()) / 1e9 })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "portico_route_table_builds_total",
			Help: "Route tables built and swapped in.",
		}, func() float64 { return float64(tables.builds.Load()) }),
	)
}

// NewAdmin prepares the admin listener on addr.
func NewAdmin(addr string, reg *prometheus.Registry, ready func() (bool, []mesh.Check), log *zap.Logger) *Admin {
	mux := http.NewServeMux()
	a := &Admin{addr: addr, log: log, ready: ready, mux: mux}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	a.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          zap.NewStdLog(log.Named("admin")),
	}
	return a
}

// Handle adds an operator endpoint; call it before Start.
func (a *Admin) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// ExplainTraffic answers GET /traffic?service=S&method=/pkg.Service/Method
// with where such a call would go now, and why (mesh.Explanation): the
// service-router rule, the split and the caller's bucket, the subset and
// its instances that serve the method. The caller is described by
// subject, api_key, header=Name:Value, scope and peer (repeatable where
// it makes sense); without them it is anonymous.
func ExplainTraffic(c *mesh.Catalog) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		fail := func(code int, msg string) {
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg})
		}
		service, method := q.Get("service"), q.Get("method")
		if service == "" {
			fail(http.StatusBadRequest, "service is required (one of: "+strings.Join(c.Services(), ", ")+"); method (/pkg.Service/Method) too")
			return
		}
		caller := &mesh.StaticCaller{Sub: q.Get("subject"), Key: q.Get("api_key"), Scopes: q["scope"], Headers: map[string]string{}}
		for _, h := range q["header"] {
			name, value, ok := strings.Cut(h, ":")
			if !ok {
				fail(http.StatusBadRequest, fmt.Sprintf("header %q: want Name:Value", h))
				return
			}
			caller.Headers[textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name))] = strings.TrimSpace(value)
		}
		if p := q.Get("peer"); p != "" {
			a, err := netip.ParseAddr(p)
			if err != nil {
				fail(http.StatusBadRequest, fmt.Sprintf("peer %q: want an IP address", p))
				return
			}
			caller.Addr = a
		}
		ex, err := c.Explain(service, method, caller)
		if err != nil {
			fail(http.StatusNotFound, err.Error())
			return
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(ex)
	})
}

// readyz answers 200 with status "ready" or "degraded" (still serving, e.g.
// from the last known Consul state), or 503 "unready", with every check.
func (a *Admin) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, checks := a.ready()
	status := "ready"
	for _, c := range checks {
		if c.Degraded {
			status = "degraded"
		}
	}
	code := http.StatusOK
	if !ok {
		status, code = "unready", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Status string       `json:"status"`
		Checks []mesh.Check `json:"checks"`
	}{status, checks})
}

// Start binds and serves.
func (a *Admin) Start(context.Context) error {
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		return fmt.Errorf("edge: admin listen %s: %w", a.addr, err)
	}
	a.ln = ln
	a.done = make(chan struct{})
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin server stopped", zap.Error(err))
		}
	}()
	a.log.Info("admin listening", zap.String("addr", ln.Addr().String()))
	return nil
}

// Addr is the bound address.
func (a *Admin) Addr() net.Addr { return a.ln.Addr() }

// Stop closes the admin listener.
func (a *Admin) Stop(ctx context.Context) error {
	if a.ln == nil {
		return nil
	}
	err := a.srv.Shutdown(ctx)
	<-a.done
	return err
}

// Readiness combines draining, the route table and the mesh checks.
func Readiness(tables *Tables, m *mesh.Mesh, d *Drain) func() (bool, []mesh.Check) {
	return func() (bool, []mesh.Check) {
		if d.Draining() {
			return false, []mesh.Check{{Name: "draining", Detail: "shutting down: finishing in-flight requests"}}
		}
		rt := mesh.Check{Name: "routes", OK: tables.Load() != nil}
		if t := tables.Load(); t != nil {
			rt.Detail = fmt.Sprintf("%d routes, %d services rejected, built %s", len(t.routes), len(t.Rejected), t.Built.UTC().Format(time.RFC3339))
		} else {
			rt.Detail = "no route table yet: no upstream has been reflected"
		}
		checks := append([]mesh.Check{rt}, m.Checks()...)
		ok := true
		for _, c := range checks {
			ok = ok && c.OK
		}
		return ok, checks
	}
}
