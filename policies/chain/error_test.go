package chain

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"reflect"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestHTTPStatus(t *testing.T) {
	want := map[codes.Code]int{
		codes.OK: 200, codes.Canceled: 499, codes.Unknown: 500, codes.InvalidArgument: 400,
		codes.DeadlineExceeded: 504, codes.NotFound: 404, codes.AlreadyExists: 409,
		codes.PermissionDenied: 403, codes.ResourceExhausted: 429, codes.FailedPrecondition: 400,
		codes.Aborted: 409, codes.OutOfRange: 400, codes.Unimplemented: 501, codes.Internal: 500,
		codes.Unavailable: 503, codes.DataLoss: 500, codes.Unauthenticated: 401,
		// Out of range: the table ends at 16, anything past it is a server error.
		codes.Code(17): 500, codes.Code(99): 500, codes.Code(1 << 31): 500,
	}
	for c, w := range want {
		if got := HTTPStatus(c); got != w {
			t.Errorf("HTTPStatus(%d) = %d, want %d", c, got, w)
		}
	}
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		err      error
		code     codes.Code
		httpCode int
	}{
		{status.Error(codes.NotFound, "x"), codes.NotFound, 404},
		{HTTPError(415, codes.InvalidArgument, "ct"), codes.InvalidArgument, 415},
		{fmt.Errorf("wrapped: %w", HTTPError(413, codes.ResourceExhausted, "big")), codes.ResourceExhausted, 413},
		{context.DeadlineExceeded, codes.DeadlineExceeded, 504},
		{context.Canceled, codes.Canceled, 499},
		{fmt.Errorf("plain"), codes.Unknown, 500},
	}
	for _, tt := range tests {
		st, code := StatusOf(tt.err)
		if st.Code() != tt.code || code != tt.httpCode {
			t.Errorf("StatusOf(%v) = %v %d, want %v %d", tt.err, st.Code(), code, tt.code, tt.httpCode)
		}
	}
}

func TestWriteErrorDetails(t *testing.T) {
	st, _ := status.New(codes.InvalidArgument, "bad").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "email", Description: "is empty"}},
	})
	p := st.Proto()
	// A detail whose type nobody knows is dropped, not fatal.
	p.Details = append(p.Details, &anypb.Any{TypeUrl: "type.googleapis.com/nobody.Knows", Value: []byte{1, 2}})
	rec := httptest.NewRecorder()
	code, _ := WriteError(rec, status.ErrorProto(p), nil)
	if code != 400 || rec.Code != 400 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("code %d / %d", code, rec.Code)
	}
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"code": 3.0, "message": "bad", "details": []any{map[string]any{
		"@type":           "type.googleapis.com/google.rpc.BadRequest",
		"fieldViolations": []any{map[string]any{"field": "email", "description": "is empty"}},
	}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

func TestWriteError405(t *testing.T) {
	rec := httptest.NewRecorder()
	e := HTTPError(405, codes.Unimplemented, "no").WithHeader("Allow", "GET", "POST")
	WriteError(rec, e, nil)
	if rec.Code != 405 || fmt.Sprint(rec.Header().Values("Allow")) != "[GET POST]" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
}

// Issue 12 point 7: nothing in a google.rpc.Status message is HTML-escaped.
func TestMarshalStatusDoesNotEscapeHTML(t *testing.T) {
	body := string(MarshalStatus(status.New(codes.InvalidArgument, `use a => b & <c>, "q" \ `+"\u2028\xff"), nil))
	want := `{"code":3,"message":"use a => b & <c>, \"q\" \\ \u2028\ufffd","details":[]}`
	if body != want {
		t.Fatalf("got  %s\nwant %s", body, want)
	}
}
