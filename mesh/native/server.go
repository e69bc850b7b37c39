// Package native makes a Go gRPC server a mesh-native Consul service without a
// sidecar: it serves with the service's Consul Connect leaf certificate
// (rotated in place), requires and verifies client certificates, authorizes
// every call against Consul intentions for the caller's identity, serves
// grpc.health.v1 on a separate plaintext port that Consul's gRPC check can
// reach, registers the instance with the tag Portico exposes (and the hash of
// the descriptors it serves, so Portico re-reflects it after a redeploy), and
// deregisters before it drains on shutdown.
//
//	srv, err := native.New(native.Config{Service: "orders", Listen: ":9002", Consul: consulCfg}, log)
//	if err != nil { ... }
//	ordersv1.RegisterOrderServiceServer(srv.GRPC, impl)
//	err = srv.Run(ctx) // until ctx ends
package native

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/portico-dev/portico/mesh"
)

// Config describes one mesh-native service instance.
type Config struct {
	// Service is the Consul service name, and the identity the instance
	// proves (spiffe://<trust-domain>/ns/default/dc/<dc>/svc/<Service>).
	Service string
	// ID is the instance id in Consul; default <Service>-<host:port>.
	ID string
	// Listen is the mTLS gRPC address, host:port (port 0 picks one).
	Listen string
	// HealthListen is the plaintext address serving only grpc.health.v1
	// for Consul's check; default the Listen host with port 0.
	HealthListen string
	// Advertise is the address registered in Consul; default the bound
	// Listen address.
	Advertise string
	// Tags registered with the instance; default ["portico"], the tag that
	// makes Portico expose the service.
	Tags []string
	// Meta registered with the instance (the descriptor hash is added).
	Meta map[string]string
	// Consul is the agent client configuration (required).
	Consul *api.Config
	// Identity overrides the Consul Connect identity (tests, files).
	Identity mesh.IdentitySource
	// CheckInterval of Consul's gRPC health check; default 1s.
	CheckInterval time.Duration
	// DeregisterCriticalAfter removes an instance left critical this long;
	// default 1m.
	DeregisterCriticalAfter time.Duration
	// AuthzTTL is how long an intention decision is cached; default 1s.
	AuthzTTL time.Duration
	// AuthzMaxStale is how long a decision is used while the agent does not
	// answer; default 1m.
	AuthzMaxStale time.Duration
	// DeregisterDelay is how long Run waits after deregistering before it
	// stops accepting calls, so that callers see the change; default 1s.
	DeregisterDelay time.Duration
	// Grace bounds the drain of in-flight calls on shutdown; default 10s.
	Grace time.Duration
}

// Server is a mesh-native gRPC server: register services on GRPC, then Run.
type Server struct {
	// GRPC serves mTLS; register your services on it before Run.
	GRPC *grpc.Server
	// Health is the health status served on both listeners; Run sets the
	// overall status to SERVING when it starts and NOT_SERVING when it stops.
	Health *health.Server

	cfg      Config
	log      *zap.Logger
	client   *api.Client
	identity mesh.IdentitySource
	ownID    *mesh.ConsulIdentity // the identity New made (nil with Config.Identity); Run starts and stops it
	authz    *Authorizer
	hsrv     *grpc.Server

	listening chan struct{}
	addr      string
}

// New prepares a server; opts are added to the gRPC server's options.
func New(cfg Config, log *zap.Logger, opts ...grpc.ServerOption) (*Server, error) {
	if cfg.Service == "" {
		return nil, errors.New("native: Config.Service is required")
	}
	if cfg.Consul == nil {
		return nil, errors.New("native: Config.Consul is required")
	}
	if cfg.Tags == nil {
		cfg.Tags = []string{"portico"}
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = time.Second
	}
	if cfg.DeregisterCriticalAfter <= 0 {
		cfg.DeregisterCriticalAfter = time.Minute
	}
	if cfg.AuthzTTL <= 0 {
		cfg.AuthzTTL = time.Second
	}
	if cfg.AuthzMaxStale <= 0 {
		cfg.AuthzMaxStale = time.Minute
	}
	if cfg.DeregisterDelay <= 0 {
		cfg.DeregisterDelay = time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.String("service", cfg.Service))
	client, err := api.NewClient(cfg.Consul)
	if err != nil {
		return nil, fmt.Errorf("native: consul client: %w", err)
	}
	// Authorization calls have no context in the API; bound them here.
	acfg := *cfg.Consul
	acfg.HttpClient = &http.Client{Timeout: 5 * time.Second}
	aclient, err := api.NewClient(&acfg)
	if err != nil {
		return nil, fmt.Errorf("native: consul client: %w", err)
	}
	s := &Server{cfg: cfg, log: log, client: client, identity: cfg.Identity, listening: make(chan struct{})}
	if s.identity == nil {
		s.ownID = mesh.NewConsulIdentity(client, cfg.Service, log)
		s.identity = s.ownID
	}
	s.authz = NewAuthorizer(AuthorizerParams{Client: aclient, Target: cfg.Service, TTL: cfg.AuthzTTL, MaxStale: cfg.AuthzMaxStale, Log: log})
	s.Health = health.NewServer()
	opts = append([]grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(mesh.ServerTLSConfig(s.identity))),
		grpc.ChainUnaryInterceptor(s.authz.UnaryInterceptor),
		grpc.ChainStreamInterceptor(s.authz.StreamInterceptor),
	}, opts...)
	s.GRPC = grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(s.GRPC, s.Health)
	reflection.Register(s.GRPC)
	s.hsrv = grpc.NewServer()
	healthpb.RegisterHealthServer(s.hsrv, s.Health)
	return s, nil
}

// Run waits for the identity, listens, registers the instance and serves
// until ctx ends; it then marks itself NOT_SERVING, deregisters, waits
// DeregisterDelay, and drains in-flight calls for at most Grace. It returns
// nil after a requested stop.
func (s *Server) Run(ctx context.Context) error {
	if s.ownID != nil {
		s.ownID.Start()
		defer s.ownID.Close()
	}
	signalled := false
	defer func() {
		if !signalled {
			close(s.listening)
		}
	}()
	if err := mesh.WaitIdentity(ctx, s.identity); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("native: listen %s: %w", s.cfg.Listen, err)
	}
	hl := s.cfg.HealthListen
	if hl == "" {
		host, _, _ := net.SplitHostPort(s.cfg.Listen)
		hl = net.JoinHostPort(host, "0")
	}
	hlis, err := net.Listen("tcp", hl)
	if err != nil {
		lis.Close()
		return fmt.Errorf("native: health listen %s: %w", hl, err)
	}
	reg, err := s.registration(lis.Addr().String(), hlis.Addr().String())
	if err != nil {
		lis.Close()
		hlis.Close()
		return err
	}
	s.addr = lis.Addr().String()
	signalled = true
	close(s.listening)
	s.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	errc := make(chan error, 2)
	go func() { errc <- s.GRPC.Serve(lis) }()
	go func() { errc <- s.hsrv.Serve(hlis) }()
	s.log.Info("mesh-native service listening", zap.String("addr", lis.Addr().String()), zap.String("health", hlis.Addr().String()),
		zap.String("id", s.identity.Identity().ID))
	r := mesh.StartRegistrar(s.client, reg, s.log)

	var serveErr error
	aborted := false
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		aborted = serveErr == nil // Abort: Serve returned without an error
	}
	if aborted {
		r.Stop()
		return nil
	}
	s.Health.Shutdown()
	if err := r.Deregister(5 * time.Second); err != nil {
		s.log.Warn("leaving consul", zap.Error(err))
	}
	if serveErr == nil {
		time.Sleep(s.cfg.DeregisterDelay)
	}
	stopped := make(chan struct{})
	go func() { s.GRPC.GracefulStop(); close(stopped) }()
	t := time.NewTimer(s.cfg.Grace)
	select {
	case <-stopped:
		t.Stop()
	case <-t.C:
		s.log.Warn("grace period over; closing remaining calls")
		s.GRPC.Stop()
		<-stopped
	}
	s.hsrv.Stop()
	if serveErr != nil {
		return fmt.Errorf("native: serve: %w", serveErr)
	}
	return nil
}

// Addr is the bound mTLS address; it blocks until Run has listened (or
// returns "" if Run failed before).
func (s *Server) Addr() string {
	<-s.listening
	return s.addr
}

// Abort stops both listeners at once, closing every connection, without
// deregistering or draining: what a crash looks like to the mesh. For
// failure drills; Run then returns.
func (s *Server) Abort() {
	s.GRPC.Stop()
	s.hsrv.Stop()
}

func (s *Server) registration(addr, healthAddr string) (*api.AgentServiceRegistration, error) {
	adv := addr
	if s.cfg.Advertise != "" {
		adv = s.cfg.Advertise
	}
	host, port, err := mesh.SplitAddr(adv)
	if err != nil {
		return nil, fmt.Errorf("native: advertise address: %w", err)
	}
	hh, hp, _ := net.SplitHostPort(healthAddr)
	if ip := net.ParseIP(hh); ip == nil || ip.IsUnspecified() {
		hh = host
	}
	id := s.cfg.ID
	if id == "" {
		id = mesh.InstanceID(s.cfg.Service, net.JoinHostPort(host, fmt.Sprint(port)))
	}
	meta := map[string]string{}
	for k, v := range s.cfg.Meta {
		meta[k] = v
	}
	if h := DescriptorHash(s.GRPC); h != "" {
		meta[mesh.MetaDescriptors] = h
	}
	return &api.AgentServiceRegistration{
		ID: id, Name: s.cfg.Service, Address: host, Port: port, Tags: s.cfg.Tags, Meta: meta,
		Connect: &api.AgentServiceConnect{Native: true},
		Check: &api.AgentServiceCheck{
			CheckID:                        id + ":health",
			Name:                           "gRPC health (plaintext health port)",
			GRPC:                           net.JoinHostPort(hh, hp),
			Interval:                       s.cfg.CheckInterval.String(),
			Timeout:                        s.cfg.CheckInterval.String(),
			DeregisterCriticalServiceAfter: s.cfg.DeregisterCriticalAfter.String(),
		},
	}, nil
}

// DescriptorHash hashes the descriptors of the application services
// registered on s (from the global registry, where generated code puts
// them); "" if any of them is not there (then Portico notices redeploys by
// instance changes and its periodic refresh instead).
func DescriptorHash(s *grpc.Server) string {
	files := map[string]protoreflect.FileDescriptor{}
	var collect func(fd protoreflect.FileDescriptor)
	collect = func(fd protoreflect.FileDescriptor) {
		if _, ok := files[fd.Path()]; ok {
			return
		}
		files[fd.Path()] = fd
		imps := fd.Imports()
		for i := range imps.Len() {
			collect(imps.Get(i).FileDescriptor)
		}
	}
	for name := range s.GetServiceInfo() {
		if name == healthpb.Health_ServiceDesc.ServiceName || strings.HasPrefix(name, "grpc.reflection.") {
			continue
		}
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return ""
		}
		collect(d.ParentFile())
	}
	if len(files) == 0 {
		return ""
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	h := sha256.New()
	for _, p := range paths {
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(protodesc.ToFileDescriptorProto(files[p]))
		if err != nil {
			return ""
		}
		h.Write([]byte(p))
		h.Write(raw)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
