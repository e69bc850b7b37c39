package compose

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// maxFanOutBytes bounds the requests of one fan-out, all together.
const maxFanOutBytes = 16 << 20

// Source is what a call's request may be built from: the composite
// request (Call -1) or the answer of an earlier call.
type Source struct {
	Name string // "request", or the call's name
	Type protoreflect.MessageDescriptor
	Call int
}

// Mapping sets one field of a call's request.
type Mapping struct {
	// Field is a field path of the call's request ("id", "page.size").
	Field string
	// From is "<source>.<field path>", or "<source>" for a whole answer.
	From string
	// Expr, instead of From, computes the value (see CompileExpr).
	Expr *Expr
}

// ForEach fans a call out over the elements of a repeated field: one
// request per element, the element written to Field.
type ForEach struct {
	Over  string // "<source>.<field path>" ending in a repeated field
	Field string
}

// CompileRequest compiles how a call's requests are built, for the
// executor's Call.Build and Call.After: every path is resolved and every
// source checked to fit its field (same kind, same message or enum type,
// no list into a single field) when the plan is compiled. At run time a
// mapping copies the wire records of the source field under the target's
// number: protobuf's own rules (the last scalar wins, messages merge,
// lists append) make that the value the source holds, without decoding.
//
// A fan-out's build stops at maxElems+1 requests (the executor refuses
// more than maxElems) and at maxFanOutBytes of requests in all.
//
// An expression mapping decodes the sources it reads (once per build) and
// evaluates; its failure is the call's INVALID_ARGUMENT.
func CompileRequest(call protoreflect.MessageDescriptor, sources []Source, maps []Mapping, each *ForEach, maxElems int) (build func(ctx context.Context, req []byte, answers [][]byte) ([][]byte, error), after []int, err error) {
	type copyOp struct {
		src  int // index into the Build inputs: -1 the request, else answers[src]
		path []protowire.Number
		dst  []protowire.Number
	}
	type exprOp struct {
		k     int // the mapping's index, for errors
		e     *Expr
		fd    protoreflect.FieldDescriptor
		dst   []protowire.Number
		srcs  map[string]int // source name → Build input
		makes map[string]func() proto.Message
	}
	slot := map[int]int{} // Source.Call → index into answers
	input := func(s Source) int {
		if s.Call < 0 {
			return -1
		}
		if k, ok := slot[s.Call]; ok {
			return k
		}
		slot[s.Call] = len(after)
		after = append(after, s.Call)
		return slot[s.Call]
	}
	var ops []copyOp
	var exprs []exprOp
	// A field is set once; a message and a field inside it may both be
	// set (the field then overrides the message's: protobuf merges).
	var dsts [][]protowire.Number
	setOnce := func(what string, dst []protowire.Number) error {
		for _, d := range dsts {
			if slices.Equal(d, dst) {
				return fmt.Errorf("%s: another mapping sets this field", what)
			}
		}
		dsts = append(dsts, dst)
		return nil
	}
	for i, m := range maps {
		dst, dfd, err := resolve(call, m.Field)
		if err != nil {
			return nil, nil, fmt.Errorf("request[%d]: field %q: %w", i, m.Field, err)
		}
		if err := setOnce(fmt.Sprintf("request[%d]: field %q", i, m.Field), dst); err != nil {
			return nil, nil, err
		}
		if m.Expr != nil {
			if m.From != "" {
				return nil, nil, fmt.Errorf("request[%d]: sets from and expr; one of them", i)
			}
			if err := m.Expr.fitsField(dfd); err != nil {
				return nil, nil, fmt.Errorf("request[%d]: expr: %w", i, err)
			}
			op := exprOp{k: i, e: m.Expr, fd: dfd, dst: dst, srcs: map[string]int{}, makes: map[string]func() proto.Message{}}
			for _, name := range m.Expr.Reads() {
				k := slices.IndexFunc(sources, func(s Source) bool { return s.Name == name })
				if k < 0 {
					return nil, nil, fmt.Errorf("request[%d]: expr: reads %s, which is not the request or an earlier call", i, name)
				}
				op.srcs[name], op.makes[name] = input(sources[k]), messageMaker(sources[k].Type)
			}
			exprs = append(exprs, op)
			continue
		}
		src, path, sfd, err := resolveFrom(sources, m.From)
		if err != nil {
			return nil, nil, fmt.Errorf("request[%d]: from %q: %w", i, m.From, err)
		}
		if err := fits(sfd, src.Type, dfd, false); err != nil {
			return nil, nil, fmt.Errorf("request[%d]: %s does not fit %s: %w", i, m.From, m.Field, err)
		}
		ops = append(ops, copyOp{src: input(src), path: path, dst: dst})
	}
	var fan *copyOp
	var elemKind protoreflect.FieldDescriptor
	if each != nil {
		src, path, sfd, err := resolveFrom(sources, each.Over)
		if err != nil {
			return nil, nil, fmt.Errorf("for_each: over %q: %w", each.Over, err)
		}
		if sfd == nil || !sfd.IsList() {
			return nil, nil, fmt.Errorf("for_each: over %q: not a repeated field", each.Over)
		}
		dst, dfd, err := resolve(call, each.Field)
		if err != nil {
			return nil, nil, fmt.Errorf("for_each: field %q: %w", each.Field, err)
		}
		if err := setOnce(fmt.Sprintf("for_each: field %q", each.Field), dst); err != nil {
			return nil, nil, err
		}
		if err := fits(sfd, nil, dfd, true); err != nil {
			return nil, nil, fmt.Errorf("for_each: an element of %s does not fit %s: %w", each.Over, each.Field, err)
		}
		fan, elemKind = &copyOp{src: input(src), path: path, dst: dst}, sfd
	}
	input2 := func(req []byte, answers [][]byte, k int) []byte {
		if k < 0 {
			return req
		}
		return answers[k]
	}
	build = func(ctx context.Context, req []byte, answers [][]byte) ([][]byte, error) {
		var base []byte
		for _, op := range ops {
			var err error
			if base, err = copyField(base, input2(req, answers, op.src), op.path, op.dst); err != nil {
				return nil, err
			}
		}
		var decoded map[string]proto.Message
		for _, op := range exprs {
			read := func(name string) (proto.Message, error) {
				if m, ok := decoded[name]; ok {
					return m, nil
				}
				m := op.makes[name]()
				if err := proto.Unmarshal(input2(req, answers, op.srcs[name]), m); err != nil {
					return nil, status.Errorf(codes.Internal, "%s does not decode: %v", name, err)
				}
				if decoded == nil {
					decoded = map[string]proto.Message{}
				}
				decoded[name] = m
				return m, nil
			}
			var err error
			if base, err = op.e.eval(ctx, read, op.fd, base, op.dst); err != nil {
				if _, ok := status.FromError(err); ok {
					return nil, err
				}
				return nil, exprError(op.k, err)
			}
		}
		if fan == nil {
			return [][]byte{base}, nil
		}
		var out [][]byte
		size := 0
		err := elements(input2(req, answers, fan.src), fan.path, elemKind, func(typ protowire.Type, v []byte) bool {
			r := appendAt(slices.Clip(base), fan.dst, typ, v)
			out, size = append(out, r), size+len(r)
			return len(out) <= maxElems && size <= maxFanOutBytes
		})
		if err == nil && size > maxFanOutBytes {
			err = status.Errorf(codes.ResourceExhausted, "its requests pass %d bytes in all", maxFanOutBytes)
		}
		return out, err
	}
	return build, after, nil
}

// resolve turns a dotted path into field numbers; every field but the
// last is a singular message.
func resolve(md protoreflect.MessageDescriptor, path string) ([]protowire.Number, protoreflect.FieldDescriptor, error) {
	var nums []protowire.Number
	var fd protoreflect.FieldDescriptor
	for name := range strings.SplitSeq(path, ".") {
		if fd != nil && fd.Kind() == protoreflect.GroupKind {
			return nil, nil, fmt.Errorf("%s is a group (delimited), which compositions do not handle", fd.Name())
		}
		if fd != nil {
			if fd.Message() == nil || fd.IsList() || fd.IsMap() {
				return nil, nil, fmt.Errorf("%s is not a single message, so the path cannot go on", fd.Name())
			}
			md = fd.Message()
		}
		if fd = md.Fields().ByName(protoreflect.Name(name)); fd == nil {
			return nil, nil, fmt.Errorf("no field %q in %s", name, md.FullName())
		}
		nums = append(nums, fd.Number())
	}
	if fd.Kind() == protoreflect.GroupKind {
		return nil, nil, fmt.Errorf("%s is a group (delimited), which compositions do not handle", fd.Name())
	}
	return nums, fd, nil
}

// resolveFrom finds a mapping's source and its field; a bare source name
// is the whole message (nil field).
func resolveFrom(sources []Source, from string) (Source, []protowire.Number, protoreflect.FieldDescriptor, error) {
	name, path, _ := strings.Cut(from, ".")
	i := slices.IndexFunc(sources, func(s Source) bool { return s.Name == name })
	if i < 0 {
		names := make([]string, len(sources))
		for k, s := range sources {
			names[k] = s.Name
		}
		return Source{}, nil, nil, fmt.Errorf("no source %q (the request or an earlier call: %s)", name, strings.Join(names, ", "))
	}
	if path == "" {
		return sources[i], nil, nil, nil
	}
	nums, fd, err := resolve(sources[i].Type, path)
	return sources[i], nums, fd, err
}

// fits says whether src (nil: the whole message whole) can be copied into
// dst; elem copies one element of a list.
func fits(src protoreflect.FieldDescriptor, whole protoreflect.MessageDescriptor, dst protoreflect.FieldDescriptor, elem bool) error {
	if src == nil {
		if dst.Message() == nil || dst.IsMap() || dst.Message().FullName() != whole.FullName() {
			return fmt.Errorf("a whole %s goes only into a field of that type, not %s", whole.FullName(), describe(dst))
		}
		return nil
	}
	if src.IsMap() || dst.IsMap() {
		if !src.IsMap() || !dst.IsMap() || sameType(src.MapKey(), dst.MapKey()) != nil || sameType(src.MapValue(), dst.MapValue()) != nil {
			return fmt.Errorf("%s and %s are different types", describe(src), describe(dst))
		}
		return nil
	}
	switch {
	case src.IsList() && !elem && !dst.IsList():
		return fmt.Errorf("a list goes only into a repeated field, not %s", describe(dst))
	case !src.IsList() && dst.IsList():
		// A singular message given twice on the wire is one value; copied
		// into a list it would be two elements.
		return fmt.Errorf("a single value goes only into a single field, not %s", describe(dst))
	}
	return sameType(src, dst)
}

func sameType(a, b protoreflect.FieldDescriptor) error {
	switch {
	case a.Kind() != b.Kind():
	case a.Kind() == protoreflect.EnumKind && a.Enum().FullName() != b.Enum().FullName():
	case (a.Kind() == protoreflect.MessageKind || a.Kind() == protoreflect.GroupKind) && a.Message().FullName() != b.Message().FullName():
	default:
		return nil
	}
	return fmt.Errorf("%s and %s are different types", describe(a), describe(b))
}

func describe(fd protoreflect.FieldDescriptor) string {
	t := fd.Kind().String()
	switch {
	case fd.IsMap():
		return "map field " + string(fd.Name())
	case fd.Message() != nil:
		t = string(fd.Message().FullName())
	case fd.Enum() != nil:
		t = string(fd.Enum().FullName())
	}
	if fd.IsList() {
		t = "repeated " + t
	}
	return string(fd.Name()) + " (" + t + ")"
}

// copyField appends to dst, under the path dst, every record of the
// field at path in src (the whole of src for an empty path).
func copyField(out, src []byte, path, dst []protowire.Number) ([]byte, error) {
	if len(path) == 0 {
		return appendAt(out, dst, protowire.BytesType, src), nil
	}
	var inner []byte
	leaf := dst[len(dst)-1]
	err := walk(src, path, func(typ protowire.Type, v []byte) {
		inner = appendValue(inner, leaf, typ, v)
	})
	if err != nil || inner == nil {
		return out, err
	}
	for k := len(dst) - 2; k >= 0; k-- {
		inner = appendRecord(nil, dst[k], inner)
	}
	return append(out, inner...), nil
}

// appendAt appends the value v as the field at path dst.
func appendAt(out []byte, dst []protowire.Number, typ protowire.Type, v []byte) []byte {
	inner := appendValue(nil, dst[len(dst)-1], typ, v)
	for k := len(dst) - 2; k >= 0; k-- {
		inner = appendRecord(nil, dst[k], inner)
	}
	return append(out, inner...)
}

// appendValue appends one record: v is a length-delimited value's
// content, or the raw bytes of any other.
func appendValue(b []byte, num protowire.Number, typ protowire.Type, v []byte) []byte {
	b = protowire.AppendTag(b, num, typ)
	if typ == protowire.BytesType {
		return protowire.AppendBytes(b, v)
	}
	return append(b, v...)
}

// walk calls fn with every record of the field at path in msg, in wire
// order, through every record of its parent messages.
func walk(msg []byte, path []protowire.Number, fn func(protowire.Type, []byte)) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		v := msg[n : n+m]
		msg = msg[n+m:]
		if num != path[0] {
			continue
		}
		if typ == protowire.BytesType {
			c, _ := protowire.ConsumeBytes(v)
			v = c
		}
		if len(path) == 1 {
			fn(typ, v)
		} else if typ == protowire.BytesType {
			if err := walk(v, path[1:], fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// elements calls fn with each element of the repeated field at path,
// packed lists split by their element's wire type.
func elements(msg []byte, path []protowire.Number, fd protoreflect.FieldDescriptor, fn func(protowire.Type, []byte) bool) error {
	packable := fd.Message() == nil && fd.Kind() != protoreflect.StringKind && fd.Kind() != protoreflect.BytesKind
	var bad error
	more := true
	err := walk(msg, path, func(typ protowire.Type, v []byte) {
		if !more {
			return
		}
		if !packable || typ != protowire.BytesType {
			more = fn(typ, v)
			return
		}
		et := elemType(fd.Kind())
		for len(v) > 0 && more {
			n := protowire.ConsumeFieldValue(0, et, v)
			if n < 0 {
				bad = protowire.ParseError(n)
				return
			}
			more = fn(et, v[:n])
			v = v[n:]
		}
	})
	if err == nil {
		err = bad
	}
	return err
}

// elemType is the wire type of one element of a packed list.
func elemType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	}
	return protowire.VarintType
}
