package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/transcode"
)

// Module provides the route tables, the builder, the handler, the public and
// admin servers, telemetry, and runs them: the first table is built before
// the listener opens; with Consul, Portico registers itself once both
// listen. Stopping follows Drain's order: fail readiness and leave Consul,
// keep serving for edge.drain_delay while connections move away, end
// streams, close the listener and drain in-flight requests.
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
		fx.Annotate(func(t *Telemetry) grpc.DialOption { return t.ClientHandler() }, fx.ResultTags(mesh.DialOptionsGroup)),
	),
	fx.Invoke(RegisterMetrics),
	fx.Invoke(func(lc fx.Lifecycle, b *Builder, s *Server, a *Admin, d *Drain, tel *Telemetry, m *mesh.Mesh, cfg Config, mc mesh.Config, log *zap.Logger) {
		lc.Append(fx.StartStopHook(func(ctx context.Context) error {
			b.Start(ctx)
			return nil
		}, b.Stop))
		lc.Append(fx.StopHook(tel.Shutdown))
		if a != nil {
			lc.Append(fx.StartStopHook(a.Start, a.Stop))
		}
		var r *mesh.Registrar
		lc.Append(fx.Hook{
			OnStart: func(ctx context.Context) error {
				if err := s.Start(ctx); err != nil {
					return err
				}
				if a == nil || m.Consul == nil || !mc.Consul.RegisterEnabled() {
					return nil
				}
				reg, err := selfRegistration(mc, s.Addr().String(), a.Addr().String())
				if err != nil {
					// This hook's stop will not run: close what started.
					return errors.Join(err, s.Stop(ctx))
				}
				r = mesh.StartRegistrar(m.Consul, reg, log)
				return nil
			},
			OnStop: func(ctx context.Context) error {
				start := time.Now()
				d.Begin()
				s.BeginDrain()
				log.Info("draining: readiness fails from now on", zap.Duration("drain_delay", cfg.DrainDelay), zap.Duration("shutdown_grace", cfg.ShutdownGrace))
				if r != nil {
					if err := r.Deregister(5 * time.Second); err != nil {
						log.Warn("leaving consul", zap.Error(err))
					}
				}
				if wait := cfg.DrainDelay - time.Since(start); wait > 0 {
					t := time.NewTimer(wait)
					select {
					case <-t.C:
					case <-ctx.Done():
						t.Stop()
					}
				}
				d.EndStreams()
				return s.Stop(ctx)
			},
		})
	}),
)

// selfRegistration describes this Portico instance to Consul: the public
// address, and an HTTP check on the admin listener's /readyz.
func selfRegistration(mc mesh.Config, public, admin string) (*api.AgentServiceRegistration, error) {
	rc := mc.Consul.Register
	addr := public
	if rc.Address != "" {
		addr = rc.Address
	}
	host, port, err := mesh.SplitAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("mesh.consul.register.address: %w", err)
	}
	ah, ap, err := net.SplitHostPort(admin)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(ah); ah == "" || (ip != nil && ip.IsUnspecified()) {
		// The agent reaches the admin listener where it reaches the public
		// one (a container's name), or on loopback.
		ah = "127.0.0.1"
		if rc.Address != "" {
			ah = host
		}
	}
	id := rc.ID
	if id == "" {
		id = mesh.InstanceID(rc.Name, net.JoinHostPort(host, fmt.Sprint(port)))
	}
	reg := &api.AgentServiceRegistration{
		ID: id, Name: rc.Name, Address: host, Port: port, Tags: rc.Tags,
		Check: &api.AgentServiceCheck{
			CheckID:                        id + ":readyz",
			Name:                           "Portico readiness",
			HTTP:                           "http://" + net.JoinHostPort(ah, ap) + "/readyz",
			Interval:                       rc.CheckInterval.String(),
			Timeout:                        rc.CheckTimeout.String(),
			DeregisterCriticalServiceAfter: rc.DeregisterCriticalAfter.String(),
		},
	}
	if mc.TLSMode() == mesh.TLSModeConsul {
		reg.Connect = &api.AgentServiceConnect{Native: true}
	}
	return reg, nil
}

func newCalls(cfg Config, tc transcode.Config, tel *Telemetry, d *Drain) *Calls {
	return NewCalls(tel, d, CallLimits{Timeout: cfg.UpstreamTimeout, MaxStreamDuration: cfg.MaxStreamDuration, StreamIdle: tc.StreamIdleTimeout})
}

func newBuilder(m *mesh.Mesh, c *transcode.Compiler, pc *policies.Compiler, calls *Calls, t *Tables, mc mesh.Config, log *zap.Logger) *Builder {
	return NewBuilder(m.Sources(), c, pc, calls, t, mc.RefreshInterval, log)
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

// newAdmin returns nil when edge.admin_listen is empty.
func newAdmin(cfg Config, reg *prometheus.Registry, t *Tables, m *mesh.Mesh, d *Drain, log *zap.Logger) *Admin {
	if cfg.AdminListen == "" {
		return nil
	}
	return NewAdmin(cfg.AdminListen, reg, Readiness(t, m, d), log)
}
