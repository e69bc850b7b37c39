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

// Module provides the mesh (static upstreams, and with Consul the catalog and
// Portico's identity), starts its watches, registers its metrics on the
// process registry and closes everything on stop. Portico's own registration
// in Consul is the edge's to time: Mesh.Register and Mesh.Leave.
var Module = fx.Module("mesh",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("mesh") }),
	fx.Provide(newMesh),
	fx.Invoke(registerMetrics),
)

type meshIn struct {
	fx.In
	Lifecycle   fx.Lifecycle
	Config      Config
	Log         *zap.Logger
	DialOptions []grpc.DialOption `group:"mesh.dial_options"`
}

// newMesh builds the mesh; its Start and Close are the lifecycle's.
func newMesh(in meshIn) (*Mesh, error) {
	m, err := New(in.Config, in.Log, in.DialOptions...)
	if err != nil {
		return nil, err
	}
	in.Lifecycle.Append(fx.StartStopHook(m.Start, m.Close))
	return m, nil
}

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
