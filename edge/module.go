package edge

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/transcode"
)

// Module provides the route tables, the builder, the handler, the public and
// admin servers, telemetry, and runs them in the order run writes down.
var Module = fx.Module("edge",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("edge") }),
	fx.Provide(
		NewTables,
		NewDrain,
		newBuilder,
		newCalls,
		newTelemetry,
		NewHandler,
		newServer,
		NewRegistry,
		newAdmin,
		fx.Annotate((*Telemetry).ClientHandler, fx.ResultTags(mesh.DialOptionsGroup)),
	),
	fx.Invoke(RegisterMetrics),
	fx.Invoke(run),
)

type runIn struct {
	fx.In
	Lifecycle fx.Lifecycle
	Telemetry *Telemetry
	Builder   *Builder
	Admin     *Admin // nil without edge.admin_listen
	Server    *Server
	Drain     *Drain
	Mesh      *mesh.Mesh
	Config    Config
	Log       *zap.Logger
}

// run appends the edge's hooks in the order they start; fx stops them in
// reverse. The mesh (a dependency of all of them) has started before.
//
//  1. telemetry: spans are exported from the first reflection on, and the
//     last ones are flushed after everything else stopped;
//  2. the builder: the first route table is built before anything listens;
//  3. the admin listener;
//  4. the public listener, after which Portico registers itself in Consul;
//     its stop drains (serving.stop).
func run(in runIn) {
	in.Lifecycle.Append(fx.StartStopHook(in.Telemetry.Start, in.Telemetry.Shutdown))
	in.Lifecycle.Append(fx.StartStopHook(in.Builder.Start, in.Builder.Stop))
	if in.Admin != nil {
		in.Lifecycle.Append(fx.StartStopHook(in.Admin.Start, in.Admin.Stop))
	}
	s := &serving{server: in.Server, admin: in.Admin, drain: in.Drain, mesh: in.Mesh,
		drainDelay: in.Config.DrainDelay, shutdownGrace: in.Config.ShutdownGrace, log: in.Log}
	in.Lifecycle.Append(fx.StartStopHook(s.start, s.stop))
}

// serving is the public listener with what happens around it: Portico
// registers in Consul once both listeners listen, and a stop follows
// Drain's order.
type serving struct {
	server        *Server
	admin         *Admin // nil: no registration (Consul's check needs /readyz)
	drain         *Drain
	mesh          *mesh.Mesh
	drainDelay    time.Duration
	shutdownGrace time.Duration
	log           *zap.Logger
}

// start opens the public listener, then registers Portico in Consul (when
// Consul and mesh.consul.register say so, and the admin listener serves the
// check).
func (s *serving) start(ctx context.Context) error {
	if err := s.server.Start(ctx); err != nil {
		return err
	}
	if s.admin == nil {
		return nil
	}
	if err := s.mesh.Register(s.server.Addr().String(), s.admin.Addr().String()); err != nil {
		// This hook's stop will not run: close what started.
		return errors.Join(err, s.server.Stop(ctx))
	}
	return nil
}

// stop drains in Drain's order: readiness fails and Portico leaves Consul,
// it keeps serving for edge.drain_delay while connections move away, then
// streams end, the listener closes and in-flight requests drain.
func (s *serving) stop(ctx context.Context) error {
	start := time.Now()
	s.drain.Begin()
	s.server.BeginDrain()
	s.log.Info("draining: readiness fails from now on", zap.Duration("drain_delay", s.drainDelay), zap.Duration("shutdown_grace", s.shutdownGrace))
	s.mesh.Leave()
	if wait := s.drainDelay - time.Since(start); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	s.drain.EndStreams()
	return s.server.Stop(ctx)
}

func newCalls(cfg Config, tc transcode.Config, tel *Telemetry, d *Drain) *Calls {
	return NewCalls(tel, d, CallLimits{Timeout: cfg.UpstreamTimeout, MaxStreamDuration: cfg.MaxStreamDuration, StreamIdle: tc.StreamIdleTimeout})
}

type builderIn struct {
	fx.In
	Cfg       Config
	Mesh      *mesh.Mesh
	Transcode *transcode.Compiler
	Policies  *policies.Compiler
	Calls     *Calls
	Tables    *Tables
	Log       *zap.Logger
}

func newBuilder(in builderIn) *Builder {
	return NewBuilder(BuilderParams{Sources: in.Mesh.Sources(), Compiler: in.Transcode, Policies: in.Policies, Calls: in.Calls,
		Tables: in.Tables, Interval: in.Mesh.RefreshInterval(), Compose: in.Cfg.Compose,
		Frontends: in.Cfg.Frontends, DefaultFrontend: in.Cfg.DefaultFrontend, Log: in.Log})
}

// AccessLogger is where the access log goes when the process supplies
// one (`portico serve`: JSON lines on stdout at info, whatever log.level);
// otherwise it goes to the process log, as "access", when that logs info.
type AccessLogger struct{ *zap.Logger }

type telemetryIn struct {
	fx.In
	Cfg    Config
	Reg    *prometheus.Registry
	Log    *zap.Logger
	Access *AccessLogger `optional:"true"`
}

func newTelemetry(in telemetryIn) (*Telemetry, error) {
	access := in.Log.Named("access")
	if in.Access != nil {
		access = in.Access.Logger
	}
	return NewTelemetry(in.Cfg, in.Reg, access)
}

func newServer(cfg Config, h *Handler, reg *prometheus.Registry, log *zap.Logger) *Server {
	s := NewServer(cfg, h, log)
	if cfg.TLS.CertFile != "" {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portico_tls_certificate_expiry_timestamp_seconds",
			Help: "When the public listener's certificate expires (Unix time); 0 before it is loaded.",
		}, func() float64 {
			if c := s.Certs(); c != nil {
				if l := c.Leaf(); l != nil {
					return float64(l.NotAfter.Unix())
				}
			}
			return 0
		}))
	}
	return s
}

type adminIn struct {
	fx.In
	Config   Config
	Registry *prometheus.Registry
	Tables   *Tables
	Mesh     *mesh.Mesh
	Drain    *Drain
	Log      *zap.Logger
}

// newAdmin returns nil when edge.admin_listen is empty.
func newAdmin(in adminIn) *Admin {
	if in.Config.AdminListen == "" {
		return nil
	}
	a := NewAdmin(in.Config.AdminListen, in.Registry, Readiness(in.Tables, in.Mesh, in.Drain), in.Log)
	if in.Mesh != nil && in.Mesh.Catalog != nil {
		a.Handle("GET /traffic", ExplainTraffic(in.Mesh.Catalog))
	}
	return a
}
