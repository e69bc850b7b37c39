// Command portico is the Portico edge: it serves REST/JSON from gRPC
// services it reflects.
//
//	portico serve  [--config FILE] [--listen ADDR] [--admin-listen ADDR] [--consul ADDR] [--upstream ADDR]... [--plaintext-upstream]
//	portico routes [same flags]                        print the route table serve would build
//	portico lint   [-I DIR]... [--config FILE] PATH... check protos offline
//	portico probe  [-timeout 3s] [-insecure] URL       health check for images without a shell
//
// With -h every command prints its usage on stdout and exits 0; bad usage
// (an unknown flag, a missing argument) exits 2 with the usage on stderr.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/fx"
	"go.uber.org/zap"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/edge/compose"
	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/transcode"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: portico <command> [flags]

commands:
  serve    serve REST/JSON for every annotated method of the upstreams
  routes   print the route table serve would build, then exit
  openapi  print the OpenAPI 3.1 document of that route table, then exit
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
		return cmdServe(args[1:], stdout, stderr)
	case "routes":
		return cmdRoutes(args[1:], stdout, stderr)
	case "openapi":
		return cmdOpenAPI(args[1:], stdout, stderr)
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

func cmdServe(args []string, stdout, stderr io.Writer) int {
	f := newEdgeFlags("serve", serveUsage)
	if code, ok := parseFlags(f.fs, args, stdout, stderr); !ok {
		return code
	}
	cfg, path, err := f.config()
	if err != nil {
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
	f := newEdgeFlags("routes", routesUsage)
	if code, ok := parseFlags(f.fs, args, stdout, stderr); !ok {
		return code
	}
	t, code := reflectTable("routes", f, stderr, "", nil)
	if t != nil {
		app.PrintRoutes(stdout, t)
	}
	return code
}

func cmdOpenAPI(args []string, stdout, stderr io.Writer) int {
	f := newEdgeFlags("openapi", openAPIUsage)
	f.takesPaths = true
	format := f.fs.String("format", "json", "json or yaml")
	frontend := f.fs.String("frontend", "", "the document of this frontend of the config's edge.frontends")
	var imports stringList
	f.fs.Var(&imports, "I", "with PATHs: import path for .proto files; repeatable (default: the current directory)")
	if code, ok := parseFlags(f.fs, args, stdout, stderr); !ok {
		return code
	}
	if *format != "json" && *format != "yaml" {
		fmt.Fprintf(stderr, "portico openapi: --format %q: json or yaml\n", *format)
		return 2
	}
	var protos *protoSource
	if f.fs.NArg() > 0 {
		if len(imports) == 0 {
			imports = stringList{"."}
		}
		protos = &protoSource{paths: f.fs.Args(), imports: imports}
	}
	t, code := reflectTable("openapi", f, stderr, *frontend, protos)
	if t == nil {
		return code
	}
	js, ym, err := t.OpenAPI()
	if err != nil {
		fmt.Fprintln(stderr, "portico openapi:", err)
		return 1
	}
	if *format == "yaml" {
		js = ym
	}
	_, _ = stdout.Write(js)
	return code
}

// protoSource is the services' .proto files (or descriptor sets), read
// instead of reflecting running upstreams.
type protoSource struct {
	paths, imports []string
}

// reflections describes the services of the files as one upstream would.
// Frontend protos (methods with a (portico.v1.compose) option) are left
// out: they come from edge.compose.protos_dir, as in serve.
func (p *protoSource) reflections() (*mesh.Reflection, error) {
	var problems strings.Builder
	l := &linter{out: &problems, seen: map[string]bool{}}
	files, err := l.load(p.paths, p.imports)
	if err != nil {
		return nil, err
	}
	if l.problems > 0 {
		// Each "file:line:col: message", as portico lint prints them.
		return nil, errors.New(strings.TrimSpace(problems.String()))
	}
	types := dynamicpb.NewTypes(newViews(files).deps)
	refl := &mesh.Reflection{Upstream: "protos"}
	seen := map[string]bool{} // overlapping PATHs name a file twice
	for _, fd := range files {
		if seen[fd.Path()] {
			continue
		}
		seen[fd.Path()] = true
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			if isFrontendProto(sd) {
				continue
			}
			refl.Services = append(refl.Services, &mesh.Service{Name: sd.FullName(), Desc: sd, Upstream: "protos", Types: types})
		}
	}
	return refl, nil
}

func isFrontendProto(sd protoreflect.ServiceDescriptor) bool {
	for j := 0; j < sd.Methods().Len(); j++ {
		if opt, _ := compose.Option(sd.Methods().Get(j)); opt != nil {
			return true
		}
	}
	return false
}

// reflectTable builds the route table serve would build from the flags'
// upstreams (or from protos, when given), once: with the config's
// policies, frontends and frontend protos, as frontend sees it if one is
// named (else the default frontend, else the first). Problems go to
// stderr and make the code 1 (2: usage).
func reflectTable(name string, f *edgeFlags, stderr io.Writer, frontend string, protos *protoSource) (*edge.RouteTable, int) {
	cfg, _, err := f.config()
	if err != nil {
		fmt.Fprintf(stderr, "portico %s: %v\n", name, err)
		return nil, 2
	}
	if frontend != "" && !slices.ContainsFunc(cfg.Edge.Frontends, func(fc edge.FrontendConfig) bool { return fc.Name == frontend }) {
		fmt.Fprintf(stderr, "portico %s: --frontend %q: not one of the config's edge.frontends\n", name, frontend)
		return nil, 2
	}
	code := 0
	var refls []*mesh.Reflection
	if protos != nil {
		if len(cfg.Mesh.Upstreams) > 0 || cfg.Mesh.Consul.Address != "" {
			fmt.Fprintf(stderr, "portico %s: PATHs and upstreams (--upstream, --consul, mesh in --config): give one source of services\n", name)
			return nil, 2
		}
		refl, err := protos.reflections()
		if err != nil {
			// A file that does not compile is a problem, not a usage error.
			fmt.Fprintf(stderr, "portico %s: %v\n", name, err)
			return nil, 1
		}
		refls = append(refls, refl)
	} else {
		if refls, code = reflectUpstreams(name, cfg, stderr); refls == nil && code != 0 {
			return nil, code
		}
	}
	log := zap.NewNop()
	pc := policies.NewCompiler(cfg.Policies, nil, nil, log)
	defer func() { _ = pc.Stop() }()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Mesh.ReflectTimeout)
	defer cancel()
	t := edge.NewBuilder(edge.BuilderParams{Compiler: transcode.NewCompiler(cfg.Transcode), Policies: pc, Compose: cfg.Edge.Compose,
		Frontends: cfg.Edge.Frontends, DefaultFrontend: cfg.Edge.DefaultFrontend, Log: log}).Build(ctx, refls)
	for _, err := range t.Rejected {
		fmt.Fprintf(stderr, "portico %s: %v\n", name, err)
		code = 1
	}
	if frontend != "" {
		for _, ft := range t.Frontends() {
			if ft.Frontend == frontend {
				t = ft
			}
		}
	}
	return t, code
}

// reflectUpstreams reflects the config's upstreams once; nil and 1 when
// the mesh cannot start.
func reflectUpstreams(name string, cfg app.Config, stderr io.Writer) ([]*mesh.Reflection, int) {
	m, err := mesh.New(cfg.Mesh, zap.NewNop())
	if err != nil {
		fmt.Fprintf(stderr, "portico %s: %v\n", name, err)
		return nil, 1
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Mesh.ReflectTimeout)
	defer cancel()
	if m.Consul != nil {
		// A one-shot: a Consul that is not there fails now, not after the
		// watches have retried for mesh.reflect_timeout.
		if err := consulReachable(ctx, m.Consul, cfg.Mesh.Consul.Address, cfg.Mesh.ReflectTimeout); err != nil {
			fmt.Fprintf(stderr, "portico %s: %v\n", name, err)
			return nil, 1
		}
	}
	_ = m.Start(ctx)
	code := 0
	if err := m.WaitSynced(ctx); err != nil {
		fmt.Fprintf(stderr, "portico %s: %v\n", name, err)
		code = 1
	}
	var refls []*mesh.Reflection
	for _, src := range m.Sources() {
		for _, r := range src.Reflect(ctx, true) {
			if r.Err != nil {
				// mesh's errors name the upstream (and the instance).
				fmt.Fprintf(stderr, "portico %s: %v\n", name, r.Err)
				code = 1
				continue
			}
			refls = append(refls, r.Reflection)
		}
	}
	return refls, code
}

// consulReachable reads the catalog's service list once, without blocking,
// and says in a few words why it could not: "consul at 127.0.0.1:8500:
// connection refused".
func consulReachable(ctx context.Context, c *api.Client, addr string, timeout time.Duration) error {
	_, _, err := c.Catalog().Services((&api.QueryOptions{}).WithContext(ctx))
	if err == nil {
		return nil
	}
	var (
		dnsErr *net.DNSError
		opErr  *net.OpError
		errno  syscall.Errno
	)
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Errorf("consul at %s: lookup %s: %s", addr, dnsErr.Name, dnsErr.Err)
	case errors.As(err, &opErr) && opErr.Op == "dial" && errors.As(opErr.Err, &errno):
		return fmt.Errorf("consul at %s: %v", addr, errno)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("consul at %s did not answer within %s (mesh.reflect_timeout)", addr, timeout)
	default:
		return fmt.Errorf("consul at %s: %w", addr, err)
	}
}
