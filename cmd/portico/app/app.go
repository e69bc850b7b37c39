package app

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"
	"go.uber.org/zap"

	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/transcode"
)

// Options composes the modules for cfg; tests use it with fxtest.
func Options(cfg Config, log *zap.Logger) fx.Option {
	return fx.Options(
		fx.Supply(cfg.Edge, cfg.Mesh, cfg.Transcode, cfg.Policies, log),
		// A stop drains for edge.drain_delay, then for at most
		// edge.shutdown_grace; the rest (Consul, stores) is quick.
		fx.StopTimeout(cfg.Edge.DrainDelay+cfg.Edge.ShutdownGrace+15*time.Second),
		fx.WithLogger(func() fxevent.Logger {
			l := &fxevent.ZapLogger{Logger: log.Named("fx")}
			l.UseLogLevel(-1) // fx's own events at debug
			return l
		}),
		mesh.Module,
		transcode.Module,
		policies.Module,
		edge.Module,
		fx.Provide(consulKV),
	)
}

// consulKV hands the policies' Consul API key sources the mesh's Consul
// client, when there is one.
func consulKV(m *mesh.Mesh) policies.ConsulKV {
	if m.Consul == nil {
		return nil
	}
	return m.Consul.KV()
}

// PrintRoutes writes one route per line: HTTP method, template, gRPC
// method, body and response_body ("-" when unset).
func PrintRoutes(w io.Writer, t *edge.RouteTable) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "METHOD\tTEMPLATE\tGRPC METHOD\tBODY\tRESPONSE BODY")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, r := range t.Routes() {
		b := r.Binding
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.HTTPMethod, b.Template.Raw, strings.TrimPrefix(r.FullMethod, "/"), dash(b.Body), dash(b.ResponseBody))
	}
	_ = tw.Flush()
}
