package policies

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Module provides the policy Compiler; its providers start fetching keys
// when the app starts and stop with it. A ConsulKV, when the app provides
// one, serves API key sources kept in Consul.
var Module = fx.Module("policies",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("policies") }),
	fx.Provide(newCompiler),
)

type compilerIn struct {
	fx.In
	Lifecycle fx.Lifecycle
	Config    Config
	KV        ConsulKV `optional:"true"`
	Registry  *prometheus.Registry
	Log       *zap.Logger
}

func newCompiler(in compilerIn) *Compiler {
	c := NewCompiler(in.Config, in.KV, NewMetrics(in.Registry), in.Log)
	in.Lifecycle.Append(fx.StartStopHook(c.Start, c.Stop))
	return c
}
