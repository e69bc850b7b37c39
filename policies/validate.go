package policies

import (
	"context"
	"errors"
	"slices"
	"strings"

	validatepb "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-dev/portico/policies/chain"
)

// validationError renders protovalidate violations as 400 INVALID_ARGUMENT
// with one google.rpc.BadRequest field violation each.
func validationError(md protoreflect.MessageDescriptor, err error) error {
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		// A runtime error evaluating a rule is the service's bug, not the
		// caller's; it is still a refusal, never a pass.
		return status.Error(codes.Internal, "request validation failed: "+err.Error())
	}
	br := &errdetails.BadRequest{}
	first := ""
	for _, v := range verr.Violations {
		field := jsonPath(md, v.Proto.GetField())
		desc := v.Proto.GetMessage()
		if first == "" {
			first = field + ": " + desc
		}
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field: field, Description: desc, Reason: v.Proto.GetRuleId(),
		})
	}
	msg := "invalid request: " + first
	if n := len(br.FieldViolations); n > 1 {
		msg += " (and " + itoa(n-1) + " more)"
	}
	st, _ := status.New(codes.InvalidArgument, msg).WithDetails(br)
	return st.Err()
}

// jsonPath names a violation's field as clients wrote it: JSON names
// ("displayName", "items[2].sku"), where protovalidate uses proto names.
func jsonPath(md protoreflect.MessageDescriptor, path *validatepb.FieldPath) string {
	var b strings.Builder
	for i, el := range path.GetElements() {
		if i > 0 {
			b.WriteByte('.')
		}
		renamed := proto.CloneOf(el)
		var fd protoreflect.FieldDescriptor
		if md != nil {
			fd = md.Fields().ByNumber(protoreflect.FieldNumber(el.GetFieldNumber()))
		}
		if fd != nil {
			renamed.SetFieldName(fd.JSONName())
			switch {
			case fd.IsMap():
				md = fd.MapValue().Message()
			default:
				md = fd.Message()
			}
		} else {
			md = nil
		}
		b.WriteString(protovalidate.FieldPathString(validatepb.FieldPath_builder{Elements: []*validatepb.FieldPathElement{renamed}}.Build()))
	}
	return b.String()
}

// validateStage checks the request message against its buf.validate
// rules: 400 with a google.rpc.BadRequest naming each field (JSON names).
func (p *Policy) validateStage() chain.Stage {
	v := p.validator
	if v == nil {
		return nil
	}
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		req, err := c.Req.Message()
		if err != nil {
			return status.Error(codes.InvalidArgument, "the request does not decode: "+err.Error())
		}
		if err := validate(v, req); err != nil {
			return err
		}
		return next(ctx, c)
	}
}

// validateExt are the field numbers of buf.validate's message, oneof and
// field options.
var validateExt = [...]protowire.Number{
	validatepb.E_Message.TypeDescriptor().Number(),
	validatepb.E_Oneof.TypeDescriptor().Number(),
	validatepb.E_Field.TypeDescriptor().Number(),
}

// hasRules reports whether md, or a message it reaches through its fields,
// declares any buf.validate option: without one there is nothing to check,
// and the route skips the validate stage (and the message it would build).
// Options are read as bytes, so it holds whether the extension was linked,
// parsed dynamically or kept unknown when the descriptor was reflected.
func hasRules(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	if seen[md.FullName()] {
		return false
	}
	seen[md.FullName()] = true
	if optionSet(md.Options()) {
		return true
	}
	for i := 0; i < md.Oneofs().Len(); i++ {
		if optionSet(md.Oneofs().Get(i).Options()) {
			return true
		}
	}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if optionSet(fd.Options()) {
			return true
		}
		if fd.IsMap() {
			fd = fd.MapValue()
		}
		if m := fd.Message(); m != nil && hasRules(m, seen) {
			return true
		}
	}
	return false
}

// optionSet reports whether opts carries a buf.validate option.
func optionSet(opts proto.Message) bool {
	if opts == nil || !opts.ProtoReflect().IsValid() {
		return false
	}
	b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(opts)
	if err != nil {
		return true // unreadable: let protovalidate decide
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return true
		}
		if slices.Contains(validateExt[:], num) {
			return true
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return true
		}
		b = b[m:]
	}
	return false
}

// validate checks req with v; nil v (no rules anywhere) passes.
func validate(v protovalidate.Validator, req proto.Message) error {
	if v == nil {
		return nil
	}
	if err := v.Validate(req); err != nil {
		return validationError(req.ProtoReflect().Descriptor(), err)
	}
	return nil
}
