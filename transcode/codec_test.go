package transcode

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/policies/chain"
)

func TestDecodeRequest(t *testing.T) { forCodecs(t, testDecodeRequest) }

func testDecodeRequest(t *testing.T) {
	r := kitchenRouter(t, DefaultConfig())
	small := DefaultConfig()
	small.MaxBodyBytes = 16
	rSmall := kitchenRouter(t, small)
	shallow := DefaultConfig()
	shallow.MaxJSONDepth = 3
	rShallow := kitchenRouter(t, shallow)
	tests := []struct {
		desc        string
		router      *Router[*Binding]
		method, url string
		ct, body    string
		want        string // protojson of the request (compact, proto names)
		wantCode    codes.Code
		wantHTTP    int
		wantErr     string
	}{
		{desc: "path only", method: "GET", url: "/v1/sinks/abc", want: `{"id":"abc"}`},
		{desc: "single-segment variable decodes %2F", method: "GET", url: "/v1/sinks/a%2Fb%20c", want: `{"id":"a/b c"}`},
		{desc: "multi-segment variable keeps %2F", method: "GET", url: "/v1/shelves/s1/books/a%2Fb/c%20d", want: `{"name":"shelves/s1/books/a%2Fb/c d"}`},
		{desc: "scalars from the query", method: "GET",
			url:  "/v1/sinks/x?count=5&big=9007199254740993&u32=4&u64=18446744073709551615&f=2.5&d=-1e3&flag=true&s32=-3&f64=8&data=aGk%3D",
			want: `{"id":"x","count":5,"big":"9007199254740993","u32":4,"u64":"18446744073709551615","f":2.5,"d":-1000,"flag":true,"data":"aGk=","s32":-3,"f64":"8"}`},
		{desc: "enums by name and number, repeated", method: "GET", url: "/v1/sinks/x?color=RED&colors=1&colors=GREEN&tags=a&tags=b&nums=1&nums=-2",
			want: `{"id":"x","color":"RED","tags":["a","b"],"colors":["RED","GREEN"],"nums":["1","-2"]}`},
		{desc: "nested and json names", method: "GET", url: "/v1/sinks/x?nested.note=n&nested.child.level=3&pageSize=7",
			want: `{"id":"x","nested":{"note":"n","child":{"level":3}},"page_size":7}`},
		{desc: "well-known types", method: "GET", url: "/v1/sinks/x?ts=2024-01-02T03:04:05.5Z&dur=1.5s&mask=a,b.c&wi=7&ws=hi&wb=false",
			want: `{"id":"x","ts":"2024-01-02T03:04:05.500Z","dur":"1.500s","mask":"a,b.c","wi":7,"ws":"hi","wb":false}`},
		{desc: "oneof", method: "GET", url: "/v1/sinks/x?b=3", want: `{"id":"x","b":3}`},
		{desc: "unknown query parameters are ignored", method: "GET", url: "/v1/sinks/x?nope=1&_=123", want: `{"id":"x"}`},
		{desc: "path wins over query for the bound field", method: "GET", url: "/v1/sinks/x?id=y", want: `{"id":"x"}`},
		{desc: "bad int", method: "GET", url: "/v1/sinks/x?count=abc", wantCode: codes.InvalidArgument, wantHTTP: 400,
			wantErr: `invalid value "abc" for field "count" (query): expected an int32`},
		{desc: "int32 overflow", method: "GET", url: "/v1/sinks/x?count=3000000000", wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: `field "count"`},
		{desc: "bad enum", method: "GET", url: "/v1/sinks/x?color=BLUE", wantCode: codes.InvalidArgument, wantHTTP: 400,
			wantErr: `invalid value "BLUE" for field "color" (query): not a value of enum kitchen.v1.Color`},
		{desc: "enum number out of range", method: "GET", url: "/v1/sinks/x?color=9", wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: `field "color"`},
		{desc: "bad timestamp", method: "GET", url: "/v1/sinks/x?ts=yesterday", wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: "RFC 3339"},
		{desc: "bad duration", method: "GET", url: "/v1/sinks/x?dur=1h", wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: `field "dur"`},
		{desc: "bad bool", method: "GET", url: "/v1/sinks/x?flag=maybe", wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: "expected a boolean"},
		{desc: "bad base64", method: "GET", url: "/v1/sinks/x?data=***", wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: "expected base64"},
		{desc: "singular given twice", method: "GET", url: "/v1/sinks/x?count=1&count=2", wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: "more than once"},
		{desc: "oneof conflict", method: "GET", url: "/v1/sinks/x?a=s&b=3", wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: "oneof"},
		{desc: "bad query escape", method: "GET", url: "/v1/sinks/x?count=%zz", wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: "percent-encoding"},
		{desc: "body *", method: "POST", url: "/v1/sinks", ct: "application/json",
			body: `{"id":"x","page_size":3,"labels":{"k":"v"},"meta":{"a":[1,"b",null]},"big":"12"}`,
			want: `{"id":"x","big":"12","labels":{"k":"v"},"meta":{"a":[1,"b",null]},"page_size":3}`},
		{desc: "body * with charset and empty body", method: "POST", url: "/v1/sinks", ct: "application/json; charset=utf-8", body: ``, want: `{}`},
		{desc: "body without content type is JSON", method: "POST", url: "/v1/sinks", body: `{"id":"x"}`, want: `{"id":"x"}`},
		{desc: "unknown body field", method: "POST", url: "/v1/sinks", ct: "application/json", body: `{"id":"x","bogus":1}`,
			wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: `unknown field "bogus"`},
		{desc: "wrong type in body", method: "POST", url: "/v1/sinks", ct: "application/json", body: `{"count":"abc"}`,
			wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: "count"},
		{desc: "malformed JSON", method: "POST", url: "/v1/sinks", ct: "application/json", body: `{"id":`,
			wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: "invalid JSON body"},
		{desc: "wrong content type", method: "POST", url: "/v1/sinks", ct: "text/plain", body: `{}`,
			wantCode: codes.InvalidArgument, wantHTTP: 415, wantErr: "Content-Type must be application/json"},
		{desc: "body over the limit", router: rSmall, method: "POST", url: "/v1/sinks", ct: "application/json", body: `{"id":"0123456789abcdef"}`,
			wantCode: codes.ResourceExhausted, wantHTTP: 413, wantErr: "exceeds the limit of 16 bytes"},
		{desc: "nesting over the limit", router: rShallow, method: "POST", url: "/v1/sinks", ct: "application/json", body: `{"meta":{"a":{"b":{}}}}`,
			wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: "nests deeper than the limit of 3 (transcode.max_json_depth) at meta.a.b"},
		{desc: "both names accepted in", method: "POST", url: "/v1/sinks", body: `{"pageSize":2,"nested":{"note":"n"}}`, want: `{"page_size":2,"nested":{"note":"n"}}`},
		{desc: "duplicate field under both names", method: "POST", url: "/v1/sinks", body: `{"pageSize":2,"page_size":3}`,
			wantCode: codes.InvalidArgument, wantHTTP: 400, wantErr: "duplicate field"},
		{desc: "body field message", method: "PUT", url: "/v1/sinks/x/nested?count=2", ct: "application/json", body: `{"note":"n","child":{"level":1}}`,
			want: `{"id":"x","count":2,"nested":{"note":"n","child":{"level":1}}}`},
		{desc: "body field repeated", method: "PATCH", url: "/v1/sinks/x/tags", ct: "application/json", body: `["a","b"]`,
			want: `{"id":"x","tags":["a","b"]}`},
		{desc: "query cannot set the body field", method: "PUT", url: "/v1/sinks/x/nested?nested.note=q", ct: "application/json", body: `{"note":"n"}`,
			want: `{"id":"x","nested":{"note":"n"}}`},
		{desc: "HttpBody request", method: "POST", url: "/v1/raw", ct: "text/csv", body: "a,b\n1,2\n",
			want: `{"content_type":"text/csv","data":"YSxiCjEsMgo="}`},
		{desc: "HttpBody field", method: "PUT", url: "/v1/uploads/f1", ct: "image/png", body: "\x89PNG",
			want: `{"name":"f1","file":{"content_type":"image/png","data":"iVBORw=="}}`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			router := r
			if tt.router != nil {
				router = tt.router
			}
			req := httptest.NewRequest(tt.method, tt.url, strings.NewReader(tt.body))
			if tt.ct != "" {
				req.Header.Set("Content-Type", tt.ct)
			}
			b, vars := match(t, router, req)
			msg, err := decode(t, b.Codec(), req, vars)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("want error containing %q, got %v", tt.wantErr, msg)
				}
				st, code := chain.StatusOf(err)
				if st.Code() != tt.wantCode || code != tt.wantHTTP || !strings.Contains(st.Message(), tt.wantErr) {
					t.Fatalf("got %v %d %q, want %v %d containing %q", st.Code(), code, st.Message(), tt.wantCode, tt.wantHTTP, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
			if !jsonEqual(t, string(got), tt.want) {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestAllowUnknownFields(t *testing.T) { forCodecs(t, testAllowUnknownFields) }

func testAllowUnknownFields(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AllowUnknownFields = true
	r := kitchenRouter(t, cfg)
	req := httptest.NewRequest("POST", "/v1/sinks", strings.NewReader(`{"id":"x","bogus":{"deep":[1]}}`))
	b, vars := match(t, r, req)
	msg, err := decode(t, b.Codec(), req, vars)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := protojson.Marshal(msg); string(got) != `{"id":"x"}` {
		t.Fatalf("got %s", got)
	}
}

func TestWriteResponse(t *testing.T) { forCodecs(t, testWriteResponse) }

func testWriteResponse(t *testing.T) {
	r := kitchenRouter(t, DefaultConfig())
	sinkFull := func(b *Binding, js string) *chain.Payload {
		m := dynamicpb.NewMessage(b.Method.Desc.Output())
		if err := protojson.Unmarshal([]byte(js), m); err != nil {
			t.Fatal(err)
		}
		return answer(t, b.Codec(), m)
	}
	tests := []struct {
		desc, method, url, resp string
		wantCT, wantBody        string
		contains                bool
	}{
		{desc: "canonical JSON, unpopulated fields emitted", method: "GET", url: "/v1/sinks/x", resp: `{"id":"x","big":"5","color":"GREEN","pageSize":3}`,
			wantCT: "application/json", wantBody: `"big":"5"`, contains: true},
		{desc: "lowerCamelCase names", method: "GET", url: "/v1/sinks/x", resp: `{"page_size":3}`, wantCT: "application/json", wantBody: `"pageSize":3`, contains: true},
		{desc: "unset scalar is emitted", method: "GET", url: "/v1/sinks/x", resp: `{}`, wantCT: "application/json", wantBody: `"count":0`, contains: true},
		{desc: "response_body scalar", method: "GET", url: "/v1/sinks/x/count", resp: `{"count":42,"id":"x"}`, wantCT: "application/json", wantBody: `42`},
		{desc: "response_body message", method: "GET", url: "/v1/sinks/x/nested", resp: `{"nested":{"note":"n"},"id":"x"}`, wantCT: "application/json", wantBody: `{"note":"n","child":null,"level":0}`},
		{desc: "HttpBody response", method: "POST", url: "/v1/raw", resp: `{"contentType":"text/plain","data":"aGVsbG8="}`, wantCT: "text/plain", wantBody: "hello"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.url, nil)
			b, _ := match(t, r, req)
			rec := httptest.NewRecorder()
			body, ct, err := b.Codec().EncodeResponse(nil, sinkFull(b, tt.resp))
			if err != nil {
				t.Fatal(err)
			}
			if err := chain.WriteResponse(rec, &chain.Response{Body: body, ContentType: ct}); err != nil {
				t.Fatal(err)
			}
			if ct := rec.Header().Get("Content-Type"); ct != tt.wantCT {
				t.Fatalf("content type %q, want %q", ct, tt.wantCT)
			}
			got := rec.Body.String()
			if tt.contains && !strings.Contains(strings.ReplaceAll(got, " ", ""), tt.wantBody) ||
				!tt.contains && tt.wantCT == "application/json" && !jsonEqual(t, got, tt.wantBody) ||
				!tt.contains && tt.wantCT != "application/json" && got != tt.wantBody {
				t.Fatalf("body %s, want %s", got, tt.wantBody)
			}
		})
	}
}

func TestStreamWriter(t *testing.T) { forCodecs(t, testStreamWriter) }

func testStreamWriter(t *testing.T) {
	r := kitchenRouter(t, DefaultConfig())
	req := httptest.NewRequest("GET", "/v1/sinks/x", nil)
	b, _ := match(t, r, req)
	msg := dynamicpb.NewMessage(b.Method.Desc.Output())
	msg.Set(msg.Descriptor().Fields().ByName("id"), protoreflectString("s1"))

	rec := httptest.NewRecorder()
	sw := b.Codec().NewStreamWriter(rec, req)
	if err := sw.Send(answer(t, b.Codec(), msg)); err != nil {
		t.Fatal(err)
	}
	sw.SendError(status.Error(codes.Internal, "boom"))
	lines := strings.Split(strings.TrimSpace(rec.Body.String()), "\n")
	if rec.Header().Get("Content-Type") != "application/x-ndjson" || len(lines) != 2 ||
		!strings.HasPrefix(strings.ReplaceAll(lines[0], " ", ""), `{"result":{"id":"s1"`) || lines[1] != `{"error":{"code":13,"message":"boom","details":[]}}` {
		t.Fatalf("ndjson: %q %q", rec.Header().Get("Content-Type"), rec.Body.String())
	}

	req.Header.Set("Accept", "text/event-stream")
	rec = httptest.NewRecorder()
	sw = b.Codec().NewStreamWriter(rec, req)
	_ = sw.Send(answer(t, b.Codec(), msg))
	sw.SendError(status.Error(codes.Internal, "boom"))
	body := rec.Body.String()
	if rec.Header().Get("Content-Type") != "text/event-stream" || !strings.HasPrefix(strings.ReplaceAll(body, " ", ""), `data:{"id":"s1"`) ||
		!strings.HasSuffix(body, "event: error\ndata: {\"code\":13,\"message\":\"boom\",\"details\":[]}\n\n") {
		t.Fatalf("sse: %q", body)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct{ desc, rule, want string }{
		{"unknown path field", `get: "/v1/{nope}"`, `test.proto: method k.v1.K.M: option google.api.http: path variable {nope}: k.v1.Req has no field "nope"`},
		{"unknown body field", `post: "/v1/x" body: "nope"`, `body: k.v1.Req has no field "nope"`},
		{"unknown response_body", `get: "/v1/x" response_body: "nope"`, `response_body: k.v1.Req has no field "nope"`},
		{"repeated path field", `get: "/v1/{tags}"`, "repeated and map fields cannot be bound"},
		{"message path field", `get: "/v1/{sub}"`, "field of message type k.v1.Req cannot be bound"},
		{"bad template", `get: "v1/x"`, `column 1`},
		{"body also in path", `post: "/v1/{id}" body: "id"`, `field "id" is also bound to the path`},
		{"no pattern", `body: "*"`, "no pattern"},
		{"bad custom kind", `custom: {kind: "GE T" path: "/v1/x"}`, "not a valid HTTP method token"},
		{"nested additional bindings", `get: "/v1/x" additional_bindings { get: "/v1/y" additional_bindings { get: "/v1/z" } }`, "additional_bindings[0]: additional_bindings cannot be nested"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			src := `syntax = "proto3"; package k.v1; import "google/api/annotations.proto";
message Req { string id = 1; repeated string tags = 2; Req sub = 3; }
service K { rpc M(Req) returns (Req) { option (google.api.http) = { ` + tt.rule + ` }; } }`
			_, err := NewCompiler(DefaultConfig()).CompileService(parseService(t, src, "k.v1.K"), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestExposeUnannotated(t *testing.T) {
	sd := parseService(t, kitchenProto, "kitchen.v1.Kitchen")
	methods, _ := NewCompiler(DefaultConfig()).CompileService(sd, nil)
	for _, m := range methods {
		if m.Desc.Name() == "Hidden" {
			t.Fatal("Hidden has no google.api.http and must not be exposed by default")
		}
	}
	cfg := DefaultConfig()
	cfg.ExposeUnannotated = true
	methods, _ = NewCompiler(cfg).CompileService(sd, nil)
	var found bool
	for _, m := range methods {
		if m.Desc.Name() == "Hidden" {
			found = m.Bindings[0].HTTPMethod == http.MethodPost && m.Bindings[0].Template.Raw == "/kitchen.v1.Kitchen/Hidden" && m.Bindings[0].Body == "*"
		}
	}
	if !found {
		t.Fatal("ExposeUnannotated must add POST /kitchen.v1.Kitchen/Hidden")
	}
}
