package compose

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// exprCostLimit bounds one evaluation of a request expression: one that
// iterates over a huge list fails instead of burning CPU.
const exprCostLimit = 1_000_000

// celReserved are the words CEL keeps for itself: a call named so could
// not be read by an expression.
var celReserved = map[string]bool{
	"as": true, "break": true, "const": true, "continue": true, "else": true, "false": true, "for": true,
	"function": true, "if": true, "import": true, "in": true, "let": true, "loop": true, "package": true,
	"namespace": true, "null": true, "return": true, "true": true, "var": true, "void": true, "while": true,
}

// Expr is a CEL expression of a call's request, checked against the
// types of the sources it may read.
type Expr struct {
	src  string
	ast  *cel.Ast
	prg  cel.Program
	refs []string // the sources it reads, by name
}

// ExprEnv is where request expressions are checked: the sources (the
// composed request and the answers of the calls) as CEL variables of
// their message types.
type ExprEnv struct {
	env   *cel.Env
	names map[string]bool
}

// NewExprEnv declares the sources.
func NewExprEnv(sources []Source) (*ExprEnv, error) {
	opts := []cel.EnvOption{}
	files := map[string]bool{}
	names := map[string]bool{}
	for _, s := range sources {
		if fd := s.Type.ParentFile(); !files[fd.Path()] {
			files[fd.Path()] = true
			opts = append(opts, cel.TypeDescs(fd))
		}
		opts = append(opts, cel.Variable(s.Name, cel.ObjectType(string(s.Type.FullName()))))
		names[s.Name] = true
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, err
	}
	return &ExprEnv{env: env, names: names}, nil
}

// Compile checks src; the error is CEL's own, with its position in the
// expression ("<input>:1:9: undeclared reference ...").
func (x *ExprEnv) Compile(src string) (*Expr, error) {
	ast, iss := x.env.Compile(src)
	if iss.Err() != nil {
		// CEL's positions, without its source excerpts (" | ...").
		var msgs []string
		for line := range strings.SplitSeq(iss.Err().Error(), "\n") {
			if !strings.HasPrefix(line, " |") {
				msgs = append(msgs, strings.TrimPrefix(strings.TrimSpace(line), "ERROR: "))
			}
		}
		return nil, errors.New(strings.Join(msgs, "; "))
	}
	prg, err := x.env.Program(ast, cel.CostLimit(exprCostLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, err
	}
	e := &Expr{src: src, ast: ast, prg: prg}
	for _, r := range ast.NativeRep().ReferenceMap() {
		if x.names[r.Name] && !slices.Contains(e.refs, r.Name) {
			e.refs = append(e.refs, r.Name)
		}
	}
	slices.Sort(e.refs)
	return e, nil
}

// Reads lists the sources the expression reads.
func (e *Expr) Reads() []string { return e.refs }

// fitsField checks that the expression's type is the field's; an
// expression of type dyn is checked when it is evaluated.
func (e *Expr) fitsField(fd protoreflect.FieldDescriptor) error {
	out, want := e.ast.OutputType(), celType(fd)
	if out.Kind() == types.DynKind || want.IsAssignableType(out) {
		return nil
	}
	return fmt.Errorf("the expression is a %s, which does not fit %s", out, describe(fd))
}

// celType is the CEL type of a field's values.
func celType(fd protoreflect.FieldDescriptor) *types.Type {
	switch {
	case fd.IsMap():
		return types.NewMapType(celSingular(fd.MapKey()), celSingular(fd.MapValue()))
	case fd.IsList():
		return types.NewListType(celSingular(fd))
	}
	return celSingular(fd)
}

func celSingular(fd protoreflect.FieldDescriptor) *types.Type {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return types.BoolType
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind, protoreflect.EnumKind:
		return types.IntType
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return types.UintType
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return types.DoubleType
	case protoreflect.StringKind:
		return types.StringType
	case protoreflect.BytesKind:
		return types.BytesType
	}
	switch name := fd.Message().FullName(); name {
	case "google.protobuf.Timestamp":
		return types.TimestampType
	case "google.protobuf.Duration":
		return types.DurationType
	case "google.protobuf.Any":
		return types.AnyType
	case "google.protobuf.Value":
		return types.DynType
	case "google.protobuf.Struct":
		return types.NewMapType(types.StringType, types.DynType)
	case "google.protobuf.ListValue":
		return types.NewListType(types.DynType)
	case "google.protobuf.BoolValue":
		return types.NewNullableType(types.BoolType)
	case "google.protobuf.BytesValue":
		return types.NewNullableType(types.BytesType)
	case "google.protobuf.DoubleValue", "google.protobuf.FloatValue":
		return types.NewNullableType(types.DoubleType)
	case "google.protobuf.Int32Value", "google.protobuf.Int64Value":
		return types.NewNullableType(types.IntType)
	case "google.protobuf.UInt32Value", "google.protobuf.UInt64Value":
		return types.NewNullableType(types.UintType)
	case "google.protobuf.StringValue":
		return types.NewNullableType(types.StringType)
	default:
		return types.NewObjectType(string(name))
	}
}

// messageMaker makes empty messages of md's type as CEL reads them: CEL
// prefers the linked descriptor of a file to one it is given, and a
// message read through another descriptor's fields would not be its own.
// It is chosen once, when the request is compiled.
func messageMaker(md protoreflect.MessageDescriptor) func() proto.Message {
	gf, err := protoregistry.GlobalFiles.FindFileByPath(md.ParentFile().Path())
	if err != nil {
		return func() proto.Message { return dynamicpb.NewMessage(md) }
	}
	d, _ := protoregistry.GlobalFiles.FindDescriptorByName(md.FullName())
	gmd, ok := d.(protoreflect.MessageDescriptor)
	if !ok || gmd.ParentFile() != gf {
		return func() proto.Message { return dynamicpb.NewMessage(md) }
	}
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName()); err == nil && mt.Descriptor() == gmd {
		return func() proto.Message { return mt.New().Interface() }
	}
	return func() proto.Message { return dynamicpb.NewMessage(gmd) }
}

// eval evaluates the expression over the sources it reads (decoded
// from their wire bytes by read) and appends the field at dst.
func (e *Expr) eval(ctx context.Context, read func(name string) (proto.Message, error), fd protoreflect.FieldDescriptor, out []byte, dst []protowire.Number) ([]byte, error) {
	vars := make(map[string]any, len(e.refs))
	for _, name := range e.refs {
		m, err := read(name)
		if err != nil {
			return nil, err
		}
		vars[name] = m
	}
	v, _, err := e.prg.ContextEval(ctx, vars)
	if err != nil {
		return nil, err
	}
	leaf, err := appendCEL(nil, fd, v)
	if err != nil || leaf == nil {
		return out, err
	}
	for k := len(dst) - 2; k >= 0; k-- {
		leaf = appendRecord(nil, dst[k], leaf)
	}
	return append(out, leaf...), nil
}

// appendCEL appends the records of field fd holding v.
func appendCEL(b []byte, fd protoreflect.FieldDescriptor, v ref.Val) ([]byte, error) {
	if types.IsError(v) {
		return nil, v.(*types.Err)
	}
	if v == types.NullValue {
		return b, nil // unset
	}
	switch {
	case fd.IsMap():
		m, ok := v.(traits.Mapper)
		if !ok {
			return nil, fmt.Errorf("a %s is not a map", v.Type().TypeName())
		}
		for it := m.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			entry, err := appendCEL(nil, fd.MapKey(), k)
			if err == nil {
				entry, err = appendCEL(entry, fd.MapValue(), m.Get(k))
			}
			if err != nil {
				return nil, err
			}
			b = appendRecord(b, fd.Number(), entry)
			if len(b) > maxFanOutBytes {
				return nil, fmt.Errorf("its value passes %d bytes", maxFanOutBytes)
			}
		}
		return b, nil
	case fd.IsList():
		l, ok := v.(traits.Lister)
		if !ok {
			return nil, fmt.Errorf("a %s is not a list", v.Type().TypeName())
		}
		n, _ := l.Size().(types.Int)
		for i := types.Int(0); i < n; i++ {
			var err error
			if b, err = appendSingular(b, fd, l.Get(i)); err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
			if len(b) > maxFanOutBytes {
				return nil, fmt.Errorf("its value passes %d bytes", maxFanOutBytes)
			}
		}
		return b, nil
	}
	return appendSingular(b, fd, v)
}

// appendSingular appends one value of fd's kind (an element, for a list).
func appendSingular(b []byte, fd protoreflect.FieldDescriptor, v ref.Val) ([]byte, error) {
	if types.IsError(v) {
		return nil, v.(*types.Err)
	}
	num := fd.Number()
	wrong := func() error {
		return fmt.Errorf("a %s does not fit %s", v.Type().TypeName(), describe(fd))
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		x, ok := v.(types.Bool)
		if !ok {
			return nil, wrong()
		}
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, protowire.EncodeBool(bool(x))), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind, protoreflect.EnumKind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		x, ok := v.(types.Int)
		if !ok {
			return nil, wrong()
		}
		i := int64(x)
		k := fd.Kind()
		if (k == protoreflect.Int32Kind || k == protoreflect.Sint32Kind || k == protoreflect.Sfixed32Kind || k == protoreflect.EnumKind) &&
			(i < math.MinInt32 || i > math.MaxInt32) {
			return nil, fmt.Errorf("%d is out of the range of %s", i, describe(fd))
		}
		switch k {
		case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
			b = protowire.AppendTag(b, num, protowire.VarintType)
			return protowire.AppendVarint(b, protowire.EncodeZigZag(i)), nil
		case protoreflect.Sfixed32Kind:
			b = protowire.AppendTag(b, num, protowire.Fixed32Type)
			return protowire.AppendFixed32(b, uint32(i)), nil
		case protoreflect.Sfixed64Kind:
			b = protowire.AppendTag(b, num, protowire.Fixed64Type)
			return protowire.AppendFixed64(b, uint64(i)), nil
		}
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, uint64(i)), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		x, ok := v.(types.Uint)
		if !ok {
			return nil, wrong()
		}
		u := uint64(x)
		switch fd.Kind() {
		case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
			if u > math.MaxUint32 {
				return nil, fmt.Errorf("%d is out of the range of %s", u, describe(fd))
			}
			if fd.Kind() == protoreflect.Fixed32Kind {
				b = protowire.AppendTag(b, num, protowire.Fixed32Type)
				return protowire.AppendFixed32(b, uint32(u)), nil
			}
		case protoreflect.Fixed64Kind:
			b = protowire.AppendTag(b, num, protowire.Fixed64Type)
			return protowire.AppendFixed64(b, u), nil
		}
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, u), nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		x, ok := v.(types.Double)
		if !ok {
			return nil, wrong()
		}
		if fd.Kind() == protoreflect.FloatKind {
			b = protowire.AppendTag(b, num, protowire.Fixed32Type)
			return protowire.AppendFixed32(b, math.Float32bits(float32(x))), nil
		}
		b = protowire.AppendTag(b, num, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, math.Float64bits(float64(x))), nil
	case protoreflect.StringKind:
		x, ok := v.(types.String)
		if !ok {
			return nil, wrong()
		}
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendString(b, string(x)), nil
	case protoreflect.BytesKind:
		x, ok := v.(types.Bytes)
		if !ok {
			return nil, wrong()
		}
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendBytes(b, x), nil
	case protoreflect.MessageKind:
		m, err := celMessage(fd.Message(), v)
		if err != nil {
			return nil, err
		}
		w, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			return nil, err
		}
		return appendRecord(b, num, w), nil
	}
	return nil, fmt.Errorf("%s: a %s field cannot be set by an expression", fd.Name(), fd.Kind())
}

// celMessage is v as a message of type md: a message of that type, or
// a value CEL converts to a well-known type (a timestamp, a wrapper's
// primitive, a map for a Struct).
func celMessage(md protoreflect.MessageDescriptor, v ref.Val) (proto.Message, error) {
	if m, ok := v.Value().(proto.Message); ok && m.ProtoReflect().Descriptor().FullName() == md.FullName() {
		return m, nil
	}
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName()); err == nil && strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		n, err := v.ConvertToNative(reflect.TypeOf(mt.Zero().Interface()))
		if err == nil {
			if m, ok := n.(proto.Message); ok {
				return m, nil
			}
		}
	}
	return nil, fmt.Errorf("a %s does not fit a %s field", v.Type().TypeName(), md.FullName())
}

// exprError is an expression that failed on this request's data.
func exprError(k int, err error) error {
	return status.Errorf(codes.InvalidArgument, "request[%d]: the expression failed: %v", k, err)
}
