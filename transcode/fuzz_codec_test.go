package transcode

import (
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/portico-dev/portico/policies/chain"
)

// FuzzQueryBinding feeds arbitrary query strings to a binding with every
// field kind: decoding never panics, and every failure is a 400 that says
// what was wrong.
func FuzzQueryBinding(f *testing.F) {
	for _, s := range []string{
		"count=5&color=RED&tags=a&tags=b", "nested.child.level=3", "ts=2024-01-02T03:04:05Z&dur=1s",
		"mask=a,b&wi=1&ws=x&wb=true", "a=1&b=2", "data=aGk=", "count=%zz", "=&&=x", "u64=18446744073709551616",
		"mask=int32Val,nested.child", "mask.paths=a_b", "labels[k]=v&codes[1]=x&paint[p]=RED", "meta=%7B%22a%22%3A1%7D",
		"val=1.5&list=%5B%5D", "wi.value=3&ts.seconds=-5", "items.note=x", "name.x=1", "nested=x", "f=NaN&d=-Inf",
	} {
		f.Add(s)
	}
	r := kitchenRouter(f, DefaultConfig())
	req := httptest.NewRequest("GET", "/v1/sinks/x", nil)
	b, vars := match(f, r, req)
	f.Fuzz(func(t *testing.T, q string) {
		req := httptest.NewRequest("GET", "/v1/sinks/x", nil)
		req.URL.RawQuery = q
		msg, err := decode(t, b.Codec(), req, vars)
		if err != nil {
			st, code := chain.StatusOf(err)
			if st.Code() != codes.InvalidArgument || code != 400 || st.Message() == "" {
				t.Fatalf("query %q: %v %d %q", q, st.Code(), code, st.Message())
			}
			return
		}
		roundTrip(t, "query "+strconv.Quote(q), msg)
	})
}

// roundTrip fails t unless msg, a request that was bound, encodes to the
// wire and to JSON and decodes back from each to an equal message: what
// the edge binds, the upstream (and grpc-gateway) can read.
func roundTrip(t *testing.T, what string, msg proto.Message) {
	t.Helper()
	wire, err := proto.Marshal(msg)
	if err != nil {
		t.Fatalf("%s built a message that does not marshal: %v", what, err)
	}
	back := msg.ProtoReflect().Type().New().Interface()
	if err := proto.Unmarshal(wire, back); err != nil || !proto.Equal(msg, back) {
		t.Fatalf("%s: the wire form does not round-trip (%v)", what, err)
	}
	js, err := protojson.Marshal(msg)
	if err != nil {
		t.Fatalf("%s built a message that protojson cannot write: %v", what, err)
	}
	back = msg.ProtoReflect().Type().New().Interface()
	if err := protojson.Unmarshal(js, back); err != nil || !proto.Equal(msg, back) {
		t.Fatalf("%s: the JSON form %s does not round-trip (%v)", what, js, err)
	}
}

// FuzzJSONBody feeds arbitrary bodies to a body:"*" binding and to a
// PATCH whose body is one message field (which infers update_mask from the
// body's keys), with the fast codec and with protojson: never a panic, a
// rejected body is a 400 or 413 with a message, and both codecs accept the
// same bodies and build the same request from them.
func FuzzJSONBody(f *testing.F) {
	for _, s := range []string{
		`{"id":"x","count":1}`, `{"meta":{"a":[1,{"b":null}]}}`, `{"labels":{"k":"v"}}`, `{"ts":"2024-01-01T00:00:00Z"}`,
		`{"a":"x","b":1}`, `[`, `{"big":"1e3"}`, `{"nested":{"child":{"child":{"note":"x"}}}}`, `{"colors":["RED",2]}`,
		`{"mask":"int32Val,nested.child"}`, `{"nested":{},"tags":[],"byName":{"k":{"note":"n"}}}`, `{"items":[{"note":"a"}],"val":null}`,
		`{"id":"body","name":"n"}`, `{"sink":{"id":"x"}}`, `null`, `{"f":"NaN","d":"-Infinity","u64":"18446744073709551615"}`,
	} {
		f.Add([]byte(s))
	}
	cfg := DefaultConfig()
	cfg.MaxBodyBytes = 1 << 16
	fast := kitchenRouter(f, cfg)
	cfg.Codec = CodecProtojson
	reference := kitchenRouter(f, cfg)
	targets := [][2]string{{"POST", "/v1/sinks"}, {"PATCH", "/v1/sinks/s1"}}
	for _, target := range targets {
		b, _ := match(f, fast, httptest.NewRequest(target[0], target[1], nil))
		if target[0] == "PATCH" && b.codec.updateMask == nil {
			f.Fatal("the PATCH binding does not infer update_mask")
		}
	}
	decodeWith := func(t *testing.T, r *Router[*Binding], target [2]string, body []byte) (proto.Message, error) {
		req := httptest.NewRequest(target[0], target[1], strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		b, vars := match(t, r, req)
		return decode(t, b.Codec(), req, vars)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, target := range targets {
			what := target[0] + " body " + strconv.Quote(string(body))
			msg, err := decodeWith(t, fast, target, body)
			want, refErr := decodeWith(t, reference, target, body)
			if (err == nil) != (refErr == nil) {
				t.Fatalf("%s: fast codec error %v, protojson error %v", what, err, refErr)
			}
			if err != nil {
				st, code := chain.StatusOf(err)
				var te *chain.Error
				if (code != 400 && code != 413) || st.Message() == "" || (code == 413 && !errors.As(err, &te)) {
					t.Fatalf("%s: %v %d %q", what, st.Code(), code, st.Message())
				}
				continue
			}
			if !sameMessage(t, msg, want) {
				got, _ := protojson.Marshal(msg)
				ref, _ := protojson.Marshal(want)
				t.Fatalf("%s: the fast codec built %s, protojson %s", what, got, ref)
			}
			roundTrip(t, what, msg)
		}
	})
}

// sameMessage compares messages of two compilations of one proto (whose
// descriptors differ): b is re-read as a's type.
func sameMessage(t *testing.T, a, b proto.Message) bool {
	t.Helper()
	wire, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	again := a.ProtoReflect().Type().New().Interface()
	if err := proto.Unmarshal(wire, again); err != nil {
		t.Fatal(err)
	}
	return proto.Equal(a, again)
}
