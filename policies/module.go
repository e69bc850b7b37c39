package policies

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/portico-dev/portico/mesh"
)

// Module provides the policy Compiler; its providers start fetching keys
// when the app starts and stop with it.
var Module = fx.Module("policies",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("policies") }),
	fx.Provide(newCompiler),
)

func newCompiler(lc fx.Lifecycle, cfg Config, m *mesh.Mesh, reg *prometheus.Registry, log *zap.Logger) *Compiler {
	var kv ConsulKV
	if m.Consul != nil {
		kv = m.Consul.KV()
	}
	c := NewCompiler(cfg, kv, NewMetrics(reg), log)
	lc.Append(fx.StartStopHook(c.Start, c.Stop))
	return c
}
