// Package topology reads which example services run, and how many instances
// of each, from the integration environment's docker-compose.yml, so that
// the loopback demo (cmd/examples/demo) and `docker compose up` start the
// same set. A compose service is an instance of an example when it carries
// the label dev.portico.example whose value is the example's name (users,
// orders, products, accounts); products-1 and products-2 are two instances
// of products. integration/compose checks the rest of the file.
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
	"os"
	"path/filepath"
	"sort"

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
// services (a service's scale counts), sorted by name.
func Examples(p *types.Project) []Example {
	counts := map[string]int{}
	for _, s := range p.Services {
		if name, ok := s.Labels[Label]; ok {
			counts[name] += s.GetScale()
		}
	}
	out := make([]Example, 0, len(counts))
	for name, n := range counts {
		out = append(out, Example{Service: name, Instances: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// FromFile is Load with no environment and the default profiles, then
// Examples; an error if the file names no example service.
func FromFile(ctx context.Context, path string) ([]Example, error) {
	p, err := Load(ctx, path, nil)
	if err != nil {
		return nil, err
	}
	ex := Examples(p)
	if len(ex) == 0 {
		return nil, fmt.Errorf("compose file %s: no service has the label %s", path, Label)
	}
	return ex, nil
}
