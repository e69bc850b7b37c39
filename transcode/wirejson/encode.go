package wirejson

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// The encoder is compiled once per response message type: an encMsg per
// message type reachable from it (recursive types share theirs, by pointer),
// with fields in declaration order, a lookup by number, and JSON names and
// enum names pre-encoded. Rendering a message scans its records once, noting
// each field's occurrences in scratch space (a linked list per field, in wire
// order), then writes the fields in declaration order. A message given as
// several records is the concatenation of their bytes (proto merge
// semantics), so a field's occurrences are the segments of its message.

// EncodeOptions configure an Encoder.
type EncodeOptions struct {
	// Resolver finds the types of google.protobuf.Any payloads (by type
	// URL). Nil means protoregistry.GlobalTypes, as for protojson.
	Resolver interface {
		FindMessageByURL(url string) (protoreflect.MessageType, error)
	}
}

// Encoder renders the wire bytes of one message type as proto3 JSON: the
// JSON value protojson.MarshalOptions{EmitUnpopulated: true} gives the same
// message, compact. An Encoder is safe for concurrent use.
type Encoder struct {
	msg    *encMsg
	shared *encShared
}

// encShared is what the encoders of one NewEncoder call share: the Any
// payload resolver and the compiled encoders of the payload types.
type encShared struct {
	resolver interface {
		FindMessageByURL(url string) (protoreflect.MessageType, error)
	}
	// payloads maps a payload type's full name (only names the resolver
	// resolved, so bounded by its types) to an *encPayload.
	payloads sync.Map
}

// encPayload is the compiled encoder of an Any payload type, or why it was
// declined.
type encPayload struct {
	md  protoreflect.MessageDescriptor
	msg *encMsg
	err error
}

// encDeclined is the error of what NewEncoder declines.
type encDeclined struct {
	name   protoreflect.FullName
	reason string
}

func (e *encDeclined) Error() string {
	return "wirejson: encoder declines " + string(e.name) + ": " + e.reason
}

// NewEncoder compiles the JSON encoder of md. It declines, with an error
// naming the field or message, what it does not render like protojson:
// proto2 groups and delimited-encoded fields, required fields, closed enums
// (proto2 enums, editions' enum_type = CLOSED), messages with extension
// ranges (extensions, MessageSets), and google.protobuf types
// whose fields are not the well-known ones. The same holds for every
// message type reachable from md; an Any payload of a declined type fails
// Append with such an error.
func NewEncoder(md protoreflect.MessageDescriptor, opts EncodeOptions) (*Encoder, error) {
	sh := &encShared{resolver: opts.Resolver}
	if sh.resolver == nil {
		sh.resolver = protoregistry.GlobalTypes
	}
	c := encCompiler{msgs: map[protoreflect.FullName]*encMsg{}}
	m, err := c.message(md)
	if err != nil {
		return nil, err
	}
	return &Encoder{msg: m, shared: sh}, nil
}

// Append renders the message whose protobuf wire bytes are wire as proto3
// JSON appended to dst. On error it returns dst unchanged and an error
// naming the field.
func (e *Encoder) Append(dst, wire []byte) ([]byte, error) {
	s := e.state(wire)
	defer s.release()
	out, err := s.message(dst, e.msg, 0, true, 1)
	if err != nil {
		return dst, err
	}
	return out, nil
}

// AppendField renders only the value of field fd of e's message (an HTTP
// rule's response_body): for a message field the JSON object of that message
// (the empty message rendered when absent), for a scalar, repeated or map
// field the JSON value protojson gives that field (an absent scalar renders
// its default).
func (e *Encoder) AppendField(dst, wire []byte, fd protoreflect.FieldDescriptor) ([]byte, error) {
	m := e.msg
	i := m.lookup(fd.Number())
	if i < 0 || m.fields[i].fd.FullName() != fd.FullName() {
		return dst, fmt.Errorf("wirejson: %s is not a field of %s", fd.FullName(), m.md.FullName())
	}
	s := e.state(wire)
	defer s.release()
	base, err := s.scan(m, 0, true, 1)
	if err != nil {
		return dst, err
	}
	f := &m.fields[i]
	sl := s.slots[base+i]
	var out []byte
	switch {
	case f.list, f.isMap:
		out, err = s.value(dst, f, sl, 1)
	case f.msg != nil:
		out, err = s.message(dst, f.msg, sl.head, false, 2)
	case sl.tail >= 0:
		out, err = s.scalar(dst, f, s.recs[sl.tail])
	default:
		out = append(dst, f.def...)
	}
	if err != nil {
		return dst, err
	}
	return out, nil
}

// encStatePool holds the scratch space of renderings.
var encStatePool = sync.Pool{New: func() any { return new(encState) }}

// state takes scratch space from the pool for rendering wire, with the
// whole input as record 0.
func (e *Encoder) state(wire []byte) *encState {
	s := encStatePool.Get().(*encState)
	s.wire = wire
	s.shared = e.shared
	s.recs = append(s.recs[:0], encRec{start: 0, end: len(wire), next: -1, wt: protowire.BytesType})
	s.slots = s.slots[:0]
	s.ents = s.ents[:0]
	return s
}

// release returns s to the pool unless it grew unusually large.
func (s *encState) release() {
	s.wire, s.shared = nil, nil
	if cap(s.recs) > 1<<16 || cap(s.slots) > 1<<16 || cap(s.ents) > 1<<14 {
		return
	}
	encStatePool.Put(s)
}

// encErr is an error about field f (or the message, when f is nil) of m.
func encErr(m *encMsg, f *encField, format string, args ...any) error {
	var name protoreflect.FullName
	what := "message"
	if f != nil {
		name, what = f.fd.FullName(), "field"
	} else {
		name = m.md.FullName()
	}
	return fmt.Errorf("wirejson: %s %s: %s", what, name, fmt.Sprintf(format, args...))
}

// errEncDepth is returned past protobuf's recursion limit, as proto.Unmarshal
// fails there.
var errEncDepth = errors.New("wirejson: exceeded maximum recursion depth")
