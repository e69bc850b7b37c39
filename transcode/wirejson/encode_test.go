package wirejson

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// assertSameJSON checks that got is compact JSON equal, as a JSON value, to
// want (protojson's output): same members (no duplicates; order aside),
// same array elements, same strings, numbers with the same text. It also
// checks the stronger property the encoder is built for: got is want
// compacted, byte for byte.
func assertSameJSON(t testing.TB, got, want []byte) {
	t.Helper()
	gv, err := decodeJSON(got)
	if err != nil {
		t.Fatalf("encoder output is not JSON: %v\n%s", err, got)
	}
	wv, err := decodeJSON(want)
	if err != nil {
		t.Fatalf("reference output is not JSON: %v\n%s", err, want)
	}
	if path, ok := sameJSON(gv, wv, "$"); !ok {
		t.Fatalf("JSON differs at %s\ngot  %s\nwant %s", path, got, want)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, got); err != nil || !bytes.Equal(compact.Bytes(), got) {
		t.Fatalf("encoder output is not compact:\n%s", got)
	}
	compact.Reset()
	_ = json.Compact(&compact, want)
	if !bytes.Equal(compact.Bytes(), got) {
		t.Fatalf("encoder output is not protojson's compacted\ngot  %s\nwant %s", got, compact.Bytes())
	}
}

// jsonObject is a decoded JSON object: members by name.
type jsonObject map[string]any

// decodeJSON decodes one JSON value, numbers as json.Number, failing on
// duplicate member names and trailing data.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := decodeJSONValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the value")
	}
	return v, nil
}

func decodeJSONValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		obj := jsonObject{}
		for dec.More() {
			name, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key := name.(string)
			if _, dup := obj[key]; dup {
				return nil, fmt.Errorf("duplicate member %q", key)
			}
			if obj[key], err = decodeJSONValue(dec); err != nil {
				return nil, err
			}
		}
		_, err := dec.Token()
		return obj, err
	case json.Delim('['):
		var arr []any
		for dec.More() {
			v, err := decodeJSONValue(dec)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		_, err := dec.Token()
		return arr, err
	}
	return tok, nil
}

// sameJSON compares decoded JSON values, returning the path of the first
// difference.
func sameJSON(a, b any, path string) (string, bool) {
	switch a := a.(type) {
	case jsonObject:
		b, ok := b.(jsonObject)
		if !ok || len(a) != len(b) {
			return path, false
		}
		for k, av := range a {
			bv, ok := b[k]
			if !ok {
				return path + "." + k, false
			}
			if p, ok := sameJSON(av, bv, path+"."+k); !ok {
				return p, false
			}
		}
		return "", true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return path, false
		}
		for i := range a {
			if p, ok := sameJSON(a[i], b[i], fmt.Sprintf("%s[%d]", path, i)); !ok {
				return p, false
			}
		}
		return "", true
	}
	// Strings, json.Numbers (the same text: both sides format numbers the
	// same way), bools and nil.
	return path, a == b
}

// errorIs reports whether err is non-nil and mentions all of parts.
func errorIs(err error, parts ...string) bool {
	if err == nil {
		return false
	}
	for _, p := range parts {
		if !bytes.Contains([]byte(err.Error()), []byte(p)) {
			return false
		}
	}
	return true
}

// Wire builders for hand-made records.

func tagVarint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func tagFixed32(num protowire.Number, v uint32) []byte {
	return protowire.AppendFixed32(protowire.AppendTag(nil, num, protowire.Fixed32Type), v)
}

func tagFixed64(num protowire.Number, v uint64) []byte {
	return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), v)
}

func tagBytes(num protowire.Number, parts ...[]byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), cat(parts...))
}

func tagString(num protowire.Number, s string) []byte { return tagBytes(num, []byte(s)) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func packedVarints(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = protowire.AppendVarint(b, v)
	}
	return b
}

// reference renders wire as the old path does: proto.Unmarshal into a
// dynamicpb message, then protojson.
func reference(md protoreflect.MessageDescriptor, res resolver, wire []byte) ([]byte, error) {
	m := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(wire, m); err != nil {
		return nil, err
	}
	return marshalReference(m, res)
}

// encodeCase is a hand-built wire input of a kitchen message type: the
// encoder must agree with the reference (both fail, or both render the same
// JSON), and its output must contain each of has (or its error mention
// errHas).
type encodeCase struct {
	name   string
	msg    string
	wire   []byte
	has    []string
	errHas string // non-empty: both must fail
}

// caseMessage finds a kitchen message by name, or any linked one by full
// name.
func caseMessage(t *testing.T, name string) protoreflect.MessageDescriptor {
	t.Helper()
	if !strings.Contains(name, ".") {
		return kitchenMessage(t, name)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		t.Fatal(err)
	}
	return d.(protoreflect.MessageDescriptor)
}

func runEncodeCases(t *testing.T, cases []encodeCase) {
	t.Helper()
	res := testResolver(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			md := caseMessage(t, tc.msg)
			enc, err := NewEncoder(md, EncodeOptions{Resolver: res})
			if err != nil {
				t.Fatal(err)
			}
			want, refErr := reference(md, res, tc.wire)
			got, err := enc.Append([]byte("prefix"), tc.wire)
			if tc.errHas != "" {
				if err == nil || refErr == nil {
					t.Fatalf("want both to fail; encoder: %v %s, reference: %v %s", err, got, refErr, want)
				}
				if !errorIs(err, tc.errHas) {
					t.Fatalf("error %q does not mention %q", err, tc.errHas)
				}
				if string(got) != "prefix" {
					t.Fatalf("on error Append returned %q, want dst unchanged", got)
				}
				return
			}
			if err != nil || refErr != nil {
				t.Fatalf("encoder: %v, reference: %v", err, refErr)
			}
			if !bytes.HasPrefix(got, []byte("prefix")) {
				t.Fatalf("Append did not append to dst: %s", got)
			}
			got = got[len("prefix"):]
			assertSameJSON(t, got, want)
			for _, h := range tc.has {
				if !bytes.Contains(got, []byte(h)) {
					t.Errorf("output lacks %s:\n%s", h, got)
				}
			}
		})
	}
}

// TestEncodeWireSemantics covers how records combine: order, repetition,
// packing, merging, oneofs, map entries, unknown fields and wrong wire
// types.
func TestEncodeWireSemantics(t *testing.T) {
	runEncodeCases(t, []encodeCase{
		{name: "empty message renders defaults", msg: "Scalars", wire: nil,
			has: []string{`"i32":0`, `"i64":"0"`, `"u64":"0"`, `"fl":0`, `"b":false`, `"s":""`, `"by":""`,
				`"color":"COLOR_UNSPECIFIED"`, `"nullValue":null`, `"pageSize":0`, `"aBC":0`, `"custom":""`, `"v2Value":0`}},
		{name: "empty lists maps and messages", msg: "Sink", wire: nil,
			has: []string{`"scalars":null`, `"sinks":[]`, `"pageSize":0`}},
		{name: "fields in any order render in declaration order", msg: "Scalars",
			wire: cat(tagString(14, "s"), tagVarint(1, 5), tagVarint(2047, 9)),
			has:  []string{`{"i32":5,"i64":"0"`, `"s":"s"`, `"bigNumber":"9"`}},
		{name: "last singular scalar wins", msg: "Scalars",
			wire: cat(tagVarint(1, 1), tagString(14, "first"), tagVarint(1, 2), tagString(14, "second")),
			has:  []string{`"i32":2`, `"s":"second"`}},
		{name: "repeated non-contiguous mixed packed and unpacked", msg: "Repeats",
			wire: cat(tagBytes(1, packedVarints(1, 2)), tagString(14, "x"), tagVarint(1, 3), tagBytes(1, packedVarints(4)),
				tagFixed32(7, 7), tagBytes(7, protowire.AppendFixed32(nil, 8)), tagVarint(21, 1), tagBytes(21, packedVarints(2, 3))),
			has: []string{`"i32":[1,2,3,4]`, `"fx32":[7,8]`, `"uI32":[1,2,3]`, `"s":["x"]`}},
		{name: "empty packed record", msg: "Repeats", wire: tagBytes(2),
			has: []string{`"i64":[]`}},
		{name: "empty packed records between elements", msg: "Repeats", wire: cat(tagBytes(2), tagVarint(2, 1), tagBytes(2), tagBytes(2, packedVarints(2))),
			has: []string{`"i64":["1","2"]`}},
		{name: "repeated messages and strings keep wire order", msg: "Repeats",
			wire: cat(tagBytes(18, tagString(1, "a")), tagString(14, "s1"), tagBytes(18), tagString(14, "s2")),
			has:  []string{`"nested":[{"note":"a",`, `{"note":"","level":0,"leaf":null,"leaves":[]}]`, `"s":["s1","s2"]`}},
		{name: "singular message records merge", msg: "Sink",
			wire: cat(tagBytes(2, tagVarint(1, 1), tagString(14, "a")), tagString(1, "id"), tagBytes(2, tagVarint(2, 7), tagString(14, "b"))),
			has:  []string{`"i32":1,"i64":"7"`, `"s":"b"`}},
		{name: "merged message lists concatenate", msg: "Sink",
			wire: cat(tagBytes(3, tagBytes(1, packedVarints(1))), tagBytes(3, tagVarint(1, 2))),
			has:  []string{`"i32":[1,2]`}},
		{name: "oneof last member wins", msg: "Oneofs",
			wire: cat(tagVarint(1, 5), tagString(2, "text")),
			has:  []string{`{"text":"text","plain":""}`}},
		{name: "oneof message member replaced then set again starts afresh", msg: "Oneofs",
			wire: cat(tagBytes(3, tagString(1, "old")), tagVarint(1, 5), tagBytes(3, tagVarint(2, 9))),
			has:  []string{`"msg":{"note":"","level":9,`}},
		{name: "oneof message member records merge", msg: "Oneofs",
			wire: cat(tagBytes(3, tagString(1, "note")), tagBytes(3, tagVarint(2, 9))),
			has:  []string{`"msg":{"note":"note","level":9,`}},
		{name: "oneof zero values are set", msg: "Oneofs",
			wire: cat(tagVarint(4, 0), tagFixed64(10, 0)),
			has:  []string{`{"color":"COLOR_UNSPECIFIED","ratio":0,"plain":""}`}},
		{name: "oneof null value member", msg: "Oneofs", wire: tagVarint(8, 0),
			has: []string{`{"nothing":null,"plain":""}`}},
		{name: "proto3 optional set to zero renders, unset is omitted", msg: "Optionals",
			wire: cat(tagVarint(1, 0), tagString(3, "")),
			has:  []string{`{"i32":0,"s":""}`}},
		{name: "map entries sort by key and the last duplicate wins", msg: "Maps",
			wire: cat(
				tagBytes(2, tagVarint(1, 10), tagVarint(2, 1)),
				tagBytes(2, tagVarint(1, uint64(1<<64-5)), tagVarint(2, 2)), // -5
				tagBytes(2, tagVarint(1, 10), tagVarint(2, 3)),
				tagBytes(2, tagVarint(2, 4)), // no key: 0
				tagBytes(12, tagVarint(1, 1), tagVarint(2, 1)),
				tagBytes(12, tagVarint(2, 1)),
				tagBytes(1, tagString(1, "b"), tagString(2, "B")),
				tagBytes(1, tagString(1, "a")), // no value
				tagBytes(1, tagString(2, "x"), tagString(1, "ä"), tagString(1, "c")),
			),
			has: []string{`"i32I32":{"-5":2,"0":4,"10":3}`, `"boolBool":{"false":true,"true":true}`, `"strStr":{"a":"","b":"B","c":"x"}`}},
		{name: "map keys of every kind", msg: "Maps",
			wire: cat(
				tagBytes(3, tagVarint(1, 1<<63), tagVarint(2, 1)),
				tagBytes(5, tagVarint(1, 1<<64-1), tagVarint(2, 1)),
				tagBytes(5, tagVarint(1, 2), tagVarint(2, 1)),
				tagBytes(6, tagVarint(1, 3), tagVarint(2, 3)), // sint32 -2
				tagBytes(6, tagVarint(1, 2), tagVarint(2, 2)), // sint32 1
				tagBytes(10, tagFixed32(1, 1<<32-1), tagFixed32(2, 7)),
				tagBytes(11, tagFixed64(1, 1<<64-1), tagFixed64(2, 7)),
			),
			has: []string{`"i64I64":{"-9223372036854775808":"1"}`, `"u64U64":{"2":"1","18446744073709551615":"1"}`,
				`"s32S32":{"-2":-2,"1":1}`, `"sfx32Sfx32":{"-1":7}`, `"sfx64Sfx64":{"-1":"7"}`}},
		{name: "map message values merge within an entry", msg: "Maps",
			wire: tagBytes(17, tagString(1, "k"), tagBytes(2, tagString(1, "n")), tagBytes(2, tagVarint(2, 3))),
			has:  []string{`"strNested":{"k":{"note":"n","level":3,`}},
		{name: "map entry without value renders the empty message", msg: "Maps",
			wire: tagBytes(17, tagString(1, "k")),
			has:  []string{`"strNested":{"k":{"note":"","level":0,"leaf":null,"leaves":[]}}`}},
		{name: "map entry unknown fields and wrong wire types are skipped", msg: "Maps",
			wire: tagBytes(2, tagVarint(3, 1), tagString(1, "x"), tagVarint(1, 4), tagFixed32(2, 1), tagVarint(2, 5)),
			has:  []string{`"i32I32":{"4":5}`}},
		{name: "unknown fields of every wire type are skipped", msg: "Nested",
			wire: cat(tagVarint(100, 1), tagFixed32(101, 1), tagFixed64(102, 1), tagString(103, "x"),
				protowire.AppendTag(nil, 104, protowire.StartGroupType), tagVarint(1, 1),
				protowire.AppendTag(nil, 104, protowire.EndGroupType), tagString(1, "note")),
			has: []string{`{"note":"note","level":0,`}},
		{name: "known fields with another wire type are unknown", msg: "Scalars",
			wire: cat(tagVarint(1, 3), tagFixed32(1, 4), tagString(1, "x"), tagVarint(14, 1), tagFixed64(11, 1), tagVarint(11, 1)),
			has:  []string{`"i32":3`, `"s":""`, `"fl":0`}},
		{name: "wrong wire type for message, list and map fields", msg: "Sink",
			wire: cat(tagVarint(2, 1), tagFixed32(3, 1), tagVarint(4, 1), tagFixed64(10, 1)),
			has:  []string{`"scalars":null`, `"repeats":null`, `"maps":null`, `"sinks":[]`}},
		{name: "packed record of a non-packable list is an element", msg: "Repeats",
			wire: tagBytes(14, []byte{0x08, 0x01}),
			has:  []string{`"s":["\b\u0001"]`}},
		{name: "integer truncation of oversized varints", msg: "Scalars",
			wire: cat(tagVarint(1, 1<<32+5), tagVarint(3, 1<<40+6), tagVarint(5, 1<<33|3), tagVarint(13, 2), tagVarint(16, 1<<32+1)),
			has:  []string{`"i32":5`, `"u32":6`, `"s32":-2`, `"b":true`, `"color":"RED"`}},
		{name: "enum numbers: alias, negative, unknown", msg: "Repeats",
			wire: tagBytes(16, packedVarints(1, 1<<64-1, 7, 3)),
			has:  []string{`"color":["RED","INFRARED",7,"BLUE"]`}},
		{name: "deep field numbers", msg: "Scalars",
			wire: cat(tagString(536870911, "far"), tagVarint(2047, 1)),
			has:  []string{`"farAway":"far"`}},

		{name: "truncated varint", msg: "Scalars", wire: []byte{0x08, 0x80}, errHas: "invalid wire"},
		{name: "overlong varint", msg: "Scalars", wire: append([]byte{0x08}, bytes.Repeat([]byte{0xff}, 10)...), errHas: "invalid wire"},
		{name: "bad length", msg: "Scalars", wire: []byte{0x72, 0x05, 'a'}, errHas: "invalid wire"},
		{name: "truncated tag", msg: "Scalars", wire: []byte{0x80}, errHas: "invalid wire"},
		{name: "field number zero", msg: "Scalars", wire: []byte{0x00, 0x01}, errHas: "invalid wire"},
		{name: "field number past the maximum", msg: "Scalars", wire: protowire.AppendVarint(nil, uint64(1<<29)<<3), errHas: "invalid wire"},
		{name: "reserved wire type", msg: "Scalars", wire: []byte{0x0e, 0x01}, errHas: "invalid wire"},
		{name: "reserved wire type on a known field", msg: "Scalars", wire: []byte{0x0f}, errHas: "invalid wire"},
		{name: "end group without start", msg: "Scalars", wire: protowire.AppendTag(nil, 5, protowire.EndGroupType), errHas: "invalid wire"},
		{name: "unterminated group", msg: "Scalars", wire: cat(protowire.AppendTag(nil, 100, protowire.StartGroupType), tagVarint(1, 1)), errHas: "invalid wire"},
		{name: "mismatched end group", msg: "Scalars",
			wire:   cat(protowire.AppendTag(nil, 100, protowire.StartGroupType), protowire.AppendTag(nil, 101, protowire.EndGroupType)),
			errHas: "invalid wire"},
		{name: "truncated fixed64", msg: "Scalars", wire: []byte{0x61, 1, 2, 3}, errHas: "invalid wire"},
		{name: "truncated packed varints", msg: "Repeats", wire: tagBytes(1, []byte{0x80}), errHas: "packed"},
		{name: "ragged packed fixed32", msg: "Repeats", wire: tagBytes(7, []byte{1, 2, 3}), errHas: "packed"},
		{name: "invalid UTF-8 in a string", msg: "Scalars", wire: tagString(14, "a\xffb"), errHas: "Scalars.s: invalid UTF-8"},
		{name: "invalid UTF-8 in an overwritten string", msg: "Scalars", wire: cat(tagString(14, "\xc3"), tagString(14, "ok")), errHas: "UTF-8"},
		{name: "invalid UTF-8 in a repeated string", msg: "Repeats", wire: tagString(14, "\xed\xa0\x80"), errHas: "UTF-8"},
		{name: "invalid UTF-8 in a map key", msg: "Maps", wire: tagBytes(1, tagString(1, "\xff")), errHas: "UTF-8"},
		{name: "invalid UTF-8 in a replaced map entry", msg: "Maps",
			wire: cat(tagBytes(17, tagString(1, "k"), tagBytes(2, tagString(1, "\xff"))), tagBytes(17, tagString(1, "k"))), errHas: "UTF-8"},
		{name: "malformed replaced oneof member", msg: "Oneofs", wire: cat(tagBytes(3, []byte{0x08}), tagVarint(1, 1)), errHas: "invalid wire"},
		{name: "malformed nested message", msg: "Sink", wire: tagBytes(2, []byte{0x08}), errHas: "invalid wire"},
		{name: "malformed map entry", msg: "Maps", wire: tagBytes(2, []byte{0x08}), errHas: "invalid map entry"},
	})
}

// TestEncPlain8 checks the eight-byte fast path of string escaping against
// the byte-by-byte rule: every byte value in every position.
func TestEncPlain8(t *testing.T) {
	plain := func(c byte) bool { return c >= ' ' && c < utf8.RuneSelf && c != '"' && c != '\\' }
	for pos := range 8 {
		for c := range 256 {
			b := []byte("abcdefgh")
			b[pos] = byte(c)
			want := plain(byte(c))
			if got := encPlain8(binary.LittleEndian.Uint64(b)); got != want {
				t.Fatalf("byte %#x at %d: plain %t, want %t", c, pos, got, want)
			}
		}
	}
}
