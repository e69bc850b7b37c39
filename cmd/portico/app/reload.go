package app

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"
	"time"

	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/policies"
)

// Reloader applies the config file again without dropping a connection:
// the frontend protos of edge.compose.protos_dir (read whatever the file
// says), the public listener's TLS files and the policies section (credential
// providers, CORS defaults, retries, the global limit). The file is read
// and validated whole first; an unreadable or invalid file changes nothing
// and is logged with the reason. Other changed sections are logged as
// needing a restart.
type Reloader struct {
	path string
	b    *edge.Builder
	pc   *policies.Compiler
	srv  *edge.Server
	log  *zap.Logger

	mu   sync.Mutex
	last Config // the file as last applied (flags not included)
}

// WithReload reloads path on SIGHUP; fileCfg is what the running config
// was loaded from (before flags). An empty path only logs.
func WithReload(path string, fileCfg Config) fx.Option {
	return fx.Options(
		fx.Provide(func(b *edge.Builder, pc *policies.Compiler, srv *edge.Server, log *zap.Logger) *Reloader {
			return &Reloader{path: path, b: b, pc: pc, srv: srv, log: log.Named("reload"), last: fileCfg}
		}),
		fx.Invoke(func(lc fx.Lifecycle, r *Reloader) {
			sig := make(chan os.Signal, 1)
			// Stopping cancels a reload in progress (a JWKS that does not
			// answer must not eat into the drain).
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			lc.Append(fx.Hook{
				OnStart: func(context.Context) error {
					signal.Notify(sig, syscall.SIGHUP)
					go func() {
						defer close(done)
						for {
							select {
							case <-ctx.Done():
								return
							case <-sig:
								rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
								_ = r.Reload(rctx)
								rcancel()
							}
						}
					}()
					return nil
				},
				OnStop: func(context.Context) error {
					signal.Stop(sig)
					cancel()
					<-done
					return nil
				},
			})
		}),
	)
}

// Reload reads the frontend protos and the file again and applies what
// can change at run time.
func (r *Reloader) Reload(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b.ReloadFrontends(ctx) {
		r.log.Info("frontend protos reloaded")
	}
	if r.path == "" {
		r.log.Warn("SIGHUP: nothing to reload, portico serve was started without --config")
		return nil
	}
	cfg := DefaultConfig()
	err := LoadConfigFile(r.path, &cfg)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		r.log.Error("config reload rejected; the running config stays", zap.String("file", r.path), zap.Error(err))
		return err
	}
	var restart []string
	if !reflect.DeepEqual(cfg.Mesh, r.last.Mesh) {
		restart = append(restart, "mesh")
	}
	if !reflect.DeepEqual(cfg.Transcode, r.last.Transcode) {
		restart = append(restart, "transcode")
	}
	if !reflect.DeepEqual(cfg.Log, r.last.Log) {
		restart = append(restart, "log")
	}
	e, le := cfg.Edge, r.last.Edge
	e.TLS, le.TLS = edge.TLSConfig{}, edge.TLSConfig{}
	if !reflect.DeepEqual(e, le) {
		restart = append(restart, "edge (except edge.tls)")
	}
	applyTLS := false
	if (cfg.Edge.TLS.CertFile == "") != (r.last.Edge.TLS.CertFile == "") || cfg.Edge.TLS.ReloadInterval != r.last.Edge.TLS.ReloadInterval {
		restart = append(restart, "edge.tls (turning TLS on or off, reload_interval)")
	} else if r.srv.Certs() != nil {
		applyTLS = true
		// Checked before anything applies, so a broken file set changes
		// nothing at all.
		if err := edge.CheckTLSFiles(cfg.Edge.TLS); err != nil {
			r.log.Error("config reload rejected: edge.tls; the running config stays", zap.String("file", r.path), zap.Error(err))
			return err
		}
	}
	var ignored []string
	if !reflect.DeepEqual(cfg.Policies, r.last.Policies) {
		err = r.b.Reconfigure(ctx, func() (func(), func(), error) {
			commit, rollback, ign, err := r.pc.Reconfigure(ctx, cfg.Policies)
			ignored = ign
			return commit, rollback, err
		})
		if err != nil {
			r.log.Error("config reload rejected: policies; the running config stays", zap.String("file", r.path), zap.Error(err))
			return fmt.Errorf("policies: %w", err)
		}
	}
	if applyTLS {
		if err := r.srv.Certs().SetFiles(cfg.Edge.TLS); err != nil {
			r.log.Error("TLS files changed between check and use; serving the previous certificate", zap.Error(err))
		}
	}
	restart = append(restart, ignored...)
	r.last = cfg
	fields := []zap.Field{zap.String("file", r.path)}
	if len(restart) > 0 {
		fields = append(fields, zap.Strings("need_restart", restart))
	}
	r.log.Info("config reloaded", fields...)
	return nil
}
