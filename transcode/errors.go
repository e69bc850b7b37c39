package transcode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// httpStatusByCode maps gRPC codes to HTTP statuses as google/rpc/code.proto
// documents them (and grpc-gateway does). Codes outside the table are 500.
var httpStatusByCode = [...]int{
	codes.OK:                 http.StatusOK,
	codes.Canceled:           499, // Client Closed Request (nginx)
	codes.Unknown:            http.StatusInternalServerError,
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.DeadlineExceeded:   http.StatusGatewayTimeout,
	codes.NotFound:           http.StatusNotFound,
	codes.AlreadyExists:      http.StatusConflict,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.FailedPrecondition: http.StatusBadRequest,
	codes.Aborted:            http.StatusConflict,
	codes.OutOfRange:         http.StatusBadRequest,
	codes.Unimplemented:      http.StatusNotImplemented,
	codes.Internal:           http.StatusInternalServerError,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.DataLoss:           http.StatusInternalServerError,
	codes.Unauthenticated:    http.StatusUnauthorized,
}

// HTTPStatus returns the HTTP status for a gRPC code; unknown codes are 500.
func HTTPStatus(c codes.Code) int {
	if int(c) < len(httpStatusByCode) {
		return httpStatusByCode[c]
	}
	return http.StatusInternalServerError
}

// Error is a gRPC status that renders with a specific HTTP status instead of
// the mapped one (413, 415, 404 for no route, 405 with Allow).
type Error struct {
	HTTPCode int
	Status   *status.Status
	// Allow, for 405, lists the methods the path accepts.
	Allow []string
	// Header holds response headers that go with the error
	// (WWW-Authenticate for 401, Retry-After for 429, ...).
	Header http.Header
}

func (e *Error) Error() string { return e.Status.Message() }

// GRPCStatus lets status.Convert and status.FromError see the status.
func (e *Error) GRPCStatus() *status.Status { return e.Status }

// NewError returns an error rendered with httpCode and a google.rpc.Status of
// code c and message msg.
func NewError(httpCode int, c codes.Code, msg string) *Error {
	return &Error{HTTPCode: httpCode, Status: status.New(c, msg)}
}

func invalidArgf(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// FromContextError maps context errors to Canceled / DeadlineExceeded and
// leaves other errors alone.
func FromContextError(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "upstream call exceeded its deadline")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled by the client")
	}
	return err
}

// ErrResponseStarted marks an error that happened after the response
// status was sent (a client gone mid-write, a stream failing after its
// first message): there is nothing left to render, only to log.
var ErrResponseStarted = errors.New("response already started")

// StatusOf converts any error into a status and the HTTP code to send.
func StatusOf(err error) (*status.Status, int) {
	var te *Error
	if errors.As(err, &te) {
		return te.Status, te.HTTPCode
	}
	err = FromContextError(err)
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	return st, HTTPStatus(st.Code())
}

// MarshalStatus renders st as google.rpc.Status JSON: always code,
// message and details (possibly empty), each detail resolved with types
// first, then with the linked-in registry. A detail neither knows is
// dropped rather than failing the whole body.
func MarshalStatus(st *status.Status, types Resolver) []byte {
	p := st.Proto()
	b := make([]byte, 0, 64+len(p.GetMessage()))
	b = append(b, `{"code":`...)
	b = strconv.AppendInt(b, int64(p.GetCode()), 10)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, p.GetMessage())
	b = append(b, `,"details":[`...)
	opts := protojson.MarshalOptions{Resolver: withGlobal(types)}
	n := 0
	for _, d := range p.GetDetails() {
		js, err := opts.Marshal(d)
		if err != nil {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, js...)
	}
	return append(b, "]}"...)
}

// appendJSONString appends s as a JSON string. Unlike encoding/json it
// does not HTML-escape: a google.rpc.Status message says "=>", not
// "\u003e" (the body is application/json with nosniff, never HTML). Invalid
// UTF-8 becomes U+FFFD, and U+2028/U+2029 are escaped so that the body is
// also valid JavaScript.
func appendJSONString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// WriteError writes err as a google.rpc.Status JSON response.
func WriteError(w http.ResponseWriter, err error, types Resolver) (httpCode int, st *status.Status) {
	st, httpCode = StatusOf(err)
	var te *Error
	if errors.As(err, &te) {
		for _, m := range te.Allow {
			w.Header().Add("Allow", m)
		}
		for k, vs := range te.Header {
			w.Header()[k] = vs
		}
	}
	body := MarshalStatus(st, types)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(httpCode)
	_, _ = w.Write(body)
	return httpCode, st
}

// Resolver finds message and extension types for Any payloads and JSON.
type Resolver interface {
	protoregistry.MessageTypeResolver
	protoregistry.ExtensionTypeResolver
}

type chainResolver struct{ first, second Resolver }

func withGlobal(r Resolver) Resolver {
	if r == nil || r == Resolver(protoregistry.GlobalTypes) {
		return protoregistry.GlobalTypes
	}
	return chainResolver{r, protoregistry.GlobalTypes}
}

func (c chainResolver) FindMessageByName(n protoreflect.FullName) (protoreflect.MessageType, error) {
	if t, err := c.first.FindMessageByName(n); err == nil {
		return t, nil
	}
	return c.second.FindMessageByName(n)
}

func (c chainResolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	if t, err := c.first.FindMessageByURL(url); err == nil {
		return t, nil
	}
	return c.second.FindMessageByURL(url)
}

func (c chainResolver) FindExtensionByName(n protoreflect.FullName) (protoreflect.ExtensionType, error) {
	if t, err := c.first.FindExtensionByName(n); err == nil {
		return t, nil
	}
	return c.second.FindExtensionByName(n)
}

func (c chainResolver) FindExtensionByNumber(m protoreflect.FullName, f protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	if t, err := c.first.FindExtensionByNumber(m, f); err == nil {
		return t, nil
	}
	return c.second.FindExtensionByNumber(m, f)
}
