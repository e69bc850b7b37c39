// Command demo runs the local demo environment on loopback: a real Consul
// agent (built once from the pinned module), the example services as
// mesh-native Consul services (mTLS with Connect certificates, intentions,
// gRPC health checks) and Portico in consul mode in front of them, composed
// exactly as `portico serve --consul` composes it. It prints curl lines that
// work, each with what it should show, and stops everything on Ctrl-C
// (exiting 0, so that `make demo` ends without an error).
//
// The ports are fixed (ports.go): Consul's HTTP API on 8500, the example
// instances on 9001–9005, Portico on 8080 and 9901; one that is taken falls
// back to a free port, with a line saying so. Tokens are signed with a key
// kept in the user cache directory, so they stay valid across runs.
//
// Which example services run, and how many instances of each, comes from
// docker-compose.yml (-compose), so the demo and `docker compose up` have
// the same topology: users, orders, accounts and two products instances,
// products-1 as version 1 and products-2 as version 2 (Consul service meta,
// -meta in the file). The config entries the file's Consul loads at start
// (cmd/examples/compose/consul-entries.json: a service-resolver subset per
// version, a 90/10 service-splitter) the demo writes through Consul's API
// before Portico starts, so both split products calls alike.
package main

import (
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/fx"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/portico-dev/portico/cmd/examples/consulagent"
	"github.com/portico-dev/portico/cmd/examples/services"
	"github.com/portico-dev/portico/cmd/examples/topology"
	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/mesh/native"
	"github.com/portico-dev/portico/policies"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, stop)
	switch {
	case ctx.Err() != nil && (err == nil || !errors.Is(err, errStop)):
		// Ctrl-C (also while starting): everything is stopped; a clean end,
		// so that make reports no error.
		fmt.Println("demo: stopped")
	case err != nil:
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// errStop marks a failure to stop cleanly after Ctrl-C, which, unlike
// errors caused by the interrupt itself, is worth a non-zero exit.
var errStop = errors.New("stopping")

// run starts everything, prints the tour and serves until ctx ends; stop
// restores the default signal handling, so a second Ctrl-C quits at once.
func run(ctx context.Context, stop func()) error {
	listen := flag.String("listen", "127.0.0.1:8080", "Portico's public address")
	admin := flag.String("admin-listen", "127.0.0.1:9901", "Portico's admin address (/readyz, /metrics)")
	host := flag.String("host", "127.0.0.1", "address the example services listen on")
	compose := flag.String("compose", "docker-compose.yml", "compose file whose example services (label "+topology.Label+") the demo starts")
	flag.Parse()
	started := time.Now()

	topo, err := topology.FromFile(ctx, *compose)
	if err != nil {
		return err
	}
	entries, err := topology.EntriesFromFile(ctx, *compose)
	if err != nil {
		return err
	}
	fmt.Println("starting a Consul agent on loopback…")
	agent, err := consulagent.Start(ctx, consulagent.Options{HTTPPort: consulHTTPPort})
	if err != nil {
		return err
	}
	defer agent.Close()
	if _, p, _ := net.SplitHostPort(agent.HTTPAddr); p != strconv.Itoa(consulHTTPPort) {
		fmt.Printf("port %d is in use: the demo's Consul HTTP API is on %s instead (the lines below use it)\n", consulHTTPPort, agent.HTTPAddr)
	}
	fmt.Printf("consul agent:                   HTTP API on %s\n", agent.HTTPAddr)

	log, err := zap.NewDevelopment()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	svcCtx, stopServices := context.WithCancel(context.Background())
	defer stopServices()
	for _, in := range planPorts(topo) {
		addr, note, err := orFree(net.JoinHostPort(*host, strconv.Itoa(in.Port)), in.ID())
		if err != nil {
			return err
		}
		if note != "" {
			fmt.Println(note)
		}
		cc := api.DefaultNonPooledConfig()
		cc.Address = agent.HTTPAddr
		srv, err := native.New(native.Config{Service: in.Service, ID: in.ID(), Listen: addr, Consul: cc, Meta: in.Meta},
			log.Named(in.Service).WithOptions(zap.IncreaseLevel(zap.WarnLevel)), append(servedBy(in), services.Slow(in.Service))...)
		if err != nil {
			return err
		}
		if err := services.RegisterServices(srv.GRPC, in.Service); err != nil {
			return err
		}
		wg.Go(func() {
			if err := srv.Run(svcCtx); err != nil {
				fmt.Fprintf(os.Stderr, "demo: %s on %s: %v\n", in.ID(), addr, err)
			}
		})
		if srv.Addr() == "" {
			return fmt.Errorf("%s could not listen on %s", in.ID(), addr)
		}
		version := ""
		if v := in.Meta["version"]; v != "" {
			version = " (version " + v + ")"
		}
		fmt.Printf("example service %-15s mTLS gRPC on %s%s\n", in.ID()+":", srv.Addr(), version)
	}
	if err := waitPassing(ctx, agent, topo); err != nil {
		return err
	}
	if err := writeEntries(ctx, agent, entries); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "portico-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The home screen's frontend proto, for Portico to load.
	fronts, err := writeFrontends(dir)
	if err != nil {
		return err
	}
	keyFile, err := demoKeyFile()
	if err != nil {
		return err
	}
	key, created, err := loadOrCreateKey(keyFile)
	if err != nil {
		return err
	}
	idp, err := newDemoIDP(dir, key)
	if err != nil {
		return err
	}
	cfg := app.DefaultConfig()
	if cfg.Edge.Listen, err = listenOrFree(*listen, "Portico"); err != nil {
		return err
	}
	if cfg.Edge.AdminListen, err = listenOrFree(*admin, "Portico's admin"); err != nil {
		return err
	}
	cfg.Mesh.Consul.Address = agent.HTTPAddr
	cfg.Policies.JWT = []policies.JWTProvider{{Name: "demo", Issuer: demoIssuer, JWKSFile: idp.jwks}}
	cfg.Log.Format = "console"
	cfg.Edge.DrainDelay = time.Second // nothing balances over the demo: a short drain on Ctrl-C
	cfg.Edge.Compose.ProtosDir = fronts
	cfg.Edge.Docs = true // the demo shows its API page at /docs
	// Two frontends: web sees everything; a partner, on its own host, only
	// what the products service tags for it.
	cfg.Edge.Frontends = []edge.FrontendConfig{{Name: "web"}, {Name: "partner", Mode: "include", Hosts: []string{"partner.localhost"}}}
	cfg.Edge.DefaultFrontend = "web"
	if err := cfg.Validate(); err != nil {
		return err
	}
	plog, err := cfg.Log.NewLogger()
	if err != nil {
		return err
	}
	a := fx.New(app.Options(cfg, plog))
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.Start(startCtx); err != nil {
		return err
	}
	tokens, err := idp.tour()
	if err != nil {
		return err
	}
	printTour(tour{
		Base: "http://" + cfg.Edge.Listen, Admin: "http://" + cfg.Edge.AdminListen, Consul: agent.HTTPAddr,
		KeyFile: keyFile, KeyCreated: created, Lifetime: fmt.Sprintf("%d days", tokenLifetime/(24*time.Hour)), Tokens: tokens,
		HavePortico: exists("bin/portico"),
	})
	fmt.Printf("ready in %s. Ctrl-C stops everything.\n", time.Since(started).Round(100*time.Millisecond))
	<-ctx.Done()
	stop()
	fmt.Println("\nstopping (Ctrl-C again to quit at once)…")
	stopCtx, cancelStop := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelStop()
	if err := a.Stop(stopCtx); err != nil {
		return fmt.Errorf("%w Portico: %w", errStop, err)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// listenOrFree is orFree that prints its line.
func listenOrFree(addr, what string) (string, error) {
	addr, note, err := orFree(addr, what)
	if note != "" {
		fmt.Println(note)
	}
	return addr, err
}

// frontendFS holds the demo's frontend protos.
//
//go:embed frontends
var frontendFS embed.FS

// writeFrontends copies the frontend protos under dir and returns their
// directory.
func writeFrontends(dir string) (string, error) {
	root := filepath.Join(dir, "frontends")
	err := fs.WalkDir(frontendFS, "frontends", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := frontendFS.ReadFile(p)
		if err != nil {
			return err
		}
		out := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
	return root, err
}

// servedBy makes every answer of an instance name it in the response
// header metadata x-served-by, and its version (meta "version"), if it has
// one, in x-served-version, as the example commands do. Portico forwards
// them as the HTTP headers Grpc-Metadata-X-Served-By and
// Grpc-Metadata-X-Served-Version: the products split shows in `curl -si`.
func servedBy(in instance) []grpc.ServerOption {
	md := metadata.Pairs("x-served-by", in.ID())
	if v := in.Meta["version"]; v != "" {
		md.Set(services.VersionHeader, v)
	}
	return services.Header(md)
}

// writeEntries writes the config entries of the compose file's Consul, in
// their order (a splitter needs its resolver's subsets and the grpc
// protocol first), before Portico starts: it routes by them from its first
// call.
func writeEntries(ctx context.Context, agent *consulagent.Agent, entries []api.ConfigEntry) error {
	if len(entries) == 0 {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if _, _, err := agent.Client().ConfigEntries().Set(e, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
			return fmt.Errorf("consul config entry %s %s: %w", e.GetKind(), e.GetName(), err)
		}
		names = append(names, e.GetKind()+" "+e.GetName())
	}
	fmt.Printf("consul config entries:          %s\n", strings.Join(names, ", "))
	return nil
}

// waitPassing waits until every instance of the topology passes its check.
func waitPassing(ctx context.Context, agent *consulagent.Agent, topo []topology.Example) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for _, t := range topo {
		for {
			entries, _, err := agent.Client().Health().Service(t.Service, "portico", true, (&api.QueryOptions{}).WithContext(ctx))
			if err == nil && len(entries) == t.Instances {
				break
			}
			select {
			case <-ctx.Done():
				return errors.New("example services did not pass their Consul checks within 30s")
			case <-tick.C:
			}
		}
	}
	return nil
}
