package policies

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/mesh/meshtest"
	_ "github.com/portico-dev/portico/protos/portico/v1"
)

// compileProto links one in-memory .proto (importing portico/v1 options and
// google/api from the binary) and returns its first service.
func compileProto(t *testing.T, src string) protoreflect.ServiceDescriptor {
	t.Helper()
	return meshtest.CompileProto(t, src).Services().Get(0)
}

const protoHead = `syntax = "proto3";
package t;
import "portico/v1/options.proto";
message Req { string id = 1; Inner inner = 2; repeated Inner list = 3; map<string, Inner> byKey = 4; int64 secret = 5 [(portico.v1.field).internal = true]; }
message Inner { string name = 1; string token = 2 [(portico.v1.field) = {internal: true}]; }
`

func TestOptionErrors(t *testing.T) {
	cfg := DefaultConfig()
	cfg.JWT = []JWTProvider{{Name: "corp", Issuer: "https://i", JWKSFile: "/nonexistent"}}
	tests := []struct {
		name, svcOpt, methodOpt string
		wantErr                 string
	}{
		{"no options", "", "", ""},
		{"everything valid", `auth: {scopes: ["a"]} timeout: {seconds: 2}`,
			`auth: {providers: ["corp"] allow_if: "request.id == subject && 'x' in claims.roles" forward_claims: ["plan"]}
			 rate_limit: {requests: 5 period: {seconds: 1} key: KEY_HEADER key_name: "x-tenant" tier_claim: "plan" tiers: [{value: "gold" requests: 50}]}
			 cache: {ttl: {seconds: 1} vary_headers: ["accept-language"]}
			 retry: {attempts: 3 codes: ["resource_exhausted"]}
			 cors: {allow_origins: ["https://a.example"]}`, ""},
		{"unknown provider", "", `auth: {providers: ["nope"]}`, `(portico.v1.method).auth: providers: "nope" is not a configured provider`},
		{"CEL syntax error", "", `auth: {allow_if: "request.id =="}`, "allow_if: ERROR: <input>:1:14: Syntax error"},
		{"CEL type error", "", `auth: {allow_if: "request.id + 1"}`, "allow_if: ERROR: <input>:1:12: found no matching overload"},
		{"CEL not bool", "", `auth: {allow_if: "request.id"}`, "allow_if must be a bool expression"},
		{"CEL unknown field", "", `auth: {allow_if: "request.secret == 1"}`, "undefined field 'secret'"},
		{"bad claim name", "", `auth: {forward_claims: ["a b"]}`, `forward_claims: "a b" is not a valid claim name`},
		{"rate without period", `rate_limit: {requests: 3}`, "", "(portico.v1.service).rate_limit: period: must be a positive duration"},
		{"rate without requests", "", `rate_limit: {period: {seconds: 1}}`, "requests: must be > 0"},
		{"rate finer than 1/µs", "", `rate_limit: {requests: 2000000 period: {seconds: 1}}`, "more than one per microsecond"},
		{"header key without name", "", `rate_limit: {requests: 1 period: {seconds: 1} key: KEY_HEADER}`, "key_name: KEY_HEADER needs the header name"},
		{"tiers without claim (picked by frontends)", "", `rate_limit: {requests: 1 period: {seconds: 1} tiers: [{value: "a" requests: 2}]}`, ""},
		{"tier without requests", "", `rate_limit: {requests: 1 period: {seconds: 1} tiers: [{value: "a"}]}`, "tiers[0]: needs a value and requests > 0"},
		{"cache without ttl", "", `cache: {public: true}`, "cache.ttl: must be a positive duration"},
		{"retry attempts", "", `retry: {attempts: 9}`, "retry.attempts: must be within 2..5"},
		{"retry deadline", "", `retry: {codes: ["DEADLINE_EXCEEDED"]}`, "DEADLINE_EXCEEDED cannot be retried"},
		{"retry unknown code", "", `retry: {codes: ["FLAKY"]}`, `"FLAKY" is not a gRPC code name`},
		{"cors wildcard with credentials", "", `cors: {allow_origins: ["*"] allow_credentials: true}`, `allow_credentials cannot go with origin "*"`},
		{"cors origin with path", `cors: {allow_origins: ["https://a.example/app"]}`, "", "must be \"*\" or scheme://host[:port] without a path"},
		{"negative body limit", "", `max_body_bytes: -1`, "max_body_bytes: must not be negative"},
		{"timeout zero", "", `timeout: {}`, "timeout: must be a positive duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := protoHead + "service S {\n"
			if tt.svcOpt != "" {
				src += "option (portico.v1.service) = {" + tt.svcOpt + "};\n"
			}
			src += "rpc M(Req) returns (Req) {"
			if tt.methodOpt != "" {
				src += "option (portico.v1.method) = {" + tt.methodOpt + "};"
			}
			src += "}\n}\n"
			sd, err := PublicView(compileProto(t, src)) // as the edge does
			if err != nil {
				t.Fatal(err)
			}
			c := NewCompiler(cfg, nil, nil, zap.NewNop())
			_, err = c.CompileService(sd)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("compiled; want an error with %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q; want it to contain %q", err, tt.wantErr)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "test.proto: t.S") {
				t.Fatalf("error %q does not name the file and the service or method", err)
			}
		})
	}
}

func TestMethodOptionReplacesServiceFieldWhole(t *testing.T) {
	sd := compileProto(t, protoHead+`service S {
  option (portico.v1.service) = {auth: {scopes: ["svc"]} timeout: {seconds: 7} cors: {allow_origins: ["https://a.example"]}};
  rpc Inherit(Req) returns (Req) {}
  rpc Override(Req) returns (Req) { option (portico.v1.method) = {auth: {public: true} cors: {disabled: true}}; }
}`)
	c := NewCompiler(DefaultConfig(), nil, nil, zap.NewNop())
	pols, err := c.CompileService(sd)
	if err != nil {
		t.Fatal(err)
	}
	in, over := pols["/t.S/Inherit"], pols["/t.S/Override"]
	if in.authMode != authRequired || len(in.scopes) != 1 || in.timeout != 7*time.Second || in.cors == nil {
		t.Fatalf("inherited: %+v", in.Policy)
	}
	if over.authMode != authOptional || len(over.scopes) != 0 || over.timeout != 7*time.Second || over.cors != nil {
		t.Fatalf("overridden: auth mode %d scopes %v timeout %s cors %v", over.authMode, over.scopes, over.timeout, over.cors)
	}
	// Retries: a GET binding is safe; a POST is not unless declared.
	if p := c.bind(in, http.MethodGet, "/x", Target{}); p.retry == nil || p.retry.attempts != DefaultRetryAttempts {
		t.Fatalf("GET retry = %+v", p.retry)
	}
	if p := c.bind(in, http.MethodPost, "/x", Target{}); p.retry != nil {
		t.Fatal("a POST binding got retries")
	}
}

func TestPublicViewHidesInternalFields(t *testing.T) {
	sd := compileProto(t, protoHead+`service S { rpc M(Req) returns (Req) {} }`)
	pub, err := PublicView(sd)
	if err != nil {
		t.Fatal(err)
	}
	in := pub.Methods().Get(0).Input()
	if in.Fields().ByName("secret") != nil || in.Fields().ByName("inner").Message().Fields().ByName("token") != nil {
		t.Fatal("internal fields are still in the public view")
	}
	if in.Fields().ByName("byKey").MapValue().Message().Fields().ByName("token") != nil {
		t.Fatal("internal field of a map value is still there")
	}
	// The upstream's bytes (with the internal fields) decode into the public
	// type and render without them.
	full := dynamicpb.NewMessage(sd.Methods().Get(0).Input())
	if err := protojson.Unmarshal([]byte(`{"id":"a","secret":"9","inner":{"name":"n","token":"t"},"list":[{"token":"t"}],"byKey":{"k":{"token":"t"}}}`), full); err != nil {
		t.Fatal(err)
	}
	wire, _ := proto.Marshal(full)
	view := dynamicpb.NewMessage(in)
	if err := proto.Unmarshal(wire, view); err != nil {
		t.Fatal(err)
	}
	js, _ := protojson.Marshal(view)
	if strings.Contains(string(js), "secret") || strings.Contains(string(js), "token") || !strings.Contains(string(js), `"name":"n"`) {
		t.Fatalf("rendered %s", js)
	}
	// A service without internal fields is returned as it is.
	plain := compileProto(t, `syntax = "proto3"; package p; message R {string a = 1;} service P { rpc M(R) returns (R) {} }`)
	if got, _ := PublicView(plain); got != plain {
		t.Fatal("a service without internal fields was rebuilt")
	}
}

// TestValidateOnlyWithRules: a method whose input reaches no buf.validate
// option gets no validate stage (its request is never decoded into a
// message for it); one with a rule anywhere it reaches does.
func TestValidateOnlyWithRules(t *testing.T) {
	const head = `syntax = "proto3";
package t;
import "buf/validate/validate.proto";
message Plain { string id = 1; Plain self = 2; map<string, Plain> byKey = 3; }
message Deep { map<string, Leaf> byKey = 1; }
message Leaf { string email = 1 [(buf.validate.field).string.email = true]; }
message Whole { option (buf.validate.message).oneof = {fields: ["a", "b"]}; string a = 1; string b = 2; }
message Choice { oneof pick { option (buf.validate.oneof).required = true; string x = 1; string y = 2; } }
service S { rpc P(Plain) returns (Plain); rpc D(Deep) returns (Plain); rpc W(Whole) returns (Plain); rpc C(Choice) returns (Plain); }
`
	sd := compileProto(t, head)
	policies, err := NewCompiler(DefaultConfig(), nil, nil, zap.NewNop()).CompileService(sd)
	if err != nil {
		t.Fatal(err)
	}
	for method, want := range map[string]bool{"/t.S/P": false, "/t.S/D": true, "/t.S/W": true, "/t.S/C": true} {
		if got := policies[method].validator != nil; got != want {
			t.Errorf("%s: validate stage %t, want %t", method, got, want)
		}
	}
}
