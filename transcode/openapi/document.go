// Package openapi describes the routes Portico serves as an OpenAPI 3.1
// document, generated from the compiled bindings themselves (the paths,
// the parameters each binding reads from the path and the query, its body
// field, its response field, how it streams) so that the document matches
// what the edge does. Schemas are the proto3 JSON form the codecs write.
// The document is built and rendered with libopenapi.
package openapi

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	om "github.com/pb33f/libopenapi/orderedmap"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-dev/portico/transcode"
)

// Operation is one binding and what the document says of who may call it.
type Operation struct {
	Binding *transcode.Binding
	// Security names the schemes (of Info.Schemes) a caller may present,
	// any one of them; empty: none needed.
	Security []string
	// AuthOptional: a caller may also present none.
	AuthOptional bool
	// Composed, for a composed method, lists its backend calls.
	Composed []ComposedCall
}

// ComposedCall is one backend call of a composed method.
type ComposedCall struct {
	// Name is the call's name, as the Portico-Partial header gives it.
	Name string
	// Method is the backend method, "package.Service/Method".
	Method string
	// Target is the response field the answer fills ("" for none).
	Target string
	// Optional: its failure degrades the answer instead of failing it.
	Optional bool
	// Fallback says what the target gets when an optional call fails
	// ("unset", "an empty message", ...).
	Fallback string
}

// Scheme is a security scheme the document declares.
type Scheme struct {
	Name string
	// Type is "http" (bearer JWT) or "apiKey".
	Type string
	// In and Param: where an API key goes ("header", "query") and its name.
	In, Param   string
	Description string
}

// Info heads the document.
type Info struct {
	Title, Version, Description string
	Schemes                     []Scheme
}

// statusDesc is google.rpc.Status, every error's body.
var statusDesc = (&spb.Status{}).ProtoReflect().Descriptor()

// maxQueryDepth bounds how deep query parameters follow nested messages
// (recursive messages would never end).
const maxQueryDepth = 3

// Document builds the document of ops, in their order (a route table is
// sorted by template, so the document is deterministic).
func Document(ops []Operation, info Info) *v3.Document {
	s := newSchemas()
	paths := om.New[string, *v3.PathItem]()
	seenIDs := map[string]int{}
	for _, op := range ops {
		b := op.Binding
		path, params := pathOf(b)
		item := paths.GetOrZero(path)
		if item == nil {
			item = &v3.PathItem{}
			paths.Set(path, item)
		}
		o := operation(s, op, params)
		// One operation id per binding: additional bindings get a suffix.
		id := strings.TrimPrefix(strings.ReplaceAll(b.Method.FullMethod, "/", "."), ".")
		if n := seenIDs[id]; n > 0 {
			o.OperationId = fmt.Sprintf("%s_%d", id, n)
		} else {
			o.OperationId = id
		}
		seenIDs[id]++
		switch b.HTTPMethod {
		case http.MethodGet:
			item.Get = o
		case http.MethodPost:
			item.Post = o
		case http.MethodPut:
			item.Put = o
		case http.MethodPatch:
			item.Patch = o
		case http.MethodDelete:
			item.Delete = o
		case http.MethodHead:
			item.Head = o
		case http.MethodOptions:
			item.Options = o
		}
		// A custom HTTP method (google.api.http's custom kind) has no
		// place in an OpenAPI path item: it is left out.
	}
	s.message(statusDesc)
	doc := &v3.Document{
		Version:           "3.1.0",
		JsonSchemaDialect: "https://spec.openapis.org/oas/3.1/dialect/base",
		Info:              &base.Info{Title: info.Title, Version: info.Version, Description: info.Description},
		Paths:             &v3.Paths{PathItems: paths},
		Components:        &v3.Components{Schemas: s.comps},
	}
	if len(info.Schemes) > 0 {
		schemes := om.New[string, *v3.SecurityScheme]()
		for _, sc := range info.Schemes {
			ss := &v3.SecurityScheme{Type: sc.Type, Description: sc.Description}
			if sc.Type == "http" {
				ss.Scheme, ss.BearerFormat = "bearer", "JWT"
			} else {
				ss.In, ss.Name = sc.In, sc.Param
			}
			schemes.Set(sc.Name, ss)
		}
		doc.Components.SecuritySchemes = schemes
	}
	return doc
}

// pathOf is the binding's OpenAPI path and its path parameters, the path
// a client calls: a variable's literal segments stay in the path and each
// of its wildcards is a parameter named after the field's last name
// (name_1, name_2 for several), so that "/v1/{name=users/*}" is
// "/v1/users/{name}" and the field gets "users/" + name. A "**" parameter
// takes the rest of the path, slashes included. A custom verb stays.
func pathOf(b *transcode.Binding) (string, []*v3.Parameter) {
	t := b.Template
	var sb strings.Builder
	var params []*v3.Parameter
	taken := map[string]bool{}
	param := func(name, desc string) {
		for n := 2; taken[name]; n++ {
			name = fmt.Sprintf("%s_%d", strings.TrimRight(name, "_0123456789"), n)
		}
		taken[name] = true
		sb.WriteString("{" + name + "}")
		params = append(params, &v3.Parameter{Name: name, In: "path", Required: ptr(true), Description: desc,
			Schema: schema(&base.Schema{Type: typ("string")})})
	}
	owner := make([]int, len(t.Segments)) // segment → variable+1, 0: none
	for k, v := range t.Vars {
		for i := v.Start; i < v.End; i++ {
			owner[i] = k + 1
		}
	}
	for i, seg := range t.Segments {
		sb.WriteByte('/')
		if seg.Kind == transcode.SegLiteral {
			sb.WriteString(seg.Literal)
			continue
		}
		if owner[i] == 0 {
			param(fmt.Sprintf("segment%d", i), "any path segment; not passed to the service")
			continue
		}
		v := t.Vars[owner[i]-1]
		field := strings.Join(v.FieldPath, ".")
		name := v.FieldPath[len(v.FieldPath)-1]
		wild := 0
		for _, s := range t.Segments[v.Start:v.End] {
			if s.Kind != transcode.SegLiteral {
				wild++
			}
		}
		if wild > 1 {
			name += "_1"
		}
		desc := "sets " + field
		if v.End-v.Start > 1 {
			desc = "part of " + field + ", which is set to " + strings.TrimPrefix(segmentsOf(t, v), "/")
		}
		if seg.Kind == transcode.SegDoubleWildcard {
			desc += "; it takes the rest of the path, slashes included"
		}
		param(name, desc)
	}
	if t.Verb != "" {
		sb.WriteString(":" + t.Verb)
	}
	return sb.String(), params
}

func segmentsOf(t *transcode.Template, v transcode.Variable) string {
	var parts []string
	for _, seg := range t.Segments[v.Start:v.End] {
		switch seg.Kind {
		case transcode.SegLiteral:
			parts = append(parts, seg.Literal)
		case transcode.SegWildcard:
			parts = append(parts, "*")
		default:
			parts = append(parts, "**")
		}
	}
	return strings.Join(parts, "/")
}

func ptr[T any](v T) *T { return &v }

// operation describes one binding.
func operation(s *schemas, op Operation, pathParams []*v3.Parameter) *v3.Operation {
	b := op.Binding
	md := b.Method.Desc
	o := &v3.Operation{
		Tags:       []string{string(md.Parent().FullName())},
		Summary:    string(md.Name()),
		Parameters: pathParams,
	}
	if c := comment(md); c != "" {
		o.Description = c
	}
	bound := map[string]bool{}
	for _, v := range b.Template.Vars {
		bound[strings.Join(v.FieldPath, ".")] = true
	}
	in := md.Input()
	switch b.Body {
	case "*":
		o.RequestBody = &v3.RequestBody{Required: ptr(true), Content: jsonContent(s.message(in))}
	case "":
		o.Parameters = append(o.Parameters, queryParams(s, in, "", bound, 0)...)
	default:
		fd := in.Fields().ByName(protoreflect.Name(b.Body))
		if fd != nil {
			o.RequestBody = &v3.RequestBody{Required: ptr(true), Content: jsonContent(s.field(fd))}
			if fd.Message() != nil && fd.Message().FullName() == "google.api.HttpBody" {
				o.RequestBody.Content = rawContent()
			}
			bound[string(fd.Name())] = true
		}
		o.Parameters = append(o.Parameters, queryParams(s, in, "", bound, 0)...)
	}
	if in.FullName() == "google.api.HttpBody" {
		o.RequestBody = &v3.RequestBody{Required: ptr(true), Content: rawContent()}
	}

	out := md.Output()
	answer := s.message(out)
	if b.ResponseBody != "" {
		if fd := out.Fields().ByName(protoreflect.Name(b.ResponseBody)); fd != nil {
			answer = s.field(fd)
		}
	}
	codes := om.New[string, *v3.Response]()
	var headers *om.Map[string, *v3.Header]
	if len(op.Composed) > 0 {
		var optional []string
		o.Description = strings.TrimSpace(o.Description + "\n\n" + composedText(op.Composed, &optional))
		if len(optional) > 0 {
			headers = om.New[string, *v3.Header]()
			headers.Set(partialHeader, &v3.Header{
				Description: "Set when optional calls failed: their names, comma-separated (of " + strings.Join(optional, ", ") +
					"). The fields they fill hold their fallback; a field left unset is null.",
				Schema: schema(&base.Schema{Type: typ("string")}),
			})
		}
	}
	switch {
	case out.FullName() == "google.api.HttpBody":
		codes.Set("200", &v3.Response{Description: "the body the service returns, with its content type", Content: rawContent()})
	case md.IsStreamingServer():
		codes.Set("200", &v3.Response{Description: "one message per line (NDJSON), or one event per message with Accept: text/event-stream", Content: streamContent(s, answer)})
	default:
		codes.Set("200", &v3.Response{Description: "OK", Content: jsonContent(answer), Headers: headers})
	}
	status := base.CreateSchemaProxyRef("#/components/schemas/" + string(statusDesc.FullName()))
	o.Responses = &v3.Responses{Codes: codes, Default: &v3.Response{Description: "an error: its google.rpc.Status", Content: jsonContent(status)}}
	if len(op.Security) > 0 {
		for _, name := range op.Security {
			req := om.New[string, []string]()
			req.Set(name, []string{})
			o.Security = append(o.Security, &base.SecurityRequirement{Requirements: req})
		}
		if op.AuthOptional {
			o.Security = append(o.Security, &base.SecurityRequirement{ContainsEmptyRequirement: true})
		}
	}
	return o
}

// partialHeader names a composed answer's degraded calls.
const partialHeader = "Portico-Partial"

// composedText describes a composed method's calls, and collects the
// names of the optional ones.
func composedText(calls []ComposedCall, optional *[]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Composed by the edge from %d backend calls:", len(calls))
	for _, c := range calls {
		fmt.Fprintf(&b, "\n- `%s`: %s", c.Name, c.Method)
		if c.Target != "" {
			fmt.Fprintf(&b, ", into `%s`", c.Target)
		}
		if c.Optional {
			*optional = append(*optional, c.Name)
			fmt.Fprintf(&b, "; optional (on failure: %s; named in %s)", c.Fallback, partialHeader)
		} else {
			b.WriteString("; required (its failure is the answer's)")
		}
	}
	return b.String()
}

func jsonContent(s *base.SchemaProxy) *om.Map[string, *v3.MediaType] {
	c := om.New[string, *v3.MediaType]()
	c.Set("application/json", &v3.MediaType{Schema: s})
	return c
}

func rawContent() *om.Map[string, *v3.MediaType] {
	c := om.New[string, *v3.MediaType]()
	c.Set("*/*", &v3.MediaType{Schema: schema(&base.Schema{Type: typ("string"), Format: "binary"})})
	return c
}

// streamContent: NDJSON lines {"result": message} and a last {"error":
// status} when the stream fails; SSE events carry the same data.
func streamContent(s *schemas, msg *base.SchemaProxy) *om.Map[string, *v3.MediaType] {
	status := base.CreateSchemaProxyRef("#/components/schemas/" + string(statusDesc.FullName()))
	one := func(key string, v *base.SchemaProxy) *base.SchemaProxy {
		props := om.New[string, *base.SchemaProxy]()
		props.Set(key, v)
		return schema(&base.Schema{Type: typ("object"), Properties: props, Required: []string{key}})
	}
	line := schema(&base.Schema{OneOf: []*base.SchemaProxy{one("result", msg), one("error", status)}})
	c := om.New[string, *v3.MediaType]()
	c.Set("application/x-ndjson", &v3.MediaType{Schema: line})
	c.Set("text/event-stream", &v3.MediaType{Schema: schema(&base.Schema{Type: typ("string"),
		Description: "`data:` events of the messages, then `event: error` with a google.rpc.Status if the stream fails"})})
	return c
}

// queryParams lists the request's fields a GET-like binding reads from
// the query: scalars, enums and lists of them, through singular messages
// (as "page.size"), except those the path binds.
func queryParams(s *schemas, md protoreflect.MessageDescriptor, prefix string, bound map[string]bool, depth int) []*v3.Parameter {
	var out []*v3.Parameter
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		name := prefix + fd.JSONName()
		path := prefix + string(fd.Name())
		if bound[path] || bound[name] {
			continue
		}
		switch {
		case fd.IsMap():
			continue
		case fd.Message() != nil && !fd.IsList():
			if w := wellKnown(fd.Message()); w != nil && len(w.Type) > 0 && w.Type[0] == "string" || isNullable(fd.Message()) {
				out = append(out, &v3.Parameter{Name: name, In: "query", Schema: s.singular(fd)})
				continue
			}
			if depth < maxQueryDepth && wellKnown(fd.Message()) == nil {
				out = append(out, queryParams(s, fd.Message(), name+".", bound, depth+1)...)
			}
		case fd.Message() != nil:
			continue
		case fd.IsList():
			out = append(out, &v3.Parameter{Name: name, In: "query", Explode: ptr(true),
				Schema: schema(&base.Schema{Type: typ("array"), Items: &dynamic{A: s.singular(fd)}})})
		default:
			out = append(out, &v3.Parameter{Name: name, In: "query", Schema: s.singular(fd)})
		}
	}
	return out
}

// comment is a descriptor's leading comment, when its file has source
// info (reflected descriptors usually do not).
func comment(d protoreflect.Descriptor) string {
	loc := d.ParentFile().SourceLocations().ByDescriptor(d)
	// "// text" comments keep the space after the slashes on every line.
	lines := strings.Split(strings.TrimSpace(loc.LeadingComments), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, " ")
	}
	return strings.Join(lines, "\n")
}
