package wirejson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/cmd/examples/services"
	"github.com/portico-dev/portico/mesh/meshtest"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
)

// compileNamed compiles a proto source and returns its message name.
func compileNamed(t *testing.T, src, name string) protoreflect.MessageDescriptor {
	t.Helper()
	md := meshtest.CompileProto(t, src).Messages().ByName(protoreflect.Name(name))
	if md == nil {
		t.Fatalf("no message %s", name)
	}
	return md
}

// TestEncodeDeclines checks what NewEncoder refuses, naming why.
func TestEncodeDeclines(t *testing.T) {
	const proto2 = `
syntax = "proto2";
package wirejson.p2;
enum Closed { C0 = 0; C1 = 1; }
message Group { optional group G = 1 { optional int32 x = 2; } }
message Req { optional Inner inner = 1; }
message Inner { required int32 a = 1; }
message WithClosed { repeated Closed c = 1; }
message ClosedMap { map<string, Closed> m = 1; }
message Ext { extensions 100 to 200; }
message HasExt { optional Ext e = 1; }
`
	const editions = `
edition = "2023";
package wirejson.ed;
message Delimited { Delimited child = 1 [features.message_encoding = DELIMITED]; }
enum Shut { option features.enum_type = CLOSED; S0 = 0; }
message UsesShut { Shut s = 1; }
`
	for _, tc := range []struct {
		src, msg, reason string
	}{
		{proto2, "Group", "groups"},
		{proto2, "Req", "required"},
		{proto2, "WithClosed", "closed enum"},
		{proto2, "ClosedMap", "closed enum"},
		{proto2, "Ext", "extension ranges"},
		{proto2, "HasExt", "extension ranges"},
		{editions, "Delimited", "delimited"},
		{editions, "UsesShut", "closed enum"},
	} {
		_, err := NewEncoder(compileNamed(t, tc.src, tc.msg), EncodeOptions{})
		var d *encDeclined
		if !errors.As(err, &d) || !errorIs(err, tc.reason) {
			t.Errorf("%s: NewEncoder error %v, want a decline mentioning %q", tc.msg, err, tc.reason)
		}
	}
}

// TestEncodeProto2AndEditions checks explicit presence: an absent field
// renders null, a present one its value (even the default), proto2
// defaults aside; proto2 strings are not UTF-8 checked until rendered.
func TestEncodeProto2AndEditions(t *testing.T) {
	const proto2 = `
syntax = "proto2";
package wirejson.p2;
message Opt {
  optional int32 a = 1 [default = 5];
  optional string s = 2 [default = "x"];
  repeated int32 r = 3;
  optional Opt child = 4;
  map<string, int32> m = 5;
  repeated int32 p = 6 [packed = true];
  oneof o { int32 oa = 7; string ob = 8; }
}
`
	const editions = `
edition = "2023";
package wirejson.ed;
message E {
  int32 a = 1;
  string s = 2;
  int32 b = 3 [features.field_presence = IMPLICIT];
  E child = 4;
  repeated int32 r = 5;
}
`
	res := testResolver(t)
	for _, tc := range []struct {
		src, msg string
		wire     []byte
		has      string
		fails    bool
	}{
		{proto2, "Opt", nil, `{"a":null,"s":null,"r":[],"child":null,"m":{},"p":[]}`, false},
		{proto2, "Opt", cat(tagVarint(1, 5), tagString(2, ""), tagVarint(3, 1), tagBytes(3, packedVarints(2)), tagVarint(6, 3), tagVarint(8, 1), tagString(8, "b")),
			`{"a":5,"s":"","r":[1,2],"child":null,"m":{},"p":[3],"ob":"b"}`, false},
		{proto2, "Opt", cat(tagString(2, "\xff"), tagString(2, "ok")), `"s":"ok"`, false},
		{proto2, "Opt", tagString(2, "\xff"), "", true},
		{editions, "E", nil, `{"a":null,"s":null,"b":0,"child":null,"r":[]}`, false},
		{editions, "E", cat(tagVarint(1, 0), tagBytes(5, packedVarints(1, 2))), `{"a":0,"s":null,"b":0,"child":null,"r":[1,2]}`, false},
		{editions, "E", tagString(2, "\xff"), "", true},
	} {
		md := compileNamed(t, tc.src, tc.msg)
		enc, err := NewEncoder(md, EncodeOptions{Resolver: res})
		if err != nil {
			t.Fatal(err)
		}
		want, refErr := reference(md, res, tc.wire)
		got, err := enc.Append(nil, tc.wire)
		if tc.fails {
			if err == nil || refErr == nil {
				t.Errorf("%s %x: want both to fail, got %v / %v", tc.msg, tc.wire, err, refErr)
			}
			continue
		}
		if err != nil || refErr != nil {
			t.Fatalf("%s %x: %v / %v", tc.msg, tc.wire, err, refErr)
		}
		assertSameJSON(t, got, want)
		if !bytes.Contains(got, []byte(tc.has)) {
			t.Errorf("%s: %s lacks %s", tc.msg, got, tc.has)
		}
	}
}

// TestEncodeDepth checks the recursion limit matches proto.Unmarshal's, at
// its edge, for nested messages and for map entries.
func TestEncodeDepth(t *testing.T) {
	res := testResolver(t)
	md := kitchenMessage(t, "Tree")
	enc, err := NewEncoder(md, EncodeOptions{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	nest := func(levels int, wrap func([]byte) []byte) []byte {
		var b []byte
		for range levels {
			b = wrap(b)
		}
		return b
	}
	left := func(b []byte) []byte { return tagBytes(2, b) }
	byName := func(b []byte) []byte { return tagBytes(5, tagBytes(2, b)) } // an entry, then a Tree
	for _, tc := range []struct {
		name string
		wire []byte
	}{
		{"messages under the limit", nest(encMaxDepth-1, left)},
		{"messages at the limit", nest(encMaxDepth, left)},
		{"map entries under the limit", nest(encMaxDepth/2-1, byName)},
		{"map entries at the limit", nest(encMaxDepth/2, byName)},
	} {
		want, refErr := reference(md, res, tc.wire)
		got, err := enc.Append(nil, tc.wire)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("%s: encoder error %v, reference error %v", tc.name, err, refErr)
		}
		if err == nil {
			// (json.Compact stops at depth 10000; Tree's strings are empty.)
			if !bytes.Equal(got, bytes.ReplaceAll(want, []byte(" "), nil)) {
				t.Fatalf("%s: output differs", tc.name)
			}
		}
		t.Logf("%s: error %v", tc.name, err)
	}
}

// productWire is the wire bytes of the example service's list response
// (20 products of about 1 KB of JSON each) and of its first product.
func productWire(tb testing.TB) (list, product []byte) {
	tb.Helper()
	resp, err := services.NewProducts().ListProducts(tb.Context(), &productsv1.ListProductsRequest{PageSize: 20})
	if err != nil {
		tb.Fatal(err)
	}
	if list, err = proto.Marshal(resp); err != nil {
		tb.Fatal(err)
	}
	if product, err = proto.Marshal(resp.GetProducts()[0]); err != nil {
		tb.Fatal(err)
	}
	return list, product
}

// TestEncodeConcurrent renders from many goroutines with one encoder (run
// it with -race), Any payload cache included.
func TestEncodeConcurrent(t *testing.T) {
	fx := newEncodeFixture(t)
	md := kitchenMessage(t, "Sink")
	var enc *Encoder
	for i := range fx.msgs {
		if fx.msgs[i] == md {
			enc = fx.encs[i]
		}
	}
	r := rand.New(rand.NewPCG(3, 3))
	var wires, wants [][]byte
	for range 16 {
		m := genMessage(r, md, 4)
		wire, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := marshalReference(m, fx.res)
		if err != nil {
			t.Fatal(err)
		}
		wires, wants = append(wires, wire), append(wants, compactJSON(t, want))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			var buf []byte
			for i := range 50 {
				k := (g + i) % len(wires)
				var err error
				if buf, err = enc.Append(buf[:0], wires[k]); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, wants[k]) {
					errs <- fmt.Errorf("goroutine %d: output %d differs", g, k)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func compactJSON(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestEncodeAllocs checks a steady-state rendering of messages without maps
// or Any allocates nothing, and one with maps little.
func TestEncodeAllocs(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("allocation counts are off under coverage and -race")
	}
	list, product := productWire(t)
	md := (&productsv1.Product{}).ProtoReflect().Descriptor()
	enc, err := NewEncoder(md, EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A Product without its attributes map.
	noMap := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(product, noMap); err != nil {
		t.Fatal(err)
	}
	noMap.Clear(md.Fields().ByName("attributes"))
	plain, err := proto.Marshal(noMap)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 64<<10)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := enc.Append(buf[:0], plain); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Product without maps: %v allocations per Append, want 0", n)
	}
	listEnc, err := NewEncoder((&productsv1.ListProductsResponse{}).ProtoReflect().Descriptor(), EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := listEnc.Append(buf[:0], list); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("list of 20 products (with maps): %v allocations per Append, want 0", n)
	}
}

// BenchmarkEncode compares the old path (proto.Unmarshal into dynamicpb,
// then protojson), protojson alone (of the dynamicpb message decoded from
// the same bytes) and the encoder, on the example product and on a list
// response of 20 products.
func BenchmarkEncode(b *testing.B) {
	list, product := productWire(b)
	for _, tc := range []struct {
		name string
		md   protoreflect.MessageDescriptor
		wire []byte
	}{
		{"product", (&productsv1.Product{}).ProtoReflect().Descriptor(), product},
		{"list20", (&productsv1.ListProductsResponse{}).ProtoReflect().Descriptor(), list},
	} {
		opts := protojson.MarshalOptions{EmitUnpopulated: true}
		b.Run(tc.name+"/unmarshal+protojson", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.wire)))
			for b.Loop() {
				m := dynamicpb.NewMessage(tc.md)
				if err := proto.Unmarshal(tc.wire, m); err != nil {
					b.Fatal(err)
				}
				if _, err := opts.Marshal(m); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/protojson", func(b *testing.B) {
			m := dynamicpb.NewMessage(tc.md)
			if err := proto.Unmarshal(tc.wire, m); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.wire)))
			for b.Loop() {
				if _, err := opts.Marshal(m); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/wirejson", func(b *testing.B) {
			enc, err := NewEncoder(tc.md, EncodeOptions{})
			if err != nil {
				b.Fatal(err)
			}
			var buf []byte
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.wire)))
			for b.Loop() {
				if buf, err = enc.Append(buf[:0], tc.wire); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
