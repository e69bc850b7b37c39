package topology

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/hashicorp/consul/api"
)

// ConsulService is the compose service that runs the Consul agent.
const ConsulService = "consul"

// ConsulEntries reads the config entries the Consul service bootstraps:
// the files its command loads with -config-file (found on the host through
// its bind mounts), in order, each a JSON agent config holding only
//
//	{"config_entries": {"bootstrap": [{"Kind": "service-defaults", "Name": …}, …]}}
//
// with the entries' keys as Consul's HTTP API spells them (Kind, Name,
// DefaultSubset, Splits, …). A dev agent is a server and writes them when
// it becomes leader; the demo writes them with the API (ConfigEntries
// Set), in the same order, which matters: a splitter's subsets must exist
// and the protocol must be grpc before Consul accepts it. Anything else in
// such a file (another agent setting, an unknown key, HCL, -config-dir) is
// an error, so the demo cannot silently differ from `docker compose up`.
// None without a consul service or -config-file.
func ConsulEntries(p *types.Project) ([]api.ConfigEntry, error) {
	s, ok := p.Services[ConsulService]
	if !ok {
		return nil, nil
	}
	var out []api.ConfigEntry
	for i := 0; i < len(s.Command); i++ {
		name, value, inline := strings.Cut(strings.TrimLeft(s.Command[i], "-"), "=")
		if !strings.HasPrefix(s.Command[i], "-") {
			continue
		}
		switch name {
		case "config-dir":
			return nil, fmt.Errorf("service %s: command: -config-dir is not read here; name each file with -config-file", ConsulService)
		case "config-file":
		default:
			continue
		}
		if !inline {
			if i+1 == len(s.Command) {
				return nil, fmt.Errorf("service %s: command: -config-file without a value", ConsulService)
			}
			i++
			value = s.Command[i]
		}
		host, err := mounted(s, value)
		if err != nil {
			return nil, fmt.Errorf("service %s: -config-file %s: %w", ConsulService, value, err)
		}
		entries, err := readEntries(host)
		if err != nil {
			return nil, fmt.Errorf("service %s: -config-file %s: %w", ConsulService, value, err)
		}
		out = append(out, entries...)
	}
	return out, nil
}

// EntriesFromFile is Load with no environment and the default profiles,
// then ConsulEntries.
func EntriesFromFile(ctx context.Context, path string) ([]api.ConfigEntry, error) {
	p, err := Load(ctx, path, nil)
	if err != nil {
		return nil, err
	}
	entries, err := ConsulEntries(p)
	if err != nil {
		return nil, fmt.Errorf("compose file %s: %w", path, err)
	}
	return entries, nil
}

// mounted maps a path in the service's container to the host file a bind
// mount puts there.
func mounted(s types.ServiceConfig, target string) (string, error) {
	target = path.Clean(target)
	for _, v := range s.Volumes {
		if v.Type != types.VolumeTypeBind {
			continue
		}
		dir := path.Clean(v.Target)
		if target == dir {
			return v.Source, nil
		}
		if rel, ok := strings.CutPrefix(target, dir+"/"); ok {
			return filepath.Join(v.Source, filepath.FromSlash(rel)), nil
		}
	}
	return "", errors.New("no bind mount puts a file of the repository there")
}

// readEntries reads one JSON agent config of config entries.
func readEntries(file string) ([]api.ConfigEntry, error) {
	if ext := filepath.Ext(file); ext != ".json" {
		return nil, fmt.Errorf("%s: only JSON agent configs are read (the extension is %q)", filepath.Base(file), ext)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		ConfigEntries struct {
			Bootstrap []json.RawMessage `json:"bootstrap"`
		} `json:"config_entries"`
	}
	if err := strict(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w (want only config_entries.bootstrap)", filepath.Base(file), err)
	}
	out := make([]api.ConfigEntry, 0, len(cfg.ConfigEntries.Bootstrap))
	for i, raw := range cfg.ConfigEntries.Bootstrap {
		var head struct{ Kind, Name string }
		if err := json.Unmarshal(raw, &head); err != nil {
			return nil, fmt.Errorf("%s: config_entries.bootstrap[%d]: %w", filepath.Base(file), i, err)
		}
		if head.Name == "" {
			return nil, fmt.Errorf("%s: config_entries.bootstrap[%d]: no Name", filepath.Base(file), i)
		}
		// DecodeConfigEntry picks the entry's type by its kind; JSON fills
		// it (the types' own UnmarshalJSON parse durations), and a key the
		// type lacks is refused: it is not in the entry encoded again.
		e, err := api.DecodeConfigEntry(map[string]any{"Kind": head.Kind})
		if err == nil {
			err = json.Unmarshal(raw, e)
		}
		if err == nil {
			err = known(raw, e)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: config_entries.bootstrap[%d] (%s %s): %w", filepath.Base(file), i, head.Kind, head.Name, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// known checks that every key of raw with a value other than a zero one
// survives in e encoded again: one the type lacks was dropped.
func known(raw []byte, e api.ConfigEntry) error {
	back, err := json.Marshal(e)
	if err != nil {
		return err
	}
	var in, out any
	if err := json.Unmarshal(raw, &in); err != nil {
		return err
	}
	if err := json.Unmarshal(back, &out); err != nil {
		return err
	}
	if at := dropped(in, out, ""); at != "" {
		return fmt.Errorf("unknown key %s", at)
	}
	return nil
}

// dropped is the path of the first key of in that out lacks (keys match as
// encoding/json matches them, ignoring case), or "".
func dropped(in, out any, at string) string {
	switch in := in.(type) {
	case map[string]any:
		o, _ := out.(map[string]any)
		for k, v := range in {
			if zero(v) {
				continue
			}
			var ov any
			found := false
			for ok, x := range o {
				if strings.EqualFold(ok, k) {
					ov, found = x, true
					break
				}
			}
			if !found {
				return at + "." + k
			}
			if d := dropped(v, ov, at+"."+k); d != "" {
				return d
			}
		}
	case []any:
		o, _ := out.([]any)
		for i, v := range in {
			if i >= len(o) {
				return fmt.Sprintf("%s[%d]", at, i)
			}
			if d := dropped(v, o[i], fmt.Sprintf("%s[%d]", at, i)); d != "" {
				return d
			}
		}
	}
	return ""
}

// zero reports a JSON value that omitempty leaves out.
func zero(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case bool:
		return !v
	case float64:
		return v == 0
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

// strict decodes one JSON value into v, refusing unknown keys and
// anything after the value.
func strict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}
