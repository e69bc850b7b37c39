package edge

import (
	"context"

	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/transcode"
)

// Module provides the route tables, the builder, the handler and the server,
// and runs them: the first table is built before the listener opens.
var Module = fx.Module("edge",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("edge") }),
	fx.Provide(
		NewTables,
		newBuilder,
		newHandler,
		newServer,
	),
	fx.Invoke(func(lc fx.Lifecycle, b *Builder, s *Server) {
		lc.Append(fx.StartStopHook(func(ctx context.Context) error {
			b.Start(ctx)
			return nil
		}, b.Stop))
		lc.Append(fx.StartStopHook(s.Start, s.Stop))
	}),
)

func newBuilder(ups *mesh.Upstreams, c *transcode.Compiler, t *Tables, mc mesh.Config, log *zap.Logger) *Builder {
	return NewBuilder(ups, c, t, mc.RefreshInterval, log)
}

func newHandler(cfg Config, tc transcode.Config, t *Tables, log *zap.Logger) *Handler {
	return NewHandler(cfg, tc, t, log)
}

func newServer(cfg Config, h *Handler, log *zap.Logger) *Server { return NewServer(cfg, h, log) }
