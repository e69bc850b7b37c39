package policies

import (
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	porticov1 "github.com/portico-dev/portico/protos/portico/v1"
)

// Extension reads extension xt of opts. Options of reflected descriptors
// carry it parsed with the generated type, parsed with a dynamic type, or as
// unknown bytes, depending on what was linked when they were decoded; only
// the first is used as is, the others are re-parsed with the generated type.
func Extension[T proto.Message](opts proto.Message, xt protoreflect.ExtensionType) (T, bool, error) {
	var zero T
	if opts == nil || !opts.ProtoReflect().IsValid() {
		return zero, false, nil
	}
	num := xt.TypeDescriptor().Number()
	found := false
	var got T
	ok := false
	opts.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.IsExtension() && fd.Number() == num {
			found = true
			got, ok = v.Message().Interface().(T)
			return false
		}
		return true
	})
	if ok {
		return got, true, nil
	}
	if !found && len(opts.ProtoReflect().GetUnknown()) == 0 {
		return zero, false, nil
	}
	raw, err := proto.Marshal(opts)
	if err != nil {
		return zero, false, err
	}
	fresh := opts.ProtoReflect().New().Interface()
	if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(raw, fresh); err != nil {
		return zero, false, err
	}
	if !proto.HasExtension(fresh, xt) {
		return zero, false, nil
	}
	v, ok := proto.GetExtension(fresh, xt).(T)
	return v, ok, nil
}

// declared returns the policy a method declares: the service's options, with
// each top-level field the method sets replacing the service's whole. from
// names, per top-level field, the descriptor whose option set it.
func declared(md protoreflect.MethodDescriptor) (out *porticov1.Policy, from map[protoreflect.Name]protoreflect.Descriptor, err error) {
	sd := md.Parent()
	svc, _, err := Extension[*porticov1.Policy](sd.Options(), porticov1.E_Service)
	if err != nil {
		return nil, nil, &OptionError{Desc: sd, Option: "(portico.v1.service)", Err: err}
	}
	m, _, err := Extension[*porticov1.Policy](md.Options(), porticov1.E_Method)
	if err != nil {
		return nil, nil, &OptionError{Desc: md, Option: "(portico.v1.method)", Err: err}
	}
	out = &porticov1.Policy{}
	from = map[protoreflect.Name]protoreflect.Descriptor{}
	dst := out.ProtoReflect()
	for _, p := range []struct {
		pol  *porticov1.Policy
		desc protoreflect.Descriptor
	}{{svc, sd}, {m, md}} {
		if p.pol == nil {
			continue
		}
		p.pol.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			dst.Set(fd, v)
			from[fd.Name()] = p.desc
			return true
		})
	}
	return out, from, nil
}

// OptionError is an invalid portico.v1 option: the descriptor (service or
// method) whose option is wrong, the option path, and why.
type OptionError struct {
	Desc   protoreflect.Descriptor
	Option string
	Err    error
}

func (e *OptionError) Error() string {
	return e.Desc.ParentFile().Path() + ": " + string(e.Desc.FullName()) + ": option " + e.Option + ": " + e.Err.Error()
}

func (e *OptionError) Unwrap() error { return e.Err }

// fieldPolicy reads a field's (portico.v1.field) option.
func fieldPolicy(fd protoreflect.FieldDescriptor) *porticov1.FieldPolicy {
	opts, _ := fd.Options().(*descriptorpb.FieldOptions)
	if opts == nil {
		return nil
	}
	fp, _, _ := Extension[*porticov1.FieldPolicy](opts, porticov1.E_Field)
	return fp
}

// idempotencyLevel reads the standard idempotency_level method option.
func idempotencyLevel(md protoreflect.MethodDescriptor) descriptorpb.MethodOptions_IdempotencyLevel {
	opts, _ := md.Options().(*descriptorpb.MethodOptions)
	return opts.GetIdempotencyLevel()
}

// Idempotent says whether repeating a call of md is safe: it declares so
// ((portico.v1.method).idempotent, or idempotency_level IDEMPOTENT or
// NO_SIDE_EFFECTS), or every HTTP binding it has is a GET. Compositions
// repeat (retry, fan out) only such methods.
func Idempotent(md protoreflect.MethodDescriptor) bool {
	if pol, _, err := declared(md); err == nil && pol.GetIdempotent() {
		return true
	}
	if lvl := idempotencyLevel(md); lvl == descriptorpb.MethodOptions_IDEMPOTENT || lvl == descriptorpb.MethodOptions_NO_SIDE_EFFECTS {
		return true
	}
	rule, _, err := Extension[*annotations.HttpRule](md.Options(), annotations.E_Http)
	if err != nil || rule == nil {
		return false
	}
	for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
		if r.GetGet() == "" {
			return false
		}
	}
	return true
}
