// Command portico is the Portico edge: it serves REST/JSON from gRPC
// services it reflects.
//
//	portico serve  [--config FILE] [--listen ADDR] [--admin-listen ADDR] [--consul ADDR] [--upstream ADDR]... [--plaintext-upstream]
//	portico routes [same flags]   print the route table serve would build
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/transcode"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: portico <command> [flags]

commands:
  serve    serve REST/JSON for every annotated method of the upstreams
  routes   print the route table serve would build, then exit
  lint     check .proto files or descriptor sets offline (HTTP rules,
           portico.v1 options, CEL, buf.validate, route conflicts)
  probe    exit 0 if a health endpoint is healthy (http(s):// 2xx, grpc:// SERVING)

run "portico <command> -h" for the flags of a command
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stderr)
	case "routes":
		return cmdRoutes(args[1:], stdout, stderr)
	case "lint":
		return cmdLint(args[1:], stdout, stderr)
	case "probe":
		return cmdProbe(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "portico: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// loadFlags parses the flags shared by serve and routes: the file first,
// then flags override it.
func loadFlags(name string, args []string, stderr io.Writer) (app.Config, error) {
	cfg, _, err := loadFlagsFile(name, args, stderr)
	return cfg, err
}

// loadFlagsFile is loadFlags that also returns the --config path.
func loadFlagsFile(name string, args []string, stderr io.Writer) (app.Config, string, error) {
	fs := flag.NewFlagSet("portico "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath = fs.String("config", "", "YAML config file")
		listen     = fs.String("listen", "", "public listen address host:port (edge.listen)")
		admin      = fs.String("admin-listen", "", "admin listen address host:port for /healthz, /readyz, /metrics (edge.admin_listen)")
		consul     = fs.String("consul", "", "Consul agent HTTP address host:port (mesh.consul.address): expose services tagged portico")
		plaintext  = fs.Bool("plaintext-upstream", false, "talk to the --upstream addresses without TLS")
		logLevel   = fs.String("log-level", "", "debug, info, warn or error (log.level)")
		logFormat  = fs.String("log-format", "", "json or console (log.format)")
		upstreams  stringList
	)
	fs.Var(&upstreams, "upstream", "gRPC upstream host:port; repeatable (adds to mesh.upstreams)")
	if err := fs.Parse(args); err != nil {
		return app.Config{}, "", err
	}
	if fs.NArg() > 0 {
		return app.Config{}, "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg := app.DefaultConfig()
	if *configPath != "" {
		if err := app.LoadConfigFile(*configPath, &cfg); err != nil {
			return app.Config{}, "", err
		}
	}
	if *listen != "" {
		cfg.Edge.Listen = *listen
	}
	if *admin != "" {
		cfg.Edge.AdminListen = *admin
	}
	if *consul != "" {
		cfg.Mesh.Consul.Address = *consul
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	if *logFormat != "" {
		cfg.Log.Format = *logFormat
	}
	for _, u := range upstreams {
		cfg.Mesh.Upstreams = append(cfg.Mesh.Upstreams, mesh.Upstream{Address: u, Plaintext: *plaintext})
	}
	if len(cfg.Mesh.Upstreams) == 0 && cfg.Mesh.Consul.Address == "" {
		return app.Config{}, "", errors.New("no upstream: give --consul, --upstream, or mesh.consul / mesh.upstreams in --config")
	}
	return cfg, *configPath, cfg.Validate()
}

func cmdServe(args []string, stderr io.Writer) int {
	cfg, path, err := loadFlagsFile("serve", args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "portico serve:", err)
		return 2
	}
	log, err := cfg.Log.NewLogger()
	if err != nil {
		fmt.Fprintln(stderr, "portico serve:", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	access, flush := cfg.Log.NewAccessLogger()
	defer func() { _ = flush() }()
	opts := []fx.Option{app.Options(cfg, log), fx.Supply(&edge.AccessLogger{Logger: access})}
	// SIGHUP re-reads the file; the flags stay as given. Without --config
	// it is caught all the same (its default would end the process).
	fileCfg := app.DefaultConfig()
	if path != "" {
		if err := app.LoadConfigFile(path, &fileCfg); err != nil {
			fmt.Fprintln(stderr, "portico serve:", err)
			return 2
		}
	}
	opts = append(opts, app.WithReload(path, fileCfg))
	// fx's Run would os.Exit on a failed stop, skipping the deferred
	// flushes; this is Run without that.
	a := fx.New(opts...)
	if err := a.Err(); err != nil {
		return 1
	}
	startCtx, cancel := context.WithTimeout(context.Background(), a.StartTimeout())
	defer cancel()
	if err := a.Start(startCtx); err != nil {
		return 1
	}
	sig := <-a.Wait()
	log.Info("stopping", zap.Any("signal", sig.Signal))
	stopCtx, cancelStop := context.WithTimeout(context.Background(), a.StopTimeout())
	defer cancelStop()
	if err := a.Stop(stopCtx); err != nil {
		log.Error("stopped with an error", zap.Error(err))
		return 1
	}
	return sig.ExitCode
}

func cmdRoutes(args []string, stdout, stderr io.Writer) int {
	cfg, err := loadFlags("routes", args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "portico routes:", err)
		return 2
	}
	log := zap.NewNop()
	m, err := mesh.New(cfg.Mesh, log)
	if err != nil {
		fmt.Fprintln(stderr, "portico routes:", err)
		return 1
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Mesh.ReflectTimeout)
	defer cancel()
	_ = m.Start(ctx)
	code := 0
	if m.Catalog != nil {
		if err := m.Catalog.WaitSynced(ctx); err != nil {
			fmt.Fprintln(stderr, "portico routes:", err)
			code = 1
		}
	}
	var refls []*mesh.Reflection
	for _, src := range m.Sources() {
		for _, r := range src.Reflect(ctx, true) {
			if r.Err != nil {
				fmt.Fprintf(stderr, "portico routes: upstream %s: %v\n", r.Target, r.Err)
				code = 1
				continue
			}
			refls = append(refls, r.Reflection)
		}
	}
	t := edge.BuildTable(refls, transcode.NewCompiler(cfg.Transcode), nil)
	app.PrintRoutes(stdout, t)
	for _, err := range t.Rejected {
		fmt.Fprintln(stderr, "portico routes:", err)
		code = 1
	}
	return code
}
