package edge

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/transcode"
)

// Module provides the route tables, the builder, the handler, the public and
// admin servers, and runs them: the first table is built before the listener
// opens; with Consul, Portico registers itself once both listen and
// deregisters first on stop.
var Module = fx.Module("edge",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("edge") }),
	fx.Provide(
		NewTables,
		newBuilder,
		newHandler,
		newServer,
		NewMetrics,
		newAdmin,
	),
	fx.Invoke(func(lc fx.Lifecycle, b *Builder, s *Server, a *Admin, m *mesh.Mesh, cfg Config, mc mesh.Config, log *zap.Logger) {
		lc.Append(fx.StartStopHook(func(ctx context.Context) error {
			b.Start(ctx)
			return nil
		}, b.Stop))
		lc.Append(fx.StartStopHook(s.Start, s.Stop))
		if a == nil {
			return
		}
		lc.Append(fx.StartStopHook(a.Start, a.Stop))
		if m.Consul == nil || !mc.Consul.RegisterEnabled() {
			return
		}
		var r *mesh.Registrar
		lc.Append(fx.Hook{
			OnStart: func(context.Context) error {
				reg, err := selfRegistration(mc, s.Addr().String(), a.Addr().String())
				if err != nil {
					return err
				}
				r = mesh.StartRegistrar(m.Consul, reg, log)
				return nil
			},
			OnStop: func(context.Context) error {
				if err := r.Deregister(5 * time.Second); err != nil {
					log.Warn("leaving consul", zap.Error(err))
				}
				return nil
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
	if ip := net.ParseIP(ah); ip != nil && ip.IsUnspecified() {
		ah = "127.0.0.1"
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

func newBuilder(m *mesh.Mesh, c *transcode.Compiler, pc *policies.Compiler, t *Tables, mc mesh.Config, log *zap.Logger) *Builder {
	return NewBuilder(m.Sources(), c, pc, t, mc.RefreshInterval, log)
}

func newHandler(cfg Config, tc transcode.Config, t *Tables, log *zap.Logger) *Handler {
	return NewHandler(cfg, tc, t, log)
}

func newServer(cfg Config, h *Handler, log *zap.Logger) *Server { return NewServer(cfg, h, log) }

// newAdmin returns nil when edge.admin_listen is empty.
func newAdmin(cfg Config, reg *prometheus.Registry, t *Tables, m *mesh.Mesh, log *zap.Logger) *Admin {
	if cfg.AdminListen == "" {
		return nil
	}
	return NewAdmin(cfg.AdminListen, reg, Readiness(t, m), log)
}
