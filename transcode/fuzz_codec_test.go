package transcode

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// FuzzQueryBinding feeds arbitrary query strings to a binding with every
// field kind: decoding never panics, and every failure is a 400 that says
// what was wrong.
func FuzzQueryBinding(f *testing.F) {
	for _, s := range []string{
		"count=5&color=RED&tags=a&tags=b", "nested.child.level=3", "ts=2024-01-02T03:04:05Z&dur=1s",
		"mask=a,b&wi=1&ws=x&wb=true", "a=1&b=2", "data=aGk=", "count=%zz", "=&&=x", "u64=18446744073709551616",
	} {
		f.Add(s)
	}
	r := kitchenRouter(f, DefaultConfig())
	req := httptest.NewRequest("GET", "/v1/sinks/x", nil)
	b, vars := match(f, r, req)
	f.Fuzz(func(t *testing.T, q string) {
		req := httptest.NewRequest("GET", "/v1/sinks/x", nil)
		req.URL.RawQuery = q
		msg, err := b.Codec().DecodeRequest(req, vars)
		if err != nil {
			st, code := StatusOf(err)
			if st.Code() != codes.InvalidArgument || code != 400 || st.Message() == "" {
				t.Fatalf("query %q: %v %d %q", q, st.Code(), code, st.Message())
			}
			return
		}
		if _, err := proto.Marshal(msg); err != nil {
			t.Fatalf("query %q built an unmarshalable message: %v", q, err)
		}
	})
}

// FuzzJSONBody feeds arbitrary bodies to a body:"*" binding: never a
// panic, and a rejected body is a 400 or 413 with a message.
func FuzzJSONBody(f *testing.F) {
	for _, s := range []string{
		`{"id":"x","count":1}`, `{"meta":{"a":[1,{"b":null}]}}`, `{"labels":{"k":"v"}}`, `{"ts":"2024-01-01T00:00:00Z"}`,
		`{"a":"x","b":1}`, `[`, `{"big":"1e3"}`, `{"nested":{"child":{"child":{"note":"x"}}}}`, `{"colors":["RED",2]}`,
	} {
		f.Add([]byte(s))
	}
	cfg := DefaultConfig()
	cfg.MaxBodyBytes = 1 << 16
	r := kitchenRouter(f, cfg)
	req := httptest.NewRequest("POST", "/v1/sinks", nil)
	b, vars := match(f, r, req)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/v1/sinks", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		msg, err := b.Codec().DecodeRequest(req, vars)
		if err != nil {
			st, code := StatusOf(err)
			var te *Error
			if (code != 400 && code != 413) || st.Message() == "" || (code == 413 && !errors.As(err, &te)) {
				t.Fatalf("body %q: %v %d %q", body, st.Code(), code, st.Message())
			}
			return
		}
		if _, err := proto.Marshal(msg); err != nil {
			t.Fatalf("body %q built an unmarshalable message: %v", body, err)
		}
	})
}
