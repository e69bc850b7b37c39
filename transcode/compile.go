package transcode

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/transcode/wirejson"
)

const httpBodyName protoreflect.FullName = "google.api.HttpBody"

// Method is one gRPC method exposed through one or more HTTP bindings.
type Method struct {
	// FullMethod is the gRPC method path, "/pkg.Service/Method".
	FullMethod string
	// Desc is the reflected descriptor.
	Desc protoreflect.MethodDescriptor
	// Bindings are the HTTP routes of the method: the rule itself first, then
	// its additional_bindings in order.
	Bindings []*Binding
	// Upstream is the caller's handle for where calls go (set by the edge).
	Upstream any

	in, out protoreflect.MessageType
	// The fast codec of the method (nil: declined, and why).
	dec            *wirejson.Decoder
	enc            *wirejson.Encoder
	decErr, encErr error
}

// ServerStreaming reports whether the method streams its responses.
func (m *Method) ServerStreaming() bool { return m.Desc.IsStreamingServer() }

// Binding is one compiled HTTP rule of a method: everything the data path
// needs to decode a request and encode a response, prepared once.
type Binding struct {
	Method     *Method
	HTTPMethod string
	Template   *Template
	// Body and ResponseBody are the rule's raw field selectors ("", "*" or a
	// field name), kept for listings.
	Body, ResponseBody string
	// Index is 0 for the rule itself, i for additional_bindings[i-1].
	Index int

	codec bindingCodec
}

// Codec returns the binding's request decoder and response encoder.
func (b *Binding) Codec() Codec { return &b.codec }

// String describes the binding for logs and conflict errors.
func (b *Binding) String() string {
	return fmt.Sprintf("%s (%s %s)", strings.TrimPrefix(b.Method.FullMethod, "/"), b.HTTPMethod, b.Template.Raw)
}

// CompileError names the method, binding and option that failed to compile.
type CompileError struct {
	File, Method, Option string
	Err                  error
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("%s: method %s: option %s: %v", e.File, e.Method, e.Option, e.Err)
}

func (e *CompileError) Unwrap() error { return e.Err }

// Compiler compiles reflected services into methods and bindings.
type Compiler struct {
	cfg Config
}

// NewCompiler returns a compiler applying cfg to every binding it builds.
func NewCompiler(cfg Config) *Compiler { return &Compiler{cfg: cfg} }

// Config returns the compiler's configuration.
func (c *Compiler) Config() Config { return c.cfg }

// CompileService compiles every annotated method of sd (every method, with
// Config.ExposeUnannotated). types resolves google.protobuf.Any payloads and
// error details; it should hold the files reflected from the same upstream.
// A service with no exposed method yields no methods and no error. Any
// invalid rule fails the whole service with a *CompileError.
func (c *Compiler) CompileService(sd protoreflect.ServiceDescriptor, types Resolver) ([]*Method, error) {
	var methods []*Method
	mds := sd.Methods()
	for i := 0; i < mds.Len(); i++ {
		m, err := c.CompileMethod(mds.Get(i), types)
		if err != nil {
			return nil, err
		}
		if m != nil {
			methods = append(methods, m)
		}
	}
	return methods, nil
}

// CompileMethod compiles the bindings of one method; it returns nil for a
// method with no REST mapping (client streaming, or no google.api.http
// while transcode.expose_unannotated is off).
func (c *Compiler) CompileMethod(md protoreflect.MethodDescriptor, types Resolver) (*Method, error) {
	if md.IsStreamingClient() {
		// Client and bidi streaming have no REST mapping here.
		return nil, nil
	}
	rule, err := httpRule(md)
	if err != nil {
		return nil, &CompileError{File: md.ParentFile().Path(), Method: string(md.FullName()), Option: "google.api.http", Err: err}
	}
	if rule == nil {
		if !c.cfg.ExposeUnannotated {
			return nil, nil
		}
		rule = &annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: "/" + string(md.Parent().FullName()) + "/" + string(md.Name())}, Body: "*"}
	}
	return c.compileMethod(md, rule, types)
}

func (c *Compiler) compileMethod(md protoreflect.MethodDescriptor, rule *annotations.HttpRule, types Resolver) (*Method, error) {
	m := &Method{
		FullMethod: "/" + string(md.Parent().FullName()) + "/" + string(md.Name()),
		Desc:       md,
		in:         dynamicpb.NewMessageType(md.Input()),
		out:        dynamicpb.NewMessageType(md.Output()),
	}
	if c.cfg.Codec != CodecProtojson {
		m.dec, m.enc, m.decErr, m.encErr = c.fastCodecs(md, types)
	}
	rules := append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...)
	for i, r := range rules {
		opt := "google.api.http"
		if i > 0 {
			opt = fmt.Sprintf("google.api.http.additional_bindings[%d]", i-1)
			if len(r.GetAdditionalBindings()) > 0 {
				return nil, &CompileError{File: md.ParentFile().Path(), Method: string(md.FullName()), Option: opt, Err: errors.New("additional_bindings cannot be nested")}
			}
		}
		b, err := c.compileBinding(m, r, types)
		if err != nil {
			return nil, &CompileError{File: md.ParentFile().Path(), Method: string(md.FullName()), Option: opt, Err: err}
		}
		b.Index = i
		m.Bindings = append(m.Bindings, b)
	}
	return m, nil
}

func (c *Compiler) compileBinding(m *Method, r *annotations.HttpRule, types Resolver) (*Binding, error) {
	verb, path, err := rulePattern(r)
	if err != nil {
		return nil, err
	}
	tmpl, err := ParseTemplate(path)
	if err != nil {
		return nil, err
	}
	b := &Binding{Method: m, HTTPMethod: verb, Template: tmpl, Body: r.GetBody(), ResponseBody: r.GetResponseBody()}
	in, out := m.Desc.Input(), m.Desc.Output()
	if m.Desc.IsStreamingServer() && r.GetResponseBody() != "" {
		return nil, errors.New("response_body is not supported on server-streaming methods")
	}
	cc := &b.codec
	cc.binding = b
	cc.cfg = c.cfg
	cc.in, cc.out = m.in, m.out
	cc.types = types
	cc.init()

	bound := map[string]bool{} // dotted proto paths bound by path or body
	for _, v := range tmpl.Vars {
		path, err := resolveFieldPath(in, v.FieldPath)
		if err != nil {
			return nil, fmt.Errorf("path variable {%s}: %w", strings.Join(v.FieldPath, "."), err)
		}
		leaf := path[len(path)-1]
		if leaf.IsList() || leaf.IsMap() {
			return nil, fmt.Errorf("path variable {%s}: repeated and map fields cannot be bound to the path", strings.Join(v.FieldPath, "."))
		}
		if leaf.Kind() == protoreflect.MessageKind && !isScalarWKT(leaf.Message().FullName()) {
			return nil, fmt.Errorf("path variable {%s}: field of message type %s cannot be bound to the path", strings.Join(v.FieldPath, "."), leaf.Message().FullName())
		}
		cc.pathFields = append(cc.pathFields, path)
		bound[boundPath(path)] = true
	}

	switch body := r.GetBody(); body {
	case "":
		cc.body = bodyNone
	case "*":
		cc.body = bodyAll
		cc.httpBodyReq = in.FullName() == httpBodyName
	default:
		fd := in.Fields().ByName(protoreflect.Name(body))
		if fd == nil {
			return nil, fmt.Errorf("body: %s has no field %q", in.FullName(), body)
		}
		for _, p := range cc.pathFields {
			if len(p) == 1 && p[0] == fd {
				return nil, fmt.Errorf("body: field %q is also bound to the path", body)
			}
		}
		cc.body = bodyField
		cc.bodyField = fd
		cc.httpBodyReq = fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && fd.Message().FullName() == httpBodyName
		bound[body] = true
	}
	if cc.httpBodyReq && cc.body == bodyAll && len(tmpl.Vars) > 0 {
		return nil, errors.New(`body "*" on google.api.HttpBody cannot be combined with path variables`)
	}

	if rb := r.GetResponseBody(); rb != "" {
		fd := out.Fields().ByName(protoreflect.Name(rb))
		if fd == nil {
			return nil, fmt.Errorf("response_body: %s has no field %q", out.FullName(), rb)
		}
		cc.respField = fd
	}
	if out.FullName() == httpBodyName && cc.respField == nil {
		cc.httpBodyResp = true
	}
	if cc.respField != nil && cc.respField.Kind() == protoreflect.MessageKind && !cc.respField.IsList() && !cc.respField.IsMap() && cc.respField.Message().FullName() == httpBodyName {
		cc.httpBodyResp = true
	}

	if cc.body == bodyField {
		cc.updateMask = updateMaskField(c.cfg, verb, in, cc.bodyField)
	}
	if cc.body != bodyAll {
		cc.query = buildQueryIndex(in, bound)
		cc.bound = bound
	}
	cc.fastReq = c.cfg.Codec != CodecProtojson && !cc.httpBodyReq && (cc.body == bodyNone || m.dec != nil)
	if cc.fastReq {
		cc.dec = m.dec
	}
	if !cc.httpBodyResp {
		cc.enc = m.enc
	}
	cc.fallback = fallbackReason(c.cfg, cc, m.decErr, m.encErr)
	return b, nil
}

func rulePattern(r *annotations.HttpRule) (method, path string, err error) {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return http.MethodGet, p.Get, nil
	case *annotations.HttpRule_Put:
		return http.MethodPut, p.Put, nil
	case *annotations.HttpRule_Post:
		return http.MethodPost, p.Post, nil
	case *annotations.HttpRule_Delete:
		return http.MethodDelete, p.Delete, nil
	case *annotations.HttpRule_Patch:
		return http.MethodPatch, p.Patch, nil
	case *annotations.HttpRule_Custom:
		kind := p.Custom.GetKind()
		if kind == "" || strings.ContainsFunc(kind, func(r rune) bool { return r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) }) {
			return "", "", fmt.Errorf("custom kind %q is not a valid HTTP method token", kind)
		}
		return kind, p.Custom.GetPath(), nil
	default:
		return "", "", errors.New("no pattern (get, put, post, delete, patch or custom) is set")
	}
}

// httpRule reads the google.api.http option of md, or nil when it has none.
// Options of reflected descriptors carry the extension parsed with the
// generated type, parsed with a dynamic type, or as unknown bytes, depending
// on what was linked when they were decoded. Only the first is used as is;
// the others are re-parsed with the generated type registered.
func httpRule(md protoreflect.MethodDescriptor) (*annotations.HttpRule, error) {
	opts, ok := md.Options().(*descriptorpb.MethodOptions)
	if !ok || opts == nil {
		return nil, nil
	}
	xnum := annotations.E_Http.TypeDescriptor().Number()
	var (
		rule  *annotations.HttpRule
		found bool
	)
	opts.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.IsExtension() && fd.Number() == xnum {
			found = true
			rule, _ = v.Message().Interface().(*annotations.HttpRule)
			return false
		}
		return true
	})
	if rule != nil {
		return rule, nil
	}
	if !found && len(opts.ProtoReflect().GetUnknown()) == 0 {
		return nil, nil
	}
	raw, err := proto.Marshal(opts)
	if err != nil {
		return nil, err
	}
	fresh := &descriptorpb.MethodOptions{}
	if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(raw, fresh); err != nil {
		return nil, err
	}
	if !proto.HasExtension(fresh, annotations.E_Http) {
		return nil, nil
	}
	r, _ := proto.GetExtension(fresh, annotations.E_Http).(*annotations.HttpRule)
	return r, nil
}

// resolveFieldPath resolves a dotted field path against md; every element
// but the last must be a singular message field.
func resolveFieldPath(md protoreflect.MessageDescriptor, path []string) ([]protoreflect.FieldDescriptor, error) {
	out := make([]protoreflect.FieldDescriptor, 0, len(path))
	cur := md
	for i, name := range path {
		if cur == nil {
			return nil, fmt.Errorf("%q is not a message field", strings.Join(path[:i], "."))
		}
		fd := cur.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return nil, fmt.Errorf("%s has no field %q", cur.FullName(), name)
		}
		if i < len(path)-1 && (fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap()) {
			return nil, fmt.Errorf("%q is not a singular message field", name)
		}
		out = append(out, fd)
		cur = fd.Message()
	}
	return out, nil
}
