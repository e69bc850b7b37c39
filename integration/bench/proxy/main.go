// Command proxy is the benchmark's plain HTTP hop: net/http/httputil's
// ReverseProxy in front of one HTTP origin, translating nothing. The
// benchmark driver runs it beside Portico and grpc-gateway, its origin
// answering what Portico answers, as the floor of what an HTTP hop costs.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8082", "HTTP listen address")
	target := flag.String("target", "http://127.0.0.1:9002", "origin URL")
	flag.Parse()
	if err := run(*listen, *target); err != nil {
		slog.Error("proxy", "err", err)
		os.Exit(1)
	}
}

func run(listen, target string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	u, err := url.Parse(target)
	if err != nil {
		return err
	}
	// The default transport keeps 2 idle connections per host: with more
	// concurrent clients than that it would dial the origin over and over,
	// which is not what a proxy in front of one origin does.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 256
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.SetXForwarded()
		},
		Transport: tr,
	}
	srv := &http.Server{Addr: listen, Handler: rp, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
