package policies

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-dev/portico/mesh/meshtest"
)

const viewProto = `
syntax = "proto3";
package v.v1;
import "google/api/visibility.proto";
import "google/protobuf/timestamp.proto";
import "portico/v1/options.proto";

service Shop {
  rpc Get(Item) returns (Item) { option (portico.v1.method) = {frontends: ["partner"]}; }
  rpc Admin(Item) returns (Item) { option (portico.v1.method) = {hidden_from: ["mobile"]}; }
  rpc Preview(Item) returns (Item) { option (google.api.method_visibility).restriction = "WEB"; }
}

message Item {
  string id = 1 [(portico.v1.field) = {frontends: ["partner"]}];
  string name = 2 [(portico.v1.field) = {frontends: ["partner"]}];
  string notes = 3;
  int64 cost = 4 [(portico.v1.field) = {hidden_from: ["mobile", "partner"]}];
  string secret = 5 [(portico.v1.field).internal = true];
  string beta = 6 [(google.api.field_visibility).restriction = "web"];
  google.protobuf.Timestamp at = 7 [(portico.v1.field) = {frontends: ["partner"]}];
  oneof contact {
    string email = 8;
    string phone = 9;
  }
  optional string tag = 10;
}
`

// TestViews: each frontend's view keeps what it sees: an include-mode
// frontend only what names it (well-known types whole), an exclude-mode
// one all but what is hidden from it or restricted to others; internal
// fields never; oneofs left empty go with their fields.
func TestViews(t *testing.T) {
	sd := compileProto(t, viewProto)
	view := func(a *Audience) (methods, fields []string) {
		t.Helper()
		v, err := View(sd, a)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < v.Methods().Len(); i++ {
			methods = append(methods, string(v.Methods().Get(i).Name()))
		}
		if v.Methods().Len() == 0 {
			return methods, nil
		}
		item := v.Methods().Get(0).Input()
		for i := 0; i < item.Fields().Len(); i++ {
			fields = append(fields, string(item.Fields().Get(i).Name()))
		}
		if at := item.Fields().ByName("at"); at != nil && at.Message().Fields().Len() != 2 {
			t.Errorf("%v: the Timestamp lost fields", a)
		}
		return methods, fields
	}
	for _, tc := range []struct {
		a               *Audience
		methods, fields string
	}{
		{nil, "Get Admin Preview", "id name notes cost beta at email phone tag"},
		{&Audience{Frontend: "web"}, "Get Admin Preview", "id name notes cost beta at email phone tag"},
		{&Audience{Frontend: "mobile"}, "Get", "id name notes at email phone tag"},
		{&Audience{Frontend: "partner", Include: true}, "Get", "id name at"},
		{&Audience{Frontend: "other", Include: true}, "", ""},
	} {
		methods, fields := view(tc.a)
		if strings.Join(methods, " ") != tc.methods || strings.Join(fields, " ") != tc.fields {
			t.Errorf("%+v: methods %v fields %v; want %q and %q", tc.a, methods, fields, tc.methods, tc.fields)
		}
	}
	// The mobile view of Item has no secret, and its oneofs are intact.
	v, err := View(sd, &Audience{Frontend: "partner", Include: true})
	if err != nil {
		t.Fatal(err)
	}
	item := v.Methods().Get(0).Input()
	var oneofs []protoreflect.Name
	for i := 0; i < item.Oneofs().Len(); i++ {
		oneofs = append(oneofs, item.Oneofs().Get(i).Name())
	}
	if len(oneofs) != 0 {
		t.Errorf("partner's Item keeps oneofs %v without their fields", oneofs)
	}
	web, _ := View(sd, &Audience{Frontend: "web"})
	if o := web.Methods().Get(0).Input().Oneofs(); o.Len() != 2 || !slices.Contains([]protoreflect.Name{o.Get(0).Name(), o.Get(1).Name()}, "contact") {
		t.Errorf("web's Item oneofs: %d", o.Len())
	}
}

const commentedProto = `
syntax = "proto3";
package c.v1;
import "portico/v1/options.proto";

service Shop {
  // Hidden is web's.
  rpc Hidden(Item) returns (Item) { option (portico.v1.method) = {hidden_from: ["mobile"]}; }
  // Get reads an item.
  rpc Get(Item) returns (Item);
}

// Item is one thing.
message Item {
  // id names it.
  string id = 1;
  // cost is not the mobile app's.
  int64 cost = 2 [(portico.v1.field) = {hidden_from: ["mobile"]}];
  // secret is nobody's.
  string secret = 3 [(portico.v1.field).internal = true];
  oneof contact {
    // email is one way.
    string email = 4 [(portico.v1.field) = {hidden_from: ["mobile"]}];
  }
  oneof kind {
    // book is the other.
    string book = 5;
  }
  // tail comes last.
  string tail = 6;
}
`

// TestViewComments: a view keeps the comments of what it keeps, each on
// its own element, however many fields, oneofs and methods before it were
// removed (the OpenAPI document's descriptions come from them).
func TestViewComments(t *testing.T) {
	sd := meshtest.CompileProtoWithComments(t, commentedProto).Services().Get(0)
	v, err := View(sd, &Audience{Frontend: "mobile"})
	if err != nil {
		t.Fatal(err)
	}
	comment := func(d protoreflect.Descriptor) string {
		return strings.TrimSpace(d.ParentFile().SourceLocations().ByDescriptor(d).LeadingComments)
	}
	if v.Methods().Len() != 1 || comment(v.Methods().Get(0)) != "Get reads an item." {
		t.Fatalf("methods: %d, the first's comment %q", v.Methods().Len(), comment(v.Methods().Get(0)))
	}
	item := v.Methods().Get(0).Input()
	if c := comment(item); c != "Item is one thing." {
		t.Errorf("Item: %q", c)
	}
	want := map[string]string{"id": "id names it.", "book": "book is the other.", "tail": "tail comes last."}
	if item.Fields().Len() != len(want) {
		t.Fatalf("%d fields in the view", item.Fields().Len())
	}
	for i := 0; i < item.Fields().Len(); i++ {
		fd := item.Fields().Get(i)
		if c := comment(fd); c != want[string(fd.Name())] {
			t.Errorf("field %s: comment %q, want %q", fd.Name(), c, want[string(fd.Name())])
		}
	}
}

const oneofOrderProto = `
syntax = "proto3";
package o.v1;
import "portico/v1/options.proto";

service S {
  rpc Get(Outer) returns (Outer);
  rpc Get2(Outer) returns (Outer);
}

message Outer {
  string hidden = 1 [(portico.v1.field) = {hidden_from: ["mobile"]}];
  optional string a = 4;
  oneof k {
    string b = 5;
    string c = 6;
  }
}
`

// TestViewOneofOrder: a view of a message whose proto3 optional field
// (a synthetic oneof, declared last) comes before a real oneof keeps the
// oneofs in their declared order, as descriptors require; the same
// service given twice is viewed once.
func TestViewOneofOrder(t *testing.T) {
	sd := compileProto(t, oneofOrderProto)
	views, _, err := Views([]protoreflect.ServiceDescriptor{sd, sd}, &Audience{Frontend: "mobile"})
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != 2 {
		t.Fatalf("%d views", len(views))
	}
	outer := views[0].Methods().Get(0).Input()
	if outer.Fields().ByName("hidden") != nil || outer.Oneofs().Len() != 2 {
		t.Fatalf("fields %d, oneofs %d", outer.Fields().Len(), outer.Oneofs().Len())
	}
	if k, a := outer.Fields().ByName("b").ContainingOneof(), outer.Fields().ByName("a").ContainingOneof(); k.Name() != "k" || !a.IsSynthetic() {
		t.Fatalf("b in %s, a in %s", k.Name(), a.Name())
	}
}
