package wirejson

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/mesh/meshtest"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
)

// decCase is one decoding checked against protojson.
type decCase struct {
	msg     string // kitchen message name
	json    string
	ok      bool // protojson (and so the decoder) accepts it
	discard bool
	depth   int
}

// decDecoders caches the decoders of the tests, by message and options.
var decDecoders sync.Map // decKey → *Decoder

type decKey struct {
	md      protoreflect.FullName
	discard bool
	depth   int
}

func decoderFor(tb testing.TB, md protoreflect.MessageDescriptor, discard bool, depth int) *Decoder {
	tb.Helper()
	k := decKey{md.FullName(), discard, depth}
	if d, ok := decDecoders.Load(k); ok {
		return d.(*Decoder)
	}
	d, err := NewDecoder(md, DecodeOptions{Resolver: testResolver(tb), DiscardUnknown: discard, MaxDepth: depth})
	if err != nil {
		tb.Fatalf("NewDecoder(%s): %v", md.FullName(), err)
	}
	decDecoders.Store(k, d)
	return d
}

// decDiff decodes data with the decoder and with protojson and fails on any
// difference: one accepting what the other rejects, or messages not
// proto.Equal. It reports whether the input was accepted.
func decDiff(tb testing.TB, md protoreflect.MessageDescriptor, data []byte, discard bool, depth int) bool {
	tb.Helper()
	want := dynamicpb.NewMessage(md)
	werr := protojson.UnmarshalOptions{DiscardUnknown: discard, RecursionLimit: depth, Resolver: testResolver(tb)}.Unmarshal(data, want)
	prefix := []byte("prefix")
	wire, gerr := decoderFor(tb, md, discard, depth).Append(prefix, data)
	if (werr == nil) != (gerr == nil) {
		tb.Fatalf("%s %.200q (discard %v, depth %d):\n  protojson: %v\n  wirejson:  %v", md.FullName(), data, discard, depth, werr, gerr)
	}
	if gerr != nil {
		if !bytes.Equal(wire, prefix) {
			tb.Fatalf("%s %.200q: error %v, but dst changed to %q", md.FullName(), data, gerr, wire)
		}
		return false
	}
	if !bytes.HasPrefix(wire, prefix) {
		tb.Fatalf("%s: dst prefix lost: %q", md.FullName(), wire)
	}
	got := dynamicpb.NewMessage(md)
	if err := wireUnmarshal(testResolver(tb)).Unmarshal(wire[len(prefix):], got); err != nil {
		tb.Fatalf("%s %.200q: unmarshaling the wire %x: %v", md.FullName(), data, wire, err)
	}
	if !proto.Equal(got, want) {
		tb.Fatalf("%s %.200q: messages differ\n  protojson: %v\n  wirejson:  %v", md.FullName(), data, want, got)
	}
	return true
}

// wireUnmarshal reads the decoder's output back. protojson counts one
// level of depth for each JSON array of a google.protobuf.ListValue where
// the wire has two messages (ListValue, then Value), so JSON that protojson
// accepts under its default limit can be deeper on the wire than
// proto.Unmarshal's default limit; acceptance is judged against protojson,
// and reading the result back must not add a limit of its own.
func wireUnmarshal(res resolver) proto.UnmarshalOptions {
	return proto.UnmarshalOptions{Resolver: res, RecursionLimit: math.MaxInt32}
}

func runDecCases(t *testing.T, cases []decCase) {
	t.Helper()
	for _, c := range cases {
		md := kitchenMessage(t, c.msg)
		if ok := decDiff(t, md, []byte(c.json), c.discard, c.depth); ok != c.ok {
			t.Errorf("%s %q: accepted %v, want %v", c.msg, c.json, ok, c.ok)
		}
	}
}

func TestDecodeNames(t *testing.T) {
	runDecCases(t, []decCase{
		{"Scalars", `{"pageSize":1}`, true, false, 0},
		{"Scalars", `{"page_size":1}`, true, false, 0},
		{"Scalars", `{"pageSize":1,"page_size":2}`, false, false, 0},
		{"Scalars", `{"custom":"x"}`, true, false, 0},
		{"Scalars", `{"custom_name":"x"}`, true, false, 0},
		{"Scalars", `{"customName":"x"}`, false, false, 0},
		{"Scalars", `{"custom":"x","custom_name":"y"}`, false, false, 0},
		{"Scalars", `{"aBC":1,"v2Value":2,"bigNumber":"3","farAway":"x"}`, true, false, 0},
		{"Scalars", `{"i32":1,"i32":1}`, false, false, 0},
		{"Scalars", `{"i32":null,"i32":1}`, false, false, 0},
		{"Scalars", `{"foo":1}`, false, false, 0},
		{"Scalars", `{"foo":{"a":[1,2,{"b":null}]},"i32":3}`, true, true, 0},
		{"Scalars", `{"foo":{"a":[1,2,{"b":nul}]},"i32":3}`, false, true, 0},
		{"Scalars", `{"[foo.bar]":1}`, false, false, 0},
		{"Scalars", `{"[foo.bar]":1}`, true, true, 0},
		{"Scalars", `{"\u0069\u0033\u0032":5}`, true, false, 0},
		{"Scalars", `{"i32":1,}`, false, false, 0},
		{"Scalars", `{,"i32":1}`, false, false, 0},
		{"Scalars", `{"i32" : 1 , "s" : "x" }`, true, false, 0},
		{"Scalars", " \n{\"i32\":1}\t\r\n", true, false, 0},
		{"Scalars", `{"i32":1}garbage`, false, false, 0},
		{"Scalars", `{"i32":1}{}`, false, false, 0},
		{"Scalars", `{"i32":1`, false, false, 0},
		{"Scalars", ``, false, false, 0},
		{"Scalars", `[]`, false, false, 0},
		{"Scalars", `null`, false, false, 0},
		{"Scalars", `{}`, true, false, 0},
		{"Scalars", `{'i32':1}`, false, false, 0},
		{"Scalars", `{"i32":1 "s":"x"}`, false, false, 0},
		{"Scalars", `{"i32"1}`, false, false, 0},
		{"Empty", `{}`, true, false, 0},
		{"Empty", `{"a":1}`, false, false, 0},
		{"Empty", `{"a":1}`, true, true, 0},
	})
}

func TestDecodeIntegers(t *testing.T) {
	var cases []decCase
	add := func(json string, ok bool) { cases = append(cases, decCase{"Scalars", json, ok, false, 0}) }
	for _, f := range []string{"i32", "i64", "u32", "u64", "s32", "s64", "fx32", "fx64", "sfx32", "sfx64"} {
		for _, v := range []string{"0", "1", `"1"`, "1e2", "1.0", "1.5e1", "1E1", "100e-2", `"1e2"`, "-0", "0.0", "1e", "1E",
			"10e-1", "-1", `"-1"`, "1.5", "1e-1", `" 1"`, `"1 "`, `""`, `"+1"`, "+1", "01", `"01"`, ".5", "1.", "true", `"x"`,
			"2147483647", "2147483648", "-2147483648", "-2147483649", "4294967295", "4294967296",
			"9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
			"18446744073709551615", "18446744073709551616", `"18446744073709551615"`, "1e19", "1e20", "0.1e21",
			"1e+", "1e-", "0e+", "0e", "[1]", "{}", "null", `"\u0031"`, "1e400", "0.00000000000000000000000000000001e33"} {
			add(`{"`+f+`":`+v+`}`, protojsonAccepts(t, "Scalars", `{"`+f+`":`+v+`}`))
		}
	}
	runDecCases(t, cases)
}

// protojsonAccepts is what protojson does with data (the cases above list
// inputs without spelling out each verdict; decDiff checks agreement).
func protojsonAccepts(tb testing.TB, msg, data string) bool {
	m := dynamicpb.NewMessage(kitchenMessage(tb, msg))
	return protojson.UnmarshalOptions{Resolver: testResolver(tb)}.Unmarshal([]byte(data), m) == nil
}

func TestDecodeFloatsBoolsStrings(t *testing.T) {
	runDecCases(t, []decCase{
		{"Scalars", `{"fl":1.5,"db":-2.25}`, true, false, 0},
		{"Scalars", `{"fl":"NaN","db":"Infinity"}`, true, false, 0},
		{"Scalars", `{"fl":"-Infinity","db":"NaN"}`, true, false, 0},
		{"Scalars", `{"fl":"nan"}`, false, false, 0},
		{"Scalars", `{"fl":"1.5"}`, true, false, 0},
		{"Scalars", `{"fl":" 1.5"}`, false, false, 0},
		{"Scalars", `{"fl":3.4028235e38}`, true, false, 0},
		{"Scalars", `{"fl":3.5e38}`, false, false, 0},
		{"Scalars", `{"fl":1e-50}`, true, false, 0},
		{"Scalars", `{"db":1e309}`, false, false, 0},
		{"Scalars", `{"db":-0}`, true, false, 0},
		{"Scalars", `{"db":-0.0,"fl":"-0"}`, true, false, 0},
		{"Scalars", `{"db":0}`, true, false, 0},
		{"Scalars", `{"db":1e}`, false, false, 0},
		{"Scalars", `{"db":"1e"}`, false, false, 0},
		{"Scalars", `{"db":true}`, false, false, 0},
		{"Scalars", `{"b":true}`, true, false, 0},
		{"Scalars", `{"b":false}`, true, false, 0},
		{"Scalars", `{"b":"true"}`, false, false, 0},
		{"Scalars", `{"b":1}`, false, false, 0},
		{"Scalars", `{"b":truex}`, false, false, 0},
		{"Scalars", `{"b":tru}`, false, false, 0},
		{"Scalars", `{"s":"hello"}`, true, false, 0},
		{"Scalars", `{"s":""}`, true, false, 0},
		{"Scalars", `{"s":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"}`, true, false, 0},
		{"Scalars", `{"s":"\ud800"}`, false, false, 0},
		{"Scalars", `{"s":"\ud800\u0041"}`, false, false, 0},
		{"Scalars", `{"s":"\udc00\ud800"}`, false, false, 0},
		{"Scalars", `{"s":"\ud800x12345"}`, false, false, 0},
		{"Scalars", `{"s":"\x"}`, false, false, 0},
		{"Scalars", `{"s":"\u12"}`, false, false, 0},
		{"Scalars", `{"s":"\u12G4"}`, false, false, 0},
		{"Scalars", "{\"s\":\"a\tb\"}", false, false, 0},
		{"Scalars", "{\"s\":\"a\x7fb\"}", true, false, 0},
		{"Scalars", "{\"s\":\"\xff\"}", false, false, 0},
		{"Scalars", "{\"s\":\"\xed\xa0\x80\"}", false, false, 0},
		{"Scalars", "{\"s\":\"\xef\xbf\xbd日本\"}", true, false, 0},
		{"Scalars", `{"s":1}`, false, false, 0},
		{"Scalars", `{"s":"` + strings.Repeat(`\u00e9`, 100) + `"}`, true, false, 0},
		{"Scalars", `{"s":"` + strings.Repeat(`\n`, 200) + `"}`, true, false, 0},
		{"Scalars", `{"by":"aGVsbG8="}`, true, false, 0},
		{"Scalars", `{"by":"aGVsbG8"}`, true, false, 0},
		{"Scalars", `{"by":"-_-_"}`, true, false, 0},
		{"Scalars", `{"by":"+/+/"}`, true, false, 0},
		{"Scalars", `{"by":"+/-_"}`, false, false, 0},
		{"Scalars", `{"by":"aGVsbG8=="}`, false, false, 0},
		{"Scalars", `{"by":"aG\nVsbG8="}`, false, false, 0},
		{"Scalars", `{"by":"YWJj\nZGVm"}`, true, false, 0},
		{"Scalars", `{"by":"a"}`, false, false, 0},
		{"Scalars", `{"by":""}`, true, false, 0},
		{"Scalars", `{"by":"\u0061GVsbG8="}`, true, false, 0},
		{"Scalars", `{"by":1}`, false, false, 0},
	})
}

func TestDecodeEnums(t *testing.T) {
	runDecCases(t, []decCase{
		{"Scalars", `{"color":"RED"}`, true, false, 0},
		{"Scalars", `{"color":"CRIMSON"}`, true, false, 0},
		{"Scalars", `{"color":"INFRARED"}`, true, false, 0},
		{"Scalars", `{"color":"COLOR_UNSPECIFIED"}`, true, false, 0},
		{"Scalars", `{"color":2}`, true, false, 0},
		{"Scalars", `{"color":99}`, true, false, 0},
		{"Scalars", `{"color":-7}`, true, false, 0},
		{"Scalars", `{"color":2147483648}`, false, false, 0},
		{"Scalars", `{"color":1.0}`, true, false, 0},
		{"Scalars", `{"color":"1"}`, false, false, 0},
		{"Scalars", `{"color":"red"}`, false, false, 0},
		{"Scalars", `{"color":"PURPLE"}`, false, false, 0},
		{"Scalars", `{"color":"PURPLE"}`, true, true, 0},
		{"Scalars", `{"color":null}`, true, false, 0},
		{"Scalars", `{"color":true}`, false, false, 0},
		{"Scalars", `{"mood":"HAPPY"}`, true, false, 0},
		{"Scalars", `{"nullValue":null}`, true, false, 0},
		{"Scalars", `{"nullValue":"NULL_VALUE"}`, true, false, 0},
		{"Scalars", `{"nullValue":0}`, true, false, 0},
		{"Repeats", `{"color":["RED","PURPLE",2]}`, false, false, 0},
		{"Repeats", `{"color":["RED","PURPLE",2]}`, true, true, 0},
		{"Repeats", `{"color":["PURPLE"]}`, true, true, 0},
		{"Repeats", `{"nulls":[null,"NULL_VALUE",0]}`, true, false, 0},
		{"Repeats", `{"color":[null]}`, false, false, 0},
		{"Oneofs", `{"color":"PURPLE","num":1}`, false, true, 0},
		{"Oneofs", `{"color":"PURPLE"}`, true, true, 0},
		{"Oneofs", `{"nothing":null}`, true, false, 0},
		{"Oneofs", `{"nothing":null,"num":1}`, false, false, 0},
	})
}

func TestDecodeRepeatsMapsOneofs(t *testing.T) {
	runDecCases(t, []decCase{
		{"Repeats", `{"i32":[1,2,3],"s":["a","b"],"by":["AA=="],"nested":[{"note":"x"},{}]}`, true, false, 0},
		{"Repeats", `{"i32":[]}`, true, false, 0},
		{"Repeats", `{"i32":null}`, true, false, 0},
		{"Repeats", `{"i32":[null]}`, false, false, 0},
		{"Repeats", `{"i32":1}`, false, false, 0},
		{"Repeats", `{"i32":[1,]}`, false, false, 0},
		{"Repeats", `{"i32":[,1]}`, false, false, 0},
		{"Repeats", `{"i32":[1 2]}`, false, false, 0},
		{"Repeats", `{"nested":[null]}`, false, false, 0},
		{"Repeats", `{"nested":[[]]}`, false, false, 0},
		{"Repeats", `{"fl":[1,"NaN",-0],"db":["-Infinity"],"b":[true,false],"u_i32":[1,-1],"u_fx64":["5"],"u_s64":[-3]}`, true, false, 0},
		{"Repeats", `{"s":["` + strings.Repeat("x", 300) + `"],"i64":[` + strings.Repeat("-1,", 100) + `1]}`, true, false, 0},
		{"Maps", `{"strStr":{"a":"b","":"c"},"i32I32":{"1":2,"-1":-2,"03":3},"boolBool":{"true":true,"false":false}}`, true, false, 0},
		{"Maps", `{"i32I32":{"1":2,"01":3}}`, false, false, 0},
		{"Maps", `{"i32I32":{"+1":2}}`, true, false, 0},
		{"Maps", `{"i32I32":{"1.0":2}}`, false, false, 0},
		{"Maps", `{"i32I32":{"2147483648":2}}`, false, false, 0},
		{"Maps", `{"u32U32":{"-1":2}}`, false, false, 0},
		{"Maps", `{"u32U32":{"+1":2}}`, false, false, 0},
		{"Maps", `{"u64U64":{"18446744073709551615":1}}`, true, false, 0},
		{"Maps", `{"s64S64":{"-9223372036854775808":"-1"}}`, true, false, 0},
		{"Maps", `{"fx32Fx32":{"4294967295":1},"fx64Fx64":{"1":2},"sfx32Sfx32":{"-5":-5},"sfx64Sfx64":{"-5":"-5"},"s32S32":{"-3":-3}}`, true, false, 0},
		{"Maps", `{"boolBool":{"True":true}}`, false, false, 0},
		{"Maps", `{"boolBool":{"true":true,"true":false}}`, false, false, 0},
		{"Maps", `{"strStr":{"a":"b","a":"c"}}`, false, false, 0},
		{"Maps", `{"strStr":{"a":"b","\u0061":"c"}}`, false, false, 0},
		{"Maps", `{"strStr":{"a":null}}`, false, false, 0},
		{"Maps", `{"strStr":null}`, true, false, 0},
		{"Maps", `{"strStr":[]}`, false, false, 0},
		{"Maps", `{"strNull":{"a":null}}`, true, false, 0},
		{"Maps", `{"i32Color":{"1":"PURPLE","2":"RED"}}`, true, true, 0},
		{"Maps", `{"i32Color":{"1":"PURPLE","1":"RED"}}`, true, true, 0},
		{"Maps", `{"i32Color":{"1":"RED","1":"PURPLE"}}`, false, true, 0},
		{"Maps", `{"strNested":{"a":{"note":"x"},"b":{}},"u64Scalars":{"7":{"i32":1}},"boolNested":{"false":{}}}`, true, false, 0},
		{"Maps", `{"strNested":{"a":null}}`, false, false, 0},
		{"Maps", `{"strBy":{"a":"AAAA"},"strFl":{"x":"NaN"},"strDb":{"y":0}}`, true, false, 0},
		{"Oneofs", `{"num":1,"text":"x"}`, false, false, 0},
		{"Oneofs", `{"num":null,"text":"x"}`, true, false, 0},
		{"Oneofs", `{"num":0}`, true, false, 0},
		{"Oneofs", `{"text":""}`, true, false, 0},
		{"Oneofs", `{"raw":""}`, true, false, 0},
		{"Oneofs", `{"msg":{}}`, true, false, 0},
		{"Oneofs", `{"dyn":null}`, true, false, 0},
		{"Oneofs", `{"dyn":null,"num":1}`, false, false, 0},
		{"Oneofs", `{"num":1,"ratio":2,"plain":"p"}`, true, false, 0},
		{"Oneofs", `{"boxed":0}`, true, false, 0},
		{"Oneofs", `{"boxed":null,"ratio":1}`, true, false, 0},
		{"Optionals", `{"i32":0,"i64":"0","s":"","by":"","b":false,"db":0,"fl":0,"color":0,"msg":{},"u64":0}`, true, false, 0},
		{"Optionals", `{"i32":null}`, true, false, 0},
	})
}

func TestDecodeWellKnown(t *testing.T) {
	runDecCases(t, []decCase{
		{"WellKnown", `{"ts":"2024-01-02T03:04:05Z"}`, true, false, 0},
		{"WellKnown", `{"ts":"2024-01-02T03:04:05.123456789Z"}`, true, false, 0},
		{"WellKnown", `{"ts":"2024-01-02T03:04:05.1234567891Z"}`, false, false, 0},
		{"WellKnown", `{"ts":"2024-01-02T03:04:05+01:00"}`, true, false, 0},
		{"WellKnown", `{"ts":"2024-01-02T03:04:05.5-08:30"}`, true, false, 0},
		{"WellKnown", `{"ts":"2024-01-02 03:04:05Z"}`, false, false, 0},
		{"WellKnown", `{"ts":"0001-01-01T00:00:00Z"}`, true, false, 0},
		{"WellKnown", `{"ts":"0000-12-31T23:59:59Z"}`, false, false, 0},
		{"WellKnown", `{"ts":"9999-12-31T23:59:59.999999999Z"}`, true, false, 0},
		{"WellKnown", `{"ts":"1970-01-01T00:00:00Z"}`, true, false, 0},
		{"WellKnown", `{"ts":1}`, false, false, 0},
		{"WellKnown", `{"ts":null}`, true, false, 0},
		{"WellKnown", `{"dur":"1.5s"}`, true, false, 0},
		{"WellKnown", `{"dur":"-0.5s","r_dur":["1s","-1s",".1s","1.s","+1s","0s"]}`, true, false, 0},
		{"WellKnown", `{"dur":"1.0000000001s"}`, false, false, 0},
		{"WellKnown", `{"dur":"315576000000s"}`, true, false, 0},
		{"WellKnown", `{"dur":"315576000001s"}`, false, false, 0},
		{"WellKnown", `{"dur":"1"}`, false, false, 0},
		{"WellKnown", `{"dur":"s"}`, false, false, 0},
		{"WellKnown", `{"dur":"-s"}`, false, false, 0},
		{"WellKnown", `{"dur":"01s"}`, false, false, 0},
		{"WellKnown", `{"dur":"99999999999999999999s"}`, false, false, 0},
		{"WellKnown", `{"mask":"a,fooBar,x.yZ"}`, true, false, 0},
		{"WellKnown", `{"mask":" a , b "}`, false, false, 0},
		{"WellKnown", `{"mask":"  "}`, true, false, 0},
		{"WellKnown", `{"mask":"a_b"}`, false, false, 0},
		{"WellKnown", `{"mask":"a,,b"}`, false, false, 0},
		{"WellKnown", `{"mask":"1a"}`, false, false, 0},
		{"WellKnown", `{"mask":"a.","r_mask":[""]}`, false, false, 0},
		{"WellKnown", `{"mask":"A"}`, true, false, 0},
		{"WellKnown", `{"r_mask":["","x"]}`, true, false, 0},
		{"WellKnown", `{"st":{"a":1,"b":"x","c":null,"d":[true,{"e":[]}],"f":{}}}`, true, false, 0},
		{"WellKnown", `{"st":{"a":1,"a":2}}`, false, false, 0},
		{"WellKnown", `{"st":[]}`, false, false, 0},
		{"WellKnown", `{"val":null,"list":[1,null,"x",[],{}]}`, true, false, 0},
		{"WellKnown", `{"val":"NaN"}`, true, false, 0},
		{"WellKnown", `{"val":1e}`, false, false, 0},
		{"WellKnown", `{"val":1e999}`, false, false, 0},
		{"WellKnown", `{"r_val":[null,1,"a",true,[null],{"x":null}]}`, true, false, 0},
		{"WellKnown", `{"r_val":null}`, false, false, 0},
		{"WellKnown", `{"m_val":{"a":null}}`, true, false, 0},
		{"WellKnown", `{"m_val":null}`, true, false, 0},
		{"WellKnown", `{"null":null,"r_null":[null],"m_null":{"a":null}}`, true, false, 0},
		{"WellKnown", `{"wDouble":1.5,"wFloat":"NaN","wInt64":"5","wUint64":5,"wInt32":-1,"wUint32":0,"wBool":false,"wString":"","wBytes":""}`, true, false, 0},
		{"WellKnown", `{"wInt32":null,"r_int32":[1,0]}`, true, false, 0},
		{"WellKnown", `{"r_int32":[null]}`, false, false, 0},
		{"WellKnown", `{"wInt32":{"value":1}}`, false, false, 0},
		{"WellKnown", `{"empty":{},"r_empty":[{},{}],"m_empty":{"a":{}}}`, true, false, 0},
		{"WellKnown", `{"empty":{"a":1}}`, false, false, 0},
		{"WellKnown", `{"empty":{"a":[1]}}`, true, true, 0},
		{"WellKnown", `{"empty":[]}`, false, false, 0},
		{"WellKnown", `{"any":{}}`, true, false, 0},
		{"WellKnown", `{"any":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1s"}}`, true, false, 0},
		{"WellKnown", `{"any":{"value":"1s","@type":"type.googleapis.com/google.protobuf.Duration"}}`, true, false, 0},
		{"WellKnown", `{"any":{"@type":"type.googleapis.com/wirejson.kitchen.v1.Nested","note":"x","level":2}}`, true, false, 0},
		{"WellKnown", `{"any":{"note":"x","@type":"type.googleapis.com/wirejson.kitchen.v1.Nested"}}`, true, false, 0},
		{"WellKnown", `{"any":{"note":"x"}}`, false, false, 0},
		{"WellKnown", `{"any":{"note":"x"}}`, true, true, 0},
		{"WellKnown", `{"any":{"@type":"type.googleapis.com/nope.Nope"}}`, false, false, 0},
		{"WellKnown", `{"any":{"@type":""}}`, false, false, 0},
		{"WellKnown", `{"any":{"@type":1}}`, false, false, 0},
		{"WellKnown", `{"any":{"@type":"type.googleapis.com/google.protobuf.Empty"}}`, true, false, 0},
		{"WellKnown", `{"any":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"a":[1]}}}`, true, false, 0},
		{"WellKnown", `{"r_any":[{"@type":"type.googleapis.com/google.protobuf.Any","value":{"@type":"type.googleapis.com/google.protobuf.Int32Value","value":3}}]}`, true, false, 0},
	})
}

func TestDecodeDepth(t *testing.T) {
	nest := func(n int) string {
		return strings.Repeat(`{"left":`, n) + "{}" + strings.Repeat("}", n)
	}
	values := func(n int) string {
		return `{"val":` + strings.Repeat("[", n) + strings.Repeat("]", n) + "}"
	}
	var cases []decCase
	for _, depth := range []int{1, 2, 3, 5, 64} {
		for _, n := range []int{0, 1, 2, 3, 4, 5, 62, 63, 64, 65} {
			cases = append(cases,
				decCase{"Tree", nest(n), n < depth, false, depth},
				decCase{"WellKnown", values(n), protojsonDepthAccepts(t, "WellKnown", values(n), depth), false, depth},
				decCase{"Tree", `{"x":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`,
					protojsonDepthAccepts(t, "Tree", `{"x":`+strings.Repeat("[", n)+strings.Repeat("]", n)+`}`, depth), true, depth},
			)
		}
	}
	cases = append(cases, decCase{"Tree", nest(20000), false, false, 0})
	runDecCases(t, cases)
}

func protojsonDepthAccepts(tb testing.TB, msg, data string, depth int) bool {
	m := dynamicpb.NewMessage(kitchenMessage(tb, msg))
	return protojson.UnmarshalOptions{RecursionLimit: depth, DiscardUnknown: true}.Unmarshal([]byte(data), m) == nil
}

// TestDecodeLongLengths covers nested lengths of 1 to 3 varint bytes at
// several depths (the placeholder bytes moved by finish).
func TestDecodeLongLengths(t *testing.T) {
	for _, n := range []int{0, 100, 126, 127, 128, 200, 16383, 16384, 70000} {
		body := `{"name":"` + strings.Repeat("x", n) + `"}`
		data := `{"left":{"right":` + body + `,"children":[` + body + `,{},` + body + `]},"forest":{"trees":[{"left":` + body + `}]},"name":"` + strings.Repeat("y", n/2) + `"}`
		if !decDiff(t, kitchenMessage(t, "Tree"), []byte(data), false, 0) {
			t.Fatalf("n=%d: rejected", n)
		}
	}
}

func TestDecodeAppendField(t *testing.T) {
	md := kitchenMessage(t, "Sink")
	d := decoderFor(t, md, false, 0)
	cases := []struct {
		field, json string
		wantJSON    string // the message protojson decodes, nil-wrapped
		ok          bool
	}{
		{"scalars", `{"i32":5}`, `{"scalars":{"i32":5}}`, true},
		{"scalars", `{}`, `{"scalars":{}}`, true},
		{"scalars", `null`, `{}`, true},
		{"id", `"abc"`, `{"id":"abc"}`, true},
		{"id", `""`, `{}`, true},
		{"page_size", `"7"`, `{"pageSize":7}`, true},
		{"sinks", `[{"id":"a"},{}]`, `{"sinks":[{"id":"a"},{}]}`, true},
		{"sinks", `{}`, ``, false},
		{"scalars", `{"nope":1}`, ``, false},
		{"scalars", `{"i32":1} x`, ``, false},
	}
	for _, c := range cases {
		fd := md.Fields().ByName(protoreflect.Name(c.field))
		wire, err := d.AppendField(nil, []byte(c.json), fd)
		if (err == nil) != c.ok {
			t.Fatalf("%s %s: err %v, want ok %v", c.field, c.json, err, c.ok)
		}
		if err != nil {
			continue
		}
		got := dynamicpb.NewMessage(md)
		if err := proto.Unmarshal(wire, got); err != nil {
			t.Fatal(err)
		}
		want := dynamicpb.NewMessage(md)
		if err := protojson.Unmarshal([]byte(c.wantJSON), want); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("%s %s: got %v, want %v", c.field, c.json, got, want)
		}
	}
	other := kitchenMessage(t, "Nested").Fields().ByName("note")
	if _, err := d.AppendField(nil, []byte(`"x"`), other); err == nil {
		t.Error("AppendField accepted a field of another message")
	}
}

func TestNewDecoderDeclines(t *testing.T) {
	fd := meshtest.CompileProto(t, `
syntax = "proto2";
package decline.v1;
message Grouped { optional group G = 1 { optional int32 a = 2; } }
message Req { required int32 a = 1; }
enum Closed { ZERO = 0; ONE = 1; }
message HasClosed { optional Closed c = 1; }
message Extendable { extensions 100 to 200; }
message Fine { optional int32 a = 1 [default = 5]; repeated string s = 2; }
message Outer { optional Inner inner = 1; }
message Inner { required string x = 1; }
`)
	for name, want := range map[string]string{
		"Grouped":    "group",
		"Req":        "required",
		"HasClosed":  "closed enum",
		"Extendable": "extension ranges",
		"Outer":      "required",
		"Fine":       "",
	} {
		_, err := NewDecoder(fd.Messages().ByName(protoreflect.Name(name)), DecodeOptions{})
		var de *DeclinedError
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: declined: %v", name, err)
		case want != "" && (!errors.As(err, &de) || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: err %v, want a DeclinedError about %q", name, err, want)
		}
	}
	// A proto2 message with none of these decodes like protojson (explicit
	// presence: zero values are kept).
	md := fd.Messages().ByName("Fine")
	for _, data := range []string{`{"a":0}`, `{}`, `{"a":5,"s":["x"]}`} {
		if !decDiff(t, md, []byte(data), false, 0) {
			t.Errorf("Fine %s rejected", data)
		}
	}
}

// TestDecodeErrors checks the error texts name the field and quote (and
// truncate) the client's text.
func TestDecodeErrors(t *testing.T) {
	md := kitchenMessage(t, "Scalars")
	d := decoderFor(t, md, false, 0)
	for data, want := range map[string]string{
		`{"i32":"x"}`:                            `invalid value for int32 field i32: "x"`,
		`{"foo":1}`:                              `unknown field "foo"`,
		`{"i32":1,"i32":2}`:                      `duplicate field "i32"`,
		`{"i32":1,` + "\n" + `"i32":2}`:          `(line 2:1)`,
		`{"` + strings.Repeat("k", 500) + `":1}`: `…`,
	} {
		_, err := d.Append(nil, []byte(data))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.80s: error %v, want it to contain %q", data, err, want)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("%.80s: error of %d bytes", data, len(err.Error()))
		}
	}
}

// TestDecodeConcurrent shares one decoder between goroutines (run with
// -race).
func TestDecodeConcurrent(t *testing.T) {
	md := kitchenMessage(t, "Sink")
	d := decoderFor(t, md, false, 0)
	data := []byte(`{"id":"x","scalars":{"i32":1,"s":"é"},"maps":{"strStr":{"a":"b","c":"d"}},"tree":{"left":{"name":"` + strings.Repeat("z", 300) + `"}}}`)
	want, err := d.Append(nil, data)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				got, err := d.Append(nil, data)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("concurrent decode: %v, %x", err, got)
					return
				}
			}
		})
	}
	wg.Wait()
}

// benchProduct is a realistic ~0.8 KB body of the example Product.
var benchProduct = []byte(`{"id":"bench-1","name":"Benchmark product","description":"` + strings.Repeat("A sturdy, well-made product. ", 21) +
	`","priceCents":"1999","currency":"EUR","tags":["a","b","c","d","e"],"attributes":{"color":"blue","size":"M","material":"cotton","origin":"PT","care":"machine wash","fit":"regular"},` +
	`"updateTime":"2024-05-06T07:08:09.123Z","stock":12,"rating":4.5,"available":true,"dimensions":[{"name":"width","value":10.5,"unit":"cm"},{"name":"height","value":20,"unit":"cm"}]}`)

func benchNums() []byte {
	var b bytes.Buffer
	b.WriteString(`{"i32":[`)
	for b.Len() < 2<<20 {
		b.WriteString("1,")
	}
	b.WriteString("1]}")
	return b.Bytes()
}

func BenchmarkDecode(b *testing.B) {
	product := (&productsv1.Product{}).ProtoReflect().Descriptor()
	nums := benchNums()
	for _, bc := range []struct {
		name string
		md   protoreflect.MessageDescriptor
		data []byte
	}{
		{"product", product, benchProduct},
		{"nums2MB", kitchenMessage(b, "Repeats"), nums},
		// The worst case of the length placeholders: 60 nested messages,
		// each longer than 16 KB (3-byte lengths), all moved by finish.
		{"deep60", kitchenMessage(b, "Tree"), []byte(strings.Repeat(`{"name":"`+strings.Repeat("x", 16<<10)+`","left":`, 60) + "{}" + strings.Repeat("}", 60))},
	} {
		b.Run(bc.name+"/protojson", func(b *testing.B) {
			b.SetBytes(int64(len(bc.data)))
			b.ReportAllocs()
			var out []byte
			for b.Loop() {
				m := dynamicpb.NewMessage(bc.md)
				if err := protojson.Unmarshal(bc.data, m); err != nil {
					b.Fatal(err)
				}
				var err error
				if out, err = (proto.MarshalOptions{}).MarshalAppend(out[:0], m); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/wirejson", func(b *testing.B) {
			d, err := NewDecoder(bc.md, DecodeOptions{MaxDepth: 64})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(bc.data)))
			b.ReportAllocs()
			var out []byte
			for b.Loop() {
				if out, err = d.Append(out[:0], bc.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
