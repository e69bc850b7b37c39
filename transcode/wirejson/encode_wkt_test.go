package wirejson

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

func tsWire(secs int64, nanos int32) []byte {
	return cat(tagVarint(1, uint64(secs)), tagVarint(2, uint64(int64(nanos))))
}

const (
	tsName     = "google.protobuf.Timestamp"
	durName    = "google.protobuf.Duration"
	valueName  = "google.protobuf.Value"
	anyName    = "google.protobuf.Any"
	kitchenURL = "type.googleapis.com/wirejson.kitchen.v1."
	wktURL     = "type.googleapis.com/google.protobuf."
)

// TestEncodeWellKnown covers the rules of the well-known types, top-level
// and as fields, with their errors.
func TestEncodeWellKnown(t *testing.T) {
	nan := math.Float64bits(math.NaN())
	inf := math.Float64bits(math.Inf(-1))
	runEncodeCases(t, []encodeCase{
		{name: "timestamp zero", msg: tsName, wire: nil, has: []string{`"1970-01-01T00:00:00Z"`}},
		{name: "timestamp millis", msg: tsName, wire: tsWire(1, 500_000_000), has: []string{`"1970-01-01T00:00:01.500Z"`}},
		{name: "timestamp micros", msg: tsName, wire: tsWire(0, 1000), has: []string{`"1970-01-01T00:00:00.000001Z"`}},
		{name: "timestamp nanos", msg: tsName, wire: tsWire(-1, 1), has: []string{`"1969-12-31T23:59:59.000000001Z"`}},
		{name: "timestamp min", msg: tsName, wire: tsWire(-62135596800, 0), has: []string{`"0001-01-01T00:00:00Z"`}},
		{name: "timestamp max", msg: tsName, wire: tsWire(253402300799, 999_999_999), has: []string{`"9999-12-31T23:59:59.999999999Z"`}},
		{name: "timestamp last record wins", msg: tsName, wire: cat(tsWire(5, 5), tagVarint(1, 0)), has: []string{`"1970-01-01T00:00:00.000000005Z"`}},
		{name: "timestamp before min", msg: tsName, wire: tsWire(-62135596801, 0), errHas: "seconds out of range"},
		{name: "timestamp after max", msg: tsName, wire: tsWire(253402300800, 0), errHas: "seconds out of range"},
		{name: "timestamp negative nanos", msg: tsName, wire: tsWire(0, -1), errHas: "nanos out of range"},
		{name: "timestamp nanos overflow", msg: tsName, wire: tsWire(0, 1_000_000_000), errHas: "nanos out of range"},
		{name: "timestamp error names the field", msg: "WellKnown", wire: tagBytes(1, tsWire(0, -1)), errHas: "google.protobuf.Timestamp"},

		{name: "duration zero", msg: durName, wire: nil, has: []string{`"0s"`}},
		{name: "duration nanos", msg: durName, wire: tsWire(1, 1), has: []string{`"1.000000001s"`}},
		{name: "duration negative fraction", msg: durName, wire: tsWire(0, -500_000_000), has: []string{`"-0.500s"`}},
		{name: "duration negative", msg: durName, wire: tsWire(-3, -1000), has: []string{`"-3.000001s"`}},
		{name: "duration whole seconds", msg: durName, wire: tsWire(1000, 0), has: []string{`"1000s"`}},
		{name: "duration max", msg: durName, wire: tsWire(315576000000, 999_999_999), has: []string{`"315576000000.999999999s"`}},
		{name: "duration min", msg: durName, wire: tsWire(-315576000000, -999_999_999), has: []string{`"-315576000000.999999999s"`}},
		{name: "duration out of range", msg: durName, wire: tsWire(315576000001, 0), errHas: "seconds out of range"},
		{name: "duration nanos out of range", msg: durName, wire: tsWire(0, -1_000_000_000), errHas: "nanos out of range"},
		{name: "duration signs differ", msg: durName, wire: tsWire(1, -1), errHas: "signs"},
		{name: "duration signs differ negative", msg: durName, wire: tsWire(-1, 1), errHas: "signs"},

		{name: "field mask", msg: "google.protobuf.FieldMask",
			wire: cat(tagString(1, "a_b.c_d"), tagString(1, "foo"), tagString(1, "x2.y"), tagString(1, "_a")),
			has:  []string{`"aB.cD,foo,x2.y,A"`}},
		{name: "field mask empty", msg: "google.protobuf.FieldMask", wire: nil, has: []string{`""`}},
		{name: "field mask empty path", msg: "google.protobuf.FieldMask", wire: tagString(1, ""), errHas: "invalid path"},
		{name: "field mask bad path", msg: "google.protobuf.FieldMask", wire: tagString(1, "a..b"), errHas: "invalid path"},
		{name: "field mask digit first", msg: "google.protobuf.FieldMask", wire: tagString(1, "a.1b"), errHas: "invalid path"},
		{name: "field mask irreversible digit", msg: "google.protobuf.FieldMask", wire: tagString(1, "a_1"), errHas: "irreversible"},
		{name: "field mask irreversible upper", msg: "google.protobuf.FieldMask", wire: tagString(1, "aB"), errHas: "irreversible"},
		{name: "field mask irreversible double underscore", msg: "google.protobuf.FieldMask", wire: tagString(1, "a__b"), errHas: "irreversible"},

		{name: "value kinds", msg: "google.protobuf.ListValue",
			wire: cat(tagBytes(1, tagVarint(1, 0)), tagBytes(1, tagFixed64(2, math.Float64bits(1.5))), tagBytes(1, tagString(3, "s")),
				tagBytes(1, tagVarint(4, 1)), tagBytes(1, tagBytes(5)), tagBytes(1, tagBytes(6, tagBytes(1, tagVarint(4, 0))))),
			has: []string{`[null,1.5,"s",true,{},[false]]`}},
		{name: "value last member wins", msg: valueName, wire: cat(tagBytes(5), tagString(3, "s")), has: []string{`"s"`}},
		{name: "value null with unknown number", msg: valueName, wire: tagVarint(1, 3), has: []string{`null`}},
		{name: "value without kind", msg: valueName, wire: nil, errHas: "none of the oneof fields is set"},
		{name: "value NaN", msg: valueName, wire: tagFixed64(2, nan), errHas: "invalid value"},
		{name: "value infinity", msg: valueName, wire: tagFixed64(2, inf), errHas: "invalid value"},
		{name: "value NaN replaced", msg: valueName, wire: cat(tagFixed64(2, nan), tagVarint(4, 1)), has: []string{`true`}},
		{name: "struct", msg: "google.protobuf.Struct",
			wire: cat(tagBytes(1, tagString(1, "b"), tagBytes(2, tagString(3, "x"))), tagBytes(1, tagString(1, "a"), tagBytes(2, tagBytes(5)))),
			has:  []string{`{"a":{},"b":"x"}`}},
		{name: "struct entry without value", msg: "google.protobuf.Struct", wire: tagBytes(1, tagString(1, "k")), errHas: "none of the oneof"},
		{name: "list value element without kind", msg: "google.protobuf.ListValue", wire: tagBytes(1), errHas: "none of the oneof"},

		{name: "wrappers", msg: "WellKnown",
			wire: cat(tagBytes(8, tagFixed64(1, math.Float64bits(0.25))), tagBytes(9, tagFixed32(1, math.Float32bits(0.1))),
				tagBytes(10, tagVarint(1, 1<<64-1)), tagBytes(11, tagVarint(1, 1<<64-1)), tagBytes(12, tagVarint(1, 1<<64-1)),
				tagBytes(13, tagVarint(1, 1<<64-1)), tagBytes(14, tagVarint(1, 1)), tagBytes(15, tagString(1, "s")),
				tagBytes(16, tagString(1, "\x00\xff"))),
			has: []string{`"wDouble":0.25,"wFloat":0.1,"wInt64":"-1","wUint64":"18446744073709551615","wInt32":-1,"wUint32":4294967295,"wBool":true,"wString":"s","wBytes":"AP8="`}},
		{name: "empty wrappers render the default", msg: "WellKnown", wire: cat(tagBytes(10), tagBytes(15), tagBytes(16)),
			has: []string{`"wInt64":"0"`, `"wString":""`, `"wBytes":""`, `"wBool":null`}},
		{name: "wrapper string invalid UTF-8", msg: "google.protobuf.StringValue", wire: tagString(1, "\xff"), errHas: "UTF-8"},
		{name: "null value field", msg: "WellKnown", wire: cat(tagVarint(7, 5), tagBytes(27, packedVarints(0, 1))),
			has: []string{`"null":null`, `"rNull":[null,null]`}},
		{name: "empty", msg: "google.protobuf.Empty", wire: tagVarint(1, 1), has: []string{`{}`}},
		{name: "well-known lists and maps", msg: "WellKnown",
			wire: cat(tagBytes(21, tsWire(0, 0)), tagBytes(21, tsWire(1, 0)), tagBytes(42, tagString(1, "d"), tagBytes(2, tsWire(2, 0))),
				tagBytes(57, tagString(1, "e")), tagBytes(47, tagString(1, "n"))),
			has: []string{`"rTs":["1970-01-01T00:00:00Z","1970-01-01T00:00:01Z"]`, `"mDur":{"d":"2s"}`, `"mEmpty":{"e":{}}`, `"mNull":{"n":null}`}},

		{name: "any empty", msg: anyName, wire: nil, has: []string{`{}`}},
		{name: "any empty type url and value", msg: anyName, wire: cat(tagString(1, ""), tagBytes(2)), has: []string{`{}`}},
		{name: "any message payload", msg: anyName,
			wire: cat(tagString(1, kitchenURL+"Nested"), tagBytes(2, tagString(1, "n"), tagVarint(2, 2))),
			has:  []string{`{"@type":"type.googleapis.com/wirejson.kitchen.v1.Nested","note":"n","level":2,"leaf":null,"leaves":[]}`}},
		{name: "any payload with no value", msg: anyName, wire: tagString(1, kitchenURL+"Empty"),
			has: []string{`{"@type":"type.googleapis.com/wirejson.kitchen.v1.Empty"}`}},
		{name: "any well-known payload", msg: anyName, wire: cat(tagString(1, wktURL+"Timestamp"), tagBytes(2, tsWire(1, 0))),
			has: []string{`{"@type":"type.googleapis.com/google.protobuf.Timestamp","value":"1970-01-01T00:00:01Z"}`}},
		{name: "any google.protobuf.Empty payload", msg: anyName, wire: tagString(1, wktURL+"Empty"),
			has: []string{`{"@type":"type.googleapis.com/google.protobuf.Empty"}`}},
		{name: "any in any", msg: anyName,
			wire: cat(tagString(1, wktURL+"Any"), tagBytes(2, tagString(1, wktURL+"Duration"), tagBytes(2, tsWire(3, 0)))),
			has:  []string{`{"@type":"type.googleapis.com/google.protobuf.Any","value":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"3s"}}`}},
		{name: "any last type url and value win", msg: anyName,
			wire: cat(tagString(1, "x"), tagBytes(2, []byte{0xff}), tagString(1, kitchenURL+"Empty"), tagBytes(2)),
			has:  []string{`{"@type":"type.googleapis.com/wirejson.kitchen.v1.Empty"}`}},
		{name: "any value without type url", msg: anyName, wire: tagBytes(2, tagVarint(1, 1)), errHas: "type_url is not set"},
		{name: "any unresolvable", msg: anyName, wire: tagString(1, "type.googleapis.com/no.such.Type"), errHas: "no.such.Type"},
		{name: "any malformed payload", msg: anyName, wire: cat(tagString(1, kitchenURL+"Nested"), tagBytes(2, []byte{0x08})), errHas: "invalid wire"},
		{name: "any invalid well-known payload", msg: anyName, wire: tagString(1, wktURL+"Value"), errHas: "none of the oneof"},
		{name: "any type url invalid UTF-8", msg: anyName, wire: tagString(1, "\xff"), errHas: "UTF-8"},
		{name: "any payload is not parsed when not rendered", msg: "WellKnown",
			wire: cat(tagBytes(18, tagString(1, "unresolvable"), tagBytes(2, []byte{0xff})), tagBytes(18, tagString(1, kitchenURL+"Empty"), tagBytes(2))),
			has:  []string{`"any":{"@type":"type.googleapis.com/wirejson.kitchen.v1.Empty"}`}},
	})
}

// encodeMessage renders m with a fresh encoder of its type and checks the
// output against protojson's; it returns the output.
func encodeMessage(t *testing.T, m proto.Message) []byte {
	t.Helper()
	res := testResolver(t)
	md := m.ProtoReflect().Descriptor()
	enc, err := NewEncoder(md, EncodeOptions{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	wire, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	want, err := marshalReference(m, res)
	if err != nil {
		t.Fatal(err)
	}
	got, err := enc.Append(nil, wire)
	if err != nil {
		t.Fatalf("%v (want %s)", err, want)
	}
	assertSameJSON(t, got, want)
	return got
}

// TestEncodeValues covers number and string formatting.
func TestEncodeValues(t *testing.T) {
	md := kitchenMessage(t, "Scalars")
	set := func(name string, v protoreflect.Value) []byte {
		m := dynamicpb.NewMessage(md)
		m.Set(md.Fields().ByName(protoreflect.Name(name)), v)
		return encodeMessage(t, m)
	}
	doubles := map[float64]string{
		math.NaN(): `"NaN"`, math.Inf(1): `"Infinity"`, math.Inf(-1): `"-Infinity"`, math.Copysign(0, -1): `-0`,
		1e21: `1e+21`, 1e20: `100000000000000000000`, 1e-6: `0.000001`, 1e-7: `1e-7`, 1.5e-300: `1.5e-300`,
		math.MaxFloat64: `1.7976931348623157e+308`, math.SmallestNonzeroFloat64: `5e-324`, 0.1: `0.1`, -2.5: `-2.5`,
	}
	for v, want := range doubles {
		if got := set("db", protoreflect.ValueOfFloat64(v)); !bytes.Contains(got, []byte(`"db":`+want+`,`)) {
			t.Errorf("double %v: %s lacks %s", v, got, want)
		}
	}
	floats := map[float32]string{
		float32(math.NaN()): `"NaN"`, 0.1: `0.1`, math.MaxFloat32: `3.4028235e+38`, math.SmallestNonzeroFloat32: `1e-45`,
		1e21: `1e+21`, 16777217: `16777216`, 1e-7: `1e-7`,
	}
	for v, want := range floats {
		if got := set("fl", protoreflect.ValueOfFloat32(v)); !bytes.Contains(got, []byte(`"fl":`+want+`,`)) {
			t.Errorf("float %v: %s lacks %s", v, got, want)
		}
	}
	strs := map[string]string{
		"<a>&b": `"<a>&b"`, "\u2028\u2029": "\"\u2028\u2029\"", "\x00\x01\x1f\x7f": `"\u0000\u0001\u001f` + "\x7f\"",
		"\"\\/": `"\"\\/"`, "\b\f\n\r\t": `"\b\f\n\r\t"`, "😀é\ufffd": "\"😀é\ufffd\"",
	}
	for v, want := range strs {
		if got := set("s", protoreflect.ValueOfString(v)); !bytes.Contains(got, []byte(`"s":`+want+`,`)) {
			t.Errorf("string %q: %s lacks %s", v, got, want)
		}
	}
	ints := []struct {
		field string
		v     protoreflect.Value
		want  string
	}{
		{"i64", protoreflect.ValueOfInt64(math.MinInt64), `"i64":"-9223372036854775808"`},
		{"u64", protoreflect.ValueOfUint64(math.MaxUint64), `"u64":"18446744073709551615"`},
		{"s64", protoreflect.ValueOfInt64(math.MinInt64), `"s64":"-9223372036854775808"`},
		{"fx64", protoreflect.ValueOfUint64(math.MaxUint64), `"fx64":"18446744073709551615"`},
		{"sfx64", protoreflect.ValueOfInt64(-1), `"sfx64":"-1"`},
		{"i32", protoreflect.ValueOfInt32(math.MinInt32), `"i32":-2147483648`},
		{"s32", protoreflect.ValueOfInt32(math.MinInt32), `"s32":-2147483648`},
		{"sfx32", protoreflect.ValueOfInt32(-1), `"sfx32":-1`},
		{"u32", protoreflect.ValueOfUint32(math.MaxUint32), `"u32":4294967295`},
		{"fx32", protoreflect.ValueOfUint32(math.MaxUint32), `"fx32":4294967295`},
		{"by", protoreflect.ValueOfBytes([]byte{0xfb, 0xff}), `"by":"+/8="`},
		{"color", protoreflect.ValueOfEnum(-1), `"color":"INFRARED"`},
		{"color", protoreflect.ValueOfEnum(42), `"color":42`},
		{"mood", protoreflect.ValueOfEnum(2), `"mood":"GRUMPY"`},
		{"custom_name", protoreflect.ValueOfString("c"), `"custom":"c"`},
	}
	for _, tc := range ints {
		if got := set(tc.field, tc.v); !bytes.Contains(got, []byte(tc.want)) {
			t.Errorf("%s = %v: %s lacks %s", tc.field, tc.v, got, tc.want)
		}
	}
}

// TestEncodeGenerated compares the encoder with protojson on generated
// messages of every fixture type (the fuzz target's first half, over fixed
// seeds).
func TestEncodeGenerated(t *testing.T) {
	fx := newEncodeFixture(t)
	r := rand.New(rand.NewPCG(11, 12))
	for i, md := range fx.msgs {
		for range 30 {
			m := genMessage(r, md, 3)
			want, err := marshalReference(m, fx.res)
			if err != nil {
				t.Fatal(err)
			}
			wire, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range [][]byte{wire, scramble(r, md, wire)} {
				got, err := fx.encs[i].Append(nil, w)
				if err != nil {
					t.Fatalf("%s: %v", md.FullName(), err)
				}
				assertSameJSON(t, got, want)
			}
		}
	}
}

// TestEncodeAppendField covers response_body rendering.
func TestEncodeAppendField(t *testing.T) {
	res := testResolver(t)
	md := kitchenMessage(t, "Sink")
	enc, err := NewEncoder(md, EncodeOptions{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	wire := cat(tagString(1, "id-1"), tagBytes(2, tagVarint(1, 7)), tagBytes(10, tagString(1, "a")), tagBytes(10, tagString(1, "b")),
		tagVarint(11, 3), tagBytes(2, tagString(14, "s")))
	fields := md.Fields()
	for _, tc := range []struct {
		field string
		want  string
	}{
		{"id", `"id-1"`},
		{"page_size", `3`},
		{"custom_name", `""`},
		{"scalars", ""}, // compared with protojson of the submessage
		{"repeats", ""}, // absent: the empty message
		{"wkt", ""},
		{"sinks", ""},
	} {
		fd := fields.ByName(protoreflect.Name(tc.field))
		got, err := enc.AppendField(nil, wire, fd)
		if err != nil {
			t.Fatalf("%s: %v", tc.field, err)
		}
		if tc.want != "" {
			if string(got) != tc.want {
				t.Errorf("%s: got %s, want %s", tc.field, got, tc.want)
			}
			continue
		}
		m := dynamicpb.NewMessage(md)
		if err := proto.Unmarshal(wire, m); err != nil {
			t.Fatal(err)
		}
		var want []byte
		if fd.IsList() {
			// The list's JSON, cut from the whole message's.
			whole, err := marshalReference(m, res)
			if err != nil {
				t.Fatal(err)
			}
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(whole, &obj); err != nil {
				t.Fatal(err)
			}
			want = obj[fd.JSONName()]
		} else if want, err = marshalReference(m.Get(fd).Message().Interface(), res); err != nil {
			t.Fatal(err)
		}
		assertSameJSON(t, got, want)
	}
	other := kitchenMessage(t, "Nested").Fields().ByNumber(1)
	if _, err := enc.AppendField(nil, wire, other); err == nil {
		t.Error("AppendField accepted a field of another message")
	}
	if _, err := enc.AppendField(nil, []byte{0x80}, fields.ByNumber(1)); err == nil {
		t.Error("AppendField accepted malformed wire")
	}
}
