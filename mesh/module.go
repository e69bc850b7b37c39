package mesh

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// DialOptionsGroup is the fx value group whose grpc.DialOptions are added to
// every upstream connection (the edge contributes its tracing handler).
const DialOptionsGroup = `group:"mesh.dial_options"`

type dialOptions struct {
	fx.In
	Options []grpc.DialOption `group:"mesh.dial_options"`
}

// Module provides the mesh (static upstreams, and with Consul the catalog and
// Portico's identity), starts its watches and closes everything on stop.
var Module = fx.Module("mesh",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("mesh") }),
	fx.Provide(func(lc fx.Lifecycle, cfg Config, log *zap.Logger, in dialOptions) (*Mesh, error) {
		m, err := New(cfg, log, in.Options...)
		if err != nil {
			return nil, err
		}
		lc.Append(fx.StartStopHook(m.Start, m.Close))
		return m, nil
	}),
	fx.Invoke(registerMetrics),
)

type metricsIn struct {
	fx.In
	Mesh *Mesh
	// The edge's registry, when there is one.
	Reg *prometheus.Registry `optional:"true"`
}

// registerMetrics adds the mesh's metrics (Mesh.Collectors) to the process
// registry.
func registerMetrics(in metricsIn) {
	if in.Reg != nil {
		in.Reg.MustRegister(in.Mesh.Collectors()...)
	}
}
