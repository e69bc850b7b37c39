package app

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gopkg.in/yaml.v3"

	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/transcode"
)

// Config is the root of the operator's YAML file. Every key and its default
// is documented in the README ("Configuration"); each section belongs to
// the package that uses it.
type Config struct {
	Edge      edge.Config      `yaml:"edge"`
	Mesh      mesh.Config      `yaml:"mesh"`
	Transcode transcode.Config `yaml:"transcode"`
	Policies  policies.Config  `yaml:"policies"`
	Log       LogConfig        `yaml:"log"`
}

// LogConfig selects the log level and encoding.
type LogConfig struct {
	// Level: debug, info, warn or error.
	Level string `yaml:"level"`
	// Format: json (default) or console.
	Format string `yaml:"format"`
}

// DefaultConfig returns every section's defaults.
func DefaultConfig() Config {
	return Config{
		Edge:      edge.DefaultConfig(),
		Mesh:      mesh.DefaultConfig(),
		Transcode: transcode.DefaultConfig(),
		Policies:  policies.DefaultConfig(),
		Log:       LogConfig{Level: "info", Format: "json"},
	}
}

// LoadConfig decodes YAML over the defaults. Unknown keys are errors that
// name their line.
func LoadConfig(r io.Reader, into *Config) error {
	data, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(into); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// LoadConfigFile reads path over the defaults.
func LoadConfigFile(path string, into *Config) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := LoadConfig(f, into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Validate checks every section.
func (c Config) Validate() error {
	return errors.Join(c.Edge.Validate(), c.Mesh.Validate(), c.Transcode.Validate(), c.Policies.Validate(), c.Log.Validate(), c.frontendSources())
}

// frontendSources checks that the frontends name configured credential
// providers and API key sources.
func (c Config) frontendSources() error {
	known := map[string]bool{}
	for _, p := range c.Policies.JWT {
		known[p.Name] = true
	}
	keys := map[string]bool{}
	for _, s := range c.Policies.APIKeys {
		known[s.Name], keys[s.Name] = true, true
	}
	for i, f := range c.Edge.Frontends {
		for _, p := range f.Providers {
			if !known[p] {
				return fmt.Errorf("edge.frontends[%d].providers: %q is not one of policies.jwt or policies.api_keys", i, p)
			}
		}
		if f.APIKeySource != "" && !keys[f.APIKeySource] {
			return fmt.Errorf("edge.frontends[%d].api_key_source: %q is not one of policies.api_keys", i, f.APIKeySource)
		}
	}
	return nil
}

// Validate checks the log section.
func (l LogConfig) Validate() error {
	if _, err := zapcore.ParseLevel(l.Level); err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	if l.Format != "json" && l.Format != "console" {
		return fmt.Errorf("log.format must be json or console, got %q", l.Format)
	}
	return nil
}

// NewLogger builds the process logger from the log section.
func (l LogConfig) NewLogger() (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(l.Level)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	if l.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.DisableStacktrace = true
	return zc.Build()
}

// NewAccessLogger builds the access log: one line per request on stdout at
// info whatever log.level, in log.format, never sampled by zap (the
// edge.access_log.sample_ratio knob decides). Lines are buffered (64 KiB)
// and flushed every second and by stop, which must be called on exit: a
// write(2) per request would cost more than the rest of the telemetry.
func (l LogConfig) NewAccessLogger() (log *zap.Logger, stop func() error) {
	enc := zap.NewProductionEncoderConfig()
	encoder := zapcore.NewJSONEncoder(enc)
	if l.Format == "console" {
		encoder = zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	}
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(os.Stdout), Size: 64 << 10, FlushInterval: time.Second}
	core := zapcore.NewCore(encoder, ws, zapcore.InfoLevel)
	return zap.New(core).Named("access"), ws.Stop
}

// PlaintextUpstream is a static upstream reached without TLS.
func PlaintextUpstream(addr string) mesh.Upstream {
	return mesh.Upstream{Address: addr, Plaintext: true}
}
