package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
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

// Start loads the TLS files (a broken pair fails here), binds the listener
// and serves in a goroutine owned by the server.
func (s *Server) Start(context.Context) error {
	var certs *CertReloader
	if s.cfg.TLS.CertFile != "" {
		var err error
		if certs, err = NewCertReloader(s.cfg.TLS, s.log.Named("tls")); err != nil {
			return fmt.Errorf("edge.tls: %w", err)
		}
		certs.Start()
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		certs.Close()
		return fmt.Errorf("edge: listen %s: %w", s.cfg.Listen, err)
	}
	var tlsConf *tls.Config
	if certs != nil {
		s.certs.Store(certs)
		tlsConf = &tls.Config{GetConfigForClient: certs.configFor}
	}
	ln = newGuardListener(ln, tlsConf, s.cfg.ReadHeaderTimeout, s.cfg.MaxHeaderBytes, s.log.Named("guard"))
	s.ln = ln
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("server stopped", zap.Error(err))
		}
	}()
	s.log.Info("listening", zap.String("addr", ln.Addr().String()), zap.Bool("tls", certs != nil),
		zap.Bool("client_certificates", s.cfg.TLS.ClientCAFile != ""))
	return nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

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
