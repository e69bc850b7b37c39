package wirejson

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-dev/portico/mesh/meshtest"
	accountsv1 "github.com/portico-dev/portico/protos/examples/accounts/v1"
	ordersv1 "github.com/portico-dev/portico/protos/examples/orders/v1"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
	usersv1 "github.com/portico-dev/portico/protos/examples/users/v1"
)

// kitchenSrc is the shared fixture of the wirejson codecs: every field kind
// proto3 JSON has a rule for. Field numbers are sparse on purpose (tags of
// one and two bytes, numbers past 2^11).
const kitchenSrc = `
syntax = "proto3";
package wirejson.kitchen.v1;

import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

// Color has an alias (JSON uses the first name of a number) and a negative
// value; numbers outside it (e.g. 7) reach a message only over the wire.
enum Color {
  option allow_alias = true;
  COLOR_UNSPECIFIED = 0;
  RED = 1;
  CRIMSON = 1;
  GREEN = 2;
  BLUE = 3;
  INFRARED = -1;
}

// Scalars has one singular field of every scalar kind.
message Scalars {
  int32 i32 = 1;
  int64 i64 = 2;
  uint32 u32 = 3;
  uint64 u64 = 4;
  sint32 s32 = 5;
  sint64 s64 = 6;
  fixed32 fx32 = 7;
  fixed64 fx64 = 8;
  sfixed32 sfx32 = 9;
  sfixed64 sfx64 = 10;
  float fl = 11;
  double db = 12;
  bool b = 13;
  string s = 14;
  bytes by = 15;
  Color color = 16;
  Nested.Mood mood = 17;
  google.protobuf.NullValue null_value = 18;
  int32 page_size = 19;
  int32 a_b_c = 20;
  string custom_name = 21 [json_name = "custom"];
  int32 v2_value = 22;
  int64 big_number = 2047;
  string far_away = 536870911;
}

// Repeats has a repeated field of every scalar kind: packed (the proto3
// default) and, for the numeric kinds, unpacked too.
message Repeats {
  repeated int32 i32 = 1;
  repeated int64 i64 = 2;
  repeated uint32 u32 = 3;
  repeated uint64 u64 = 4;
  repeated sint32 s32 = 5;
  repeated sint64 s64 = 6;
  repeated fixed32 fx32 = 7;
  repeated fixed64 fx64 = 8;
  repeated sfixed32 sfx32 = 9;
  repeated sfixed64 sfx64 = 10;
  repeated float fl = 11;
  repeated double db = 12;
  repeated bool b = 13;
  repeated string s = 14;
  repeated bytes by = 15;
  repeated Color color = 16;
  repeated google.protobuf.NullValue nulls = 17;
  repeated Nested nested = 18;

  repeated int32 u_i32 = 21 [packed = false];
  repeated int64 u_i64 = 22 [packed = false];
  repeated uint32 u_u32 = 23 [packed = false];
  repeated uint64 u_u64 = 24 [packed = false];
  repeated sint32 u_s32 = 25 [packed = false];
  repeated sint64 u_s64 = 26 [packed = false];
  repeated fixed32 u_fx32 = 27 [packed = false];
  repeated fixed64 u_fx64 = 28 [packed = false];
  repeated sfixed32 u_sfx32 = 29 [packed = false];
  repeated sfixed64 u_sfx64 = 30 [packed = false];
  repeated float u_fl = 31 [packed = false];
  repeated double u_db = 32 [packed = false];
  repeated bool u_b = 33 [packed = false];
  repeated Color u_color = 34 [packed = false];
}

// Maps has a map of every key kind, and values of scalar, enum, bytes,
// message and well-known kinds.
message Maps {
  map<string, string> str_str = 1;
  map<int32, int32> i32_i32 = 2;
  map<int64, int64> i64_i64 = 3;
  map<uint32, uint32> u32_u32 = 4;
  map<uint64, uint64> u64_u64 = 5;
  map<sint32, sint32> s32_s32 = 6;
  map<sint64, sint64> s64_s64 = 7;
  map<fixed32, fixed32> fx32_fx32 = 8;
  map<fixed64, fixed64> fx64_fx64 = 9;
  map<sfixed32, sfixed32> sfx32_sfx32 = 10;
  map<sfixed64, sfixed64> sfx64_sfx64 = 11;
  map<bool, bool> bool_bool = 12;
  map<string, float> str_fl = 13;
  map<string, double> str_db = 14;
  map<string, bytes> str_by = 15;
  map<int32, Color> i32_color = 16;
  map<string, Nested> str_nested = 17;
  map<uint64, Scalars> u64_scalars = 18;
  map<bool, Nested> bool_nested = 19;
  map<string, google.protobuf.NullValue> str_null = 20;
}

// Oneofs has two oneofs with scalar, enum, bytes, message and well-known
// members.
message Oneofs {
  oneof pick {
    int32 num = 1;
    string text = 2;
    Nested msg = 3;
    Color color = 4;
    bytes raw = 5;
    int64 wide = 6;
    google.protobuf.Timestamp at = 7;
    google.protobuf.NullValue nothing = 8;
    google.protobuf.Value dyn = 9;
  }
  oneof other {
    double ratio = 10;
    Scalars scalars = 11;
    google.protobuf.Int32Value boxed = 12;
  }
  string plain = 13;
}

// Optionals has proto3 optional fields: omitted when unset, rendered
// (even when zero) when set.
message Optionals {
  optional int32 i32 = 1;
  optional int64 i64 = 2;
  optional string s = 3;
  optional bytes by = 4;
  optional bool b = 5;
  optional double db = 6;
  optional float fl = 7;
  optional Color color = 8;
  optional Nested msg = 9;
  optional uint64 u64 = 10;
}

// Nested is small, with a nested enum and a nested message type.
message Nested {
  enum Mood {
    MOOD_UNSPECIFIED = 0;
    HAPPY = 1;
    GRUMPY = 2;
  }
  message Leaf {
    string name = 1;
    Mood mood = 2;
  }
  string note = 1;
  int32 level = 2;
  Leaf leaf = 3;
  repeated Leaf leaves = 4;
}

// Tree is self-recursive; Tree and Forest are mutually recursive.
message Tree {
  string name = 1;
  Tree left = 2;
  Tree right = 3;
  repeated Tree children = 4;
  map<string, Tree> by_name = 5;
  Forest forest = 6;
  oneof link {
    Tree next = 7;
    Forest grove = 8;
  }
}

message Forest {
  repeated Tree trees = 1;
  Tree root = 2;
  map<int32, Forest> subs = 3;
}

// WellKnown has every well-known type: singular, repeated and as map values.
message WellKnown {
  google.protobuf.Timestamp ts = 1;
  google.protobuf.Duration dur = 2;
  google.protobuf.FieldMask mask = 3;
  google.protobuf.Struct st = 4;
  google.protobuf.Value val = 5;
  google.protobuf.ListValue list = 6;
  google.protobuf.NullValue null = 7;
  google.protobuf.DoubleValue w_double = 8;
  google.protobuf.FloatValue w_float = 9;
  google.protobuf.Int64Value w_int64 = 10;
  google.protobuf.UInt64Value w_uint64 = 11;
  google.protobuf.Int32Value w_int32 = 12;
  google.protobuf.UInt32Value w_uint32 = 13;
  google.protobuf.BoolValue w_bool = 14;
  google.protobuf.StringValue w_string = 15;
  google.protobuf.BytesValue w_bytes = 16;
  google.protobuf.Empty empty = 17;
  google.protobuf.Any any = 18;

  repeated google.protobuf.Timestamp r_ts = 21;
  repeated google.protobuf.Duration r_dur = 22;
  repeated google.protobuf.FieldMask r_mask = 23;
  repeated google.protobuf.Struct r_st = 24;
  repeated google.protobuf.Value r_val = 25;
  repeated google.protobuf.ListValue r_list = 26;
  repeated google.protobuf.NullValue r_null = 27;
  repeated google.protobuf.DoubleValue r_double = 28;
  repeated google.protobuf.FloatValue r_float = 29;
  repeated google.protobuf.Int64Value r_int64 = 30;
  repeated google.protobuf.UInt64Value r_uint64 = 31;
  repeated google.protobuf.Int32Value r_int32 = 32;
  repeated google.protobuf.UInt32Value r_uint32 = 33;
  repeated google.protobuf.BoolValue r_bool = 34;
  repeated google.protobuf.StringValue r_string = 35;
  repeated google.protobuf.BytesValue r_bytes = 36;
  repeated google.protobuf.Empty r_empty = 37;
  repeated google.protobuf.Any r_any = 38;

  map<string, google.protobuf.Timestamp> m_ts = 41;
  map<string, google.protobuf.Duration> m_dur = 42;
  map<string, google.protobuf.FieldMask> m_mask = 43;
  map<string, google.protobuf.Struct> m_st = 44;
  map<string, google.protobuf.Value> m_val = 45;
  map<string, google.protobuf.ListValue> m_list = 46;
  map<string, google.protobuf.NullValue> m_null = 47;
  map<string, google.protobuf.DoubleValue> m_double = 48;
  map<string, google.protobuf.FloatValue> m_float = 49;
  map<string, google.protobuf.Int64Value> m_int64 = 50;
  map<string, google.protobuf.UInt64Value> m_uint64 = 51;
  map<string, google.protobuf.Int32Value> m_int32 = 52;
  map<string, google.protobuf.UInt32Value> m_uint32 = 53;
  map<string, google.protobuf.BoolValue> m_bool = 54;
  map<string, google.protobuf.StringValue> m_string = 55;
  map<string, google.protobuf.BytesValue> m_bytes = 56;
  map<string, google.protobuf.Empty> m_empty = 57;
  map<string, google.protobuf.Any> m_any = 58;
}

// Sink holds one of everything.
message Sink {
  string id = 1;
  Scalars scalars = 2;
  Repeats repeats = 3;
  Maps maps = 4;
  Oneofs oneofs = 5;
  Optionals optionals = 6;
  Tree tree = 7;
  Forest forest = 8;
  WellKnown wkt = 9;
  repeated Sink sinks = 10;
  int32 page_size = 11;
  string custom_name = 12 [json_name = "custom"];
}

// Empty is a message with no fields (not google.protobuf.Empty).
message Empty {}
`

var kitchen struct {
	sync.Mutex
	fd protoreflect.FileDescriptor
}

// kitchenFile compiles kitchenSrc once per test binary.
func kitchenFile(tb testing.TB) protoreflect.FileDescriptor {
	tb.Helper()
	kitchen.Lock()
	defer kitchen.Unlock()
	if kitchen.fd == nil {
		kitchen.fd = meshtest.CompileProto(tb, kitchenSrc)
	}
	return kitchen.fd
}

// kitchenMessage returns the kitchen message type named name (e.g. "Sink").
func kitchenMessage(tb testing.TB, name string) protoreflect.MessageDescriptor {
	tb.Helper()
	md := kitchenFile(tb).Messages().ByName(protoreflect.Name(name))
	if md == nil {
		tb.Fatalf("no kitchen message %s", name)
	}
	return md
}

// exampleFiles are the files of the example services' protos.
func exampleFiles(testing.TB) []protoreflect.FileDescriptor {
	return []protoreflect.FileDescriptor{
		accountsv1.File_examples_accounts_v1_accounts_proto,
		ordersv1.File_examples_orders_v1_orders_proto,
		productsv1.File_examples_products_v1_products_proto,
		usersv1.File_examples_users_v1_users_proto,
	}
}

// wktFiles are the files of the well-known types with a JSON mapping.
func wktFiles() []protoreflect.FileDescriptor {
	return []protoreflect.FileDescriptor{
		anypb.File_google_protobuf_any_proto,
		durationpb.File_google_protobuf_duration_proto,
		emptypb.File_google_protobuf_empty_proto,
		fieldmaskpb.File_google_protobuf_field_mask_proto,
		structpb.File_google_protobuf_struct_proto,
		timestamppb.File_google_protobuf_timestamp_proto,
		wrapperspb.File_google_protobuf_wrappers_proto,
	}
}

// allMessages lists every message type (nested ones and map entries too)
// of the kitchen and example files, then the well-known types (a response
// may be one, e.g. google.protobuf.Empty), in a stable order.
func allMessages(tb testing.TB) []protoreflect.MessageDescriptor {
	tb.Helper()
	var out []protoreflect.MessageDescriptor
	var walk func(protoreflect.MessageDescriptors)
	walk = func(mds protoreflect.MessageDescriptors) {
		for i := range mds.Len() {
			out = append(out, mds.Get(i))
			walk(mds.Get(i).Messages())
		}
	}
	files := append([]protoreflect.FileDescriptor{kitchenFile(tb)}, exampleFiles(tb)...)
	for _, fd := range append(files, wktFiles()...) {
		walk(fd.Messages())
	}
	return out
}

// resolver resolves the kitchen and example types to dynamicpb types and
// everything else (the well-known types, google.api...) to the linked ones.
type resolver struct {
	local *dynamicpb.Types
}

func (r resolver) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := r.local.FindMessageByName(name); err == nil {
		return mt, nil
	}
	return protoregistry.GlobalTypes.FindMessageByName(name)
}

func (r resolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	if mt, err := r.local.FindMessageByURL(url); err == nil {
		return mt, nil
	}
	return protoregistry.GlobalTypes.FindMessageByURL(url)
}

func (r resolver) FindExtensionByName(name protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByName(name)
}

func (r resolver) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByNumber(message, field)
}

// testResolver returns the resolver of the Any payloads of the tests: the
// kitchen and example types (as dynamicpb types) and the linked types.
func testResolver(tb testing.TB) resolver {
	tb.Helper()
	kitchenFile(tb)
	testTypes.Lock()
	defer testTypes.Unlock()
	if testTypes.res == nil {
		r := newTestResolver(tb)
		testTypes.res = &r
	}
	return *testTypes.res
}

// testTypes caches the resolver: it is read-only once built, and the fuzz
// targets ask for it on every execution.
var testTypes struct {
	sync.Mutex
	res *resolver
}

func newTestResolver(tb testing.TB) resolver {
	files := new(protoregistry.Files)
	for _, fd := range append([]protoreflect.FileDescriptor{kitchenFile(tb)}, exampleFiles(tb)...) {
		if err := files.RegisterFile(fd); err != nil {
			tb.Fatal(err)
		}
	}
	return resolver{local: dynamicpb.NewTypes(files)}
}

// anyPayloads are the types genMessage packs into google.protobuf.Any: the
// kitchen ones once kitchenFile ran, the example ones and the well-known
// ones. Each resolves with testResolver.
func anyPayloads() []protoreflect.MessageDescriptor {
	var out []protoreflect.MessageDescriptor
	kitchen.Lock()
	kfd := kitchen.fd
	kitchen.Unlock()
	var files []protoreflect.FileDescriptor
	if kfd != nil {
		files = append(files, kfd)
	}
	files = append(files, exampleFiles(nil)...)
	for _, fd := range append(files, wktFiles()...) {
		for i := range fd.Messages().Len() {
			out = append(out, fd.Messages().Get(i))
		}
	}
	return out
}

// genMessage fills a random subset of md's fields with random values (extreme
// numbers, strings that need JSON escaping...), always producing a message
// protojson can marshal: valid well-known values, resolvable Any payloads.
// depth bounds the nesting: at depth <= 0 no message field is set (and a
// Value holds a scalar).
func genMessage(r *rand.Rand, md protoreflect.MessageDescriptor, depth int) *dynamicpb.Message {
	m := dynamicpb.NewMessage(md)
	genInto(r, m, depth)
	return m
}

// genInto fills m (a fresh, empty message) as genMessage describes.
func genInto(r *rand.Rand, m protoreflect.Message, depth int) {
	md := m.Descriptor()
	if md.FullName().Parent() == "google.protobuf" && genWKT(r, m, depth) {
		return
	}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if r.IntN(3) == 0 {
			continue
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			// Set at most one member; the first chosen stays.
			if m.WhichOneof(od) != nil || r.IntN(od.Fields().Len()) != 0 {
				continue
			}
		}
		genField(r, m, fd, depth)
	}
}

func isMessage(fd protoreflect.FieldDescriptor) bool {
	return fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind
}

// genField sets fd of m to a random value.
func genField(r *rand.Rand, m protoreflect.Message, fd protoreflect.FieldDescriptor, depth int) {
	switch {
	case fd.IsMap():
		if isMessage(fd.MapValue()) && depth <= 0 {
			return
		}
		mp := m.Mutable(fd).Map()
		for range genLen(r) {
			k := genScalar(r, fd.MapKey()).MapKey()
			if isMessage(fd.MapValue()) {
				v := mp.NewValue()
				genInto(r, v.Message(), depth-1)
				mp.Set(k, v)
			} else {
				mp.Set(k, genScalar(r, fd.MapValue()))
			}
		}
	case fd.IsList():
		if isMessage(fd) && depth <= 0 {
			return
		}
		l := m.Mutable(fd).List()
		for range genLen(r) {
			if isMessage(fd) {
				v := l.NewElement()
				genInto(r, v.Message(), depth-1)
				l.Append(v)
			} else {
				l.Append(genScalar(r, fd))
			}
		}
	case isMessage(fd):
		if depth <= 0 {
			return
		}
		v := m.NewField(fd)
		genInto(r, v.Message(), depth-1)
		m.Set(fd, v)
	default:
		m.Set(fd, genScalar(r, fd))
	}
}

// genLen is a random list or map length, mostly short.
func genLen(r *rand.Rand) int {
	if r.IntN(8) == 0 {
		return 5 + r.IntN(12)
	}
	return r.IntN(4)
}

var (
	int32s   = []int64{0, 1, -1, 127, 128, -128, math.MaxInt32, math.MinInt32, 1 << 20}
	int64s   = []int64{0, 1, -1, math.MaxInt64, math.MinInt64, 1 << 53, 1<<53 + 1, -(1 << 53) - 1, math.MaxInt32 + 1}
	uint32s  = []uint64{0, 1, 127, 128, math.MaxUint32, 1 << 31}
	uint64s  = []uint64{0, 1, math.MaxUint64, 1 << 63, 1 << 53, 1<<53 + 1, math.MaxUint32 + 1}
	float64s = []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 1.5, -2.25, 1e20, 1e21, 1e-6, 1e-7, 123456789.125,
		math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, 2.2250738585072014e-308, 1 << 53,
		math.NaN(), math.Inf(1), math.Inf(-1)}
	float32s = []float32{0, float32(math.Copysign(0, -1)), 1, -1, 0.1, 1.5, 3.4028235e38, -3.4028235e38, 1.4e-45,
		1.17549435e-38, 1e21, 9.999999e20, 1e-6, 1e-7, 16777217,
		float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}
	stringPieces = []string{"", "a", "hello world", "<b>&amp;</b>", "\u2028\u2029", "\x00\x01\x1f\x7f", `"\/`, "😀",
		"é", "\ufffd", "日本語", "\t\n\r\b\f", "\u00ad\u200b", "0", "null", "{", "Ω≈ç√", "a_b", "\U0010ffff"}
)

// genString is a random valid UTF-8 string built of pieces that stress JSON
// escaping, or of random runes.
func genString(r *rand.Rand) string {
	var b strings.Builder
	for range r.IntN(4) {
		if r.IntN(4) == 0 {
			for range r.IntN(6) {
				c := rune(r.IntN(0x11000))
				if c >= 0xd800 && c < 0xe000 {
					c = 'x'
				}
				b.WriteRune(c)
			}
			continue
		}
		b.WriteString(stringPieces[r.IntN(len(stringPieces))])
	}
	return b.String()
}

func genBytes(r *rand.Rand) []byte {
	b := make([]byte, r.IntN(12))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// genScalar is a random value of fd's scalar or enum kind.
func genScalar(r *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	rnd := r.IntN(3) == 0 // a random value rather than an extreme one
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(r.IntN(2) == 0)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if rnd {
			return protoreflect.ValueOfInt32(int32(r.Uint32()))
		}
		return protoreflect.ValueOfInt32(int32(int32s[r.IntN(len(int32s))]))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if rnd {
			return protoreflect.ValueOfInt64(int64(r.Uint64()) >> r.IntN(64))
		}
		return protoreflect.ValueOfInt64(int64s[r.IntN(len(int64s))])
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if rnd {
			return protoreflect.ValueOfUint32(r.Uint32())
		}
		return protoreflect.ValueOfUint32(uint32(uint32s[r.IntN(len(uint32s))]))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if rnd {
			return protoreflect.ValueOfUint64(r.Uint64() >> r.IntN(64))
		}
		return protoreflect.ValueOfUint64(uint64s[r.IntN(len(uint64s))])
	case protoreflect.FloatKind:
		if rnd {
			return protoreflect.ValueOfFloat32(math.Float32frombits(r.Uint32()))
		}
		return protoreflect.ValueOfFloat32(float32s[r.IntN(len(float32s))])
	case protoreflect.DoubleKind:
		if rnd {
			return protoreflect.ValueOfFloat64(math.Float64frombits(r.Uint64()))
		}
		return protoreflect.ValueOfFloat64(float64s[r.IntN(len(float64s))])
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(genString(r))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(genBytes(r))
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if r.IntN(5) == 0 { // a number the enum does not name
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber([]int32{7, 99, -5, math.MaxInt32, math.MinInt32}[r.IntN(5)]))
		}
		return protoreflect.ValueOfEnum(vals.Get(r.IntN(vals.Len())).Number())
	}
	panic(fmt.Sprintf("genScalar: %v has kind %v", fd.FullName(), fd.Kind()))
}

// fieldMaskSegments round-trip lower_snake ↔ lowerCamel.
var fieldMaskSegments = []string{"a", "id", "page_size", "update_time", "x2", "a_b_c", "display_name", "v1beta"}

// genWKT fills a well-known type within the range protojson accepts; it
// reports false for a type with no JSON mapping of its own (Empty).
func genWKT(r *rand.Rand, m protoreflect.Message, depth int) bool {
	fields := m.Descriptor().Fields()
	set := func(num protoreflect.FieldNumber, v protoreflect.Value) { m.Set(fields.ByNumber(num), v) }
	switch m.Descriptor().Name() {
	case "Timestamp":
		const lo, hi = -62135596800, 253402300799
		secs := []int64{lo, hi, 0, -1, 1700000000}[r.IntN(5)]
		if r.IntN(2) == 0 {
			secs = lo + r.Int64N(hi-lo+1)
		}
		set(1, protoreflect.ValueOfInt64(secs))
		set(2, protoreflect.ValueOfInt32(genNanos(r)))
	case "Duration":
		const limit = 315576000000
		secs := []int64{0, 1, -1, limit, -limit, 3600}[r.IntN(6)]
		if r.IntN(2) == 0 {
			secs = r.Int64N(2*limit+1) - limit
		}
		nanos := genNanos(r)
		if secs < 0 || (secs == 0 && r.IntN(2) == 0) {
			nanos = -nanos
		}
		set(1, protoreflect.ValueOfInt64(secs))
		set(2, protoreflect.ValueOfInt32(nanos))
	case "FieldMask":
		l := m.Mutable(fields.ByNumber(1)).List()
		for range r.IntN(4) {
			var segs []string
			for range 1 + r.IntN(3) {
				segs = append(segs, fieldMaskSegments[r.IntN(len(fieldMaskSegments))])
			}
			l.Append(protoreflect.ValueOfString(strings.Join(segs, ".")))
		}
	case "Struct":
		if depth <= 0 {
			return true
		}
		mp := m.Mutable(fields.ByNumber(1)).Map()
		for range genLen(r) {
			v := mp.NewValue()
			genInto(r, v.Message(), depth-1)
			mp.Set(protoreflect.ValueOfString(genString(r)).MapKey(), v)
		}
	case "ListValue":
		if depth <= 0 {
			return true
		}
		l := m.Mutable(fields.ByNumber(1)).List()
		for range genLen(r) {
			v := l.NewElement()
			genInto(r, v.Message(), depth-1)
			l.Append(v)
		}
	case "Value":
		kind := r.IntN(6)
		if depth <= 0 {
			kind = r.IntN(4)
		}
		switch kind {
		case 0:
			set(1, protoreflect.ValueOfEnum(0))
		case 1:
			f := float64s[r.IntN(len(float64s))]
			if math.IsNaN(f) || math.IsInf(f, 0) {
				f = 42
			}
			set(2, protoreflect.ValueOfFloat64(f))
		case 2:
			set(3, protoreflect.ValueOfString(genString(r)))
		case 3:
			set(4, protoreflect.ValueOfBool(r.IntN(2) == 0))
		case 4, 5:
			fd := fields.ByNumber(protoreflect.FieldNumber(kind + 1))
			v := m.NewField(fd)
			genInto(r, v.Message(), depth-1)
			m.Set(fd, v)
		}
	case "DoubleValue", "FloatValue", "Int64Value", "UInt64Value", "Int32Value", "UInt32Value",
		"BoolValue", "StringValue", "BytesValue":
		if r.IntN(4) != 0 {
			set(1, genScalar(r, fields.ByNumber(1)))
		}
	case "Any":
		if depth <= 0 || r.IntN(6) == 0 {
			return true // the empty Any renders as {}
		}
		payloads := anyPayloads()
		pmd := payloads[r.IntN(len(payloads))]
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(genMessage(r, pmd, depth-1))
		if err != nil {
			panic(err)
		}
		prefix := []string{"type.googleapis.com/", "example.com/types/", "/", ""}[r.IntN(4)]
		set(1, protoreflect.ValueOfString(prefix+string(pmd.FullName())))
		set(2, protoreflect.ValueOfBytes(b))
	default:
		return false
	}
	return true
}

// genNanos is a valid, non-negative nanos value with 0, 3, 6 or 9
// significant fractional digits.
func genNanos(r *rand.Rand) int32 {
	n := r.Int32N(1_000_000_000)
	switch r.IntN(4) {
	case 0:
		return 0
	case 1:
		return n / 1_000_000 * 1_000_000
	case 2:
		return n / 1000 * 1000
	}
	return n
}

// TestGenMessageMarshals checks the generator's contract: protojson marshals
// every message it generates.
func TestGenMessageMarshals(t *testing.T) {
	res := testResolver(t)
	r := rand.New(rand.NewPCG(1, 2))
	for _, md := range allMessages(t) {
		for range 20 {
			m := genMessage(r, md, 3)
			if _, err := marshalReference(m, res); err != nil {
				t.Fatalf("%s: %v", md.FullName(), err)
			}
		}
	}
}

// marshalReference is the reference rendering of a response:
// protojson with EmitUnpopulated, Any payloads resolved by res.
func marshalReference(m proto.Message, res resolver) ([]byte, error) {
	return protojson.MarshalOptions{EmitUnpopulated: true, Resolver: res}.Marshal(m)
}
