// Package harness starts real components for Portico's end-to-end tests:
// example gRPC services on loopback listeners and Portico itself, composed
// exactly as `portico serve` composes it. Everything started is stopped by
// the test's Cleanup.
package harness

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"

	"github.com/portico-dev/portico/cmd/examples/services"
	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/mesh"
)

// Backend is a running gRPC server on a loopback port.
type Backend struct {
	Addr   string
	Server *grpc.Server
}

// Services starts a gRPC server on 127.0.0.1:0 with the named example
// services (plus health and reflection). register, if set, adds more
// services (or replaces nothing: names may be empty).
func Services(tb testing.TB, names []string, register func(*grpc.Server), opts ...grpc.ServerOption) *Backend {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	if err := services.Register(s, names...); err != nil {
		tb.Fatal(err)
	}
	if register != nil {
		register(s)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Serve(lis); err != nil {
			tb.Logf("backend %s: %v", lis.Addr(), err)
		}
	}()
	b := &Backend{Addr: lis.Addr().String(), Server: s}
	tb.Cleanup(func() {
		s.Stop()
		<-done
	})
	return b
}

// Edge is a running Portico.
type Edge struct {
	URL      string
	AdminURL string
	Server   *edge.Server
	Tables   *edge.Tables
	Handler  *edge.Handler
	Mesh     *mesh.Mesh
	App      *fx.App
}

// Portico starts Portico on 127.0.0.1:0 with plaintext upstreams; mutate may
// change the configuration first. It returns once the first route table is
// built (or the first reflection failed).
//
// Tests stop Portico without edge.drain_delay unless mutate sets one.
func Portico(tb testing.TB, mutate func(*app.Config), upstreams ...string) *Edge {
	tb.Helper()
	return start(tb, mutate, zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel)), upstreams)
}

// PorticoLogged is Portico that also records every log entry at info and
// above (the access log among them) for the test to inspect.
func PorticoLogged(tb testing.TB, mutate func(*app.Config), upstreams ...string) (*Edge, *observer.ObservedLogs) {
	tb.Helper()
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel)).Core(), core))
	return start(tb, mutate, log, upstreams), logs
}

func start(tb testing.TB, mutate func(*app.Config), log *zap.Logger, upstreams []string) *Edge {
	tb.Helper()
	cfg := app.DefaultConfig()
	cfg.Edge.Listen = "127.0.0.1:0"
	cfg.Edge.AdminListen = "127.0.0.1:0"
	cfg.Edge.DrainDelay = 0
	for _, u := range upstreams {
		cfg.Mesh.Upstreams = append(cfg.Mesh.Upstreams, app.PlaintextUpstream(u))
	}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	var (
		srv     *edge.Server
		tables  *edge.Tables
		handler *edge.Handler
		admin   *edge.Admin
		m       *mesh.Mesh
	)
	a := fx.New(app.Options(cfg, log), fx.Populate(&srv, &tables, &handler, &admin, &m))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			tb.Errorf("stopping portico: %v", err)
		}
	})
	e := &Edge{URL: "http://" + srv.Addr().String(), Server: srv, Tables: tables, Handler: handler, Mesh: m, App: a}
	if admin != nil {
		e.AdminURL = "http://" + admin.Addr().String()
	}
	return e
}

// Client returns an HTTP client with a per-request timeout whose idle
// connections are closed by the test's Cleanup.
func Client(tb testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
