package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/mesh"
)

// parseFlags parses args the same way for every command: -h (or -help)
// prints the usage on stdout and exits 0; a bad flag prints the error and
// the usage on stderr and exits 2. ok is false when the command must end
// with code.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	var msg bytes.Buffer
	fs.SetOutput(&msg)
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(stderr)
		return 0, false
	case err != nil:
		_, _ = io.Copy(stderr, &msg) // the error, then the usage
		return 2, false
	}
	return 0, true
}

// usageFunc prints head, then the flags, on fs's current output.
func usageFunc(fs *flag.FlagSet, head string) func() {
	return func() {
		fmt.Fprint(fs.Output(), head)
		fs.PrintDefaults()
	}
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// edgeFlags are the flags of serve and routes: the file first, then the
// flags override it.
type edgeFlags struct {
	fs                                                  *flag.FlagSet
	configPath, listen, admin, consul, logLevel, logFmt *string
	advertise                                           *string
	plaintext                                           *bool
	upstreams                                           stringList
	// takesPaths: positional arguments are the command's (openapi's
	// PATHs), not a mistake.
	takesPaths bool
}

const serveUsage = `usage: portico serve [flags]

Serve REST/JSON for every annotated method of the upstreams: the --upstream
addresses and, with --consul, every Consul service tagged portico. Flags
override the --config file.

`

const routesUsage = `usage: portico routes [flags]

Print the route table serve would build with the same flags, then exit: 0
when every upstream was reflected and every service compiled, 1 otherwise
(each problem on stderr), 2 on bad usage.

`

const openAPIUsage = `usage: portico openapi [flags] [-I DIR]... [PATH]...

Print the OpenAPI 3.1 document of the route table serve would build with
the same flags and --config (what serve answers at GET /openapi.json: the
policies' security schemes, the composed methods of
edge.compose.protos_dir, the frontends), then exit: 0 when every upstream
was reflected and every service compiled, 1 otherwise (each problem on
stderr; the document of the rest is printed), 2 on bad usage.

With PATHs (.proto files, directories of them, or descriptor sets, as
portico lint reads them), the services are read from them instead of
reflected from running upstreams: no service needs to run, so CI can diff
the document a change would serve. --frontend NAME gives the document of
one of the config's edge.frontends (what serve answers on that frontend);
without it, the default frontend's.

`

func newEdgeFlags(name, usage string) *edgeFlags {
	fs := flag.NewFlagSet("portico "+name, flag.ContinueOnError)
	f := &edgeFlags{
		fs:         fs,
		configPath: fs.String("config", "", "YAML config file"),
		listen:     fs.String("listen", "", "public listen address host:port (edge.listen)"),
		admin:      fs.String("admin-listen", "", "admin listen address host:port for /healthz, /readyz, /metrics (edge.admin_listen)"),
		consul:     fs.String("consul", "", "Consul agent HTTP address host:port (mesh.consul.address): expose services tagged portico"),
		plaintext: fs.Bool("plaintext-upstream", false, "call the upstreams given here without TLS: the --upstream addresses and the --consul services\n"+
			"(sets mesh.tls.mode: plaintext); upstreams from --config keep their keys (mesh.upstreams[].plaintext, mesh.tls.mode)"),
		advertise: fs.String("advertise", "", "the host:port other hosts reach the public listener at, registered in Consul\n"+
			"(mesh.consul.register.address; one config file serves several instances, each with its own)"),
		logLevel: fs.String("log-level", "", "debug, info, warn or error (log.level)"),
		logFmt:   fs.String("log-format", "", "json or console (log.format)"),
	}
	fs.Var(&f.upstreams, "upstream", "gRPC upstream host:port; repeatable (adds to mesh.upstreams)")
	fs.Usage = usageFunc(fs, usage+"flags:\n")
	return f
}

// config is the file at --config (or the defaults) with the flags applied,
// validated, and the --config path.
func (f *edgeFlags) config() (app.Config, string, error) {
	if f.fs.NArg() > 0 && !f.takesPaths {
		return app.Config{}, "", fmt.Errorf("unexpected argument %q (see %s -h)", f.fs.Arg(0), f.fs.Name())
	}
	cfg := app.DefaultConfig()
	if *f.configPath != "" {
		if err := app.LoadConfigFile(*f.configPath, &cfg); err != nil {
			return app.Config{}, "", err
		}
	}
	if *f.listen != "" {
		cfg.Edge.Listen = *f.listen
	}
	if *f.admin != "" {
		cfg.Edge.AdminListen = *f.admin
	}
	if *f.consul != "" {
		cfg.Mesh.Consul.Address = *f.consul
	}
	if *f.advertise != "" {
		cfg.Mesh.Consul.Register.Address = *f.advertise
	}
	if *f.logLevel != "" {
		cfg.Log.Level = *f.logLevel
	}
	if *f.logFmt != "" {
		cfg.Log.Format = *f.logFmt
	}
	for _, u := range f.upstreams {
		cfg.Mesh.Upstreams = append(cfg.Mesh.Upstreams, mesh.Upstream{Address: u, Plaintext: *f.plaintext})
	}
	if *f.plaintext {
		if *f.consul != "" {
			// Like any flag, it overrides the file (mesh.tls).
			cfg.Mesh.TLS.Mode = mesh.TLSModePlaintext
		} else if len(f.upstreams) == 0 {
			return app.Config{}, "", errors.New("--plaintext-upstream applies to --upstream and --consul, and neither is given; " +
				"for upstreams from --config set mesh.upstreams[].plaintext: true or mesh.tls.mode: plaintext")
		}
	}
	if len(cfg.Mesh.Upstreams) == 0 && cfg.Mesh.Consul.Address == "" && f.fs.NArg() == 0 {
		return app.Config{}, "", errors.New("no upstream: give --consul, --upstream, or mesh.consul / mesh.upstreams in --config")
	}
	return cfg, *f.configPath, cfg.Validate()
}
