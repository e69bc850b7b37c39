package compose

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/mesh/meshtest"
)

const mappingProto = `
syntax = "proto3";
package t;
message HomeRequest { string user_id = 1; int32 page_size = 2; repeated string tags = 3; }
message User {
  string id = 1; string account_id = 2; repeated string product_ids = 3; Page page = 4;
  repeated int64 nums = 5; map<string, string> labels = 6; Kind kind = 7; repeated Page pages = 8;
}
message Page { int32 size = 1; string token = 2; }
enum Kind { KIND_UNSPECIFIED = 0; KIND_A = 1; }
message GetUserRequest {
  string id = 1; Page page = 2; int64 n = 3; repeated string ids = 4; map<string, string> labels = 5;
  Kind kind = 6; User user = 7; int32 size = 8;
}
`

type mappingFixture struct {
	fd      protoreflect.FileDescriptor
	sources []Source
}

func newMappingFixture(t *testing.T) *mappingFixture {
	fd := meshtest.CompileProto(t, mappingProto)
	msgs := fd.Messages()
	return &mappingFixture{fd: fd, sources: []Source{
		{Name: "request", Type: msgs.ByName("HomeRequest"), Call: -1},
		{Name: "profile", Type: msgs.ByName("User"), Call: 0},
		{Name: "other", Type: msgs.ByName("User"), Call: 3},
	}}
}

func (f *mappingFixture) msg(name string) protoreflect.MessageDescriptor {
	return f.fd.Messages().ByName(protoreflect.Name(name))
}

// wire marshals a message of type name set by fill.
func (f *mappingFixture) wire(t *testing.T, name string, fill func(m *dynamicpb.Message)) []byte {
	t.Helper()
	m := dynamicpb.NewMessage(f.msg(name))
	fill(m)
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func set(m *dynamicpb.Message, field string, v any) {
	m.Set(m.Descriptor().Fields().ByName(protoreflect.Name(field)), protoreflect.ValueOf(v))
}

// decoded reads a built request as text, for comparisons.
func (f *mappingFixture) decoded(t *testing.T, b []byte) string {
	t.Helper()
	m := dynamicpb.NewMessage(f.msg("GetUserRequest"))
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatalf("built request does not parse: %v", err)
	}
	return strings.Join(strings.Fields(prototextString(m)), " ")
}

func TestCompileRequest(t *testing.T) {
	f := newMappingFixture(t)
	req := f.wire(t, "HomeRequest", func(m *dynamicpb.Message) {
		set(m, "user_id", "u7")
		set(m, "page_size", int32(20))
	})
	user := f.wire(t, "User", func(m *dynamicpb.Message) {
		set(m, "account_id", "acc-1")
		l := m.Mutable(m.Descriptor().Fields().ByName("product_ids")).List()
		l.Append(protoreflect.ValueOfString("p1"))
		l.Append(protoreflect.ValueOfString("p2"))
		n := m.Mutable(m.Descriptor().Fields().ByName("nums")).List()
		n.Append(protoreflect.ValueOfInt64(-5))
		n.Append(protoreflect.ValueOfInt64(300))
		set(m, "kind", protoreflect.EnumNumber(1))
		lab := m.Mutable(m.Descriptor().Fields().ByName("labels")).Map()
		lab.Set(protoreflect.ValueOfString("k").MapKey(), protoreflect.ValueOfString("v"))
		pg := m.Mutable(m.Descriptor().Fields().ByName("page")).Message()
		pg.Set(pg.Descriptor().Fields().ByName("token"), protoreflect.ValueOfString("t1"))
	})
	for _, tc := range []struct {
		name  string
		maps  []Mapping
		each  *ForEach
		after []int
		want  []string
	}{
		{"from the request", []Mapping{{"id", "request.user_id"}, {"page.size", "request.page_size"}, {"size", "request.page_size"}}, nil, nil,
			[]string{`id: "u7" page: { size: 20 } size: 20`}},
		{"from an answer", []Mapping{{"id", "profile.account_id"}, {"kind", "profile.kind"}, {"labels", "profile.labels"}, {"ids", "profile.product_ids"}}, nil, []int{0},
			[]string{`id: "acc-1" ids: "p1" ids: "p2" labels: { key: "k" value: "v" } kind: KIND_A`}},
		{"a message merged with a field", []Mapping{{"page", "profile.page"}, {"page.size", "request.page_size"}}, nil, []int{0},
			[]string{`page: { size: 20 token: "t1" }`}},
		{"a whole answer", []Mapping{{"user", "profile"}}, nil, []int{0},
			[]string{`user: { account_id: "acc-1" product_ids: "p1" product_ids: "p2" page: { token: "t1" } nums: -5 nums: 300 labels: { key: "k" value: "v" } kind: KIND_A }`}},
		{"for each string", []Mapping{{"page.size", "request.page_size"}}, &ForEach{Over: "profile.product_ids", Field: "id"}, []int{0},
			[]string{`id: "p1" page: { size: 20 }`, `id: "p2" page: { size: 20 }`}},
		{"for each packed number", nil, &ForEach{Over: "profile.nums", Field: "n"}, []int{0},
			[]string{`n: -5`, `n: 300`}},
		{"for each into a list", nil, &ForEach{Over: "profile.product_ids", Field: "ids"}, []int{0},
			[]string{`ids: "p1"`, `ids: "p2"`}},
		{"two answers", []Mapping{{"id", "other.id"}, {"kind", "profile.kind"}}, nil, []int{3, 0},
			[]string{`kind: KIND_A`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			build, after, err := CompileRequest(f.msg("GetUserRequest"), f.sources, tc.maps, tc.each, 10)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(after, tc.after) {
				t.Fatalf("after %v, want %v", after, tc.after)
			}
			answers := make([][]byte, len(after))
			for k, c := range after {
				if c == 0 {
					answers[k] = user
				}
			}
			reqs, err := build(req, answers)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range reqs {
				got = append(got, f.decoded(t, r))
			}
			if strings.Join(got, " | ") != strings.Join(tc.want, " | ") {
				t.Fatalf("built\n  %s\nwant\n  %s", strings.Join(got, " | "), strings.Join(tc.want, " | "))
			}
		})
	}
}

func TestCompileRequestErrors(t *testing.T) {
	f := newMappingFixture(t)
	for _, tc := range []struct {
		maps []Mapping
		each *ForEach
		want string
	}{
		{[]Mapping{{"idd", "request.user_id"}}, nil, `request[0]: field "idd": no field "idd" in t.GetUserRequest`},
		{[]Mapping{{"id", "profle.id"}}, nil, `request[0]: from "profle.id": no source "profle" (the request or an earlier call: request, profile, other)`},
		{[]Mapping{{"id", "request.page_size"}}, nil, `request.page_size does not fit id: page_size (int32) and id (string) are different types`},
		{[]Mapping{{"id", "profile.product_ids"}}, nil, `a list goes only into a repeated field, not id (string)`},
		{[]Mapping{{"id", "profile.pages.token"}}, nil, `pages is not a single message, so the path cannot go on`},
		{[]Mapping{{"user", "request"}}, nil, `a whole t.HomeRequest goes only into a field of that type, not user (t.User)`},
		{[]Mapping{{"labels", "profile.kind"}}, nil, `kind (t.Kind) and map field labels are different types`},
		{nil, &ForEach{Over: "profile.id", Field: "id"}, `for_each: over "profile.id": not a repeated field`},
		{nil, &ForEach{Over: "profile.nums", Field: "id"}, `an element of profile.nums does not fit id`},
		{[]Mapping{{"ids", "profile.id"}}, nil, `a single value goes only into a single field, not ids (repeated string)`},
	} {
		_, _, err := CompileRequest(f.msg("GetUserRequest"), f.sources, tc.maps, tc.each, 10)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: got %v, want %q", tc.maps, tc.each, err, tc.want)
		}
	}
}

func prototextString(m proto.Message) string { return prototext.Format(m) }

// TestFanOutStopsAtItsMaximum: a fan-out's build stops one past its
// maximum (the executor refuses it) rather than building every request.
func TestFanOutStopsAtItsMaximum(t *testing.T) {
	f := newMappingFixture(t)
	user := f.wire(t, "User", func(m *dynamicpb.Message) {
		n := m.Mutable(m.Descriptor().Fields().ByName("nums")).List()
		for i := range 100000 {
			n.Append(protoreflect.ValueOfInt64(int64(i)))
		}
	})
	build, _, err := CompileRequest(f.msg("GetUserRequest"), f.sources, nil, &ForEach{Over: "profile.nums", Field: "n"}, 3)
	if err != nil {
		t.Fatal(err)
	}
	reqs, err := build(nil, [][]byte{user})
	if err != nil || len(reqs) != 4 {
		t.Fatalf("%d requests, %v; want 4 (the maximum and one more)", len(reqs), err)
	}
}
