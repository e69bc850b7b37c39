package transcode

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-dev/portico/policies/chain"
)

// decodeCase is one request through the kitchen router: either the
// request message it builds (protojson, proto names) or the error.
type decodeCase struct {
	desc        string
	cfg         *Config
	method, url string
	body        string
	want        string
	wantHTTP    int
	wantErr     string
}

func runDecodeCases(t *testing.T, cases []decodeCase) {
	t.Helper()
	def := kitchenRouter(t, DefaultConfig())
	for _, tt := range cases {
		t.Run(tt.desc, func(t *testing.T) {
			r := def
			if tt.cfg != nil {
				r = kitchenRouter(t, *tt.cfg)
			}
			req := httptest.NewRequest(tt.method, tt.url, strings.NewReader(tt.body))
			if tt.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			b, vars := match(t, r, req)
			msg, err := decode(t, b.Codec(), req, vars)
			if tt.wantErr != "" {
				if err == nil {
					got, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
					t.Fatalf("want a %d containing %q, got %s", tt.wantHTTP, tt.wantErr, got)
				}
				st, code := chain.StatusOf(err)
				if code != tt.wantHTTP || st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.wantErr) {
					t.Fatalf("got %d %v %q, want %d containing %q", code, st.Code(), st.Message(), tt.wantHTTP, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
			if err != nil {
				t.Fatalf("the bound message does not encode: %v", err)
			}
			if !jsonEqual(t, string(got), tt.want) {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// Issue 12 point 2: FieldMask query values in proto3 JSON form bind their
// proto paths; a path protojson could not write back is a 400, not a 500
// when the message is encoded later.
func TestQueryFieldMask(t *testing.T) { forCodecs(t, testQueryFieldMask) }

func testQueryFieldMask(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{desc: "JSON form", method: "GET", url: "/v1/sinks/x?mask=int32Val,nested.child,pageSize", want: `{"id":"x","mask":"int32Val,nested.child,pageSize"}`},
		{desc: "proto form kept", method: "GET", url: "/v1/sinks/x?mask=display_name,nested.child_note", want: `{"id":"x","mask":"displayName,nested.childNote"}`},
		{desc: "by its paths field", method: "GET", url: "/v1/sinks/x?mask.paths=a_b&mask.paths=cD", want: `{"id":"x","mask":"aB,cD"}`},
		{desc: "mixed forms", method: "GET", url: "/v1/sinks/x?mask=int32_Val", wantHTTP: 400, wantErr: `"int32_Val" mixes snake_case and camelCase`},
		{desc: "not a path", method: "GET", url: "/v1/sinks/x?mask=a..b", wantHTTP: 400, wantErr: `"a..b" is not a field path`},
		{desc: "not a path via paths", method: "GET", url: "/v1/sinks/x?mask.paths=a-b", wantHTTP: 400, wantErr: `query parameter "mask.paths"`},
	})
	// The inner path check agrees with protojson's own FieldMask rules.
	for _, p := range []string{"a", "a_b", "aB", "a.b_c", "a1b", "a_1", "_a", "A", "a__b", "aB_c", "a..b", "1a", "a-b", "ÿ", "a.", ".a", "int32Val", "foo_bar.baz_qux"} {
		got, err := fieldMaskPath(p)
		// protojson accepts the JSON form iff it has no '_' and its
		// snake form is valid; it writes a path back iff it round-trips.
		m := &fmProbe{}
		if err == nil {
			if _, merr := m.marshal(got); merr != nil {
				t.Errorf("fieldMaskPath(%q) = %q, which protojson cannot write: %v", p, got, merr)
			}
		}
		if !strings.Contains(p, "_") {
			perr := m.unmarshal(p)
			if (perr == nil) != (err == nil) {
				t.Errorf("fieldMaskPath(%q): err %v, protojson: %v", p, err, perr)
			}
		}
	}
}

// Issue 12 point 4: every form grpc-gateway binds is bound, every form
// http.proto does not allow is a 400 naming the parameter, and only
// parameters that name no field are ignored.
func TestQueryForms(t *testing.T) { forCodecs(t, testQueryForms) }

func testQueryForms(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{desc: "map entries", method: "GET", url: "/v1/sinks/x?labels[k]=v&labels[a.b]=c&codes[7]=seven&paint[p]=RED",
			want: `{"id":"x","labels":{"k":"v","a.b":"c"},"codes":{"7":"seven"},"paint":{"p":"RED"}}`},
		{desc: "map entry given twice", method: "GET", url: "/v1/sinks/x?labels[k]=v&labels[k]=w", wantHTTP: 400, wantErr: `query parameter "labels[k]" is given more than once`},
		{desc: "bad map key", method: "GET", url: "/v1/sinks/x?codes[x]=v", wantHTTP: 400, wantErr: `invalid key "x" for query parameter "codes[x]"`},
		{desc: "bad map value", method: "GET", url: "/v1/sinks/x?paint[p]=BLUE", wantHTTP: 400, wantErr: `query parameter "paint[p]"`},
		{desc: "map without a key", method: "GET", url: "/v1/sinks/x?labels=v", wantHTTP: 400, wantErr: `field "labels" is a map; set an entry as labels[key]=value`},
		{desc: "map of messages", method: "GET", url: "/v1/sinks/x?by_name[k]=v", wantHTTP: 400, wantErr: `"by_name[k]": field "by_name" is a map of messages`},
		{desc: "key on a non-map", method: "GET", url: "/v1/sinks/x?name[k]=v", wantHTTP: 400, wantErr: `field "name" is not a map`},
		{desc: "Struct as JSON", method: "GET", url: `/v1/sinks/x?meta=%7B%22a%22%3A%5B1%2C%22b%22%5D%7D`, want: `{"id":"x","meta":{"a":[1,"b"]}}`},
		{desc: "Value and ListValue as JSON", method: "GET", url: `/v1/sinks/x?val=%22s%22&list=%5B1%2Cnull%5D`, want: `{"id":"x","val":"s","list":[1,null]}`},
		{desc: "Struct not JSON", method: "GET", url: "/v1/sinks/x?meta=abc", wantHTTP: 400, wantErr: `invalid value "abc" for query parameter "meta": expected JSON for Struct`},
		{desc: "Struct over the element limit", cfg: &Config{MaxBodyBytes: 1 << 20, MaxJSONDepth: 8, MaxQueryParams: 10, MaxRepeatedElements: 3, StreamIdleTimeout: 1},
			method: "GET", url: `/v1/sinks/x?meta=%7B%22a%22%3A%5B1%2C2%2C3%2C4%5D%7D`, wantHTTP: 400, wantErr: `limit of 3 elements`},
		{desc: "wrapper by its value field", method: "GET", url: "/v1/sinks/x?wi.value=3&ts.seconds=5", want: `{"id":"x","wi":3,"ts":"1970-01-01T00:00:05Z"}`},
		{desc: "repeated message", method: "GET", url: "/v1/sinks/x?items=a", wantHTTP: 400, wantErr: `"items": field "items" is a repeated message`},
		{desc: "into a repeated message", method: "GET", url: "/v1/sinks/x?items.note=a", wantHTTP: 400, wantErr: `"items.note": field "items" is a repeated field and has no field "note"`},
		{desc: "a whole message", method: "GET", url: "/v1/sinks/x?nested=a", wantHTTP: 400, wantErr: `field "nested" is a message; set its fields, as nested.<field>=value`},
		{desc: "through a scalar", method: "GET", url: "/v1/sinks/x?name.x=1", wantHTTP: 400, wantErr: `"name.x": field "name" is a string and has no field "x"`},
		{desc: "through a repeated scalar", method: "GET", url: "/v1/sinks/x?tags.x=1", wantHTTP: 400, wantErr: `field "tags" is a repeated field`},
		{desc: "errors use the client's name", method: "GET", url: "/v1/sinks/x?pageSize=x", wantHTTP: 400, wantErr: `for field "pageSize" (query)`},
		{desc: "names no field: ignored", method: "GET", url: "/v1/sinks/x?bogus=1&bogus.x=2&nested.bogus=3&_=9&[k]=v", want: `{"id":"x"}`},
		{desc: "bound by the path: ignored", method: "GET", url: "/v1/sinks/x?id.x=1", want: `{"id":"x"}`},
		{desc: "nested oneof conflict", method: "GET", url: "/v1/sinks/x?a=s&b=3", wantHTTP: 400, wantErr: "oneof"},
	})
}

// Issue 12 point 3: a PATCH with a message body field and no update_mask
// gets the mask of the JSON keys the body holds.
func TestUpdateMaskInference(t *testing.T) { forCodecs(t, testUpdateMaskInference) }

func testUpdateMaskInference(t *testing.T) {
	off := DefaultConfig()
	off.InferUpdateMask = false
	runDecodeCases(t, []decodeCase{
		{desc: "top-level and nested keys, sorted", method: "PATCH", url: "/v1/sinks/s1",
			body: `{"name":"n","pageSize":0,"nested":{"note":"x","child":{"level":2}},"tags":["a"],"labels":{"k":"v"},"ts":"2024-01-01T00:00:00Z","meta":{"a":1}}`,
			want: `{"sink":{"id":"s1","name":"n","tags":["a"],"labels":{"k":"v"},"meta":{"a":1},"ts":"2024-01-01T00:00:00Z","nested":{"note":"x","child":{"level":2}}},
				"update_mask":"labels,meta,name,nested.child.level,nested.note,pageSize,tags,ts"}`},
		{desc: "an empty object ends the path", method: "PATCH", url: "/v1/sinks/s1", body: `{"nested":{}}`,
			want: `{"sink":{"id":"s1","nested":{}},"update_mask":"nested"}`},
		{desc: "the client's mask wins", method: "PATCH", url: "/v1/sinks/s1?updateMask=name", body: `{"name":"n","count":1}`,
			want: `{"sink":{"id":"s1","name":"n","count":1},"update_mask":"name"}`},
		{desc: "an explicit empty mask is kept", method: "PATCH", url: "/v1/sinks/s1?updateMask=", body: `{"name":"n"}`,
			want: `{"sink":{"id":"s1","name":"n"},"update_mask":""}`},
		{desc: "empty body: no mask", method: "PATCH", url: "/v1/sinks/s1", body: ``, want: `{"sink":{"id":"s1"}}`},
		{desc: "PUT infers nothing", method: "PUT", url: "/v1/sinks/s1:replace", body: `{"name":"n"}`, want: `{"sink":{"id":"s1","name":"n"}}`},
		{desc: "body * infers nothing", method: "PATCH", url: "/v1/sinks/s1:all", body: `{"sink":{"name":"n"}}`, want: `{"sink":{"id":"s1","name":"n"}}`},
		{desc: "turned off", cfg: &off, method: "PATCH", url: "/v1/sinks/s1", body: `{"name":"n"}`, want: `{"sink":{"id":"s1","name":"n"}}`},
	})
	unknown := DefaultConfig()
	unknown.AllowUnknownFields = true
	runDecodeCases(t, []decodeCase{
		{desc: "unknown keys are not paths", cfg: &unknown, method: "PATCH", url: "/v1/sinks/s1", body: `{"bogus":{"x":[1]},"name":"n"}`,
			want: `{"sink":{"id":"s1","name":"n"},"update_mask":"name"}`},
	})
}

// Issue 12 point 5: an empty body is {} for a message body field too.
func TestEmptyBodyIsEmptyObject(t *testing.T) { forCodecs(t, testEmptyBodyIsEmptyObject) }

func testEmptyBodyIsEmptyObject(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{desc: "message field, empty", method: "PUT", url: "/v1/sinks/x/nested", body: ``, want: `{"id":"x","nested":{}}`},
		{desc: "message field, {}", method: "PUT", url: "/v1/sinks/x/nested", body: `{}`, want: `{"id":"x","nested":{}}`},
		{desc: "message field, blank", method: "PUT", url: "/v1/sinks/x/nested", body: " \n", want: `{"id":"x","nested":{}}`},
		{desc: "body *, empty", method: "POST", url: "/v1/sinks", body: ``, want: `{}`},
		{desc: "repeated field, empty", method: "PATCH", url: "/v1/sinks/x/tags", body: ``, want: `{"id":"x"}`},
	})
}

// Issue 12 point 1: the verb follows a literal ':'; an encoded %3A is
// data, and a multi-segment variable is never cut short.
func TestVerbAfterLiteralColonOnly(t *testing.T) {
	r := kitchenRouter(t, DefaultConfig())
	for _, tt := range []struct {
		method, path string
		want         string // name bound; "" for no match
		wantErr      error
	}{
		{"POST", "/v1/shelves/s1/books/b1:publish", "shelves/s1/books/b1", nil},
		{"POST", "/v1/shelves/s1/books/b1%3Ax:publish", "shelves/s1/books/b1:x", nil},
		{"POST", "/v1/shelves/s1/books/b1%3Apublish", "", &MethodNotAllowedError{}},
		{"GET", "/v1/shelves/s1/books/b1%3Apublish", "shelves/s1/books/b1:publish", nil},
		{"GET", "/v1/shelves/s1/books/b1%3apublish", "shelves/s1/books/b1:publish", nil},
		{"POST", "/v1/shelves/s1/books/b1:%70ublish", "shelves/s1/books/b1", nil},
	} {
		b, vars, _, err := r.MatchErr(tt.method, tt.path, nil)
		if tt.wantErr != nil {
			var mna *MethodNotAllowedError
			if !errors.As(err, &mna) {
				t.Errorf("%s %s: got %v %v, want 405", tt.method, tt.path, b, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %s: %v", tt.method, tt.path, err)
			continue
		}
		if len(vars) != 1 || vars[0] != tt.want {
			t.Errorf("%s %s: name %q, want %q", tt.method, tt.path, vars, tt.want)
		}
	}
}

// fmProbe runs protojson's FieldMask rules on one path.
type fmProbe struct{}

func (fmProbe) marshal(path string) ([]byte, error) {
	return protojson.Marshal(&fieldmaskpb.FieldMask{Paths: []string{path}})
}

func (fmProbe) unmarshal(jsonPath string) error {
	q, err := protojson.Marshal(wrapperspb.String(jsonPath))
	if err != nil {
		return err
	}
	return protojson.Unmarshal(q, &fieldmaskpb.FieldMask{})
}

// BenchmarkDecodeQuery is a GET binding its typical query: scalars, a
// nested field and a repeated one, by proto and JSON names.
func BenchmarkDecodeQuery(b *testing.B) {
	r := kitchenRouter(b, DefaultConfig())
	req := httptest.NewRequest("GET", "/v1/sinks/x?count=5&nested.note=n&tags=a&tags=b&pageSize=7&color=RED", nil)
	bd, vars := match(b, r, req)
	b.ReportAllocs()
	for b.Loop() {
		if err := wireOf(bd.Codec(), req, vars); err != nil {
			b.Fatal(err)
		}
	}
}
