package wirejson

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// message renders a message of type m whose records are at head (just that
// one if single; none: the empty message).
func (s *encState) message(dst []byte, m *encMsg, head int32, single bool, depth int) ([]byte, error) {
	if depth > encMaxDepth {
		return dst, errEncDepth
	}
	recs := len(s.recs)
	base, err := s.scan(m, head, single, depth)
	if err == nil {
		if m.wkt != wktNone {
			dst, err = s.wkt(dst, m, base, depth)
		} else {
			dst, err = s.object(dst, m, base, depth, nil)
		}
	}
	s.slots, s.recs = s.slots[:base], s.recs[:recs]
	return dst, err
}

// object renders the fields of message m, scanned at base, as a JSON object:
// in declaration order, unpopulated ones with their defaults, absent ones
// with presence as null, but absent oneof members (proto3 optional ones
// too) left out. A typeURL (an Any's) comes first, as "@type".
func (s *encState) object(dst []byte, m *encMsg, base, depth int, typeURL []byte) ([]byte, error) {
	dst = append(dst, '{')
	comma := false
	if typeURL != nil {
		dst = append(dst, `"@type":`...)
		dst, _ = encAppendStringBytes(dst, typeURL) // valid UTF-8: scanned
		comma = true
	}
	for i := range m.fields {
		f := &m.fields[i]
		sl := s.slots[base+i]
		if sl.head < 0 && f.oneof >= 0 {
			continue
		}
		if comma {
			dst = append(dst, ',')
		}
		comma = true
		dst = append(dst, f.name...)
		if sl.head < 0 && f.presence {
			dst = append(dst, "null"...)
			continue
		}
		var err error
		if dst, err = s.value(dst, f, sl, depth); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// value renders field f of a message at depth from its occurrences sl.
func (s *encState) value(dst []byte, f *encField, sl encSlot, depth int) ([]byte, error) {
	switch {
	case f.isMap:
		return s.mapValue(dst, f, sl.head, depth)
	case f.list:
		return s.list(dst, f, sl.head, depth)
	case f.msg != nil:
		return s.message(dst, f.msg, sl.head, false, depth+1)
	case sl.tail >= 0:
		return s.scalar(dst, f, s.recs[sl.tail])
	}
	return append(dst, f.def...), nil
}

// list renders the elements of repeated field f in wire order, across its
// records, packed or not.
func (s *encState) list(dst []byte, f *encField, head int32, depth int) ([]byte, error) {
	dst = append(dst, '[')
	comma := false
	var err error
	for r := head; r >= 0; r = s.recs[r].next {
		rec := s.recs[r]
		switch {
		case f.msg != nil:
			if comma {
				dst = append(dst, ',')
			}
			comma = true
			dst, err = s.message(dst, f.msg, r, true, depth+1)
		case rec.wt == protowire.BytesType && f.packable: // maybe empty
			for b := s.wire[rec.start:rec.end]; len(b) > 0 && err == nil; {
				v, _, _, n := encConsume(b, f.wt)
				b = b[n:]
				if comma {
					dst = append(dst, ',')
				}
				comma = true
				dst, err = s.scalar(dst, f, encRec{v: v})
			}
		default:
			if comma {
				dst = append(dst, ',')
			}
			comma = true
			dst, err = s.scalar(dst, f, rec)
		}
		if err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

// mapValue renders the entries of map field f ordered by key as protojson
// orders them; of entries with the same key the last one wins.
func (s *encState) mapValue(dst []byte, f *encField, head int32, depth int) ([]byte, error) {
	if head >= 0 && depth+1 > encMaxDepth {
		return dst, errEncDepth
	}
	ents := len(s.ents)
	dst, err := s.entries(dst, f, head, depth)
	s.ents = s.ents[:ents]
	return dst, err
}

// entries renders the entries of map field f (see mapValue), pushing them
// on s.ents.
func (s *encState) entries(dst []byte, f *encField, head int32, depth int) ([]byte, error) {
	ents := len(s.ents)
	seq := int32(0)
	for r := head; r >= 0; r = s.recs[r].next {
		e, err := s.entry(f, r)
		if err != nil {
			return dst, err
		}
		e.seq, seq = seq, seq+1
		s.ents = append(s.ents, e)
	}
	slices.SortFunc(s.ents[ents:], encCmpEnt)
	n := len(s.ents) - ents
	dst = append(dst, '{')
	comma := false
	var err error
	for i := range n {
		e := s.ents[ents+i]
		if i+1 < n && e.sort == s.ents[ents+i+1].sort && bytes.Equal(e.str, s.ents[ents+i+1].str) {
			// Replaced by a later entry: parsed, then dropped.
			if f.val.msg != nil {
				if err := s.validate(f.val.msg, e.valHead, false, depth+2); err != nil {
					return dst, err
				}
			}
			continue
		}
		if comma {
			dst = append(dst, ',')
		}
		comma = true
		switch f.key.kind {
		case protoreflect.StringKind:
			var ok bool
			if dst, ok = encAppendStringBytes(dst, e.str); !ok {
				return dst, encErr(nil, f, "invalid UTF-8 in a map key")
			}
		case protoreflect.BoolKind:
			if e.key != 0 {
				dst = append(dst, `"true"`...)
			} else {
				dst = append(dst, `"false"`...)
			}
		default:
			dst = append(dst, '"')
			if i, u, signed := encInt(f.key.kind, e.key); signed {
				dst = strconv.AppendInt(dst, i, 10)
			} else {
				dst = strconv.AppendUint(dst, u, 10)
			}
			dst = append(dst, '"')
		}
		dst = append(dst, ':')
		switch {
		case f.val.msg != nil:
			dst, err = s.message(dst, f.val.msg, e.valHead, false, depth+2)
		case e.valTail >= 0:
			dst, err = s.scalar(dst, f.val, s.recs[e.valTail])
		default:
			dst = append(dst, f.val.def...)
		}
		if err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// encCmpEnt orders map entries by key (numbers, then string bytes), then by
// position.
func encCmpEnt(a, b encEnt) int {
	if c := cmp.Compare(a.sort, b.sort); c != 0 {
		return c
	}
	if c := bytes.Compare(a.str, b.str); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

// encInt decodes the wire number v of an integer kind (or bool, enum).
func encInt(kind protoreflect.Kind, v uint64) (i int64, u uint64, signed bool) {
	switch kind {
	case protoreflect.Int32Kind, protoreflect.EnumKind:
		return int64(int32(v)), 0, true
	case protoreflect.Sint32Kind:
		return int64(int32(protowire.DecodeZigZag(v & math.MaxUint32))), 0, true
	case protoreflect.Sfixed32Kind:
		return int64(int32(uint32(v))), 0, true
	case protoreflect.Int64Kind, protoreflect.Sfixed64Kind:
		return int64(v), 0, true
	case protoreflect.Sint64Kind:
		return protowire.DecodeZigZag(v), 0, true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return 0, uint64(uint32(v)), false
	case protoreflect.BoolKind:
		if v != 0 {
			return 0, 1, false
		}
		return 0, 0, false
	}
	return 0, v, false
}

// scalar renders one value of the scalar or enum field f from its record.
func (s *encState) scalar(dst []byte, f *encField, r encRec) ([]byte, error) {
	switch f.kind {
	case protoreflect.BoolKind:
		if r.v != 0 {
			return append(dst, "true"...), nil
		}
		return append(dst, "false"...), nil
	case protoreflect.EnumKind:
		if f.null {
			return append(dst, "null"...), nil
		}
		return f.enum.appendValue(dst, int32(r.v)), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		i, _, _ := encInt(f.kind, r.v)
		return strconv.AppendInt(dst, i, 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return strconv.AppendUint(dst, uint64(uint32(r.v)), 10), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		i, _, _ := encInt(f.kind, r.v)
		dst = append(dst, '"')
		return append(strconv.AppendInt(dst, i, 10), '"'), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		dst = append(dst, '"')
		return append(strconv.AppendUint(dst, r.v, 10), '"'), nil
	case protoreflect.FloatKind:
		return encAppendFloat(dst, float64(math.Float32frombits(uint32(r.v))), 32), nil
	case protoreflect.DoubleKind:
		return encAppendFloat(dst, math.Float64frombits(r.v), 64), nil
	case protoreflect.StringKind:
		dst, ok := encAppendStringBytes(dst, s.wire[r.start:r.end])
		if !ok {
			return dst, encErr(nil, f, "invalid UTF-8")
		}
		return dst, nil
	case protoreflect.BytesKind:
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, s.wire[r.start:r.end])
		return append(dst, '"'), nil
	}
	return dst, encErr(nil, f, "unexpected kind %v", f.kind)
}

func encAppendInt(dst []byte, i int64) []byte { return strconv.AppendInt(dst, i, 10) }

// encAppendFloat renders n as protojson does: NaN and the infinities as
// strings, the shortest representation that round-trips at bitSize, in
// exponent form below 1e-6 and from 1e21 on (exponent "e-07" as "e-7").
func encAppendFloat(dst []byte, n float64, bitSize int) []byte {
	switch {
	case math.IsNaN(n):
		return append(dst, `"NaN"`...)
	case math.IsInf(n, +1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(n, -1):
		return append(dst, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(n); abs != 0 {
		if bitSize == 64 && (abs < 1e-6 || abs >= 1e21) ||
			bitSize == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, n, format, -1, bitSize)
	if format == 'e' {
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// encAppendString renders s (valid UTF-8) as a JSON string.
func encAppendString(dst []byte, s string) []byte {
	dst, _ = encAppendStringBytes(dst, []byte(s))
	return dst
}

// encPlain8 reports whether the eight bytes of w all go into a JSON string
// as they are: ASCII from ' ' up, neither '"' nor '\\' (SWAR: a byte's high
// bit is set in a term where it is below ' ', equals '"' or '\\', or is
// not ASCII; a borrow may flag more, which only sends them the slow way).
func encPlain8(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	below := (w - ones*' ') &^ w
	quote := ((w ^ ones*'"') - ones) &^ (w ^ ones*'"')
	slash := ((w ^ ones*'\\') - ones) &^ (w ^ ones*'\\')
	return (below|quote|slash|w)&highs == 0
}

// encAppendStringBytes renders b as a JSON string escaped as protojson
// escapes: '"', '\\' and control characters only (no HTML escaping), with
// the short forms \b \f \n \r \t. It reports false if b is not valid UTF-8.
func encAppendStringBytes(dst, b []byte) ([]byte, bool) {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(b); {
		// Eight bytes at a time while none needs a look: no control
		// character, quote, backslash or non-ASCII byte.
		for i+8 <= len(b) && encPlain8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return dst, false
			}
			i += n
			continue
		}
		if c >= ' ' && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, b[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, `\u`...)
			dst = append(dst, "0000"[1+(bits.Len32(uint32(c))-1)/4:]...)
			dst = strconv.AppendUint(dst, uint64(c), 16)
		}
		i++
		start = i
	}
	dst = append(dst, b[start:]...)
	return append(dst, '"'), true
}
