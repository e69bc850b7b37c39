package mesh

import (
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Module provides the mesh (static upstreams, and with Consul the catalog and
// Portico's identity), starts its watches and closes everything on stop.
var Module = fx.Module("mesh",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("mesh") }),
	fx.Provide(func(lc fx.Lifecycle, cfg Config, log *zap.Logger) (*Mesh, error) {
		m, err := New(cfg, log)
		if err != nil {
			return nil, err
		}
		lc.Append(fx.StartStopHook(m.Start, m.Close))
		return m, nil
	}),
)
