package chain

import (
	"context"
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a gRPC status with what its code alone cannot say over HTTP: an
// HTTP status other than the mapped one (405, 408, 413, 415, 431) and
// response headers (Allow, WWW-Authenticate, Retry-After). Errors that need
// neither are plain gRPC status errors; both render the same way.
type Error struct {
	st       *status.Status
	httpCode int // 0: the code's mapping
	header   http.Header
}

// NewError returns st as an Error, rendered with its mapped HTTP status
// until WithHTTPCode says otherwise.
func NewError(st *status.Status) *Error { return &Error{st: st} }

// HTTPError returns an error of code c and message msg rendered with
// httpCode instead of the mapped status.
func HTTPError(httpCode int, c codes.Code, msg string) *Error {
	return &Error{st: status.New(c, msg), httpCode: httpCode}
}

// WithHTTPCode sets the HTTP status the error renders with.
func (e *Error) WithHTTPCode(code int) *Error {
	e.httpCode = code
	return e
}

// WithHeader adds response header values that go with the error.
func (e *Error) WithHeader(key string, values ...string) *Error {
	if e.header == nil {
		e.header = http.Header{}
	}
	key = http.CanonicalHeaderKey(key)
	e.header[key] = append(e.header[key], values...)
	return e
}

func (e *Error) Error() string { return e.st.Message() }

// GRPCStatus lets status.Convert and status.FromError see the status.
func (e *Error) GRPCStatus() *status.Status { return e.st }

// HTTPCode is the HTTP status the error renders with.
func (e *Error) HTTPCode() int {
	if e.httpCode != 0 {
		return e.httpCode
	}
	return HTTPStatus(e.st.Code())
}

// Header returns the response headers that go with the error (nil for
// none); callers must not modify it.
func (e *Error) Header() http.Header { return e.header }

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
	if e, ok := errors.AsType[*Error](err); ok && e != nil {
		return e.st, e.HTTPCode()
	}
	err = FromContextError(err)
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	return st, HTTPStatus(st.Code())
}
