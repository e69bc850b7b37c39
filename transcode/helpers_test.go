package transcode

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-dev/portico/policies/chain"
)

func jsonEqual(tb testing.TB, a, b string) bool {
	tb.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		tb.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		tb.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

// decode runs codec's request decoding and returns the message the
// upstream would read (the payload's wire bytes, decoded).
func decode(tb testing.TB, codec Codec, r *http.Request, vars []string) (proto.Message, error) {
	tb.Helper()
	p, err := codec.DecodeRequest(r, vars)
	if err != nil {
		return nil, err
	}
	msg, err := p.Message()
	if err != nil {
		tb.Fatalf("the decoded request does not unmarshal: %v", err)
	}
	return msg, nil
}

// wireOf decodes the request into the bytes the upstream would get, as the
// edge does: what a benchmark measures.
func wireOf(codec Codec, r *http.Request, vars []string) error {
	p, err := codec.DecodeRequest(r, vars)
	if err != nil {
		return err
	}
	_, err = p.Wire()
	return err
}

// answer is msg as an upstream's answer arrives: wire bytes.
func answer(tb testing.TB, codec Codec, msg proto.Message) *chain.Payload {
	tb.Helper()
	wire, err := proto.Marshal(msg)
	if err != nil {
		tb.Fatal(err)
	}
	p := codec.NewResponse()
	p.SetWire(wire)
	return p
}

func protoreflectString(s string) protoreflect.Value { return protoreflect.ValueOfString(s) }
