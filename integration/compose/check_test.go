package compose

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/template"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/hashicorp/consul/api"
	"gopkg.in/yaml.v3"

	"github.com/portico-dev/portico/cmd/examples/topology"
	"github.com/portico-dev/portico/cmd/portico/app"
)

// The names the checks expect: the Consul service and its HTTP port, the
// edge service, and the demo's topology.
const (
	consulService = "consul"
	consulPort    = "8500"
	redisService  = "redis"
	redisPort     = "6379"
)

// edgeServices are the Portico instances: the services whose command is
// `portico serve`.
func edgeServices(p *types.Project) []types.ServiceConfig {
	var out []types.ServiceConfig
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		if s := p.Services[name]; len(s.Command) >= 2 && s.Command[0] == "portico" && s.Command[1] == "serve" {
			out = append(out, s)
		}
	}
	return out
}

var wantTopology = map[string]int{"users": 1, "orders": 1, "products": 2, "accounts": 1}

// checker collects every problem; each names the service and the field.
type checker struct {
	errs []error
	// dockerfileText is the text of the Dockerfile a service builds.
	dockerfileText string
}

func (c *checker) fail(service, field, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("service %s: %s: %s", service, field, fmt.Sprintf(format, args...)))
}

// check loads the compose file at path as `docker compose` would (schema
// validation, normalization, consistency; every profile enabled, env as
// the environment) and returns every inconsistency it finds.
func check(ctx context.Context, path string, env map[string]string) []error {
	c := &checker{}
	c.variables(path)
	p, err := topology.Load(ctx, path, env, "*")
	if err != nil {
		return append(c.errs, err)
	}
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		c.service(p, p.Services[name])
	}
	if _, ok := p.Services[consulService]; !ok {
		c.fail(consulService, "services", "no Consul service named %q", consulService)
	}
	c.edges(p)
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		if s := p.Services[name]; s.Labels[topology.Label] != "" {
			c.example(p, s)
		}
	}
	c.topology(ctx, path)
	c.consulEntries(p)
	return c.errs
}

// variables: every ${VAR} in the file has a default, so `docker compose up`
// needs no environment.
func (c *checker) variables(path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		c.errs = append(c.errs, err)
		return
	}
	var dict map[string]any
	if err := yaml.Unmarshal(raw, &dict); err != nil {
		c.errs = append(c.errs, fmt.Errorf("%s: %w", path, err))
		return
	}
	vars := template.ExtractVariables(dict, nil)
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		if vars[name].DefaultValue == "" {
			c.errs = append(c.errs, fmt.Errorf("%s: ${%s} is referenced without a default (write ${%s:-value})", filepath.Base(path), name, name))
		}
	}
}

// service: checks every service has.
func (c *checker) service(p *types.Project, s types.ServiceConfig) {
	if hc := s.HealthCheck; hc == nil || hc.Disable || len(hc.Test) < 2 || hc.Test[0] == "NONE" {
		c.fail(s.Name, "healthcheck", "missing or disabled")
	}
	for _, dep := range slices.Sorted(maps.Keys(s.DependsOn)) {
		if _, ok := p.Services[dep]; !ok {
			c.fail(s.Name, "depends_on", "%q is not a service of the file", dep)
		}
	}
	if registryHost(s.Image) != "" {
		c.fail(s.Name, "image", "%q names a registry host; use the image's short name", s.Image)
	}
	if s.Build != nil {
		c.dockerfile(s)
	}
}

// dockerfile: the build's Dockerfile exists, names no registry host, builds
// the binaries the services run, and its final stage runs as non-root.
func (c *checker) dockerfile(s types.ServiceConfig) {
	path := s.Build.Dockerfile
	if path == "" {
		path = "Dockerfile"
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(s.Build.Context, path)
	}
	f, err := os.Open(path)
	if err != nil {
		c.fail(s.Name, "build.dockerfile", "%v", err)
		return
	}
	defer f.Close()
	var user, from string
	var text strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		text.WriteString(line + "\n")
		fields := strings.Fields(line)
		if len(fields) < 2 || strings.HasPrefix(line, "#") {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM": // a new stage: its user starts as root again
			from, user = fields[1], ""
			for _, f := range fields[1:] { // skip --platform=...
				if !strings.HasPrefix(f, "--") {
					from = f
					break
				}
			}
			if h := registryHost(from); h != "" {
				c.fail(s.Name, "build.dockerfile FROM", "%q names the registry host %q", from, h)
			}
		case "USER":
			user = fields[1]
		}
	}
	if err := sc.Err(); err != nil {
		c.fail(s.Name, "build.dockerfile", "%v", err)
		return
	}
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "root" || uid == "0" {
		c.fail(s.Name, "build.dockerfile USER", "the final stage (FROM %s) runs as %q; want a non-root user", from, user)
	}
	if !strings.Contains(text.String(), "./cmd/portico") {
		c.fail(s.Name, "build.dockerfile", "does not build ./cmd/portico")
	}
	c.dockerfileText = text.String()
}

// edges: every Portico instance's config is valid and agrees with the
// file; there are two, sharing Redis, on published ports of their own.
func (c *checker) edges(p *types.Project) {
	edges := edgeServices(p)
	if len(edges) < 2 {
		c.errs = append(c.errs, fmt.Errorf("services: %d Portico instances (command portico serve), want 2 sharing Redis", len(edges)))
	}
	published := map[string]string{}
	for _, s := range edges {
		c.edge(p, s)
		for _, pc := range s.Ports {
			if other, ok := published[pc.Published]; ok && pc.Published != "" {
				c.fail(s.Name, "ports", "host port %s is %s's already", pc.Published, other)
			}
			published[pc.Published] = s.Name
		}
	}
}

// edge: one Portico instance.
func (c *checker) edge(p *types.Project, s types.ServiceConfig) {
	cfg, ok := c.edgeConfig(p, s)
	if !ok {
		return
	}
	listen := c.hostPort(s.Name, "config edge.listen", cfg.Edge.Listen, true)
	admin := c.hostPort(s.Name, "config edge.admin_listen", cfg.Edge.AdminListen, true)
	var ports []string
	for _, pc := range s.Ports {
		if pc.Published == "" {
			c.fail(s.Name, "ports", "container port %d is not published", pc.Target)
		}
		ports = append(ports, strconv.Itoa(int(pc.Target)))
	}
	want := []string{listen.port, admin.port}
	slices.Sort(ports)
	slices.Sort(want)
	if !slices.Equal(ports, want) {
		c.fail(s.Name, "ports", "container ports %v, want the config's listeners %v (edge.listen, edge.admin_listen)", ports, want)
	}
	// Compose kills the container after stop_grace_period: the drain must
	// fit in it.
	drain := cfg.Edge.DrainDelay + cfg.Edge.ShutdownGrace
	if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= drain {
		c.fail(s.Name, "stop_grace_period", "must exceed edge.drain_delay + edge.shutdown_grace (%s) so a stop drains instead of being killed", drain)
	}
	if h := healthURL(s); h != "http://127.0.0.1:"+admin.port+"/readyz" {
		c.fail(s.Name, "healthcheck", "probes %q, want the admin listener's /readyz (port %s)", h, admin.port)
	}
	consul := c.hostPort(s.Name, "config mesh.consul.address", cfg.Mesh.Consul.Address, false)
	if consul.host != consulService || consul.port != consulPort {
		c.fail(s.Name, "config mesh.consul.address", "%q, want %s:%s (the Consul service)", cfg.Mesh.Consul.Address, consulService, consulPort)
	}
	// Each instance registers where the others reach it: its service
	// name and listen port (--advertise, or the config's address).
	addr, field := cfg.Mesh.Consul.Register.Address, "config mesh.consul.register.address"
	if v, ok := flagValue(s.Command, "advertise"); ok {
		addr, field = v, "--advertise"
	}
	reg := c.hostPort(s.Name, field, addr, false)
	if reg.host != s.Name || reg.port != listen.port {
		c.fail(s.Name, field, "%q, want %s:%s (the service name and edge.listen's port)", addr, s.Name, listen.port)
	}
	c.dependsHealthy(s, consulService)
	addr = cfg.Policies.Redis.Address
	r := c.hostPort(s.Name, "config policies.redis.address", addr, false)
	if _, ok := p.Services[r.host]; !ok || r.port != redisPort {
		c.fail(s.Name, "config policies.redis.address", "%q, want a service of the file and port %s", addr, redisPort)
	} else {
		c.dependsHealthy(s, r.host)
	}
	if cfg.Policies.RateLimit.Store != "redis" {
		c.fail(s.Name, "config policies.rate_limit.store", "%q: the instances must share Redis for one limit", cfg.Policies.RateLimit.Store)
	}
}

// edgeConfig finds the config file bind-mounted where --config points,
// decodes it as `portico serve` does (strictly, over the defaults) and
// validates it.
func (c *checker) edgeConfig(p *types.Project, s types.ServiceConfig) (app.Config, bool) {
	path, ok := flagValue(s.Command, "config")
	if !ok {
		c.fail(s.Name, "command", "%q has no --config", s.Command)
		return app.Config{}, false
	}
	for _, v := range s.Volumes {
		if v.Target != path {
			continue
		}
		if v.Type != types.VolumeTypeBind {
			c.fail(s.Name, "volumes "+v.Target, "not a bind mount of a config file")
			return app.Config{}, false
		}
		field := "config " + filepath.Base(v.Source)
		cfg := app.DefaultConfig()
		if err := app.LoadConfigFile(v.Source, &cfg); err != nil {
			c.fail(s.Name, field, "%v", err)
			return app.Config{}, false
		}
		// The frontend protos are in the image: validate the directory
		// the Dockerfile copies there.
		inImage := cfg.Edge.Compose.ProtosDir
		if inImage != "" {
			src, ok := c.copiedTo(inImage)
			if !ok {
				c.fail(s.Name, field, "edge.compose.protos_dir %s: the Dockerfile copies nothing there", inImage)
				return app.Config{}, false
			}
			cfg.Edge.Compose.ProtosDir = filepath.Join("../..", src)
		}
		if err := cfg.Validate(); err != nil {
			c.fail(s.Name, field, "%v", err)
			return app.Config{}, false
		}
		cfg.Edge.Compose.ProtosDir = inImage
		return cfg, true
	}
	c.fail(s.Name, "volumes", "nothing is mounted at --config %s", path)
	return app.Config{}, false
}

// copiedTo finds the Dockerfile's "COPY --from=build /src/<dir> <target>"
// and returns the directory, relative to the repository.
func (c *checker) copiedTo(target string) (string, bool) {
	for line := range strings.SplitSeq(c.dockerfileText, "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "COPY" && f[1] == "--from=build" && f[3] == target && strings.HasPrefix(f[2], "/src/") {
			return strings.TrimPrefix(f[2], "/src/"), true
		}
	}
	return "", false
}

// example: an example instance registers in the Consul service, under its
// own service name, with a health port its health check probes.
func (c *checker) example(p *types.Project, s types.ServiceConfig) {
	name := s.Labels[topology.Label]
	if len(s.Command) == 0 || s.Command[0] != name {
		c.fail(s.Name, "command", "%q does not run the %s binary its label names", s.Command, name)
	}
	if !strings.Contains(c.dockerfileText, "./cmd/examples/"+name) {
		c.fail(s.Name, "image", "the Dockerfile does not build ./cmd/examples/%s", name)
	}
	for _, edge := range edgeServices(p) {
		if edge.Build != nil && s.Image != edge.Image {
			c.fail(s.Name, "image", "%q, want the image the %s service builds (%q)", s.Image, edge.Name, edge.Image)
		}
	}
	if n := s.GetScale(); n != 1 {
		c.fail(s.Name, "scale", "%d: each instance advertises its own service name; add a service per instance", n)
	}
	arg := func(flag string) (string, bool) {
		v, ok := flagValue(s.Command, flag)
		if !ok {
			c.fail(s.Name, "command -"+flag, "missing")
		}
		return v, ok
	}
	if v, ok := arg("consul"); ok && v != consulService+":"+consulPort {
		c.fail(s.Name, "command -consul", "%q, want %s:%s (the Consul service)", v, consulService, consulPort)
	}
	listen, _ := arg("listen")
	lis := c.hostPort(s.Name, "command -listen", listen, true)
	if v, ok := arg("advertise"); ok {
		adv := c.hostPort(s.Name, "command -advertise", v, false)
		if adv.host != s.Name || adv.port != lis.port {
			c.fail(s.Name, "command -advertise", "%q, want %s:%s (the service name and the -listen port)", v, s.Name, lis.port)
		}
	}
	if v, ok := arg("health-listen"); ok {
		h := c.hostPort(s.Name, "command -health-listen", v, true)
		if h.port == lis.port {
			c.fail(s.Name, "command -health-listen", "port %s is the mTLS port too", h.port)
		}
		if got, want := healthURL(s), "grpc://127.0.0.1:"+h.port; got != want {
			c.fail(s.Name, "healthcheck", "probes %q, want %q (the -health-listen port)", got, want)
		}
	}
	c.dependsHealthy(s, consulService)
}

// topology: what the demo derives from the file (default profiles) is the
// expected set.
func (c *checker) topology(ctx context.Context, path string) {
	ex, err := topology.FromFile(ctx, path)
	if err != nil {
		c.errs = append(c.errs, err)
		return
	}
	got := map[string]int{}
	for _, e := range ex {
		got[e.Service] = e.Instances
	}
	if !maps.Equal(got, wantTopology) {
		c.errs = append(c.errs, fmt.Errorf("topology (services labelled %s, default profiles): %v, want %v", topology.Label, got, wantTopology))
	}
}

// wantSplit is the products split the entries declare, by subset.
var wantSplit = map[string]float32{"v1": 90, "v2": 10}

// consulEntries: the config entries the Consul service loads (and the
// demo writes) read, and agree with the example instances: every
// resolver subset that filters on Service.Meta selects an instance, a
// service with a router or splitter speaks grpc, and products is split
// 90/10 between its versions.
func (c *checker) consulEntries(p *types.Project) {
	entries, err := topology.ConsulEntries(p)
	if err != nil {
		c.errs = append(c.errs, err)
		return
	}
	examples, err := topology.Examples(p)
	if err != nil {
		return // c.topology reports it
	}
	meta := map[string][]map[string]string{}
	for _, e := range examples {
		meta[e.Service] = e.Meta
	}
	field := "config entries"
	protocol := map[string]string{}
	split := map[string]float32{}
	for _, e := range entries {
		switch e := e.(type) {
		case *api.ServiceConfigEntry:
			protocol[e.Name] = e.Protocol
		case *api.ServiceResolverConfigEntry:
			for _, name := range slices.Sorted(maps.Keys(e.Subsets)) {
				k, v, ok := metaFilter(e.Subsets[name].Filter)
				if !ok {
					continue
				}
				if !slices.ContainsFunc(meta[e.Name], func(m map[string]string) bool { return m[k] == v && m[k] != "" }) {
					c.fail(consulService, field, "service-resolver %s: subset %s (%s) selects no instance: no example instance of %s runs with -meta %s=%s", e.Name, name, e.Subsets[name].Filter, e.Name, k, v)
				}
			}
		case *api.ServiceSplitterConfigEntry:
			if protocol[e.Name] != "grpc" {
				c.fail(consulService, field, "service-splitter %s: no service-defaults with Protocol grpc before it (Consul refuses a splitter of a tcp service)", e.Name)
			}
			if e.Name == "products" {
				for _, sp := range e.Splits {
					split[sp.ServiceSubset] += sp.Weight
				}
			}
		case *api.ServiceRouterConfigEntry:
			if protocol[e.Name] != "grpc" {
				c.fail(consulService, field, "service-router %s: no service-defaults with Protocol grpc before it", e.Name)
			}
		}
	}
	if !maps.Equal(split, wantSplit) {
		c.fail(consulService, field, "products split %v, want %v (the tour and the environment test count on it)", split, wantSplit)
	}
}

// metaFilter reads a subset filter of the form Service.Meta.KEY == "VALUE".
func metaFilter(filter string) (key, value string, ok bool) {
	lhs, rhs, ok := strings.Cut(filter, "==")
	if !ok {
		return "", "", false
	}
	key, ok = strings.CutPrefix(strings.TrimSpace(lhs), "Service.Meta.")
	value, err := strconv.Unquote(strings.TrimSpace(rhs))
	return key, value, ok && err == nil
}

func (c *checker) dependsHealthy(s types.ServiceConfig, on string) {
	if d, ok := s.DependsOn[on]; !ok || d.Condition != types.ServiceConditionHealthy {
		c.fail(s.Name, "depends_on "+on, "want condition: %s", types.ServiceConditionHealthy)
	}
}

type hostPort struct{ host, port string }

// hostPort splits addr; unspecified says whether the host must be a
// wildcard (a listener other containers and published ports reach).
func (c *checker) hostPort(service, field, addr string, unspecified bool) hostPort {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		c.fail(service, field, "%q: %v", addr, err)
		return hostPort{}
	}
	if ip := net.ParseIP(host); unspecified && host != "" && (ip == nil || !ip.IsUnspecified()) {
		c.fail(service, field, "%q listens on %s only; want 0.0.0.0 inside a container", addr, host)
	}
	return hostPort{host, port}
}

// flagValue finds -name or --name in a command, as "-name v" or "-name=v".
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		k, v, eq := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		switch {
		case k != name:
		case eq:
			return v, true
		case i+1 < len(args):
			return args[i+1], true
		}
	}
	return "", false
}

// healthURL is the URL a `portico probe` health check probes, or "".
func healthURL(s types.ServiceConfig) string {
	if hc := s.HealthCheck; hc != nil && len(hc.Test) >= 4 && hc.Test[1] == "portico" && hc.Test[2] == "probe" {
		return hc.Test[len(hc.Test)-1]
	}
	return ""
}

// registryHost is the registry host an image reference names, or "" for a
// short name resolved by the engine's configuration.
func registryHost(ref string) string {
	first, _, ok := strings.Cut(ref, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return first
	}
	return ""
}
