package compose

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
		{"from the request", []Mapping{{Field: "id", From: "request.user_id"}, {Field: "page.size", From: "request.page_size"}, {Field: "size", From: "request.page_size"}}, nil, nil,
			[]string{`id: "u7" page: { size: 20 } size: 20`}},
		{"from an answer", []Mapping{{Field: "id", From: "profile.account_id"}, {Field: "kind", From: "profile.kind"}, {Field: "labels", From: "profile.labels"}, {Field: "ids", From: "profile.product_ids"}}, nil, []int{0},
			[]string{`id: "acc-1" ids: "p1" ids: "p2" labels: { key: "k" value: "v" } kind: KIND_A`}},
		{"a message merged with a field", []Mapping{{Field: "page", From: "profile.page"}, {Field: "page.size", From: "request.page_size"}}, nil, []int{0},
			[]string{`page: { size: 20 token: "t1" }`}},
		{"a whole answer", []Mapping{{Field: "user", From: "profile"}}, nil, []int{0},
			[]string{`user: { account_id: "acc-1" product_ids: "p1" product_ids: "p2" page: { token: "t1" } nums: -5 nums: 300 labels: { key: "k" value: "v" } kind: KIND_A }`}},
		{"for each string", []Mapping{{Field: "page.size", From: "request.page_size"}}, &ForEach{Over: "profile.product_ids", Field: "id"}, []int{0},
			[]string{`id: "p1" page: { size: 20 }`, `id: "p2" page: { size: 20 }`}},
		{"for each packed number", nil, &ForEach{Over: "profile.nums", Field: "n"}, []int{0},
			[]string{`n: -5`, `n: 300`}},
		{"for each into a list", nil, &ForEach{Over: "profile.product_ids", Field: "ids"}, []int{0},
			[]string{`ids: "p1"`, `ids: "p2"`}},
		{"two answers", []Mapping{{Field: "id", From: "other.id"}, {Field: "kind", From: "profile.kind"}}, nil, []int{3, 0},
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
			reqs, err := build(t.Context(), req, answers)
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
		{[]Mapping{{Field: "idd", From: "request.user_id"}}, nil, `request[0]: field "idd": no field "idd" in t.GetUserRequest`},
		{[]Mapping{{Field: "id", From: "profle.id"}}, nil, `request[0]: from "profle.id": no source "profle" (the request or an earlier call: request, profile, other)`},
		{[]Mapping{{Field: "id", From: "request.page_size"}}, nil, `request.page_size does not fit id: page_size (int32) and id (string) are different types`},
		{[]Mapping{{Field: "id", From: "profile.product_ids"}}, nil, `a list goes only into a repeated field, not id (string)`},
		{[]Mapping{{Field: "id", From: "profile.pages.token"}}, nil, `pages is not a single message, so the path cannot go on`},
		{[]Mapping{{Field: "user", From: "request"}}, nil, `a whole t.HomeRequest goes only into a field of that type, not user (t.User)`},
		{[]Mapping{{Field: "labels", From: "profile.kind"}}, nil, `kind (t.Kind) and map field labels are different types`},
		{nil, &ForEach{Over: "profile.id", Field: "id"}, `for_each: over "profile.id": not a repeated field`},
		{nil, &ForEach{Over: "profile.nums", Field: "id"}, `an element of profile.nums does not fit id`},
		{[]Mapping{{Field: "ids", From: "profile.id"}}, nil, `a single value goes only into a single field, not ids (repeated string)`},
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
	reqs, err := build(t.Context(), nil, [][]byte{user})
	if err != nil || len(reqs) != 4 {
		t.Fatalf("%d requests, %v; want 4 (the maximum and one more)", len(reqs), err)
	}
}

// TestRequestExpressions: a CEL expression sets a field from the request
// and earlier answers (decoded only for the sources it reads), checked
// against the field's type when compiled; a value out of the field's
// range fails the call with INVALID_ARGUMENT.
func TestRequestExpressions(t *testing.T) {
	f := newMappingFixture(t)
	env, err := NewExprEnv(f.sources)
	if err != nil {
		t.Fatal(err)
	}
	expr := func(src string) *Expr {
		t.Helper()
		e, err := env.Compile(src)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		return e
	}
	req := f.wire(t, "HomeRequest", func(m *dynamicpb.Message) {
		m.Set(m.Descriptor().Fields().ByName("user_id"), protoreflect.ValueOfString("u7"))
		m.Set(m.Descriptor().Fields().ByName("page_size"), protoreflect.ValueOfInt32(20))
		tags := m.Mutable(m.Descriptor().Fields().ByName("tags")).List()
		tags.Append(protoreflect.ValueOfString("a"))
		tags.Append(protoreflect.ValueOfString("b"))
	})
	user := f.wire(t, "User", func(m *dynamicpb.Message) {
		m.Set(m.Descriptor().Fields().ByName("kind"), protoreflect.ValueOfEnum(1))
		n := m.Mutable(m.Descriptor().Fields().ByName("nums")).List()
		n.Append(protoreflect.ValueOfInt64(3))
		pg := m.Mutable(m.Descriptor().Fields().ByName("page")).Message()
		pg.Set(pg.Descriptor().Fields().ByName("token"), protoreflect.ValueOfString("t1"))
	})
	for _, tc := range []struct {
		name  string
		maps  []Mapping
		after []int
		want  string
	}{
		{"a string built", []Mapping{{Field: "id", Expr: expr(`'users/' + request.user_id`)}}, nil, `id: "users/u7"`},
		{"arithmetic", []Mapping{{Field: "n", Expr: expr(`request.page_size * 2 + profile.nums[0]`)}}, []int{0}, `n: 43`},
		{"an enum", []Mapping{{Field: "kind", Expr: expr(`profile.kind`)}}, []int{0}, `kind: KIND_A`},
		{"a message built", []Mapping{{Field: "page", Expr: expr(`t.Page{size: request.page_size, token: profile.page.token}`)}}, []int{0},
			`page: { size: 20 token: "t1" }`},
		{"a list", []Mapping{{Field: "ids", Expr: expr(`request.tags.map(x, x + '!')`)}}, nil, `ids: "a!" ids: "b!"`},
		{"a map", []Mapping{{Field: "labels", Expr: expr(`{'user': request.user_id}`)}}, nil, `labels: { key: "user" value: "u7" }`},
		{"beside a copy", []Mapping{{Field: "id", From: "request.user_id"}, {Field: "size", Expr: expr(`size(request.tags)`)}}, nil,
			`id: "u7" size: 2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			build, after, err := CompileRequest(f.msg("GetUserRequest"), f.sources, tc.maps, nil, 10)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(after, tc.after) {
				t.Fatalf("after %v, want %v", after, tc.after)
			}
			answers := make([][]byte, len(after))
			for k := range after {
				answers[k] = user
			}
			reqs, err := build(t.Context(), req, answers)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.decoded(t, reqs[0]); got != tc.want {
				t.Fatalf("built %s, want %s", got, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		maps []Mapping
		want string
	}{
		{[]Mapping{{Field: "id", Expr: expr(`request.page_size`)}}, `request[0]: expr: the expression is a int, which does not fit id (string)`},
		{[]Mapping{{Field: "ids", Expr: expr(`request.user_id`)}}, `does not fit ids (repeated string)`},
		{[]Mapping{{Field: "id", From: "request.user_id", Expr: expr(`'x'`)}}, `request[0]: sets from and expr; one of them`},
		{[]Mapping{{Field: "id", From: "request.user_id"}, {Field: "id", Expr: expr(`'x'`)}}, `request[1]: field "id": another mapping sets this field`},
	} {
		if _, _, err := CompileRequest(f.msg("GetUserRequest"), f.sources, tc.maps, nil, 10); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
	if _, err := env.Compile(`profle.id`); err == nil || !strings.Contains(err.Error(), "undeclared reference to 'profle'") {
		t.Errorf("an unknown source: %v", err)
	}

	build, _, err := CompileRequest(f.msg("GetUserRequest"), f.sources, []Mapping{{Field: "size", Expr: expr(`request.page_size * 1000000000`)}}, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	_, err = build(t.Context(), req, nil)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "request[0]: the expression failed: 20000000000 is out of the range of size (int32)") {
		t.Fatalf("out of range: %v", err)
	}
}
