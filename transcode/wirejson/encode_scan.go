package wirejson

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// encMaxDepth is proto.Unmarshal's recursion limit: a message counts one
// level, a map entry one more.
const encMaxDepth = protowire.DefaultRecursionLimit

// encState is the scratch space of one rendering, reused through a pool.
// Its slices are stacks: a message pushes its records and slots while it
// renders and pops them when done, so they hold indexes, never pointers.
type encState struct {
	wire   []byte // the whole input; records are ranges of it
	shared *encShared
	recs   []encRec
	slots  []encSlot
	ents   []encEnt
}

// encRec is one record of a field (or a segment of a message): its value's
// bytes (the payload of a length-delimited one), the decoded number of a
// varint or fixed one, and the next occurrence of the same field.
type encRec struct {
	start, end int
	v          uint64
	next       int32
	wt         protowire.Type
}

// encSlot lists the occurrences of one field of the message being rendered,
// in wire order (-1: none). The slots after a message's fields, one per
// oneof, hold the index of the oneof's current member in head.
type encSlot struct{ head, tail int32 }

// push appends a record and returns its index.
func (s *encState) push(r encRec) int32 {
	s.recs = append(s.recs, r)
	return int32(len(s.recs) - 1)
}

// link appends record r to the occurrences in slot i.
func (s *encState) link(i int, r int32) {
	sl := &s.slots[i]
	if sl.tail >= 0 {
		s.recs[sl.tail].next = r
	} else {
		sl.head = r
	}
	sl.tail = r
}

// consume reads one value of wire type wt at the start of b: the number of
// a varint or fixed value, or the payload range (relative to b) of a
// length-delimited one. n < 0 means malformed.
func encConsume(b []byte, wt protowire.Type) (v uint64, start, end, n int) {
	switch wt {
	case protowire.VarintType:
		v, n = protowire.ConsumeVarint(b)
		return v, 0, n, n
	case protowire.Fixed32Type:
		var v32 uint32
		v32, n = protowire.ConsumeFixed32(b)
		return uint64(v32), 0, n, n
	case protowire.Fixed64Type:
		v, n = protowire.ConsumeFixed64(b)
		return v, 0, n, n
	}
	p, n := protowire.ConsumeBytes(b)
	return 0, n - len(p), n, n
}

// scan reads the records of a message of type m: the records at head (just
// that one if single, else head and the ones linked after it: the segments
// of a merged message). It pushes a slot per field and per oneof, at the
// returned base, and a record per occurrence of a known field with its wire
// type. It validates the records as proto.Unmarshal does at this level
// (tags, lengths, varints, proto3 strings' UTF-8); a oneof member replaced
// by another is validated as a whole then forgotten.
func (s *encState) scan(m *encMsg, head int32, single bool, depth int) (int, error) {
	base := len(s.slots)
	n := len(m.fields) + m.noneofs
	for range n {
		s.slots = append(s.slots, encSlot{-1, -1})
	}
	for seg := head; seg >= 0; seg = s.recs[seg].next {
		pos, end := s.recs[seg].start, s.recs[seg].end
		for pos < end {
			num, wt, n := protowire.ConsumeTag(s.wire[pos:end])
			if n < 0 || num > protowire.MaxValidNumber {
				return base, encErr(m, nil, "invalid wire data at byte %d", pos)
			}
			pos += n
			if i := m.lookup(num); i >= 0 {
				n, err := s.scanField(m, base, i, wt, pos, end, depth)
				if err != nil {
					return base, err
				}
				if n > 0 {
					pos += n
					continue
				}
			}
			// An unknown field, or a known one with another wire type
			// (which proto.Unmarshal keeps as unknown).
			n = protowire.ConsumeFieldValue(num, wt, s.wire[pos:end])
			if n < 0 {
				return base, encErr(m, nil, "invalid wire data at byte %d", pos)
			}
			pos += n
		}
		if single {
			break
		}
	}
	return base, nil
}

// scanField reads a record of field i of m (its tag read) at pos. It
// returns 0 when the wire type is not the field's: the record is unknown.
func (s *encState) scanField(m *encMsg, base, i int, wt protowire.Type, pos, end, depth int) (int, error) {
	f := &m.fields[i]
	packed := f.list && f.packable && wt == protowire.BytesType
	if wt != f.wt && !packed {
		return 0, nil
	}
	v, start, stop, n := encConsume(s.wire[pos:end], wt)
	if n < 0 {
		return 0, encErr(m, f, "invalid wire data at byte %d", pos)
	}
	r := encRec{start: pos + start, end: pos + stop, v: v, next: -1, wt: wt}
	switch {
	case packed:
		if !encPackedValid(s.wire[r.start:r.end], f.wt) {
			return 0, encErr(m, f, "invalid packed data at byte %d", pos)
		}
	case f.utf8 && !utf8.Valid(s.wire[r.start:r.end]):
		return 0, encErr(m, f, "invalid UTF-8")
	}
	if f.oneof >= 0 {
		cur := &s.slots[base+len(m.fields)+f.oneof].head
		if prev := int(*cur); prev != i {
			if prev >= 0 {
				// The member it replaces was parsed (proto.Unmarshal would
				// fail on a malformed one), then is dropped.
				if pf := &m.fields[prev]; pf.msg != nil {
					if err := s.validate(pf.msg, s.slots[base+prev].head, false, depth+1); err != nil {
						return 0, err
					}
				}
				s.slots[base+prev] = encSlot{-1, -1}
			}
			s.slots[base+len(m.fields)+f.oneof].head = int32(i)
		}
	}
	ri := s.push(r)
	if f.list || f.isMap || f.msg != nil {
		s.link(base+i, ri)
	} else {
		s.slots[base+i] = encSlot{ri, ri} // the last one wins
	}
	return n, nil
}

// encPackedValid reports whether b is a sequence of values of wire type wt.
func encPackedValid(b []byte, wt protowire.Type) bool {
	switch wt {
	case protowire.Fixed32Type:
		return len(b)%4 == 0
	case protowire.Fixed64Type:
		return len(b)%8 == 0
	}
	if len(b) > 0 && b[len(b)-1] >= 0x80 {
		return false // the last varint is cut
	}
	for len(b) > 0 {
		_, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// validate checks the records of a message of type m that will not be
// rendered as proto.Unmarshal would parse them: recursively, with map
// entries.
func (s *encState) validate(m *encMsg, head int32, single bool, depth int) error {
	if depth > encMaxDepth {
		return errEncDepth
	}
	recs := len(s.recs)
	base, err := s.scan(m, head, single, depth)
	if err == nil {
		err = s.validateFields(m, base, depth)
	}
	s.slots, s.recs = s.slots[:base], s.recs[:recs]
	return err
}

func (s *encState) validateFields(m *encMsg, base, depth int) error {
	for i := range m.fields {
		f := &m.fields[i]
		head := s.slots[base+i].head
		switch {
		case f.isMap:
			for r := head; r >= 0; r = s.recs[r].next {
				if depth+1 > encMaxDepth {
					return errEncDepth
				}
				recs := len(s.recs)
				e, err := s.entry(f, r)
				if err == nil && f.val.msg != nil {
					err = s.validate(f.val.msg, e.valHead, false, depth+2)
				}
				s.recs = s.recs[:recs]
				if err != nil {
					return err
				}
			}
		case f.msg != nil:
			// Each element of a list is a message; the records of a
			// singular field are the segments of one.
			for r := head; r >= 0; r = s.recs[r].next {
				if err := s.validate(f.msg, r, f.list, depth+1); err != nil {
					return err
				}
				if !f.list {
					break
				}
			}
		}
	}
	return nil
}

// encEnt is a map entry being rendered: its key (decoded; sort is the
// number that orders it, str the bytes of a string key), its value's
// records and its position in the wire.
type encEnt struct {
	str     []byte
	key     uint64
	sort    uint64
	seq     int32
	valHead int32
	valTail int32
}

// entry parses map entry r of map field f: the last key (the default if
// none), and the value records (for a message value all of them, its
// segments; for a scalar the last one).
func (s *encState) entry(f *encField, r int32) (encEnt, error) {
	e := encEnt{valHead: -1, valTail: -1}
	pos, end := s.recs[r].start, s.recs[r].end
	key := int32(-1)
	for pos < end {
		num, wt, n := protowire.ConsumeTag(s.wire[pos:end])
		if n < 0 || num > protowire.MaxValidNumber {
			return e, encErr(nil, f, "invalid map entry at byte %d", pos)
		}
		pos += n
		var kv *encField
		switch num {
		case 1:
			kv = f.key
		case 2:
			kv = f.val
		}
		if kv != nil && wt == kv.wt {
			v, start, stop, n := encConsume(s.wire[pos:end], wt)
			if n < 0 {
				return e, encErr(nil, f, "invalid map entry at byte %d", pos)
			}
			rec := encRec{start: pos + start, end: pos + stop, v: v, next: -1, wt: wt}
			if kv.utf8 && !utf8.Valid(s.wire[rec.start:rec.end]) {
				return e, encErr(nil, f, "invalid UTF-8")
			}
			pos += n
			ri := s.push(rec)
			switch {
			case kv == f.key:
				key = ri
			case kv.msg != nil: // a message value merges its records
				if e.valTail >= 0 {
					s.recs[e.valTail].next = ri
				} else {
					e.valHead = ri
				}
				e.valTail = ri
			default:
				e.valHead, e.valTail = ri, ri
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, wt, s.wire[pos:end])
		if n < 0 {
			return e, encErr(nil, f, "invalid map entry at byte %d", pos)
		}
		pos += n
	}
	if key >= 0 { // else the default key: 0, false or ""
		k := s.recs[key]
		if f.key.kind == protoreflect.StringKind {
			e.str = s.wire[k.start:k.end]
		}
		e.key = k.v
	}
	if i, u, signed := encInt(f.key.kind, e.key); signed {
		e.sort = uint64(i) ^ 1<<63
	} else {
		e.sort = u
	}
	return e, nil
}
