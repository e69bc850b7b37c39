package transcode

import (
	"net/http"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-dev/portico/mesh/meshtest"
)

// kitchenProto exercises every field kind the transcoder binds.
const kitchenProto = `
syntax = "proto3";
package kitchen.v1;

import "google/api/annotations.proto";
import "google/api/httpbody.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

service Kitchen {
  rpc Echo(Sink) returns (Sink) {
    option (google.api.http) = {
      get: "/v1/sinks/{id}"
      additional_bindings { post: "/v1/sinks" body: "*" }
      additional_bindings { put: "/v1/sinks/{id}/nested" body: "nested" }
      additional_bindings { patch: "/v1/sinks/{id}/tags" body: "tags" }
      additional_bindings { get: "/v1/{name=shelves/*/books/**}" }
    };
  }
  rpc Raw(google.api.HttpBody) returns (google.api.HttpBody) {
    option (google.api.http) = { post: "/v1/raw" body: "*" };
  }
  rpc Count(Sink) returns (Sink) {
    option (google.api.http) = { get: "/v1/sinks/{id}/count" response_body: "count" };
  }
  rpc Child(Sink) returns (Sink) {
    option (google.api.http) = { get: "/v1/sinks/{id}/nested" response_body: "nested" };
  }
  rpc Upload(UploadRequest) returns (Sink) {
    option (google.api.http) = { put: "/v1/uploads/{name}" body: "file" };
  }
  rpc Hidden(Sink) returns (Sink);
  rpc Publish(Sink) returns (Sink) {
    option (google.api.http) = { post: "/v1/{name=shelves/*/books/*}:publish" body: "*" };
  }
  rpc Update(UpdateRequest) returns (Sink) {
    option (google.api.http) = {
      patch: "/v1/sinks/{sink.id}" body: "sink"
      additional_bindings { put: "/v1/sinks/{sink.id}:replace" body: "sink" }
      additional_bindings { patch: "/v1/sinks/{sink.id}:all" body: "*" }
    };
  }
}

message UpdateRequest {
  Sink sink = 1;
  google.protobuf.FieldMask update_mask = 2;
}

enum Color {
  COLOR_UNSPECIFIED = 0;
  RED = 1;
  GREEN = 2;
}

message Nested {
  string note = 1;
  Nested child = 2;
  int32 level = 3;
}

message UploadRequest {
  string name = 1;
  google.api.HttpBody file = 2;
}

message Sink {
  string id = 1;
  string name = 2;
  int32 count = 3;
  int64 big = 4;
  uint32 u32 = 5;
  uint64 u64 = 6;
  float f = 7;
  double d = 8;
  bool flag = 9;
  bytes data = 10;
  Color color = 11;
  repeated string tags = 12;
  repeated Color colors = 13;
  Nested nested = 14;
  google.protobuf.Timestamp ts = 15;
  google.protobuf.Duration dur = 16;
  google.protobuf.FieldMask mask = 17;
  google.protobuf.Int32Value wi = 18;
  google.protobuf.StringValue ws = 19;
  google.protobuf.BoolValue wb = 20;
  map<string, string> labels = 21;
  google.protobuf.Struct meta = 22;
  oneof choice {
    string a = 23;
    int32 b = 24;
  }
  repeated int64 nums = 25;
  sint32 s32 = 26;
  fixed64 f64 = 27;
  int32 page_size = 28;
  repeated Nested items = 29;
  map<string, Nested> by_name = 30;
  map<int32, string> codes = 31;
  google.protobuf.Value val = 32;
  google.protobuf.ListValue list = 33;
  map<string, Color> paint = 34;
}
`

// parseService compiles proto source in memory; imports resolve against the
// descriptors linked into the test binary.
func parseService(tb testing.TB, src, service string) protoreflect.ServiceDescriptor {
	tb.Helper()
	files := []protoreflect.FileDescriptor{meshtest.CompileProto(tb, src)}
	sd := files[0].Services().ByName(protoreflect.FullName(service).Name())
	if sd == nil || sd.FullName() != protoreflect.FullName(service) {
		tb.Fatalf("no service %s", service)
	}
	return sd
}

// kitchenCodec, when set, is the codec kitchenRouter compiles with.
var kitchenCodec string

// forCodecs runs test once with each codec (the tests of this package are
// not parallel: kitchenCodec is theirs while they run).
func forCodecs(t *testing.T, test func(t *testing.T)) {
	for _, codec := range []string{CodecFast, CodecProtojson} {
		t.Run(codec, func(t *testing.T) {
			kitchenCodec = codec
			defer func() { kitchenCodec = "" }()
			test(t)
		})
	}
}

// kitchenRouter compiles the kitchen service into a router. Every JSON
// binding gets the fast codec unless the configuration says protojson.
func kitchenRouter(tb testing.TB, cfg Config) *Router[*Binding] {
	tb.Helper()
	if kitchenCodec != "" {
		cfg.Codec = kitchenCodec
	}
	methods, err := NewCompiler(cfg).CompileService(parseService(tb, kitchenProto, "kitchen.v1.Kitchen"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	r := NewRouter[*Binding]()
	for _, m := range methods {
		for _, b := range m.Bindings {
			if why := b.Fallback(); why != "" && cfg.Codec != CodecProtojson {
				tb.Fatalf("%s: the fast codec declined it: %s", b, why)
			}
			if err := r.Add(b.HTTPMethod, b.Template, b, (*Binding).String); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return r
}

func match(tb testing.TB, r *Router[*Binding], req *http.Request) (*Binding, []string) {
	tb.Helper()
	b, vars, _, err := r.MatchErr(req.Method, req.URL.EscapedPath(), nil)
	if err != nil {
		tb.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	return b, vars
}
