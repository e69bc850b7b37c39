package chain

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Payload is an upstream message as the request path carries it: the
// protobuf wire bytes the codec wrote (or the upstream sent), and the
// message they decode to, built only when something reads fields — the
// validate and allow_if stages, or a codec that renders messages. On the
// fast path nobody does, and no message is ever built.
//
// A payload belongs to one call; one goroutine uses it at a time.
type Payload struct {
	typ  protoreflect.MessageType
	wire []byte
	msg  proto.Message
	// wired: wire holds the encoding (msg, if set, was decoded from it).
	wired bool
	// buf, when set, holds wire and goes back to its pool on Release.
	buf mem.Buffer
}

// WirePayload holds wire, the encoding of a message of type typ.
func WirePayload(typ protoreflect.MessageType, wire []byte) *Payload {
	return &Payload{typ: typ, wire: wire, wired: true}
}

// MessagePayload holds msg; its wire bytes are marshalled when asked for.
func MessagePayload(msg proto.Message) *Payload {
	return &Payload{typ: msg.ProtoReflect().Type(), msg: msg}
}

// EmptyPayload is a payload of type typ waiting to be filled (SetWire): an
// upstream answer.
func EmptyPayload(typ protoreflect.MessageType) *Payload {
	return &Payload{typ: typ, wired: true}
}

// SetWire replaces the payload's content with wire.
func (p *Payload) SetWire(wire []byte) {
	p.Release()
	p.wire, p.msg, p.wired = wire, nil, true
}

// SetBuffer replaces the payload's content with the bytes of buf, a pooled
// buffer the payload now owns: Release returns it.
func (p *Payload) SetBuffer(buf mem.Buffer) {
	p.Release()
	p.wire, p.msg, p.wired, p.buf = buf.ReadOnlyData(), nil, true, buf
}

// Release returns the payload's pooled buffer, if it has one, once its
// bytes were rendered: the payload is empty afterwards (a message already
// decoded stays, as it holds copies).
func (p *Payload) Release() {
	if p == nil || p.buf == nil {
		return
	}
	p.buf.Free()
	p.buf, p.wire = nil, nil
	p.wired = p.msg == nil
	if p.wired {
		p.typ = nil // Message and Wire now fail rather than read freed bytes
	}
}

// Wire returns the payload's protobuf encoding.
func (p *Payload) Wire() ([]byte, error) {
	if p.wired {
		if p.typ == nil {
			return nil, errNoMessage
		}
		return p.wire, nil
	}
	if p.msg == nil {
		return nil, errNoMessage
	}
	b, err := deterministic.Marshal(p.msg)
	if err != nil {
		return nil, err
	}
	p.wire, p.wired = b, true
	return b, nil
}

var (
	errNoMessage = errors.New("chain: empty payload")
	// deterministic: the same message, the same bytes (the cache keys on them).
	deterministic = proto.MarshalOptions{Deterministic: true}
)

// Message returns the payload as a message, decoding its wire bytes the
// first time. The message is shared: read it, do not change it.
func (p *Payload) Message() (proto.Message, error) {
	if p.msg != nil {
		return p.msg, nil
	}
	if p.typ == nil {
		return nil, errNoMessage
	}
	m := p.typ.New().Interface()
	if err := unmarshal(p.wire, m); err != nil {
		return nil, err
	}
	p.msg = m
	return m, nil
}

// unmarshal is proto.Unmarshal, turning a panic into an error: protobuf-go's
// decoder of dynamic messages panics on some malformed map entries ("type
// mismatch: cannot convert nil to map key"), and these bytes may come from
// an upstream.
func unmarshal(wire []byte, m proto.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed message: %v", r)
		}
	}()
	return proto.Unmarshal(wire, m)
}

// Type is the payload's message type.
func (p *Payload) Type() protoreflect.MessageType { return p.typ }
