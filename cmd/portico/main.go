// Command portico is the Portico edge: it serves REST/JSON from gRPC
// services it reflects.
//
//	portico serve  [--config FILE] [--listen ADDR] [--upstream ADDR]... [--plaintext-upstream]
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
	fs := flag.NewFlagSet("portico "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath = fs.String("config", "", "YAML config file")
		listen     = fs.String("listen", "", "public listen address host:port (edge.listen)")
		plaintext  = fs.Bool("plaintext-upstream", false, "talk to the --upstream addresses without TLS")
		logLevel   = fs.String("log-level", "", "debug, info, warn or error (log.level)")
		logFormat  = fs.String("log-format", "", "json or console (log.format)")
		upstreams  stringList
	)
	fs.Var(&upstreams, "upstream", "gRPC upstream host:port; repeatable (adds to mesh.upstreams)")
	if err := fs.Parse(args); err != nil {
		return app.Config{}, err
	}
	if fs.NArg() > 0 {
		return app.Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg := app.DefaultConfig()
	if *configPath != "" {
		if err := app.LoadConfigFile(*configPath, &cfg); err != nil {
			return app.Config{}, err
		}
	}
	if *listen != "" {
		cfg.Edge.Listen = *listen
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
	if len(cfg.Mesh.Upstreams) == 0 {
		return app.Config{}, errors.New("no upstream: give --upstream or mesh.upstreams in --config")
	}
	return cfg, cfg.Validate()
}

func cmdServe(args []string, stderr io.Writer) int {
	cfg, err := loadFlags("serve", args, stderr)
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
	app := fx.New(app.Options(cfg, log))
	app.Run()
	if err := app.Err(); err != nil {
		return 1
	}
	return 0
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
	ups, err := mesh.NewUpstreams(cfg.Mesh, log)
	if err != nil {
		fmt.Fprintln(stderr, "portico routes:", err)
		return 1
	}
	defer ups.Close()
	refls, errs := ups.Reflect(context.Background())
	code := 0
	for i, err := range errs {
		if err != nil {
			fmt.Fprintf(stderr, "portico routes: upstream %s: %v\n", ups.Addresses()[i], err)
			code = 1
		}
	}
	t := edge.BuildTable(refls, transcode.NewCompiler(cfg.Transcode))
	app.PrintRoutes(stdout, t)
	for _, err := range t.Rejected {
		fmt.Fprintln(stderr, "portico routes:", err)
		code = 1
	}
	return code
}
