package openapi

import (
	"strings"

	"github.com/pb33f/go-yaml"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	om "github.com/pb33f/libopenapi/orderedmap"
	"github.com/pb33f/libopenapi/utils"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// schemas turns message descriptors into the JSON Schemas of their proto3
// JSON form, as Portico's codecs write it: field names in lowerCamelCase,
// every field present (unset messages as null), except oneof members and
// proto3 optional fields, which appear only when set. Each message is one
// component, referenced by its full name, so recursion is a $ref.
type schemas struct {
	comps *om.Map[string, *base.SchemaProxy]
	seen  map[protoreflect.FullName]bool
}

func newSchemas() *schemas {
	return &schemas{comps: om.New[string, *base.SchemaProxy](), seen: map[protoreflect.FullName]bool{}}
}

type dynamic = base.DynamicValue[*base.SchemaProxy, bool]

func schema(s *base.Schema) *base.SchemaProxy { return base.CreateSchemaProxy(s) }

func typ(t ...string) []string { return t }

func strings2nodes(vs ...string) []*yaml.Node {
	out := make([]*yaml.Node, len(vs))
	for i, v := range vs {
		out[i] = utils.CreateStringNode(v)
	}
	return out
}

// message is the schema of a message value: a reference to its component
// (added on first use), or, for a well-known type, its JSON form inline.
func (s *schemas) message(md protoreflect.MessageDescriptor) *base.SchemaProxy {
	if wkt := wellKnown(md); wkt != nil {
		return schema(wkt)
	}
	name := string(md.FullName())
	if !s.seen[md.FullName()] {
		s.seen[md.FullName()] = true
		s.comps.Set(name, nil) // its place: components in first-use order
		s.comps.Set(name, schema(s.object(md)))
	}
	return base.CreateSchemaProxyRef("#/components/schemas/" + name)
}

// object is a message's own schema.
func (s *schemas) object(md protoreflect.MessageDescriptor) *base.Schema {
	props := om.New[string, *base.SchemaProxy]()
	var required []string
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		fs := s.field(fd)
		if c := comment(fd); c != "" {
			if fs.IsReference() {
				fs = schema(&base.Schema{Description: c, AllOf: []*base.SchemaProxy{fs}})
			} else if sc := fs.Schema(); sc != nil {
				sc.Description = strings.TrimSpace(c + "\n\n" + sc.Description)
			}
		}
		props.Set(fd.JSONName(), fs)
		if fd.ContainingOneof() == nil {
			required = append(required, fd.JSONName())
		}
	}
	out := &base.Schema{Type: typ("object"), Title: string(md.Name()), Description: comment(md), Properties: props, Required: required}
	// A oneof has at most one member set.
	oneofs := md.Oneofs()
	for i := 0; i < oneofs.Len(); i++ {
		o := oneofs.Get(i)
		if o.IsSynthetic() || o.Fields().Len() < 2 {
			continue
		}
		var any []*base.SchemaProxy
		for j := 0; j < o.Fields().Len(); j++ {
			any = append(any, schema(&base.Schema{Required: []string{o.Fields().Get(j).JSONName()}}))
		}
		var pairs []*base.SchemaProxy
		for a := 0; a < len(any); a++ {
			for b := a + 1; b < len(any); b++ {
				pairs = append(pairs, schema(&base.Schema{Required: []string{o.Fields().Get(a).JSONName(), o.Fields().Get(b).JSONName()}}))
			}
		}
		out.AllOf = append(out.AllOf, schema(&base.Schema{Description: "oneof " + string(o.Name()) + ": at most one of its fields",
			Not: schema(&base.Schema{AnyOf: pairs})}))
	}
	return out
}

// field is the schema of one field's value.
func (s *schemas) field(fd protoreflect.FieldDescriptor) *base.SchemaProxy {
	switch {
	case fd.IsMap():
		return schema(&base.Schema{Type: typ("object"), AdditionalProperties: &dynamic{A: s.singular(fd.MapValue())}})
	case fd.IsList():
		return schema(&base.Schema{Type: typ("array"), Items: &dynamic{A: s.singular(fd)}})
	case fd.Message() != nil && fd.ContainingOneof() == nil && !isNullable(fd.Message()):
		// Unset, it is written as null.
		return schema(&base.Schema{AnyOf: []*base.SchemaProxy{s.singular(fd), schema(&base.Schema{Type: typ("null")})}})
	}
	return s.singular(fd)
}

// isNullable: the type's own schema already admits null.
func isNullable(md protoreflect.MessageDescriptor) bool {
	switch md.FullName() {
	case "google.protobuf.Value":
		return true
	}
	return strings.HasPrefix(string(md.FullName()), "google.protobuf.") && strings.HasSuffix(string(md.Name()), "Value") && md.Name() != "ListValue"
}

// singular is the schema of one value of the field's type.
func (s *schemas) singular(fd protoreflect.FieldDescriptor) *base.SchemaProxy {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return s.message(fd.Message())
	case protoreflect.EnumKind:
		return schema(enum(fd.Enum()))
	}
	return schema(scalar(fd.Kind()))
}

func enum(ed protoreflect.EnumDescriptor) *base.Schema {
	if ed.FullName() == "google.protobuf.NullValue" {
		return &base.Schema{Type: typ("null")}
	}
	var names []string
	vals := ed.Values()
	for i := 0; i < vals.Len(); i++ {
		names = append(names, string(vals.Get(i).Name()))
	}
	return &base.Schema{Type: typ("string"), Title: string(ed.Name()), Enum: strings2nodes(names...)}
}

// scalar is a scalar kind's proto3 JSON form: 64-bit integers as decimal
// strings, floats as numbers or "NaN", "Infinity", "-Infinity", bytes as
// base64.
func scalar(k protoreflect.Kind) *base.Schema {
	switch k {
	case protoreflect.BoolKind:
		return &base.Schema{Type: typ("boolean")}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return &base.Schema{Type: typ("integer"), Format: "int32"}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		zero := 0.0
		return &base.Schema{Type: typ("integer"), Format: "int64", Minimum: &zero, Description: "uint32"}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return &base.Schema{Type: typ("string"), Format: "int64", Pattern: `^-?[0-9]+$`}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return &base.Schema{Type: typ("string"), Format: "uint64", Pattern: `^[0-9]+$`}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		format := "double"
		if k == protoreflect.FloatKind {
			format = "float"
		}
		return &base.Schema{OneOf: []*base.SchemaProxy{
			schema(&base.Schema{Type: typ("number"), Format: format}),
			schema(&base.Schema{Type: typ("string"), Enum: strings2nodes("NaN", "Infinity", "-Infinity")}),
		}}
	case protoreflect.BytesKind:
		return &base.Schema{Type: typ("string"), ContentEncoding: "base64"}
	}
	return &base.Schema{Type: typ("string")}
}

// wellKnown is the JSON form of a well-known type, nil for other messages.
func wellKnown(md protoreflect.MessageDescriptor) *base.Schema {
	name := md.FullName()
	if !strings.HasPrefix(string(name), "google.protobuf.") {
		return nil
	}
	wrapped := func(k protoreflect.Kind) *base.Schema {
		s := scalar(k)
		if len(s.Type) == 1 {
			s.Type = append(s.Type, "null")
			return s
		}
		return &base.Schema{AnyOf: []*base.SchemaProxy{schema(s), schema(&base.Schema{Type: typ("null")})}}
	}
	switch name {
	case "google.protobuf.Timestamp":
		return &base.Schema{Type: typ("string"), Format: "date-time"}
	case "google.protobuf.Duration":
		return &base.Schema{Type: typ("string"), Pattern: `^-?[0-9]+(\.[0-9]{1,9})?s$`, Description: "a duration in seconds, such as \"1.5s\""}
	case "google.protobuf.FieldMask":
		return &base.Schema{Type: typ("string"), Description: "field paths in lowerCamelCase, comma-separated"}
	case "google.protobuf.Struct":
		return &base.Schema{Type: typ("object")}
	case "google.protobuf.Value":
		return &base.Schema{}
	case "google.protobuf.ListValue":
		return &base.Schema{Type: typ("array")}
	case "google.protobuf.Empty":
		return &base.Schema{Type: typ("object"), AdditionalProperties: &dynamic{N: 1, B: false}}
	case "google.protobuf.Any":
		props := om.New[string, *base.SchemaProxy]()
		props.Set("@type", schema(&base.Schema{Type: typ("string")}))
		return &base.Schema{Type: typ("object"), Properties: props, Required: []string{"@type"}}
	}
	if k, ok := wrappers[name]; ok {
		return wrapped(k)
	}
	return nil
}

// wrappers are the wrapper types and the kinds they wrap.
var wrappers = map[protoreflect.FullName]protoreflect.Kind{
	"google.protobuf.BoolValue": protoreflect.BoolKind, "google.protobuf.Int32Value": protoreflect.Int32Kind,
	"google.protobuf.UInt32Value": protoreflect.Uint32Kind, "google.protobuf.Int64Value": protoreflect.Int64Kind,
	"google.protobuf.UInt64Value": protoreflect.Uint64Kind, "google.protobuf.FloatValue": protoreflect.FloatKind,
	"google.protobuf.DoubleValue": protoreflect.DoubleKind, "google.protobuf.StringValue": protoreflect.StringKind,
	"google.protobuf.BytesValue": protoreflect.BytesKind,
}
