package wirejson

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Bounds of the well-known types, as protojson checks them.
const (
	encMaxNanos       = 999999999
	encMaxDurationSec = 315576000000
	encMinTimestamp   = -62135596800 // 0001-01-01T00:00:00Z
	encMaxTimestamp   = 253402300799 // 9999-12-31T23:59:59Z
)

// wkt renders the well-known message m, scanned at base, by its rule.
func (s *encState) wkt(dst []byte, m *encMsg, base, depth int) ([]byte, error) {
	switch m.wkt {
	case wktTimestamp:
		return s.timestamp(dst, m, base)
	case wktDuration:
		return s.duration(dst, m, base)
	case wktFieldMask:
		return s.fieldMask(dst, m, base)
	case wktAny:
		return s.anyValue(dst, m, base)
	case wktValue:
		// The member of oneof kind that is set, which must be one.
		od := m.fields[m.lookup(1)].oneof
		i := int(s.slots[base+len(m.fields)+od].head)
		if i < 0 {
			return dst, encErr(m, nil, "none of the oneof fields is set")
		}
		f := &m.fields[i]
		sl := s.slots[base+i]
		if f.fd.Number() == 2 {
			if v := math.Float64frombits(s.recs[sl.tail].v); math.IsNaN(v) || math.IsInf(v, 0) {
				return dst, encErr(m, f, "invalid value %v", v)
			}
		}
		return s.value(dst, f, sl, depth)
	}
	// Wrappers (the bare value), Struct (the map) and ListValue (the list)
	// render their field 1.
	i := m.lookup(1)
	return s.value(dst, &m.fields[i], s.slots[base+i], depth)
}

// last returns the number of the last record of field num of m (0 if
// none).
func (s *encState) last(m *encMsg, base int, num protowire.Number) uint64 {
	if sl := s.slots[base+m.lookup(num)]; sl.tail >= 0 {
		return s.recs[sl.tail].v
	}
	return 0
}

// timestamp renders a google.protobuf.Timestamp as RFC 3339 in UTC, with 0,
// 3, 6 or 9 fractional digits.
func (s *encState) timestamp(dst []byte, m *encMsg, base int) ([]byte, error) {
	secs, nanos := int64(s.last(m, base, 1)), int64(int32(s.last(m, base, 2)))
	if secs < encMinTimestamp || secs > encMaxTimestamp {
		return dst, encErr(m, nil, "seconds out of range %d", secs)
	}
	if nanos < 0 || nanos > encMaxNanos {
		return dst, encErr(m, nil, "nanos out of range %d", nanos)
	}
	// RFC 3339 by hand: the year is 1 to 9999 (checked above), and
	// time.AppendFormat would parse its layout on every call.
	t := time.Unix(secs, 0).UTC()
	year, month, day := t.Date()
	hour, minute, second := t.Clock()
	dst = append(dst, '"',
		byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-',
		byte('0'+month/10), byte('0'+month%10), '-', byte('0'+day/10), byte('0'+day%10), 'T',
		byte('0'+hour/10), byte('0'+hour%10), ':', byte('0'+minute/10), byte('0'+minute%10), ':',
		byte('0'+second/10), byte('0'+second%10))
	if nanos != 0 {
		dst = append(dst, '.')
		frac := len(dst)
		dst = strconv.AppendInt(dst, nanos+1e9, 10) // 1 and nine digits
		dst = append(dst[:frac], dst[frac+1:]...)
		dst = encTrimFraction(dst)
	}
	return append(dst, 'Z', '"'), nil
}

// duration renders a google.protobuf.Duration as seconds with 0, 3, 6 or 9
// fractional digits and the suffix "s".
func (s *encState) duration(dst []byte, m *encMsg, base int) ([]byte, error) {
	secs, nanos := int64(s.last(m, base, 1)), int64(int32(s.last(m, base, 2)))
	if secs < -encMaxDurationSec || secs > encMaxDurationSec {
		return dst, encErr(m, nil, "seconds out of range %d", secs)
	}
	if nanos < -encMaxNanos || nanos > encMaxNanos {
		return dst, encErr(m, nil, "nanos out of range %d", nanos)
	}
	if (secs > 0 && nanos < 0) || (secs < 0 && nanos > 0) {
		return dst, encErr(m, nil, "signs of seconds and nanos do not match")
	}
	dst = append(dst, '"')
	if secs < 0 || nanos < 0 {
		dst = append(dst, '-')
		secs, nanos = -secs, -nanos
	}
	dst = strconv.AppendInt(dst, secs, 10)
	dst = append(dst, '.')
	frac := len(dst)
	dst = strconv.AppendInt(dst, nanos+1e9, 10) // 1 and nine digits
	dst = append(dst[:frac], dst[frac+1:]...)
	dst = encTrimFraction(dst)
	return append(dst, 's', '"'), nil
}

// encTrimFraction drops the zeros of a 9-digit fraction ending dst by
// groups of three, and the dot if all are.
func encTrimFraction(dst []byte) []byte {
	for range 2 {
		if n := len(dst); string(dst[n-3:]) == "000" {
			dst = dst[:n-3]
		}
	}
	if n := len(dst); string(dst[n-4:]) == ".000" {
		dst = dst[:n-4]
	}
	return dst
}

// fieldMask renders a google.protobuf.FieldMask as its paths in lowerCamel
// case joined by ","; a path must be a valid name that the conversion does
// not change the meaning of (it converts back to itself).
func (s *encState) fieldMask(dst []byte, m *encMsg, base int) ([]byte, error) {
	dst = append(dst, '"')
	for r := s.slots[base+m.lookup(1)].head; r >= 0; r = s.recs[r].next {
		path := s.wire[s.recs[r].start:s.recs[r].end]
		if dst[len(dst)-1] != '"' {
			dst = append(dst, ',')
		}
		if !encValidFullName(path) {
			return dst, encErr(m, nil, "paths contains invalid path: %q", path)
		}
		mark := len(dst)
		under := false
		for _, c := range path {
			if c != '_' {
				if under && 'a' <= c && c <= 'z' {
					c -= 'a' - 'A'
				}
				dst = append(dst, c)
			}
			under = c == '_'
		}
		if !encSnakeOf(dst[mark:], path) {
			return dst, encErr(m, nil, "paths contains irreversible value %q", path)
		}
	}
	return append(dst, '"'), nil
}

// encSnakeOf reports whether the lower_snake form of camel is snake.
func encSnakeOf(camel, snake []byte) bool {
	j := 0
	for _, c := range camel {
		if 'A' <= c && c <= 'Z' {
			if j >= len(snake) || snake[j] != '_' {
				return false
			}
			j++
			c += 'a' - 'A'
		}
		if j >= len(snake) || snake[j] != c {
			return false
		}
		j++
	}
	return j == len(snake)
}

// encValidFullName is protoreflect.FullName.IsValid: identifiers separated
// by dots.
func encValidFullName(b []byte) bool {
	ident := false // in an identifier
	for i, c := range b {
		switch {
		case c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
			ident = true
		case '0' <= c && c <= '9':
			if !ident {
				return false
			}
		case c == '.':
			if !ident || i == len(b)-1 {
				return false
			}
			ident = false
		default:
			return false
		}
	}
	return ident
}

// anyValue renders a google.protobuf.Any: its payload's fields after
// "@type", or for a payload with a rule of its own {"@type":…,"value":…}.
// The empty Any renders {}.
func (s *encState) anyValue(dst []byte, m *encMsg, base int) ([]byte, error) {
	var url []byte
	if sl := s.slots[base+m.lookup(1)]; sl.tail >= 0 {
		url = s.wire[s.recs[sl.tail].start:s.recs[sl.tail].end]
	}
	payload := encRec{next: -1, wt: protowire.BytesType}
	if sl := s.slots[base+m.lookup(2)]; sl.tail >= 0 {
		payload.start, payload.end = s.recs[sl.tail].start, s.recs[sl.tail].end
	}
	if len(url) == 0 {
		if payload.end > payload.start {
			return dst, encErr(m, nil, "type_url is not set")
		}
		return append(dst, '{', '}'), nil
	}
	pm, err := s.shared.payload(string(url))
	if err != nil {
		return dst, fmt.Errorf("wirejson: message %s: %w", m.md.FullName(), err)
	}
	// The payload is a message of its own: proto.Unmarshal starts its depth
	// afresh.
	recs := len(s.recs)
	r := s.push(payload)
	base, err = s.scan(pm, r, true, 1)
	if err == nil {
		if pm.wkt != wktNone {
			dst = append(dst, `{"@type":`...)
			dst, _ = encAppendStringBytes(dst, url)
			dst = append(dst, `,"value":`...)
			if dst, err = s.wkt(dst, pm, base, 1); err == nil {
				dst = append(dst, '}')
			}
		} else {
			dst, err = s.object(dst, pm, base, 1, url)
		}
	}
	s.slots, s.recs = s.slots[:base], s.recs[:recs]
	return dst, err
}

// payload returns the compiled encoder of the Any payload type that url
// names, compiling it on first use. The cache is keyed by the full name of
// the type the resolver returned, so it is bounded by the resolver's types.
func (sh *encShared) payload(url string) (*encMsg, error) {
	mt, err := sh.resolver.FindMessageByURL(url)
	if err != nil {
		return nil, fmt.Errorf("unable to resolve %q: %v", url, err)
	}
	md := mt.Descriptor()
	if v, ok := sh.payloads.Load(md.FullName()); ok {
		if p := v.(*encPayload); p.md == md {
			return p.msg, p.err
		}
	}
	c := encCompiler{msgs: map[protoreflect.FullName]*encMsg{}}
	m, err := c.message(md)
	sh.payloads.Store(md.FullName(), &encPayload{md: md, msg: m, err: err})
	return m, err
}
