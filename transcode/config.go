package transcode

import (
	"fmt"
	"time"
)

// Defaults for every limit a client controls through the transcoder. Each one
// is a key of [Config].
const (
	// DefaultMaxBodyBytes caps a request body (413 beyond it). It matches
	// gRPC's default maximum message size.
	DefaultMaxBodyBytes = 4 << 20
	// DefaultMaxJSONDepth caps nesting in JSON bodies (400 beyond it).
	DefaultMaxJSONDepth = 64
	// DefaultMaxRepeatedElements caps the elements of repeated fields, map
	// entries and free-form (Struct, Any) values in one request body: 400
	// beyond it, before any message is built.
	DefaultMaxRepeatedElements = 10000
	// DefaultMaxQueryParams caps the number of query parameters (400 beyond it).
	DefaultMaxQueryParams = 256
	// DefaultStreamIdleTimeout ends a server stream that sends nothing for
	// this long (the upstream call is cancelled).
	DefaultStreamIdleTimeout = 5 * time.Minute
)

// Config is the `transcode` section of the operator's YAML.
type Config struct {
	// AllowUnknownFields accepts (and drops) JSON body fields the request
	// message does not have. Off by default: an unknown field is a 400.
	AllowUnknownFields bool `yaml:"allow_unknown_fields"`
	// ExposeUnannotated also serves methods without a google.api.http option
	// as `POST /<package>.<Service>/<Method>` with the whole message as body.
	// A service is exposed only if it has at least one route.
	ExposeUnannotated bool `yaml:"expose_unannotated"`
	// MaxBodyBytes: largest accepted request body, in bytes.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxJSONDepth: deepest accepted JSON nesting in a request body.
	MaxJSONDepth int `yaml:"max_json_depth"`
	// MaxRepeatedElements: most repeated elements (array values, map
	// entries, Struct and Any members) in one request body.
	MaxRepeatedElements int `yaml:"max_repeated_elements"`
	// MaxQueryParams: most query parameters accepted on one request.
	MaxQueryParams int `yaml:"max_query_params"`
	// StreamIdleTimeout ends a server stream silent for this long.
	StreamIdleTimeout time.Duration `yaml:"stream_idle_timeout"`
	// InferUpdateMask fills a PATCH request's update_mask, when the client
	// sent none, with the paths of the JSON keys in the body (as
	// grpc-gateway does), for rules whose body is one message field of a
	// request that has a google.protobuf.FieldMask named update_mask. On by
	// default; off, such a request reaches the service with no mask.
	InferUpdateMask bool `yaml:"infer_update_mask"`
	// Codec is how JSON becomes protobuf and back: "fast" (the default)
	// writes wire bytes straight from the JSON and JSON straight from the
	// upstream's wire bytes, building no message; "protojson" uses
	// protobuf-go's protojson over dynamic messages, the reference the fast
	// codec is tested against. Message types the fast codec declines
	// (proto2 groups, required fields, closed enums, extensions) use
	// protojson either way: portico_route_table_protojson_routes counts
	// them and the debug log says why.
	Codec string `yaml:"codec"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:        DefaultMaxBodyBytes,
		MaxJSONDepth:        DefaultMaxJSONDepth,
		MaxQueryParams:      DefaultMaxQueryParams,
		MaxRepeatedElements: DefaultMaxRepeatedElements,
		StreamIdleTimeout:   DefaultStreamIdleTimeout,
		InferUpdateMask:     true,
		Codec:               CodecFast,
	}
}

// Validate reports the first invalid value.
func (c Config) Validate() error {
	switch {
	case c.MaxBodyBytes <= 0:
		return fmt.Errorf("transcode.max_body_bytes must be > 0, got %d", c.MaxBodyBytes)
	case c.MaxJSONDepth <= 0 || c.MaxJSONDepth > 10000:
		return fmt.Errorf("transcode.max_json_depth must be in 1..10000, got %d", c.MaxJSONDepth)
	case c.MaxRepeatedElements <= 0:
		return fmt.Errorf("transcode.max_repeated_elements must be > 0, got %d", c.MaxRepeatedElements)
	case c.MaxQueryParams <= 0:
		return fmt.Errorf("transcode.max_query_params must be > 0, got %d", c.MaxQueryParams)
	case c.Codec != CodecFast && c.Codec != CodecProtojson:
		return fmt.Errorf("transcode.codec must be %q or %q, got %q", CodecFast, CodecProtojson, c.Codec)
	case c.StreamIdleTimeout <= 0:
		return fmt.Errorf("transcode.stream_idle_timeout must be > 0, got %s", c.StreamIdleTimeout)
	}
	return nil
}
