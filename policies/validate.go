package policies

import (
	"errors"
	"net/http"

	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/portico-dev/portico/transcode"
)

// validationError renders protovalidate violations as 400 INVALID_ARGUMENT
// with one google.rpc.BadRequest field violation each.
func validationError(err error) error {
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		// A runtime error evaluating a rule is the service's bug, not the
		// caller's; it is still a refusal, never a pass.
		return status.Error(codes.Internal, "request validation failed: "+err.Error())
	}
	br := &errdetails.BadRequest{}
	first := ""
	for _, v := range verr.Violations {
		field := protovalidate.FieldPathString(v.Proto.GetField())
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
	return &transcode.Error{HTTPCode: http.StatusBadRequest, Status: st}
}

// validate checks req with v; nil v (no rules anywhere) passes.
func validate(v protovalidate.Validator, req proto.Message) error {
	if v == nil {
		return nil
	}
	if err := v.Validate(req); err != nil {
		return validationError(err)
	}
	return nil
}
