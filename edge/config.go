package edge

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/portico-dev/portico/policies"
)

// Defaults of the edge section: every limit a client controls at the HTTP
// layer has one.
const (
	DefaultListen = "127.0.0.1:8080"
	// DefaultAdminListen is the operator listener; loopback only by default.
	DefaultAdminListen = "127.0.0.1:9901"
	// DefaultMaxHeaderBytes caps the request line plus headers (431 beyond).
	DefaultMaxHeaderBytes = 64 << 10
	// minMaxHeaderBytes is the smallest edge.max_header_bytes: twice what
	// net/http reads at once, so that the connection guard's 431 can never
	// cut into the request before the one it refuses.
	minMaxHeaderBytes = 8 << 10
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
	// DefaultDrainDelay is how long a stopping Portico keeps serving while
	// failing readiness, so that load balancers and Consul stop sending new
	// connections before the listener closes.
	DefaultDrainDelay = 5 * time.Second
	// DefaultTLSReloadInterval is how often the listener's certificate
	// files are checked for a change.
	DefaultTLSReloadInterval = 5 * time.Second
	// DefaultWriteTimeout ends a response whose client takes no bytes for
	// this long: every write to a client has this deadline.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultMaxInflightBodyBytes is the budget of request-body bytes held in
	// memory by all requests together; a request that would go past it gets
	// 503 with Retry-After.
	DefaultMaxInflightBodyBytes = 64 << 20
	// DefaultHTTP2MaxConcurrentStreams caps the open streams of one HTTP/2
	// connection.
	DefaultHTTP2MaxConcurrentStreams = 100
	// DefaultHTTP2MaxReadFrameSize is the largest HTTP/2 frame accepted.
	DefaultHTTP2MaxReadFrameSize = 16 << 10
	// DefaultHTTP2MaxReceiveBufferPerStream is the flow-control window of one
	// stream: what a client can make the edge buffer for one request before
	// the handler reads it.
	DefaultHTTP2MaxReceiveBufferPerStream = 256 << 10
	// DefaultHTTP2MaxReceiveBufferPerConnection is the window of one whole
	// connection, all its streams together.
	DefaultHTTP2MaxReceiveBufferPerConnection = 1 << 20
	// DefaultTraceHeader returns the trace id to clients.
	DefaultTraceHeader = "X-Trace-Id"
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
	// WriteTimeout bounds every write to a client: a response (or a server
	// stream) whose client takes no bytes for this long is ended and its
	// upstream call cancelled.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// MaxInflightBodyBytes is the global budget of request-body bytes held
	// in memory at once; past it a request gets 503 with Retry-After.
	MaxInflightBodyBytes int64 `yaml:"max_inflight_body_bytes"`
	// TrustedProxies lists the networks (CIDRs or addresses) whose
	// X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host are believed.
	// From any other peer those headers are replaced: the peer is the
	// client. Empty by default.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// HTTP2 holds the HTTP/2 limits.
	HTTP2 HTTP2Config `yaml:"http2"`
	// Compose holds the composed methods' frontend protos.
	Compose ComposeConfig `yaml:"compose"`
	// OpenAPI serves GET /openapi.json and /openapi.yaml on the public
	// listener: the OpenAPI 3.1 document of the routes served, made from
	// the route table (a route of a service's at those paths wins).
	OpenAPI bool `yaml:"openapi"`
	// Docs serves GET /docs on the public listener: a page of that
	// document, its assets in the binary (no CDN). Off by default.
	Docs bool `yaml:"docs"`
	// Frontends are the views of the services that different clients
	// get (web, mobile, partner): each request is served by one, chosen
	// by the listener, the Host or the caller's credential. Empty: one
	// view of everything.
	Frontends []FrontendConfig `yaml:"frontends"`
	// DefaultFrontend serves a request no frontend's rules pick; "":
	// such a request is a 404.
	DefaultFrontend string `yaml:"default_frontend"`
	// UpstreamTimeout is the deadline of a unary upstream call.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// MaxStreamDuration bounds a server-streaming call.
	MaxStreamDuration time.Duration `yaml:"max_stream_duration"`
	// ShutdownGrace bounds the drain of in-flight requests on stop, after
	// DrainDelay; server streams still open when it starts are ended with
	// a final UNAVAILABLE message.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// DrainDelay is how long a stopping Portico fails /readyz (and has left
	// Consul) while it still serves, closing keep-alive connections after
	// their next response.
	DrainDelay time.Duration `yaml:"drain_delay"`
	// ForwardHeaders lists request headers forwarded as metadata.
	ForwardHeaders []string `yaml:"forward_headers"`
	// AccessLog is the per-request JSON log.
	AccessLog AccessLogConfig `yaml:"access_log"`
	// Tracing is OpenTelemetry tracing.
	Tracing TracingConfig `yaml:"tracing"`
}

// HTTP2Config is `edge.http2`: what one HTTP/2 connection may cost.
type HTTP2Config struct {
	// MaxConcurrentStreams caps the open streams of one connection.
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
	// MaxReadFrameSize is the largest frame read, 16 KiB to 16 MiB.
	MaxReadFrameSize int `yaml:"max_read_frame_size"`
	// MaxReceiveBufferPerStream is one stream's flow-control window.
	MaxReceiveBufferPerStream int `yaml:"max_receive_buffer_per_stream"`
	// MaxReceiveBufferPerConnection is the whole connection's window.
	MaxReceiveBufferPerConnection int `yaml:"max_receive_buffer_per_connection"`
}

// TLSConfig names the certificate and key files of the public listener.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ReloadInterval is how often the files are checked; a changed pair is
	// loaded for new handshakes (a broken pair keeps the old one).
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// ClientCAFile turns on client certificate verification against the
	// PEM CAs in the file (partner APIs).
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth is "require" (default with a client CA: no valid client
	// certificate, no handshake) or "optional" (verified when presented).
	ClientAuth string `yaml:"client_auth"`
}

// AccessLogConfig is `edge.access_log`.
type AccessLogConfig struct {
	// Enabled writes one JSON line per request (default true).
	Enabled *bool `yaml:"enabled"`
	// SampleRatio is the share of requests answered below 500 that are
	// logged, 0 to 1 (default 1); 5xx answers are always logged.
	SampleRatio float64 `yaml:"sample_ratio"`
}

// On reports whether the access log is written.
func (c AccessLogConfig) On() bool { return c.Enabled == nil || *c.Enabled }

// TracingConfig is `edge.tracing`.
type TracingConfig struct {
	// Exporter is "none" (default: trace ids are still made, propagated
	// and returned, nothing is exported) or "otlp" (OTLP over gRPC).
	Exporter string `yaml:"exporter"`
	// Endpoint is the OTLP collector, host:port.
	Endpoint string `yaml:"endpoint"`
	// Insecure talks to the collector without TLS.
	Insecure bool `yaml:"insecure"`
	// SampleRatio is the share of new traces sampled (default 1); a trusted
	// incoming traceparent's sampled flag is followed.
	SampleRatio float64 `yaml:"sample_ratio"`
	// TrustIncoming lists the client networks whose W3C traceparent is
	// continued (CIDRs, or "private" for loopback and private ranges,
	// "any", "none"); others start a new trace. Default none: behind a
	// load balancer every client comes from its private address, so name
	// the networks of your internal callers.
	TrustIncoming []string `yaml:"trust_incoming"`
	// ResponseHeader carries the trace id back to the client (default
	// X-Trace-Id; "-" turns it off).
	ResponseHeader string `yaml:"response_header"`
	// ServiceName is the resource's service.name (default "portico").
	ServiceName string `yaml:"service_name"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Listen:               DefaultListen,
		AdminListen:          DefaultAdminListen,
		MaxHeaderBytes:       DefaultMaxHeaderBytes,
		ReadHeaderTimeout:    DefaultReadHeaderTimeout,
		ReadTimeout:          DefaultReadTimeout,
		IdleTimeout:          DefaultIdleTimeout,
		UpstreamTimeout:      DefaultUpstreamTimeout,
		WriteTimeout:         DefaultWriteTimeout,
		MaxInflightBodyBytes: DefaultMaxInflightBodyBytes,
		HTTP2: HTTP2Config{
			MaxConcurrentStreams:          DefaultHTTP2MaxConcurrentStreams,
			MaxReadFrameSize:              DefaultHTTP2MaxReadFrameSize,
			MaxReceiveBufferPerStream:     DefaultHTTP2MaxReceiveBufferPerStream,
			MaxReceiveBufferPerConnection: DefaultHTTP2MaxReceiveBufferPerConnection,
		},
		MaxStreamDuration: DefaultMaxStreamDuration,
		ShutdownGrace:     DefaultShutdownGrace,
		DrainDelay:        DefaultDrainDelay,
		ForwardHeaders:    append([]string(nil), DefaultForwardHeaders...),
		TLS:               TLSConfig{ReloadInterval: DefaultTLSReloadInterval},
		Compose:           ComposeConfig{PollInterval: DefaultComposePollInterval},
		OpenAPI:           true,
		AccessLog:         AccessLogConfig{SampleRatio: 1},
		Tracing: TracingConfig{
			Exporter: "none", SampleRatio: 1,
			ResponseHeader: DefaultTraceHeader, ServiceName: "portico",
		},
	}
}

// ComposeConfig says where the frontend protos are: .proto files whose
// rpcs no service implements, each with a (portico.v1.compose) option that
// the edge answers by calling the services it serves.
type ComposeConfig struct {
	// ProtosDir is the directory of the frontend protos (read recursively,
	// imports resolved from it, then from the services' reflected files,
	// then from the linked google/api, google/protobuf and portico/v1).
	// They are loaded with every route table and again when a file
	// changes (checked every PollInterval) or on SIGHUP. Empty: none.
	ProtosDir string `yaml:"protos_dir"`
	// PollInterval is how often ProtosDir is checked for changes.
	PollInterval time.Duration `yaml:"poll_interval"`
}

// FrontendConfig is one frontend (edge.frontends).
type FrontendConfig struct {
	// Name is what protos name in (portico.v1.method).frontends and
	// (portico.v1.field).frontends: lower case letters, digits, - and _.
	Name string `yaml:"name"`
	// Mode: "exclude" (the default) sees every method and field but those
	// that name only other frontends; "include" sees only those that name
	// it, so that a new field never reaches it unannounced (partners).
	Mode string `yaml:"mode"`
	// Listen, when set, is an address of its own (host:port, with the
	// public listener's TLS and limits): every request it accepts is this
	// frontend's, whatever its Host or credential. The frontend's other
	// rules still pick it on the public listener.
	Listen string `yaml:"listen"`
	// Hosts are the Host header values it serves (the port aside): a name,
	// or "*.example.com" for its subdomains.
	Hosts []string `yaml:"hosts"`
	// Claim serves callers whose verified JWT has this claim value,
	// "name=value" (a list claim such as aud: one of its values).
	Claim string `yaml:"claim"`
	// APIKeySource serves callers whose API key comes from this source
	// (the name of one of policies.api_keys).
	APIKeySource string `yaml:"api_key_source"`
	// CORS is the CORS default of its routes whose method declares none,
	// instead of the operator's policies.cors (a partner's origins).
	CORS *policies.CORSConfig `yaml:"cors"`
	// Providers are the credential providers (policies.jwt and api_keys
	// names) its routes accept when their method names none; empty: all.
	Providers []string `yaml:"providers"`
	// RateLimitTier is the rate-limit tier of its callers whose tier claim
	// picks none: in a method whose (portico.v1.method).rate_limit has a
	// tier with this value, those callers get that tier's limit (and
	// bucket) instead of the method's base limit. Empty: the base limit.
	RateLimitTier string `yaml:"rate_limit_tier"`
}

var frontendName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

func (c Config) validateFrontends() error {
	seen := map[string]bool{}
	hosts := map[string]string{}
	// Port 0 binds a free port each time: it may repeat.
	listens := map[string]string{}
	for addr, what := range map[string]string{c.Listen: "edge.listen", c.AdminListen: "edge.admin_listen"} {
		if addr != "" && !strings.HasSuffix(addr, ":0") {
			listens[addr] = what
		}
	}
	for i, f := range c.Frontends {
		switch {
		case !frontendName.MatchString(f.Name):
			return fmt.Errorf("edge.frontends[%d].name %q: lower case letters, digits, - and _, starting with a letter", i, f.Name)
		case seen[f.Name]:
			return fmt.Errorf("edge.frontends[%d].name %q: named twice", i, f.Name)
		case f.Mode != "" && f.Mode != "include" && f.Mode != "exclude":
			return fmt.Errorf("edge.frontends[%d].mode %q: include or exclude", i, f.Mode)
		}
		seen[f.Name] = true
		if name, value, ok := strings.Cut(f.Claim, "="); f.Claim != "" && (!ok || name == "" || value == "") {
			return fmt.Errorf("edge.frontends[%d].claim %q: name=value", i, f.Claim)
		}
		if f.Listen != "" {
			if _, _, err := net.SplitHostPort(f.Listen); err != nil {
				return fmt.Errorf("edge.frontends[%d].listen %q: host:port: %v", i, f.Listen, err)
			}
			if other, ok := listens[f.Listen]; ok {
				return fmt.Errorf("edge.frontends[%d].listen %q: already %s", i, f.Listen, other)
			}
			if !strings.HasSuffix(f.Listen, ":0") {
				listens[f.Listen] = "frontend " + f.Name + "'s"
			}
		}
		if err := f.CORS.Validate(); err != nil {
			return fmt.Errorf("edge.frontends[%d].cors: %w", i, err)
		}
		for _, h := range f.Hosts {
			if h == "" || h != strings.ToLower(h) || strings.ContainsAny(h, ":/ ") || strings.Contains(h[1:], "*") {
				return fmt.Errorf("edge.frontends[%d].hosts: %q is not a lower-case host name (or *.domain) without a port", i, h)
			}
			if other, ok := hosts[h]; ok {
				return fmt.Errorf("edge.frontends[%d].hosts: %q is %s's already", i, h, other)
			}
			hosts[h] = f.Name
		}
	}
	if c.DefaultFrontend != "" && !seen[c.DefaultFrontend] {
		return fmt.Errorf("edge.default_frontend %q: no frontend has that name", c.DefaultFrontend)
	}
	return nil
}

// DefaultComposePollInterval is edge.compose.poll_interval's default.
const DefaultComposePollInterval = 2 * time.Second

// Validate reports the first invalid value.
func (c Config) Validate() error {
	if err := c.validateFrontends(); err != nil {
		return err
	}
	if c.Compose.ProtosDir != "" {
		if st, err := os.Stat(c.Compose.ProtosDir); err != nil || !st.IsDir() {
			return fmt.Errorf("edge.compose.protos_dir %q: not a directory", c.Compose.ProtosDir)
		}
		if c.Compose.PollInterval <= 0 {
			return fmt.Errorf("edge.compose.poll_interval must be > 0, got %s", c.Compose.PollInterval)
		}
	}
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
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		return fmt.Errorf("edge.tls.client_ca_file needs cert_file and key_file")
	}
	switch c.TLS.ClientAuth {
	case "", "require", "optional":
	default:
		return fmt.Errorf("edge.tls.client_auth must be require or optional, got %q", c.TLS.ClientAuth)
	}
	if c.TLS.CertFile != "" && c.TLS.ReloadInterval <= 0 {
		return fmt.Errorf("edge.tls.reload_interval must be > 0, got %s", c.TLS.ReloadInterval)
	}
	if c.DrainDelay < 0 {
		return fmt.Errorf("edge.drain_delay must be >= 0, got %s", c.DrainDelay)
	}
	if r := c.AccessLog.SampleRatio; r < 0 || r > 1 {
		return fmt.Errorf("edge.access_log.sample_ratio must be within [0, 1], got %g", r)
	}
	if err := c.Tracing.validate(); err != nil {
		return err
	}
	for name, d := range map[string]time.Duration{
		"read_header_timeout": c.ReadHeaderTimeout, "read_timeout": c.ReadTimeout,
		"idle_timeout": c.IdleTimeout, "upstream_timeout": c.UpstreamTimeout,
		"max_stream_duration": c.MaxStreamDuration, "shutdown_grace": c.ShutdownGrace,
		"write_timeout": c.WriteTimeout,
	} {
		if d <= 0 {
			return fmt.Errorf("edge.%s must be > 0, got %s", name, d)
		}
	}
	if c.MaxInflightBodyBytes <= 0 {
		return fmt.Errorf("edge.max_inflight_body_bytes must be > 0, got %d", c.MaxInflightBodyBytes)
	}
	if _, err := parseNets(c.TrustedProxies); err != nil {
		return fmt.Errorf("edge.trusted_proxies: %w", err)
	}
	h2 := c.HTTP2
	switch {
	case h2.MaxConcurrentStreams < 1:
		return fmt.Errorf("edge.http2.max_concurrent_streams must be >= 1, got %d", h2.MaxConcurrentStreams)
	case h2.MaxReadFrameSize < 16<<10 || h2.MaxReadFrameSize > 16<<20:
		return fmt.Errorf("edge.http2.max_read_frame_size must be within 16384..16777216, got %d", h2.MaxReadFrameSize)
	case h2.MaxReceiveBufferPerStream < 16<<10 || h2.MaxReceiveBufferPerStream >= 4<<20:
		return fmt.Errorf("edge.http2.max_receive_buffer_per_stream must be within 16 KiB..4 MiB, got %d", h2.MaxReceiveBufferPerStream)
	case h2.MaxReceiveBufferPerConnection < 64<<10 || h2.MaxReceiveBufferPerConnection >= 4<<20:
		return fmt.Errorf("edge.http2.max_receive_buffer_per_connection must be within 64 KiB..4 MiB, got %d", h2.MaxReceiveBufferPerConnection)
	}
	if c.MaxHeaderBytes < minMaxHeaderBytes {
		return fmt.Errorf("edge.max_header_bytes must be >= %d, got %d", minMaxHeaderBytes, c.MaxHeaderBytes)
	}
	return nil
}
