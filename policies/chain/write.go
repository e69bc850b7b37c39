package chain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// WriteResponse writes a successful unary answer: its headers, then 200
// with the body. It is the only place a unary body is written, whether the
// answer was just rendered or comes from the cache. A write that fails
// (the client went away) returns an error wrapping ErrResponseStarted.
func WriteResponse(w http.ResponseWriter, resp *Response) error {
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	h.Set("Content-Type", resp.ContentType)
	h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	nosniff(h, resp.ContentType)
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(resp.Body); err != nil {
		return fmt.Errorf("%w: writing response: %v", ErrResponseStarted, err)
	}
	return nil
}

// nosniff keeps browsers from guessing a type for bodies that are not the
// JSON Portico renders (google.api.HttpBody payloads, error bodies).
func nosniff(h http.Header, contentType string) {
	if contentType != "application/json" {
		h.Set("X-Content-Type-Options", "nosniff")
	}
}

// WriteError writes err as a google.rpc.Status JSON response with its HTTP
// status and headers, resolving Any details with types and then with the
// linked-in registry. It returns what it sent.
func WriteError(w http.ResponseWriter, err error, types Resolver) (httpCode int, st *status.Status) {
	st, httpCode = StatusOf(err)
	h := w.Header()
	if e, ok := errors.AsType[*Error](err); ok && e != nil {
		for k, vs := range e.header {
			h[k] = vs
		}
	}
	body := MarshalStatus(st, types)
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(httpCode)
	_, _ = w.Write(body)
	return httpCode, st
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
	opts := protojson.MarshalOptions{Resolver: WithGlobal(types)}
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

// Resolver finds message and extension types for Any payloads and JSON.
type Resolver interface {
	protoregistry.MessageTypeResolver
	protoregistry.ExtensionTypeResolver
}

// WithGlobal returns a resolver that asks r first and then the linked-in
// registry (the registry alone for a nil r).
func WithGlobal(r Resolver) Resolver {
	if r == nil || r == Resolver(protoregistry.GlobalTypes) {
		return protoregistry.GlobalTypes
	}
	if _, ok := r.(chainResolver); ok {
		return r
	}
	return chainResolver{r, protoregistry.GlobalTypes}
}

type chainResolver struct{ first, second Resolver }

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
