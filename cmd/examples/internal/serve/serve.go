// Package serve runs one example service as a standalone gRPC server; it is
// the body of the users, orders, products and accounts commands.
package serve

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/portico-dev/portico/cmd/examples/services"
	"github.com/portico-dev/portico/mesh/native"
)

// DefaultGrace is how long Run lets in-flight calls finish after ctx ends
// before it closes what is left (long streams such as WatchUsers).
const DefaultGrace = 5 * time.Second

// Options says how to run one example service.
type Options struct {
	// Name is the example (users, orders, products) and its Consul name.
	Name string
	// Listen is the gRPC address.
	Listen string
	// Grace bounds the drain on stop.
	Grace time.Duration
	// Consul is the agent address. Empty: plaintext gRPC with health and
	// reflection, no registration. Set: mesh-native (mTLS with the Consul
	// leaf, intentions, registered with the portico tag).
	Consul string
	// HealthListen is the plaintext health address in mesh mode.
	HealthListen string
	// ID is the Consul instance id in mesh mode (default name-host:port).
	ID string
	// Advertise is the host:port registered in Consul in mesh mode (default
	// the bound Listen address, which must then not be 0.0.0.0). Consul's
	// health check uses its host too when HealthListen's host is
	// unspecified, so in a container give the name other containers resolve.
	Advertise string
	// Meta is registered as the instance's Consul service meta in mesh
	// mode (service-resolver subsets filter on it, e.g.
	// Service.Meta.version == "2"). With a "version", every answer also
	// carries it in the response header metadata x-served-version, in
	// either mode.
	Meta map[string]string
}

// serverOptions are what every example server runs with: slow calls on
// request, and the version header when Meta has one.
func (o Options) serverOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{services.Slow(o.Name)}
	if v := o.Meta["version"]; v != "" {
		opts = append(opts, services.Header(metadata.Pairs(services.VersionHeader, v))...)
	}
	return opts
}

// Run serves until ctx ends, then stops gracefully within Grace. It returns
// nil after a requested stop.
func Run(ctx context.Context, log *zap.Logger, o Options) error {
	if o.Consul != "" {
		return runNative(ctx, log, o)
	}
	s := grpc.NewServer(o.serverOptions()...)
	if err := services.Register(s, o.Name); err != nil {
		return err
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("example service listening (plaintext)", zap.String("service", o.Name), zap.String("addr", lis.Addr().String()))

	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	log.Info("stopping", zap.String("service", o.Name), zap.Duration("grace", o.Grace))
	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(o.Grace)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		log.Warn("grace period over, closing remaining calls", zap.String("service", o.Name))
		s.Stop()
		<-stopped
	}
	// Serve returns nil once Stop or GracefulStop was called.
	return <-served
}

func runNative(ctx context.Context, log *zap.Logger, o Options) error {
	cc := api.DefaultNonPooledConfig()
	cc.Address = o.Consul
	srv, err := native.New(native.Config{
		Service: o.Name, ID: o.ID, Listen: o.Listen, HealthListen: o.HealthListen, Advertise: o.Advertise, Consul: cc, Grace: o.Grace,
		Meta: o.Meta,
	}, log, o.serverOptions()...)
	if err != nil {
		return err
	}
	if err := services.RegisterServices(srv.GRPC, o.Name); err != nil {
		return err
	}
	return srv.Run(ctx)
}

// MetaFlag is a repeatable key=value flag that fills the map: an empty key
// or a key given twice is an error.
type MetaFlag map[string]string

// Set implements flag.Value.
func (m MetaFlag) Set(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want key=value", kv)
	}
	if _, dup := m[k]; dup {
		return fmt.Errorf("%q: %s is given twice", kv, k)
	}
	m[k] = v
	return nil
}

// String implements flag.Value: the pairs, sorted by key.
func (m MetaFlag) String() string {
	pairs := make([]string, 0, len(m))
	for k, v := range m {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// Main is the whole of an example command: flags, signals, Run. listen is
// the default gRPC address.
func Main(name, listen string) {
	o := Options{Name: name}
	flag.StringVar(&o.Listen, "listen", listen, "gRPC listen address")
	flag.DurationVar(&o.Grace, "grace", DefaultGrace, "how long in-flight calls may run on after SIGINT/SIGTERM")
	flag.StringVar(&o.Consul, "consul", "", "Consul agent address: run mesh-native and register there")
	flag.StringVar(&o.HealthListen, "health-listen", "", "plaintext gRPC health address for Consul's check (mesh mode; default: listen host, any port)")
	flag.StringVar(&o.ID, "id", "", "Consul instance id (mesh mode; default <name>-host:port)")
	flag.StringVar(&o.Advertise, "advertise", "", "host:port registered in Consul, also the health check's host (mesh mode; default the bound listen address)")
	o.Meta = map[string]string{}
	flag.Var(MetaFlag(o.Meta), "meta", "key=value registered as Consul service meta (mesh mode; repeatable); version=V also answers x-served-version: V")
	flag.Parse()

	log, err := zap.NewProduction()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, log, o); err != nil {
		log.Error(name+" example service failed", zap.Error(err))
		stop()
		os.Exit(1)
	}
}
