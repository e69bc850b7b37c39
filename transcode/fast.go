package transcode

import (
	"math"
	"net/http"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-dev/portico/policies/chain"
	"github.com/portico-dev/portico/transcode/wirejson"
)

// The fast codec (the default, transcode.codec: fast) never builds a
// message: the request's JSON body becomes protobuf wire bytes
// (wirejson.Decoder), the path variables and query parameters are appended
// as further wire records, and the upstream's answer goes from its wire
// bytes straight to JSON (wirejson.Encoder). Protobuf's merge rules give the
// binding's precedence for free: a singular field given again later wins,
// so the path overrides the body, and a message given twice is merged.
//
// protojson over dynamic messages (decodeDynamic, encodeDynamic) stays the
// reference, and serves what the fast codec declines when the table is
// built (Binding.Fallback says what and why), google.api.HttpBody, and
// every binding with transcode.codec: protojson.

// Codec names for transcode.codec.
const (
	CodecFast      = "fast"
	CodecProtojson = "protojson"
)

// fastCodecs compiles the fast encoder and decoder of a method. Each is nil,
// with the reason in the error, where the method keeps protojson.
func (c *Compiler) fastCodecs(md protoreflect.MethodDescriptor, types Resolver) (dec *wirejson.Decoder, enc *wirejson.Encoder, decErr, encErr error) {
	res := withGlobal(types)
	dec, decErr = wirejson.NewDecoder(md.Input(), wirejson.DecodeOptions{
		Resolver: res, DiscardUnknown: c.cfg.AllowUnknownFields, MaxDepth: c.cfg.MaxJSONDepth,
	})
	enc, encErr = wirejson.NewEncoder(md.Output(), wirejson.EncodeOptions{Resolver: res})
	return dec, enc, decErr, encErr
}

// decodeFast builds the upstream request's wire bytes: the body, then the
// path variables, then the query.
func (c *bindingCodec) decodeFast(r *http.Request, vars []string) (*chain.Payload, error) {
	var (
		wire      []byte
		maskPaths []string
		err       error
	)
	if c.body != bodyNone {
		buf, data, err := c.jsonBody(r, r.Header.Get("Content-Type"))
		if err != nil {
			return nil, err
		}
		wire, maskPaths, err = c.fastBody(data)
		putBuf(buf)
		if err != nil {
			return nil, err
		}
	}
	for i, path := range c.pathFields {
		if wire, err = appendPath(wire, path, vars[i], c.pathName(i)); err != nil {
			return nil, err
		}
	}
	var query protoreflect.Message
	if c.query != nil && r.URL.RawQuery != "" {
		// Query parameters are few and their rules many (repeated keys,
		// map[key] syntax, JSON-valued well-known types): they are bound
		// into a message of their own, as with protojson, and appended.
		query = c.in.New()
		if err := c.decodeQuery(r.URL.RawQuery, query); err != nil {
			return nil, err
		}
		if wire, err = deterministic.MarshalAppend(wire, query.Interface()); err != nil {
			return nil, status.Error(codes.InvalidArgument, "the query does not encode: "+protoErrText(err))
		}
	}
	if len(maskPaths) > 0 && (query == nil || !query.Has(c.updateMask)) {
		wire = appendMask(wire, c.updateMask.Number(), maskPaths)
	}
	return chain.WirePayload(c.in, wire), nil
}

// deterministic marshals the query's message: the same query, the same
// bytes (the cache keys on them).
var deterministic = proto.MarshalOptions{Deterministic: true}

// fastBody decodes a JSON body (without the whitespace around it) to wire
// records.
func (c *bindingCodec) fastBody(data []byte) (wire []byte, maskPaths []string, err error) {
	if len(data) == 0 {
		// An empty body is the empty object (see decodeBody): a message
		// field is set, empty.
		if c.bodyIsMessage() {
			wire = protowire.AppendTag(wire, c.bodyField.Number(), protowire.BytesType)
			wire = protowire.AppendVarint(wire, 0)
		}
		return wire, nil, nil
	}
	if err := c.scan(data); err != nil {
		return nil, nil, err
	}
	if c.bodyIsMessage() && string(data) == "null" && c.bodyField.Message().FullName() != "google.protobuf.Value" {
		// A body bound to a message field is that message's object: null
		// is not one (protojson refuses it too).
		return nil, nil, invalidArgf("invalid JSON body: unexpected token null (the body is a %s object)", c.bodyField.Message().Name())
	}
	// The wire form is about as long as its JSON, usually shorter.
	wire = make([]byte, 0, len(data)+16)
	if c.body == bodyAll {
		wire, err = c.dec.Append(wire, data)
	} else {
		wire, err = c.dec.AppendField(wire, data, c.bodyField)
	}
	if err != nil {
		return nil, nil, invalidArgf("invalid JSON body: %s", truncate(protoErrText(err), maxErrorDetail))
	}
	if c.updateMask != nil {
		if maskPaths, err = inferMaskPaths(data, c.bodyField.Message()); err != nil {
			return nil, nil, invalidArgf("invalid JSON body: %s", truncate(err.Error(), maxErrorDetail))
		}
	}
	return wire, maskPaths, nil
}

// appendPath appends the path variable s, bound to the field at path, as
// one record of the outermost field with the inner ones nested in it.
func appendPath(dst []byte, path []protoreflect.FieldDescriptor, s, name string) ([]byte, error) {
	leaf := path[len(path)-1]
	v, err := parseValue(leaf, s)
	if err != nil {
		return nil, badValue(s, name, "path", err)
	}
	if len(path) == 1 {
		return appendValue(dst, leaf, v)
	}
	rec, err := appendValue(nil, leaf, v)
	if err != nil {
		return nil, err
	}
	for _, fd := range slices.Backward(path[:len(path)-1]) {
		outer := protowire.AppendTag(make([]byte, 0, len(rec)+8), fd.Number(), protowire.BytesType)
		rec = protowire.AppendBytes(outer, rec)
	}
	return append(dst, rec...), nil
}

// appendValue appends v as one record of the singular field fd.
func appendValue(dst []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	num := fd.Number()
	switch fd.Kind() {
	case protoreflect.BoolKind:
		dst = protowire.AppendTag(dst, num, protowire.VarintType)
		return protowire.AppendVarint(dst, protowire.EncodeBool(v.Bool())), nil
	case protoreflect.Int32Kind, protoreflect.Int64Kind:
		dst = protowire.AppendTag(dst, num, protowire.VarintType)
		return protowire.AppendVarint(dst, uint64(v.Int())), nil
	case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		dst = protowire.AppendTag(dst, num, protowire.VarintType)
		return protowire.AppendVarint(dst, protowire.EncodeZigZag(v.Int())), nil
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		dst = protowire.AppendTag(dst, num, protowire.VarintType)
		return protowire.AppendVarint(dst, v.Uint()), nil
	case protoreflect.EnumKind:
		dst = protowire.AppendTag(dst, num, protowire.VarintType)
		return protowire.AppendVarint(dst, uint64(int64(v.Enum()))), nil
	case protoreflect.Fixed32Kind:
		dst = protowire.AppendTag(dst, num, protowire.Fixed32Type)
		return protowire.AppendFixed32(dst, uint32(v.Uint())), nil
	case protoreflect.Sfixed32Kind:
		dst = protowire.AppendTag(dst, num, protowire.Fixed32Type)
		return protowire.AppendFixed32(dst, uint32(int32(v.Int()))), nil
	case protoreflect.FloatKind:
		dst = protowire.AppendTag(dst, num, protowire.Fixed32Type)
		return protowire.AppendFixed32(dst, math.Float32bits(float32(v.Float()))), nil
	case protoreflect.Fixed64Kind:
		dst = protowire.AppendTag(dst, num, protowire.Fixed64Type)
		return protowire.AppendFixed64(dst, v.Uint()), nil
	case protoreflect.Sfixed64Kind:
		dst = protowire.AppendTag(dst, num, protowire.Fixed64Type)
		return protowire.AppendFixed64(dst, uint64(v.Int())), nil
	case protoreflect.DoubleKind:
		dst = protowire.AppendTag(dst, num, protowire.Fixed64Type)
		return protowire.AppendFixed64(dst, math.Float64bits(v.Float())), nil
	case protoreflect.StringKind:
		dst = protowire.AppendTag(dst, num, protowire.BytesType)
		return protowire.AppendString(dst, v.String()), nil
	case protoreflect.BytesKind:
		dst = protowire.AppendTag(dst, num, protowire.BytesType)
		return protowire.AppendBytes(dst, v.Bytes()), nil
	case protoreflect.MessageKind:
		// A well-known type bound from text (Timestamp, wrappers, ...).
		b, err := deterministic.Marshal(v.Message().Interface())
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, "field "+string(fd.Name())+" does not encode: "+protoErrText(err))
		}
		dst = protowire.AppendTag(dst, num, protowire.BytesType)
		return protowire.AppendBytes(dst, b), nil
	}
	return nil, status.Error(codes.InvalidArgument, "field "+string(fd.Name())+" cannot be bound from text")
}

// appendMask appends the update_mask field (number num) with paths.
func appendMask(dst []byte, num protowire.Number, paths []string) []byte {
	n := 0
	for _, p := range paths {
		n += protowire.SizeTag(1) + protowire.SizeBytes(len(p))
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(n))
	for _, p := range paths {
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendString(dst, p)
	}
	return dst
}

// encodeFast renders the upstream's answer (or its response_body field)
// from its wire bytes.
func (c *bindingCodec) encodeFast(dst []byte, resp *chain.Payload) ([]byte, string, error) {
	wire, err := resp.Wire()
	if err != nil {
		return nil, "", err
	}
	if c.respField != nil {
		dst, err = c.enc.AppendField(dst, wire, c.respField)
	} else {
		dst, err = c.enc.Append(dst, wire)
	}
	return dst, "application/json", err
}

// Fallback says why the binding's JSON goes through protojson rather than
// the fast codec, or "" when it does not.
func (b *Binding) Fallback() string { return b.codec.fallback }

// fallbackReason describes the sides of a JSON binding that keep protojson.
func fallbackReason(cfg Config, cc *bindingCodec, decErr, encErr error) string {
	if cfg.Codec == CodecProtojson {
		return "transcode.codec: " + CodecProtojson
	}
	var why []string
	if cc.dec == nil && decErr != nil && !cc.httpBodyReq {
		why = append(why, "request: "+decErr.Error())
	}
	if cc.enc == nil && encErr != nil && !cc.httpBodyResp {
		why = append(why, "response: "+encErr.Error())
	}
	return strings.Join(why, "; ")
}
