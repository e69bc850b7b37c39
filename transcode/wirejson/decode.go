package wirejson

import (
	"errors"
	"slices"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// The decoder turns a JSON request body straight into the protobuf wire
// encoding of the request message, with no message in between: one pass of
// a hand-written scanner over the input, steered by a plan compiled from the
// descriptors once per message type.
//
// It accepts exactly what protojson.Unmarshal accepts into a dynamicpb
// message (with the same DiscardUnknown, RecursionLimit and Resolver) and
// its output unmarshals to a message proto.Equal to protojson's.
// google.protobuf.Any objects are the exception to "no message": their
// payload type is known only at run time, so they are decoded by protojson
// and marshaled deterministically (as protojson does for Any.value).
//
// Nested messages and packed lists are written after a one-byte length
// placeholder. A length that fits in it is written in place when the
// message ends; the longer ones are recorded, and a single pass at the end
// moves every byte at most once to make room for them: decoding stays
// linear in the input whatever the nesting.

// DecodeOptions configure a Decoder.
type DecodeOptions struct {
	// Resolver finds the types of google.protobuf.Any payloads (by type
	// URL). Nil: protoregistry.GlobalTypes.
	Resolver interface {
		FindMessageByURL(url string) (protoreflect.MessageType, error)
	}
	// DiscardUnknown drops JSON members the message has no field for (and
	// unknown enum names, as protojson does); off: they are errors.
	DiscardUnknown bool
	// MaxDepth caps the nesting of messages (protojson's RecursionLimit);
	// 0 is protojson's default, 10000.
	MaxDepth int
}

// Decoder decodes the JSON of one message type to protobuf wire. It is safe
// for concurrent use.
type Decoder struct {
	root    *msgPlan
	opts    DecodeOptions
	depth   int
	anyOpts anyOptions
	pool    sync.Pool // *state
}

// NewDecoder compiles the decoder of md. It returns a *DeclinedError for a
// message type it does not decode (the caller keeps protojson for it): one
// reaching a proto2 group or delimited-encoded field, a required field, a
// closed enum, or a message with extension ranges (extensions, message
// sets). Any payloads are not part of this check (protojson decodes them).
func NewDecoder(md protoreflect.MessageDescriptor, opts DecodeOptions) (*Decoder, error) {
	c := compiler{plans: map[protoreflect.FullName]*msgPlan{}}
	root, err := c.message(md)
	if err != nil {
		return nil, err
	}
	d := &Decoder{root: root, opts: opts, depth: opts.MaxDepth}
	if d.depth == 0 {
		d.depth = protowire.DefaultRecursionLimit
	}
	d.anyOpts = newAnyOptions(opts)
	return d, nil
}

// Append decodes one JSON object (the whole input; only whitespace may
// surround it) and appends the message's protobuf wire encoding to dst.
// On error it returns dst unchanged (its spare capacity may be written).
func (d *Decoder) Append(dst, json []byte) ([]byte, error) {
	s := d.get(dst, json)
	defer d.put(s)
	s.ws()
	if err := s.message(d.root, d.depth); err != nil {
		return dst, err
	}
	if err := s.end(); err != nil {
		return dst, err
	}
	return s.finish(), nil
}

// AppendField decodes a JSON value for field fd of d's message (a body bound
// to one field: a message object, an array for a repeated field, an object
// for a map, a scalar) and appends it as wire records of fd (tag included).
// JSON null appends nothing (google.protobuf.Value and NullValue fields
// excepted: null is their value). A message field's object nests as the
// root would (depth MaxDepth); other values as the member of an object.
func (d *Decoder) AppendField(dst, json []byte, fd protoreflect.FieldDescriptor) ([]byte, error) {
	var f *fieldPlan
	for i := range d.root.fields {
		if p := &d.root.fields[i]; p.fd.Number() == fd.Number() && p.fd.FullName() == fd.FullName() {
			f = p
		}
	}
	if f == nil {
		return dst, &DeclinedError{Message: d.root.md.FullName(), Reason: "has no field " + string(fd.FullName())}
	}
	s := d.get(dst, json)
	defer d.put(s)
	s.ws()
	var err error
	switch {
	case s.isNull() && !(f.nullOK && !f.list):
		s.pos += 4
	case f.msg != nil && !f.list:
		m := s.openLen(f.tag)
		if err = s.message(f.msg, d.depth); err == nil {
			s.closeLen(m)
		}
	default:
		if d.depth < 1 {
			return dst, errDepth
		}
		err = s.value(f, d.depth-1)
	}
	if err == nil {
		err = s.end()
	}
	if err != nil {
		return dst, err
	}
	return s.finish(), nil
}

var errDepth = errors.New("exceeded max recursion depth")

// state is one decoding, pooled by its Decoder.
type state struct {
	d   *Decoder
	in  []byte
	pos int
	out []byte
	// patches are the length placeholders still to fill, in input order;
	// extra is the bytes their lengths need past the placeholders.
	patches []patch
	extra   int
	bits    []uint64 // seen sets of the open objects
	keys    []keyRef // keys of the open maps
	keybuf  []byte   // records of map keys whose entry was dropped
	stack   []byte   // open containers of skip
	tmp     []byte   // unescaped strings
}

// patch is a one-byte length placeholder at out[at] for n bytes.
type patch struct{ at, n int }

func (d *Decoder) get(dst, json []byte) *state {
	s, _ := d.pool.Get().(*state)
	if s == nil {
		s = &state{}
	}
	s.d, s.in, s.pos, s.out, s.extra = d, json, 0, dst, 0
	return s
}

// maxPooled caps the scratch a pooled state keeps.
const maxPooled = 64 << 10

func (d *Decoder) put(s *state) {
	s.in, s.out = nil, nil
	if cap(s.patches) > maxPooled/16 || cap(s.bits) > maxPooled/8 || cap(s.keys) > maxPooled/16 ||
		cap(s.keybuf) > maxPooled || cap(s.stack) > maxPooled || cap(s.tmp) > maxPooled {
		return
	}
	s.patches, s.bits, s.keys, s.keybuf, s.stack, s.tmp = s.patches[:0], s.bits[:0], s.keys[:0], s.keybuf[:0], s.stack[:0], s.tmp[:0]
	d.pool.Put(s)
}

// end checks that only whitespace follows the value.
func (s *state) end() error {
	s.ws()
	if s.pos < len(s.in) {
		return s.unexpected()
	}
	return nil
}

// mark is an open length-delimited record.
type mark struct{ start, at, pi, extra int }

// openLen writes tag and a length placeholder.
func (s *state) openLen(tag []byte) mark {
	m := mark{start: len(s.out), pi: len(s.patches), extra: s.extra}
	s.out = append(s.out, tag...)
	m.at = len(s.out)
	s.out = append(s.out, 0)
	s.patches = append(s.patches, patch{at: m.at})
	return m
}

// closeLen ends the record m: its length goes in the placeholder if it fits
// and no placeholder inside it is pending, else it is recorded for finish.
func (s *state) closeLen(m mark) {
	n := len(s.out) - m.at - 1 + s.extra - m.extra
	if n < 0x80 && m.pi == len(s.patches)-1 {
		s.out[m.at] = byte(n)
		s.patches = s.patches[:m.pi]
		return
	}
	s.patches[m.pi].n = n
	s.extra += protowire.SizeVarint(uint64(n)) - 1
}

// rollback removes the record m.
func (s *state) rollback(m mark) {
	s.out = s.out[:m.start]
	s.patches = s.patches[:m.pi]
	s.extra = m.extra
}

// finish writes the pending lengths, moving the bytes after each to make
// room, from the last to the first: each byte moves once.
func (s *state) finish() []byte {
	if len(s.patches) == 0 {
		return s.out
	}
	old := len(s.out)
	s.out = slices.Grow(s.out, s.extra)[:old+s.extra]
	r, w := old, old+s.extra
	for i := len(s.patches) - 1; i >= 0; i-- {
		p := s.patches[i]
		seg := r - p.at - 1
		copy(s.out[w-seg:w], s.out[p.at+1:r])
		w -= seg
		vs := protowire.SizeVarint(uint64(p.n))
		protowire.AppendVarint(s.out[w-vs:w-vs], uint64(p.n))
		w -= vs
		r = p.at
	}
	s.patches = s.patches[:0]
	return s.out
}

// message decodes the value of a message of plan p at s.pos. depth is the
// nesting budget left before it (protojson's RecursionLimit).
func (s *state) message(p *msgPlan, depth int) error {
	depth--
	if depth < 0 {
		return errDepth
	}
	if p.wkt != wktNone {
		return s.wkt(p, depth)
	}
	if s.pos >= len(s.in) || s.in[s.pos] != '{' {
		return s.unexpected()
	}
	base := len(s.bits)
	for range p.words {
		s.bits = append(s.bits, 0)
	}
	defer func() { s.bits = s.bits[:base] }()
	for more := s.first('}'); more; {
		start, end, esc, at, err := s.name()
		if err != nil {
			return err
		}
		key := s.content(start, end, esc)
		idx := int32(-1)
		if len(key) < 2 || key[0] != '[' || key[len(key)-1] != ']' {
			idx = p.names.find(key)
		}
		if idx < 0 {
			if err := s.extensionName(key, at); err != nil {
				return err
			}
			if !s.d.opts.DiscardUnknown {
				return s.errf(at, "unknown field %s", clip(s.in[at:end+1]))
			}
			if err := s.skip(depth); err != nil {
				return err
			}
		} else if err := s.member(&p.fields[idx], depth, base, at, end+1); err != nil {
			return err
		}
		if more, err = s.next('}'); err != nil {
			return err
		}
	}
	return nil
}

// extensionName fails, as protojson does, for a member "[name]" naming an
// extension the resolver knows: no message decoded here has extension
// ranges. Other unknown members are for the caller to judge.
func (s *state) extensionName(key []byte, at int) error {
	if len(key) < 2 || key[0] != '[' || key[len(key)-1] != ']' {
		return nil
	}
	name := protoreflect.FullName(key[1 : len(key)-1])
	xt, err := s.d.anyOpts.resolver.FindExtensionByName(name)
	if err != nil && err != protoregistry.NotFound {
		return s.errf(at, "unable to resolve %s: %v", quote(key), err)
	}
	if xt != nil {
		return s.errf(at, "message cannot be extended by %s", name)
	}
	return nil
}

// member decodes the value of field f of the object whose seen set is at
// s.bits[base:]; [at:end] is its name, for errors.
func (s *state) member(f *fieldPlan, depth, base, at, end int) error {
	w, bit := base+f.index/64, uint64(1)<<(f.index%64)
	if s.bits[w]&bit != 0 {
		return s.errf(at, "duplicate field %s", clip(s.in[at:end]))
	}
	s.bits[w] |= bit
	if !f.nullOK && s.isNull() {
		s.pos += 4
		return nil
	}
	if f.oneof >= 0 && !f.list && !f.isMap {
		w, bit := base+f.oneof/64, uint64(1)<<(f.oneof%64)
		if s.bits[w]&bit != 0 {
			return s.errf(at, "error parsing %s, oneof %s is already set", clip(s.in[at:end]), f.fd.ContainingOneof().FullName())
		}
		s.bits[w] |= bit
	}
	return s.value(f, depth)
}

// value decodes the value of field f (all of it: a list, a map or a
// singular value).
func (s *state) value(f *fieldPlan, depth int) error {
	switch {
	case f.isMap:
		return s.mapValue(f, depth)
	case f.list:
		return s.list(f, depth)
	case f.msg != nil:
		m := s.openLen(f.tag)
		if err := s.message(f.msg, depth); err != nil {
			return err
		}
		s.closeLen(m)
		return nil
	}
	_, err := s.scalar(f, true, !f.presence)
	return err
}

// list decodes the array of repeated field f.
func (s *state) list(f *fieldPlan, depth int) error {
	if s.pos >= len(s.in) || s.in[s.pos] != '[' {
		return s.unexpected()
	}
	var m mark
	if f.packed {
		m = s.openLen(f.tag)
	}
	for more := s.first(']'); more; {
		switch {
		case f.msg != nil:
			em := s.openLen(f.tag)
			if err := s.message(f.msg, depth); err != nil {
				return err
			}
			s.closeLen(em)
		default:
			if _, err := s.scalar(f, !f.packed, false); err != nil {
				return err
			}
		}
		var err error
		if more, err = s.next(']'); err != nil {
			return err
		}
	}
	if f.packed {
		if len(s.out) == m.at+1 {
			s.rollback(m)
		} else {
			s.closeLen(m)
		}
	}
	return nil
}

// keyRef is the key record of a map entry, in out (or in keybuf when the
// entry was dropped), for the duplicate check.
type keyRef struct {
	off, n int
	inBuf  bool // dropped entry: the record is in keybuf
}

// mapValue decodes the object of map field f.
func (s *state) mapValue(f *fieldPlan, depth int) error {
	if s.pos >= len(s.in) || s.in[s.pos] != '{' {
		return s.unexpected()
	}
	base := len(s.keys)
	defer func() { s.keys = s.keys[:base] }()
	for more := s.first('}'); more; {
		start, end, esc, at, err := s.name()
		if err != nil {
			return err
		}
		m := s.openLen(f.tag)
		k := len(s.out)
		if err := s.mapKey(f.key, start, end, esc, at); err != nil {
			return err
		}
		ref := keyRef{off: k, n: len(s.out) - k}
		if f.val.msg != nil {
			vm := s.openLen(f.val.tag)
			if err := s.message(f.val.msg, depth); err != nil {
				return err
			}
			s.closeLen(vm)
			s.closeLen(m)
		} else {
			set, err := s.scalar(f.val, true, false)
			if err != nil {
				return err
			}
			if set {
				s.closeLen(m)
			} else {
				// An unknown enum name, discarded: no entry, but the key
				// still counts as a duplicate of an earlier one.
				ref = keyRef{off: len(s.keybuf), n: ref.n, inBuf: true}
				s.keybuf = append(s.keybuf, s.out[k:k+ref.n]...)
				s.rollback(m)
			}
		}
		s.keys = append(s.keys, ref)
		if more, err = s.next('}'); err != nil {
			return err
		}
	}
	return s.checkKeys(base)
}

func (s *state) keyBytes(r keyRef) []byte {
	if r.inBuf {
		return s.keybuf[r.off : r.off+r.n]
	}
	return s.out[r.off : r.off+r.n]
}

// checkKeys fails if a key of the map whose keys are s.keys[base:] repeats
// one that was set (protojson: "duplicate map key"; a key whose entry was
// dropped does not count as set).
func (s *state) checkKeys(base int) error {
	keys := s.keys[base:]
	if len(keys) < 2 {
		return nil
	}
	if len(keys) <= 16 {
		for i, a := range keys {
			if a.inBuf {
				continue
			}
			for _, b := range keys[i+1:] {
				if string(s.keyBytes(a)) == string(s.keyBytes(b)) {
					return errors.New("duplicate map key")
				}
			}
		}
		return nil
	}
	slices.SortStableFunc(keys, func(a, b keyRef) int {
		return compareBytes(s.keyBytes(a), s.keyBytes(b))
	})
	for i := 0; i+1 < len(keys); i++ {
		if !keys[i].inBuf && string(s.keyBytes(keys[i])) == string(s.keyBytes(keys[i+1])) {
			return errors.New("duplicate map key")
		}
	}
	return nil
}

func compareBytes(a, b []byte) int {
	switch {
	case string(a) < string(b):
		return -1
	case string(a) > string(b):
		return 1
	}
	return 0
}
