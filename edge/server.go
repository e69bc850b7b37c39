package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Server is the public HTTP listener: HTTP/1.1 and HTTP/2 (ALPN over TLS,
// prior knowledge in cleartext). Its listener terminates TLS itself and
// guards every connection (see newGuardListener): the handler learns from
// requestFlaw which HTTP/1.1 requests to refuse, and an HTTP/2 header block
// left incomplete is cut after edge.read_header_timeout.
type Server struct {
	cfg  Config
	srv  *http.Server
	log  *zap.Logger
	ln   net.Listener
	done chan struct{}
	// certs serve the listener's TLS configuration (nil without TLS),
	// set by Start; the admin listener's metrics read it meanwhile.
	certs atomic.Pointer[CertReloader]
	// frontendAddrs are the frontends' own listeners, by frontend.
	frontendAddrs map[string]net.Addr
}

// Certs is the listener's TLS configuration, nil without TLS or before
// Start; SetFiles swaps the files it serves.
func (s *Server) Certs() *CertReloader { return s.certs.Load() }

// NewServer prepares the server; Start binds and serves.
func NewServer(cfg Config, h http.Handler, log *zap.Logger) *Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	// HTTP/2 reaches net/http as the prior-knowledge preface in both modes:
	// with TLS the guard listener terminates it, after ALPN chose h2.
	p.SetUnencryptedHTTP2(true)
	return &Server{cfg: cfg, log: log, srv: &http.Server{
		Handler:           h,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		Protocols:         p,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          cfg.HTTP2.MaxConcurrentStreams,
			MaxReadFrameSize:              cfg.HTTP2.MaxReadFrameSize,
			MaxReceiveBufferPerStream:     cfg.HTTP2.MaxReceiveBufferPerStream,
			MaxReceiveBufferPerConnection: cfg.HTTP2.MaxReceiveBufferPerConnection,
			// A connection whose peer stops taking bytes is closed after
			// one write timeout, whatever stream it was writing.
			WriteByteTimeout: cfg.WriteTimeout,
		},
		ConnContext: guardContext,
		ErrorLog:    zap.NewStdLog(log.Named("http")),
	}}
}

// Start loads the TLS files (a broken pair fails here), binds the public
// listener and each frontend's own (edge.frontends[].listen), and serves
// them in goroutines owned by the server.
func (s *Server) Start(context.Context) error {
	var certs *CertReloader
	if s.cfg.TLS.CertFile != "" {
		var err error
		if certs, err = NewCertReloader(s.cfg.TLS, s.log.Named("tls")); err != nil {
			return fmt.Errorf("edge.tls: %w", err)
		}
		certs.Start()
	}
	var tlsConf *tls.Config
	if certs != nil {
		tlsConf = &tls.Config{GetConfigForClient: certs.configFor}
	}
	guard := func(addr, frontend string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		g := newGuardListener(ln, tlsConf, s.cfg.ReadHeaderTimeout, s.cfg.MaxHeaderBytes, s.log.Named("guard")).(*guardListener)
		g.frontend = frontend
		return g, nil
	}
	var lns []net.Listener
	fail := func(err error) error {
		for _, ln := range lns {
			_ = ln.Close()
		}
		certs.Close()
		return err
	}
	ln, err := guard(s.cfg.Listen, "")
	if err != nil {
		return fail(fmt.Errorf("edge: listen %s: %w", s.cfg.Listen, err))
	}
	lns = append(lns, ln)
	s.frontendAddrs = map[string]net.Addr{}
	for i, f := range s.cfg.Frontends {
		if f.Listen == "" {
			continue
		}
		fl, err := guard(f.Listen, f.Name)
		if err != nil {
			return fail(fmt.Errorf("edge.frontends[%d].listen %s: %w", i, f.Listen, err))
		}
		lns = append(lns, fl)
		s.frontendAddrs[f.Name] = fl.Addr()
	}
	if certs != nil {
		s.certs.Store(certs)
	}
	s.ln = ln
	s.done = make(chan struct{})
	var serving sync.WaitGroup
	for _, l := range lns {
		serving.Go(func() {
			if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("server stopped", zap.String("addr", l.Addr().String()), zap.Error(err))
			}
		})
	}
	go func() {
		serving.Wait()
		close(s.done)
	}()
	for _, l := range lns {
		fields := []zap.Field{zap.String("addr", l.Addr().String()), zap.Bool("tls", certs != nil),
			zap.Bool("client_certificates", s.cfg.TLS.ClientCAFile != "")}
		if name := l.(*guardListener).frontend; name != "" {
			fields = append(fields, zap.String("frontend", name))
		}
		s.log.Info("listening", fields...)
	}
	return nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// FrontendAddr is the bound address of the frontend's own listener; nil:
// it has none.
func (s *Server) FrontendAddr(frontend string) net.Addr { return s.frontendAddrs[frontend] }

// BeginDrain answers each request from now on with "Connection: close" and
// closes idle keep-alive connections, so clients reconnect (elsewhere,
// once readiness fails) while in-flight requests go on.
func (s *Server) BeginDrain() { s.srv.SetKeepAlivesEnabled(false) }

// Stop stops accepting and waits for in-flight requests for at most
// edge.shutdown_grace (or until ctx ends), then closes what is left.
func (s *Server) Stop(ctx context.Context) error {
	defer s.Certs().Close()
	if s.ln == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownGrace)
	defer cancel()
	start := time.Now()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.log.Warn("grace period over: closing the requests still running", zap.Duration("grace", s.cfg.ShutdownGrace))
		err = errors.Join(err, s.srv.Close())
	}
	<-s.done
	s.log.Info("listener closed", zap.Duration("drained_in", time.Since(start)))
	return err
}
