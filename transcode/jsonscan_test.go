package transcode

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/portico-dev/portico/policies/chain"
)

func TestBodyScanLimits(t *testing.T) { forCodecs(t, testBodyScanLimits) }

func testBodyScanLimits(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxRepeatedElements = 4
	cfg.MaxJSONDepth = 5
	r := kitchenRouter(t, cfg)
	tests := []struct {
		desc, method, url, body string
		wantErr                 string // empty: the scan lets it through (protojson may still refuse it)
	}{
		{desc: "at the limit", method: "POST", url: "/v1/sinks", body: `{"nums":[1,2],"tags":["a","b"]}`},
		{desc: "over the limit across fields", method: "POST", url: "/v1/sinks", body: `{"nums":[1,2],"tags":["a","b","c"]}`,
			wantErr: "field tags[2] goes past the limit of 4 elements"},
		{desc: "map entries count", method: "POST", url: "/v1/sinks", body: `{"labels":{"a":"1","b":"2","c":"3","d":"4","e":"5"}}`,
			wantErr: "field labels.e goes past the limit"},
		{desc: "struct members count", method: "POST", url: "/v1/sinks", body: `{"meta":{"a":1,"b":[1,2,3]}}`,
			wantErr: "field meta.b[2] goes past"},
		{desc: "message fields do not count", method: "POST", url: "/v1/sinks",
			body: `{"id":"x","name":"n","count":1,"big":"2","u32":3,"flag":true,"nested":{"note":"n","level":1}}`},
		{desc: "empty arrays count nothing", method: "POST", url: "/v1/sinks", body: `{"nums":[],"tags":[ ],"colors":[]}`},
		{desc: "strings with brackets, quotes and escapes", method: "POST", url: "/v1/sinks",
			body: `{"name":"[[[[[,,,,]]]]\"{{{","tags":["\\\\","a\"],[,"]}`},
		{desc: "repeated body field", method: "PATCH", url: "/v1/sinks/x/tags", body: `["a","b","c","d","e"]`,
			wantErr: "field (body)[4] goes past"},
		{desc: "depth", method: "POST", url: "/v1/sinks", body: `{"meta":{"a":{"b":{"c":{"d":{}}}}}}`,
			wantErr: "nests deeper than the limit of 5"},
		{desc: "escaped key resolves", method: "POST", url: "/v1/sinks", body: `{"n\u0075ms":[1,2,3,4,5]}`,
			wantErr: "goes past the limit"},
		{desc: "unterminated string: left to protojson", method: "POST", url: "/v1/sinks", body: `{"tags":["a`},
		{desc: "garbage: left to protojson", method: "POST", url: "/v1/sinks", body: `]]]}}},,,:::"`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.url, strings.NewReader(tt.body))
			b, vars := match(t, r, req)
			_, err := decode(t, b.Codec(), req, vars)
			if tt.wantErr == "" {
				if err != nil && strings.Contains(err.Error(), "limit") {
					t.Fatalf("scan refused it: %v", err)
				}
				return
			}
			st, code := chain.StatusOf(err)
			if err == nil || st.Code() != codes.InvalidArgument || code != 400 || !strings.Contains(st.Message(), tt.wantErr) {
				t.Fatalf("got %v, want 400 containing %q", err, tt.wantErr)
			}
		})
	}
}

// The scan never reads past its input and never panics, whatever the bytes.
func FuzzBodyScan(f *testing.F) {
	for _, s := range []string{`{"nums":[1,2]}`, `{"a":"\"`, `[[[`, `{"labels":{"k":{"x":[1]}}}`, `"\\"`} {
		f.Add([]byte(s))
	}
	md := parseService(f, kitchenProto, "kitchen.v1.Kitchen").Methods().ByName("Echo").Input()
	f.Fuzz(func(t *testing.T, data []byte) {
		err := walkBody(data, md, nil, 8, 16)
		if err != nil && bytes.Count(data, []byte{','})+bytes.Count(data, []byte{'{'})+bytes.Count(data, []byte{'['})+bytes.Count(data, []byte{':'}) == 0 {
			t.Fatalf("limit error %v on input without containers", err)
		}
		// The shortcut may only skip walks that would pass.
		for _, lim := range [][2]int{{8, 16}, {2, 3}, {1, 1}, {64, 10000}} {
			if belowLimits(data, lim[0], lim[1]) {
				if err := walkBody(data, md, nil, lim[0], lim[1]); err != nil {
					t.Fatalf("belowLimits(depth %d, elements %d) skipped a walk that fails: %v", lim[0], lim[1], err)
				}
			}
		}
	})
}
