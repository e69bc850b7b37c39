package transcode

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-dev/portico/policies/chain"
	"github.com/portico-dev/portico/transcode/wirejson"
)

// Codec is what the edge needs from a binding to serve one call: a request
// message built from the HTTP request, and the response written back. The
// dynamic implementation (descriptors + protojson) is the default; a faster
// one can replace it behind this interface.
type Codec interface {
	// DecodeRequest builds the upstream request from the path variables
	// (as Router.Match returned them), the query and the body.
	DecodeRequest(r *http.Request, vars []string) (*chain.Payload, error)
	// NewResponse returns an empty upstream response for the call to fill.
	NewResponse() *chain.Payload
	// EncodeResponse appends the rendered response body to dst (the writer,
	// chain.WriteResponse, sends it; the cache keeps it).
	EncodeResponse(dst []byte, resp *chain.Payload) (body []byte, contentType string, err error)
	// NewStreamWriter starts a server-stream response in the format the
	// request asks for (NDJSON by default, SSE for text/event-stream).
	NewStreamWriter(w http.ResponseWriter, r *http.Request) StreamWriter
	// Types resolves Any payloads and error details.
	Types() Resolver
}

// StreamWriter writes the messages of a server stream as they arrive.
type StreamWriter interface {
	// Start sends the response header; call it once the first message (or
	// the end of the stream) is known, so early errors keep their status.
	Start()
	// Send writes and flushes one message.
	Send(msg *chain.Payload) error
	// SendError ends the stream with an error object or event.
	SendError(err error)
}

type bodyKind uint8

const (
	bodyNone bodyKind = iota
	bodyAll
	bodyField
)

// bindingCodec decodes into and encodes from dynamicpb messages.
type bindingCodec struct {
	binding *Binding
	cfg     Config
	in, out protoreflect.MessageType
	types   Resolver

	pathFields   [][]protoreflect.FieldDescriptor
	body         bodyKind
	bodyField    protoreflect.FieldDescriptor
	httpBodyReq  bool
	httpBodyResp bool
	respField    protoreflect.FieldDescriptor
	query        map[string]*queryField
	bound        map[string]bool // dotted proto paths bound by path or body
	// updateMask is the request's update_mask field when this binding
	// infers it from the body (transcode.infer_update_mask).
	updateMask protoreflect.FieldDescriptor

	unmarshal protojson.UnmarshalOptions
	marshal   protojson.MarshalOptions

	// The fast codec (fast.go): fastReq decodes requests to wire bytes
	// with dec (for the body); enc renders answers. Nil enc, or fastReq
	// false: protojson, and fallback says why when it is not by choice.
	fastReq  bool
	dec      *wirejson.Decoder
	enc      *wirejson.Encoder
	fallback string
}

var _ Codec = (*bindingCodec)(nil)

func (c *bindingCodec) init() {
	if c.types == nil {
		c.types = withGlobal(nil)
	}
	c.unmarshal = protojson.UnmarshalOptions{
		DiscardUnknown: c.cfg.AllowUnknownFields,
		RecursionLimit: c.cfg.MaxJSONDepth,
		Resolver:       withGlobal(c.types),
	}
	// EmitUnpopulated matches grpc-gateway v2's default marshaler.
	c.marshal = protojson.MarshalOptions{EmitUnpopulated: true, Resolver: withGlobal(c.types)}
}

func (c *bindingCodec) Types() Resolver { return c.types }

func (c *bindingCodec) NewResponse() *chain.Payload { return chain.EmptyPayload(c.out) }

func (c *bindingCodec) DecodeRequest(r *http.Request, vars []string) (*chain.Payload, error) {
	if c.fastReq {
		return c.decodeFast(r, vars)
	}
	return c.decodeDynamic(r, vars)
}

// decodeDynamic builds the request as a dynamic message (protojson for the
// body): the reference the fast codec is tested against.
func (c *bindingCodec) decodeDynamic(r *http.Request, vars []string) (*chain.Payload, error) {
	msg := c.in.New()
	var maskPaths []string
	if c.body != bodyNone {
		var err error
		if maskPaths, err = c.decodeBody(r, msg); err != nil {
			return nil, err
		}
	}
	for i, path := range c.pathFields {
		if err := setPath(msg, path, vars[i], c.pathName(i), "path"); err != nil {
			return nil, err
		}
	}
	if c.query != nil && r.URL.RawQuery != "" {
		if err := c.decodeQuery(r.URL.RawQuery, msg); err != nil {
			return nil, err
		}
	}
	if len(maskPaths) > 0 && !msg.Has(c.updateMask) {
		mask := msg.Mutable(c.updateMask).Message()
		list := mask.Mutable(mask.Descriptor().Fields().ByName("paths")).List()
		for _, p := range maskPaths {
			list.Append(protoreflect.ValueOfString(p))
		}
	}
	return chain.MessagePayload(msg.Interface()), nil
}

func (c *bindingCodec) pathName(i int) string {
	return strings.Join(c.binding.Template.Vars[i].FieldPath, ".")
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readBody reads at most MaxBodyBytes of the request body. Memory follows
// the bytes received, never the length declared: the buffer grows as data
// arrives (a Content-Length of 4 MB with 10 bytes sent costs 10 bytes, not
// 4 MB), and the edge's body budget (edge.max_inflight_body_bytes) is
// charged by the reader underneath.
func (c *bindingCodec) readBody(r *http.Request, buf *bytes.Buffer) error {
	if r.ContentLength > c.cfg.MaxBodyBytes {
		return tooLarge(c.cfg.MaxBodyBytes)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	if r.ContentLength > 0 {
		buf.Grow(int(min(r.ContentLength, initialBodyBuffer)))
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, c.cfg.MaxBodyBytes+1))
	if err != nil {
		return bodyReadError(err, c.cfg.MaxBodyBytes)
	}
	if n > c.cfg.MaxBodyBytes {
		return tooLarge(c.cfg.MaxBodyBytes)
	}
	return nil
}

// initialBodyBuffer is the most a body buffer is sized ahead of the bytes
// actually received.
const initialBodyBuffer = 32 << 10

// errBodyTimeout answers a request body that did not arrive within
// edge.read_timeout: 408.
var errBodyTimeout = chain.HTTPError(http.StatusRequestTimeout, codes.DeadlineExceeded,
	"the request body did not arrive in time (edge.read_timeout)")

// bodyReadError turns an error from reading a request body into the client's
// answer: 413 past the limit, 408 for a body too slow, the error itself when
// it already is one (the edge's body budget), 400 for a body cut short. The
// underlying error (with addresses) is never shown to the client.
func bodyReadError(err error, limit int64) error {
	var mbe *http.MaxBytesError
	var ce *chain.Error
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &mbe):
		return tooLarge(min(mbe.Limit, limit))
	case errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err):
		return errBodyTimeout
	default:
		return status.Error(codes.InvalidArgument, "the request body ended before it was complete")
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

func tooLarge(limit int64) error {
	return chain.HTTPError(http.StatusRequestEntityTooLarge, codes.ResourceExhausted,
		"request body exceeds the limit of "+strconv.FormatInt(limit, 10)+" bytes")
}

// decodeBody decodes the body into msg. For a binding that infers the
// update mask it returns the paths the body sets.
func (c *bindingCodec) decodeBody(r *http.Request, msg protoreflect.Message) (maskPaths []string, err error) {
	ct := r.Header.Get("Content-Type")
	if c.httpBodyReq {
		buf := new(bytes.Buffer) // the bytes end up in the message: not pooled
		if err := c.readBody(r, buf); err != nil {
			return nil, err
		}
		hb := msg
		if c.body == bodyField {
			hb = msg.Mutable(c.bodyField).Message()
		}
		fields := hb.Descriptor().Fields()
		hb.Set(fields.ByName("content_type"), protoreflect.ValueOfString(ct))
		hb.Set(fields.ByName("data"), protoreflect.ValueOfBytes(buf.Bytes()))
		return nil, nil
	}
	buf, data, err := c.jsonBody(r, ct)
	if err != nil {
		return nil, err
	}
	defer putBuf(buf)
	bodyMsg := c.bodyIsMessage()
	if len(data) == 0 {
		// An empty body is the empty object, whatever it decodes into: with
		// body "*" the message stays empty, a message field is set (empty),
		// as {} sets it. A repeated, map or scalar field stays unset.
		if bodyMsg {
			msg.Mutable(c.bodyField)
		}
		return nil, nil
	}
	if err := c.scan(data); err != nil {
		return nil, err
	}
	switch {
	case c.body == bodyAll:
		err = c.unmarshal.Unmarshal(data, msg.Interface())
	case bodyMsg:
		err = c.unmarshal.Unmarshal(data, msg.Mutable(c.bodyField).Message().Interface())
	default:
		// A repeated, map or scalar body field: decode it as the only field
		// of a wrapper object.
		wrapped := make([]byte, 0, len(data)+len(c.bodyField.Name())+4)
		wrapped = append(wrapped, '{', '"')
		wrapped = append(wrapped, c.bodyField.Name()...)
		wrapped = append(wrapped, '"', ':')
		wrapped = append(wrapped, data...)
		wrapped = append(wrapped, '}')
		tmp := c.in.New()
		if err = c.unmarshal.Unmarshal(wrapped, tmp.Interface()); err == nil {
			msg.Set(c.bodyField, tmp.Get(c.bodyField))
		}
	}
	if err != nil {
		return nil, invalidArgf("invalid JSON body: %s", truncate(protoErrText(err), maxErrorDetail))
	}
	if c.updateMask != nil {
		if maskPaths, err = inferMaskPaths(data, c.bodyField.Message()); err != nil {
			return nil, invalidArgf("invalid JSON body: %s", truncate(err.Error(), maxErrorDetail))
		}
	}
	return maskPaths, nil
}

// jsonBody reads a JSON request body into a pooled buffer (putBuf returns
// it): data is the body without the whitespace around it.
func (c *bindingCodec) jsonBody(r *http.Request, ct string) (buf *bytes.Buffer, data []byte, err error) {
	if ct != "" && !isJSON(ct) {
		return nil, nil, chain.HTTPError(http.StatusUnsupportedMediaType, codes.InvalidArgument,
			"Content-Type must be application/json, got "+strconv.Quote(truncate(ct, 100)))
	}
	buf = bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	if err := c.readBody(r, buf); err != nil {
		putBuf(buf)
		return nil, nil, err
	}
	return buf, bytes.TrimSpace(buf.Bytes()), nil
}

// putBuf returns a body buffer to the pool; buffers over 1 MiB are not kept.
func putBuf(buf *bytes.Buffer) {
	if buf.Cap() <= 1<<20 {
		buf.Reset()
		bufPool.Put(buf)
	}
}

// bodyIsMessage: the body is bound to one singular message field.
func (c *bindingCodec) bodyIsMessage() bool {
	return c.body == bodyField && c.bodyField.Kind() == protoreflect.MessageKind && !c.bodyField.IsList() && !c.bodyField.IsMap()
}

// maxErrorDetail caps the part of an error message that comes from the
// client's input (protojson quotes the offending value): a 4 MB bad string
// makes a short answer and a short log line.
const maxErrorDetail = 256

// scan runs the body pre-scan (depth and repeated-element limits) against
// the message or field the body decodes into.
func (c *bindingCodec) scan(data []byte) error {
	root := c.in.Descriptor()
	var field protoreflect.FieldDescriptor
	if c.body == bodyField {
		if c.bodyField.Kind() == protoreflect.MessageKind && !c.bodyField.IsList() && !c.bodyField.IsMap() {
			root = c.bodyField.Message()
		} else {
			field = c.bodyField
		}
	}
	if err := scanBody(data, root, field, c.cfg.MaxJSONDepth, c.cfg.MaxRepeatedElements); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

// protoErrText strips protobuf-go's "proto:" prefix (which it randomly
// follows with a normal or non-breaking space).
func protoErrText(err error) string {
	s := err.Error()
	if rest, ok := strings.CutPrefix(s, "proto:"); ok {
		s = strings.TrimLeft(rest, " \u00a0")
	}
	return s
}

func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// encode renders the response (or its response_body field) as JSON; raw is
// set for google.api.HttpBody responses.
func (c *bindingCodec) encode(dst []byte, resp *chain.Payload) (out []byte, contentType string, err error) {
	if c.enc != nil {
		return c.encodeFast(dst, resp)
	}
	msg, err := resp.Message()
	if err != nil {
		return nil, "", err
	}
	m := msg.ProtoReflect()
	if c.respField != nil {
		if c.httpBodyResp {
			m = m.Get(c.respField).Message()
		} else if c.respField.Kind() == protoreflect.MessageKind && !c.respField.IsList() && !c.respField.IsMap() {
			m = m.Get(c.respField).Message()
		} else {
			return c.encodeField(dst, m)
		}
	}
	if c.httpBodyResp {
		fields := m.Descriptor().Fields()
		ct := m.Get(fields.ByName("content_type")).String()
		if ct == "" {
			ct = "application/octet-stream"
		}
		return append(dst, m.Get(fields.ByName("data")).Bytes()...), ct, nil
	}
	out, err = c.marshal.MarshalAppend(dst, m.Interface())
	return out, "application/json", err
}

// encodeField renders a scalar, repeated or map response_body field: the
// message with only that field, cut down to the field's value. Rare (most
// response_body fields are messages), so it favours simplicity.
func (c *bindingCodec) encodeField(dst []byte, m protoreflect.Message) ([]byte, string, error) {
	only := c.out.New()
	if m.Has(c.respField) {
		only.Set(c.respField, m.Get(c.respField))
	}
	full, err := c.marshal.Marshal(only.Interface())
	if err != nil {
		return nil, "", err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(full, &fields); err != nil {
		return nil, "", err
	}
	v, ok := fields[c.respField.JSONName()]
	if !ok {
		v = json.RawMessage("null")
	}
	return append(dst, v...), "application/json", nil
}

func (c *bindingCodec) EncodeResponse(dst []byte, resp *chain.Payload) ([]byte, string, error) {
	out, ct, err := c.encode(dst, resp)
	if err != nil {
		return nil, "", status.Error(codes.Internal, "encoding response: "+protoErrText(err))
	}
	return out, ct, nil
}
