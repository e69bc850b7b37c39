package chain

import (
	"errors"

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
	p.wire, p.msg, p.wired = wire, nil, true
}

// Wire returns the payload's protobuf encoding.
func (p *Payload) Wire() ([]byte, error) {
	if p.wired {
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
	if err := proto.Unmarshal(p.wire, m); err != nil {
		return nil, err
	}
	p.msg = m
	return m, nil
}

// Type is the payload's message type.
func (p *Payload) Type() protoreflect.MessageType { return p.typ }
