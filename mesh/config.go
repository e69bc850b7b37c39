package mesh

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Defaults of the mesh section.
const (
	// DefaultReflectTimeout bounds one reflection pass against one upstream.
	DefaultReflectTimeout = 10 * time.Second
	// DefaultRefreshInterval is how often upstreams are reflected again to
	// pick up new or changed methods without a restart.
	DefaultRefreshInterval = 30 * time.Second
	// DefaultMaxRecvMessageBytes caps one upstream response message.
	DefaultMaxRecvMessageBytes = 16 << 20
	// DefaultMaxSendMessageBytes caps one upstream request message.
	DefaultMaxSendMessageBytes = 16 << 20
)

// Config is the `mesh` section of the operator's YAML.
type Config struct {
	// Upstreams are the gRPC servers to reflect and call.
	Upstreams []Upstream `yaml:"upstreams"`
	// ReflectTimeout bounds one reflection pass against one upstream.
	ReflectTimeout time.Duration `yaml:"reflect_timeout"`
	// RefreshInterval: how often upstreams are reflected again.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// MaxRecvMessageBytes caps one response message from an upstream.
	MaxRecvMessageBytes int `yaml:"max_recv_message_bytes"`
	// MaxSendMessageBytes caps one request message to an upstream.
	MaxSendMessageBytes int `yaml:"max_send_message_bytes"`
}

// Upstream is one statically configured gRPC server.
type Upstream struct {
	// Address is host:port.
	Address string `yaml:"address"`
	// Plaintext disables TLS to this upstream. Off by default.
	Plaintext bool `yaml:"plaintext"`
	// CAFile verifies the upstream's certificate (system roots if empty).
	CAFile string `yaml:"ca_file"`
	// ServerName overrides the name checked in the upstream's certificate.
	ServerName string `yaml:"server_name"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		ReflectTimeout:      DefaultReflectTimeout,
		RefreshInterval:     DefaultRefreshInterval,
		MaxRecvMessageBytes: DefaultMaxRecvMessageBytes,
		MaxSendMessageBytes: DefaultMaxSendMessageBytes,
	}
}

// Validate reports the first invalid value.
func (c Config) Validate() error {
	if c.ReflectTimeout <= 0 {
		return fmt.Errorf("mesh.reflect_timeout must be > 0, got %s", c.ReflectTimeout)
	}
	if c.RefreshInterval <= 0 {
		return fmt.Errorf("mesh.refresh_interval must be > 0, got %s", c.RefreshInterval)
	}
	if c.MaxRecvMessageBytes <= 0 || c.MaxSendMessageBytes <= 0 {
		return errors.New("mesh.max_recv_message_bytes and mesh.max_send_message_bytes must be > 0")
	}
	seen := map[string]bool{}
	for i, u := range c.Upstreams {
		if _, _, err := net.SplitHostPort(u.Address); err != nil {
			return fmt.Errorf("mesh.upstreams[%d].address %q: want host:port: %v", i, u.Address, err)
		}
		if seen[u.Address] {
			return fmt.Errorf("mesh.upstreams[%d].address %q is listed twice", i, u.Address)
		}
		seen[u.Address] = true
		if u.Plaintext && (u.CAFile != "" || u.ServerName != "") {
			return fmt.Errorf("mesh.upstreams[%d]: ca_file and server_name need TLS, but plaintext is set", i)
		}
	}
	return nil
}
