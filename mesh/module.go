package mesh

import (
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Module provides the upstream connections and closes them on stop.
var Module = fx.Module("mesh",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("mesh") }),
	fx.Provide(func(lc fx.Lifecycle, cfg Config, log *zap.Logger) (*Upstreams, error) {
		u, err := NewUpstreams(cfg, log)
		if err != nil {
			return nil, err
		}
		lc.Append(fx.StopHook(u.Close))
		return u, nil
	}),
)
