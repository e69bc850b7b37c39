package edge

import (
	"fmt"
	"net"
	"time"
)

// Defaults of the edge section: every limit a client controls at the HTTP
// layer has one.
const (
	DefaultListen = "127.0.0.1:8080"
	// DefaultAdminListen is the operator listener; loopback only by default.
	DefaultAdminListen = "127.0.0.1:9901"
	// DefaultMaxHeaderBytes caps the request line plus headers (431 beyond).
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultReadHeaderTimeout bounds reading the request headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds reading a whole request, body included.
	DefaultReadTimeout = 60 * time.Second
	// DefaultIdleTimeout closes keep-alive connections idle this long.
	DefaultIdleTimeout = 120 * time.Second
	// DefaultUpstreamTimeout is the deadline of a unary upstream call; a
	// client's Grpc-Timeout header may shorten it, never extend it.
	DefaultUpstreamTimeout = 30 * time.Second
	// DefaultMaxStreamDuration bounds a server-streaming call.
	DefaultMaxStreamDuration = time.Hour
	// DefaultShutdownGrace is how long a stop waits for in-flight requests.
	DefaultShutdownGrace = 15 * time.Second
)

// DefaultForwardHeaders are the request headers passed to upstreams as gRPC
// metadata (lower-cased) besides the Grpc-Metadata- prefixed ones.
var DefaultForwardHeaders = []string{"Authorization", "Accept-Language", "User-Agent"}

// Config is the `edge` section of the operator's YAML.
type Config struct {
	// Listen is the public address, host:port.
	Listen string `yaml:"listen"`
	// AdminListen is the operator address (/healthz, /readyz, /metrics),
	// host:port; empty turns it off (and with it Consul self-registration).
	AdminListen string `yaml:"admin_listen"`
	// TLS terminates HTTPS (HTTP/2 through ALPN) when both files are set;
	// otherwise the listener speaks HTTP/1.1 and cleartext HTTP/2.
	TLS TLSConfig `yaml:"tls"`
	// MaxHeaderBytes caps the request line and headers.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// ReadHeaderTimeout bounds reading the request headers.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// IdleTimeout closes idle keep-alive connections.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// UpstreamTimeout is the deadline of a unary upstream call.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// MaxStreamDuration bounds a server-streaming call.
	MaxStreamDuration time.Duration `yaml:"max_stream_duration"`
	// ShutdownGrace bounds the drain of in-flight requests on stop.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// ForwardHeaders lists request headers forwarded as metadata.
	ForwardHeaders []string `yaml:"forward_headers"`
}

// TLSConfig names the certificate and key files of the public listener.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Listen:            DefaultListen,
		AdminListen:       DefaultAdminListen,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       DefaultReadTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		UpstreamTimeout:   DefaultUpstreamTimeout,
		MaxStreamDuration: DefaultMaxStreamDuration,
		ShutdownGrace:     DefaultShutdownGrace,
		ForwardHeaders:    append([]string(nil), DefaultForwardHeaders...),
	}
}

// Validate reports the first invalid value.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("edge.listen %q: want host:port: %v", c.Listen, err)
	}
	if c.AdminListen != "" {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			return fmt.Errorf("edge.admin_listen %q: want host:port: %v", c.AdminListen, err)
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return fmt.Errorf("edge.tls: cert_file and key_file go together")
	}
	for name, d := range map[string]time.Duration{
		"read_header_timeout": c.ReadHeaderTimeout, "read_timeout": c.ReadTimeout,
		"idle_timeout": c.IdleTimeout, "upstream_timeout": c.UpstreamTimeout,
		"max_stream_duration": c.MaxStreamDuration, "shutdown_grace": c.ShutdownGrace,
	} {
		if d <= 0 {
			return fmt.Errorf("edge.%s must be > 0, got %s", name, d)
		}
	}
	if c.MaxHeaderBytes < 1024 {
		return fmt.Errorf("edge.max_header_bytes must be >= 1024, got %d", c.MaxHeaderBytes)
	}
	return nil
}
