package openapi

import (
	"bytes"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-dev/portico/policies"
	accountsv1 "github.com/portico-dev/portico/protos/examples/accounts/v1"
	ordersv1 "github.com/portico-dev/portico/protos/examples/orders/v1"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
	usersv1 "github.com/portico-dev/portico/protos/examples/users/v1"
	"github.com/portico-dev/portico/transcode"
)

var update = flag.Bool("update", false, "rewrite the golden documents")

// examples compiles the example services' bindings, as the edge does.
func examples(t *testing.T) []Operation { return examplesFor(t, nil) }

// examplesFor compiles them as a frontend sees them (nil: everything).
func examplesFor(t *testing.T, a *policies.Audience) []Operation {
	t.Helper()
	var ops []Operation
	c := transcode.NewCompiler(transcode.DefaultConfig())
	for _, fd := range []protoreflect.FileDescriptor{
		usersv1.File_examples_users_v1_users_proto, ordersv1.File_examples_orders_v1_orders_proto,
		productsv1.File_examples_products_v1_products_proto, accountsv1.File_examples_accounts_v1_accounts_proto,
	} {
		for i := 0; i < fd.Services().Len(); i++ {
			view, err := policies.View(fd.Services().Get(i), a)
			if err != nil {
				t.Fatal(err)
			}
			methods, err := c.CompileService(view, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range methods {
				for _, b := range m.Bindings {
					ops = append(ops, Operation{Binding: b})
				}
			}
		}
	}
	slices.SortStableFunc(ops, func(a, b Operation) int {
		return strings.Compare(a.Binding.Template.Raw, b.Binding.Template.Raw)
	})
	return ops
}

// render builds, renders and parses the document back; the parse is what
// a client's tooling sees.
func render(t *testing.T, ops []Operation, info Info) ([]byte, libopenapi.Document) {
	t.Helper()
	out, err := Document(ops, info).RenderJSON("  ")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(out)
	if err != nil {
		t.Fatal(err)
	}
	return out, doc
}

// TestExamplesDocument: the example services' document, whole and as the
// partner frontend (include mode) sees it, is valid OpenAPI 3.1, every
// schema in it compiles, it is the same on every build, and it matches
// its golden file (go test ./transcode/openapi -update rewrites them).
func TestExamplesDocument(t *testing.T) {
	for _, tc := range []struct {
		golden string
		a      *policies.Audience
	}{
		{"testdata/examples.openapi.json", nil},
		{"testdata/examples.partner.openapi.json", &policies.Audience{Frontend: "partner", Include: true}},
	} {
		t.Run(tc.golden, func(t *testing.T) { checkDocument(t, tc.golden, tc.a) })
	}
}

func checkDocument(t *testing.T, golden string, a *policies.Audience) {
	info := Info{Title: "Portico examples", Version: "1", Schemes: []Scheme{{Name: "bearer", Type: "http"}}}
	out, doc := render(t, examplesFor(t, a), info)
	if ok, errs := schema_validation.ValidateOpenAPIDocument(doc); !ok {
		for _, e := range errs {
			t.Errorf("%s: %s", e.Message, e.Reason)
		}
	}
	again, _ := render(t, examplesFor(t, a), info)
	if !bytes.Equal(out, again) {
		t.Fatal("two builds of one route table differ")
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	v := schema_validation.NewSchemaValidator()
	for name, sp := range m.Model.Components.Schemas.FromOldest() {
		// An empty object is valid against a schema that compiles (or
		// the schema's own complaint is in the errors).
		if _, errs := v.ValidateSchemaBytes(sp.Schema(), []byte(`{}`)); len(errs) > 0 && strings.Contains(errs[0].Reason, "compil") {
			t.Errorf("schema %s does not compile: %s", name, errs[0].Reason)
		}
	}
	if *update {
		if err := os.WriteFile(golden, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("the document differs from %s (go test ./transcode/openapi -update rewrites it)", golden)
	}
}

// TestSchemasMatchTheCodec: messages as the codec writes them (every field
// present, unset messages null, 64-bit integers as strings, well-known
// types in their JSON forms) validate against their schemas, and values
// of the wrong JSON type do not.
func TestSchemasMatchTheCodec(t *testing.T) {
	d := Document(examples(t), Info{Title: "t", Version: "1"})
	// Request messages that only GETs read are no component of the
	// document: add one, for its Duration and wrapper fields.
	extra := newSchemas()
	extra.comps = d.Components.Schemas
	extra.message((&ordersv1.ListOrdersRequest{}).ProtoReflect().Descriptor())
	out, err := d.RenderJSON("")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(out)
	if err != nil {
		t.Fatal(err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	schemaOf := func(name string) *base.Schema {
		sp := m.Model.Components.Schemas.GetOrZero(name)
		if sp == nil {
			t.Fatalf("no schema %s", name)
		}
		return sp.Schema()
	}
	marshal := protojson.MarshalOptions{EmitUnpopulated: true}
	v := schema_validation.NewSchemaValidator()
	for _, msg := range []proto.Message{
		&usersv1.User{},
		&usersv1.User{Name: "users/alice", DisplayName: "Alice", Visits: 1 << 60, Score: 4.5, Labels: map[string]string{"a": "b"},
			Attributes: &structpb.Struct{Fields: map[string]*structpb.Value{"x": structpb.NewBoolValue(true)}}, CreateTime: timestamppb.Now()},
		&ordersv1.Order{OrderId: "o-1", TotalCents: -5, Items: []*ordersv1.LineItem{{Sku: "s", Quantity: 2}}, Tags: map[string]int32{"p": 1}},
		&ordersv1.ListOrdersRequest{MaxAge: durationpb.New(1500e6), Limit: wrapperspb.Int32(3)},
		&ordersv1.ListOrdersRequest{},
		&productsv1.Product{Id: "p-1", PriceCents: 1037, Rating: 4.25},
		&accountsv1.ListPlansResponse{Plans: []*accountsv1.Plan{{Name: "free"}}},
	} {
		b, err := marshal.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		name := string(msg.ProtoReflect().Descriptor().FullName())
		if ok, errs := v.ValidateSchemaBytes(schemaOf(name), b); !ok {
			for _, e := range errs {
				for _, f := range e.SchemaValidationErrors {
					t.Errorf("%s %s: %s at %s", name, b, f.Reason, f.FieldPath)
				}
			}
		}
	}
	for _, bad := range []string{
		`{"name": 5}`, `{"visits": 5}`, `{"state": "NOT_A_STATE"}`, `{"createTime": 5}`, `{"labels": {"a": 1}}`,
	} {
		if ok, _ := v.ValidateSchemaBytes(schemaOf("portico.examples.users.v1.User"), []byte(bad)); ok {
			t.Errorf("%s validated as a User", bad)
		}
	}
}
