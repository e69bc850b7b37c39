// Package topology reads which example services run, and how many instances
// of each, from the integration environment's docker-compose.yml, so that
// the loopback demo (cmd/examples/demo) and `docker compose up` start the
// same set. A compose service is an instance of an example when it carries
// the label dev.portico.example whose value is the example's name (users,
// orders, products, accounts); products-1 and products-2 are two instances
// of products. integration/compose checks the rest of the file.
//
// An instance's Consul service meta is the -meta key=value flags of its
// command (products-1 runs with -meta version=1, products-2 with -meta
// version=2), and the config entries Consul bootstraps (a service-resolver
// with a subset per version, a 90/10 service-splitter) are the JSON agent
// config files the consul service loads with -config-file: the demo
// registers the same meta and writes the same entries (ConsulEntries), so
// the two split products traffic alike.
//
// The file is loaded with the Compose Specification's own loader
// (compose-go): interpolation, schema validation, normalization and the
// consistency checks all run, exactly as `docker compose config` would.
package topology

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/template"
	"github.com/compose-spec/compose-go/v2/types"
)

// Label marks a compose service as an instance of an example service; its
// value is the example's name.
const Label = "dev.portico.example"

// Example is one example service and how many instances of it run.
type Example struct {
	Service   string
	Instances int
	// Meta is each instance's Consul service meta, instance 1 first: the
	// -meta key=value flags of its compose service's command, the
	// services taken in name order (products-1, then products-2), every
	// instance of a scaled service alike. Nil when no instance has meta;
	// otherwise one map per instance, nil for an instance without.
	Meta []map[string]string
}

// Load reads and validates the compose file at path. env is what ${VAR}
// references see (nil: none, so every default applies; the caller's
// environment is deliberately not read, so the result does not depend on
// the shell). profiles enables services under those profiles ("*": all).
// Unset variables are not logged: their defaults are the file's to give,
// and integration/compose checks that every reference has one.
func Load(ctx context.Context, path string, env map[string]string, profiles ...string) (*types.Project, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	content, err := os.ReadFile(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("compose file %s not found (run from the repository root or give its path)", path)
	}
	if err != nil {
		return nil, err
	}
	details := types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs, Content: content}},
		Environment: types.Mapping(env),
	}
	// The file names no project (Compose v1 reads no top-level name): the
	// project is the directory's, as `docker compose` names it.
	name := loader.NormalizeProjectName(filepath.Base(filepath.Dir(abs)))
	if name == "" {
		name = "portico"
	}
	named := func(o *loader.Options) { o.SetProjectName(name, true) }
	p, err := loader.LoadWithContext(ctx, details, loader.WithProfiles(profiles), quiet, named)
	if err != nil {
		return nil, fmt.Errorf("compose file %s: %w", path, err)
	}
	return p, nil
}

// quiet substitutes variables without logrus warnings about unset ones.
func quiet(o *loader.Options) {
	o.Interpolate.Substitute = func(s string, m template.Mapping) (string, error) {
		return template.SubstituteWithOptions(s, m, template.WithoutLogging)
	}
}

// Examples counts the instances of each example among the project's enabled
// services (a service's scale counts), sorted by name, with their meta. A
// malformed -meta flag is an error naming the service.
func Examples(p *types.Project) ([]Example, error) {
	byName := map[string]*Example{}
	var names []string
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		example, ok := s.Labels[Label]
		if !ok {
			continue
		}
		meta, err := commandMeta(s.Command)
		if err != nil {
			return nil, fmt.Errorf("service %s: command: %w", name, err)
		}
		e := byName[example]
		if e == nil {
			e = &Example{Service: example}
			byName[example] = e
			names = append(names, example)
		}
		for range s.GetScale() {
			e.Instances++
			e.Meta = append(e.Meta, meta)
		}
	}
	sort.Strings(names)
	out := make([]Example, 0, len(names))
	for _, name := range names {
		e := *byName[name]
		if !slices.ContainsFunc(e.Meta, func(m map[string]string) bool { return m != nil }) {
			e.Meta = nil
		}
		out = append(out, e)
	}
	return out, nil
}

// commandMeta collects the -meta key=value flags of a command (also
// --meta, and -meta=key=value), as the example commands parse them: an
// empty key or a key given twice is an error. Nil when there are none.
func commandMeta(cmd []string) (map[string]string, error) {
	var meta map[string]string
	for i := 0; i < len(cmd); i++ {
		name, kv, inline := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(cmd[i], "-"), "-"), "=")
		if !strings.HasPrefix(cmd[i], "-") || name != "meta" {
			continue
		}
		if !inline {
			if i+1 == len(cmd) {
				return nil, errors.New("-meta without a value")
			}
			i++
			kv = cmd[i]
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("-meta %q: want key=value", kv)
		}
		if _, dup := meta[k]; dup {
			return nil, fmt.Errorf("-meta %q: %s is given twice", kv, k)
		}
		if meta == nil {
			meta = map[string]string{}
		}
		meta[k] = v
	}
	return meta, nil
}

// FromFile is Load with no environment and the default profiles, then
// Examples; an error if the file names no example service.
func FromFile(ctx context.Context, path string) ([]Example, error) {
	p, err := Load(ctx, path, nil)
	if err != nil {
		return nil, err
	}
	ex, err := Examples(p)
	if err != nil {
		return nil, fmt.Errorf("compose file %s: %w", path, err)
	}
	if len(ex) == 0 {
		return nil, fmt.Errorf("compose file %s: no service has the label %s", path, Label)
	}
	return ex, nil
}
