package wirejson

import (
	"encoding/base64"
	"math"
	"strconv"
	"strings"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Scalars follow protojson's unmarshalScalar: integers as JSON numbers or
// strings holding exactly a JSON number, integral after the exponent is
// applied ("1e2", "1.0"), within the kind's range; floats likewise, plus
// "NaN", "Infinity" and "-Infinity"; enums by name or int32 number.

// bstr views b as a string, for the strconv and strings calls that do not
// keep it.
func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// scalar decodes the value at s.pos for the scalar or enum field f and
// writes it: with f's tag if withTag (else bare, as a packed element),
// omitted if skipZero and it is the zero value. set is false for an enum
// name dropped by DiscardUnknown.
func (s *state) scalar(f *fieldPlan, withTag, skipZero bool) (set bool, err error) {
	if s.pos >= len(s.in) {
		return false, errUnexpectedEOF
	}
	at := s.pos
	c := s.in[at]
	var v uint64 // the varint or fixed bits
	switch f.kind {
	case protoreflect.BoolKind:
		switch {
		case c == 't' && s.literal("true"):
			s.pos += 4
			v = 1
		case c == 'f' && s.literal("false"):
			s.pos += 5
		default:
			return false, s.invalidFor(f, at)
		}
	case protoreflect.StringKind:
		if c != '"' {
			return false, s.invalidFor(f, at)
		}
		start, end, esc, err := s.str()
		if err != nil {
			return false, err
		}
		if skipZero && start == end {
			return true, nil
		}
		s.writeString(f.tag, withTag, start, end, esc)
		return true, nil
	case protoreflect.BytesKind:
		return true, s.bytesValue(f, withTag, skipZero)
	case protoreflect.EnumKind:
		n, ok, err := s.enumValue(f)
		if err != nil || !ok {
			return false, err
		}
		v = uint64(int64(n))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		bits := 64
		if f.kind == protoreflect.FloatKind {
			bits = 32
		}
		x, ok, err := s.float(bits)
		if err != nil {
			return false, err
		}
		if !ok {
			return false, s.invalidFor(f, at)
		}
		if skipZero && x == 0 && !math.Signbit(x) {
			return true, nil
		}
		if withTag {
			s.out = append(s.out, f.tag...)
		}
		if bits == 32 {
			s.out = protowire.AppendFixed32(s.out, math.Float32bits(float32(x)))
		} else {
			s.out = protowire.AppendFixed64(s.out, math.Float64bits(x))
		}
		return true, nil
	default:
		n, ok, err := s.integer(f.kind)
		if err != nil {
			return false, err
		}
		if !ok {
			return false, s.invalidFor(f, at)
		}
		v = n
	}
	if skipZero && v == 0 {
		return true, nil
	}
	if withTag {
		s.out = append(s.out, f.tag...)
	}
	s.out = appendScalar(s.out, f.kind, v)
	return true, nil
}

// appendScalar appends v (a value of an integer, bool or enum kind, as
// integer() returns it) in kind's encoding.
func appendScalar(b []byte, kind protoreflect.Kind, v uint64) []byte {
	switch kind {
	case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		return protowire.AppendVarint(b, protowire.EncodeZigZag(int64(v)))
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind:
		return protowire.AppendFixed32(b, uint32(v))
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
		return protowire.AppendFixed64(b, v)
	case protoreflect.Int32Kind, protoreflect.EnumKind:
		return protowire.AppendVarint(b, uint64(int64(int32(v))))
	case protoreflect.Uint32Kind:
		return protowire.AppendVarint(b, uint64(uint32(v)))
	}
	return protowire.AppendVarint(b, v)
}

// invalidFor is protojson's error for a value a field does not take.
func (s *state) invalidFor(f *fieldPlan, at int) error {
	if at >= len(s.in) {
		return errUnexpectedEOF
	}
	return s.errf(at, "invalid value for %v field %s: %s", f.kind, f.name, clip(s.tokenText(at)))
}

// writeString writes a string record (or bare length and bytes) whose
// content was scanned at [start:end].
func (s *state) writeString(tag []byte, withTag bool, start, end int, esc bool) {
	if withTag {
		s.out = append(s.out, tag...)
	}
	raw := s.in[start:end]
	if !esc {
		s.out = protowire.AppendVarint(s.out, uint64(len(raw)))
		s.out = append(s.out, raw...)
		return
	}
	// Unescaping only shrinks: reserve the raw length's size, shift if the
	// decoded length needs fewer bytes.
	vs := protowire.SizeVarint(uint64(len(raw)))
	at := len(s.out)
	s.out = append(s.out, make([]byte, vs)...)
	s.out = unescape(s.out, raw)
	n := len(s.out) - at - vs
	if ns := protowire.SizeVarint(uint64(n)); ns < vs {
		copy(s.out[at+ns:], s.out[at+vs:])
		s.out = s.out[:len(s.out)-(vs-ns)]
		vs = ns
	}
	protowire.AppendVarint(s.out[at:at], uint64(n))
}

// bytesValue decodes a base64 string (standard or URL alphabet, padded or
// not, as protojson).
func (s *state) bytesValue(f *fieldPlan, withTag, skipZero bool) error {
	at := s.pos
	if s.in[at] != '"' {
		return s.invalidFor(f, at)
	}
	start, end, esc, err := s.str()
	if err != nil {
		return err
	}
	src := s.content(start, end, esc)
	enc := b64[0]
	if strings.ContainsAny(bstr(src), "-_") {
		enc = b64[1]
	}
	if len(src)%4 != 0 {
		enc = b64[len(b64)/2+boolInt(enc == b64[1])]
	}
	mark := len(s.out)
	if withTag {
		s.out = append(s.out, f.tag...)
	}
	max := enc.DecodedLen(len(src))
	vs := protowire.SizeVarint(uint64(max))
	lenAt := len(s.out)
	s.out = append(s.out, make([]byte, vs+max)...)
	n, err := enc.Decode(s.out[lenAt+vs:], src)
	if err != nil {
		s.out = s.out[:mark]
		return s.invalidFor(f, at)
	}
	if skipZero && n == 0 {
		s.out = s.out[:mark]
		return nil
	}
	ns := protowire.SizeVarint(uint64(n))
	if ns < vs {
		copy(s.out[lenAt+ns:], s.out[lenAt+vs:lenAt+vs+n])
	}
	s.out = s.out[:lenAt+ns+n]
	protowire.AppendVarint(s.out[lenAt:lenAt], uint64(n))
	return nil
}

// b64 are the encodings protojson tries: std, URL, then both unpadded.
var b64 = [4]*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// enumValue decodes an enum: a name of f's enum, an int32 number, or null
// for google.protobuf.NullValue. ok is false for an unknown name dropped by
// DiscardUnknown.
func (s *state) enumValue(f *fieldPlan) (n int32, ok bool, err error) {
	at := s.pos
	switch c := s.in[at]; {
	case c == '"':
		start, end, esc, err := s.str()
		if err != nil {
			return 0, false, err
		}
		if i := f.enum.find(s.content(start, end, esc)); i >= 0 {
			return f.enumNs[i], true, nil
		}
		if s.d.opts.DiscardUnknown {
			return 0, false, nil
		}
	case c == 'n' && s.literal("null"):
		s.pos += 4
		if f.nullOK {
			return 0, true, nil
		}
	case c == '-' || ('0' <= c && c <= '9'):
		raw, err := s.number()
		if err != nil {
			return 0, false, err
		}
		if v, ok := intOf(raw, 32, true); ok {
			return int32(v), true, nil
		}
	}
	return 0, false, s.invalidFor(f, at)
}

// integer decodes an integer of kind: a number, or a string holding one.
// The result is the value's two's complement bits.
func (s *state) integer(kind protoreflect.Kind) (uint64, bool, error) {
	bits, signed := 64, true
	switch kind {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		bits = 32
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		bits, signed = 32, false
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		signed = false
	}
	raw, ok, err := s.numberText()
	if err != nil || !ok {
		return 0, false, err
	}
	v, ok := intOf(raw, bits, signed)
	return v, ok, nil
}

// numberText reads a number token, or a string token whose whole content
// is one, and returns the number's text. ok is false for another token.
func (s *state) numberText() ([]byte, bool, error) {
	switch c := s.in[s.pos]; {
	case c == '-' || ('0' <= c && c <= '9'):
		raw, err := s.number()
		return raw, err == nil, err
	case c == '"':
		start, end, esc, err := s.str()
		if err != nil {
			return nil, false, err
		}
		raw := s.content(start, end, esc)
		if n, ok := parseNumber(raw); !ok || n != len(raw) {
			return nil, false, nil
		}
		return raw, true, nil
	}
	return nil, false, nil
}

// float decodes a float of bits: a number, "NaN", "Infinity", "-Infinity" or
// a string holding a number.
func (s *state) float(bits int) (float64, bool, error) {
	if s.in[s.pos] == '"' {
		start, end, esc, err := s.str()
		if err != nil {
			return 0, false, err
		}
		raw := s.content(start, end, esc)
		switch string(raw) {
		case "NaN":
			return math.NaN(), true, nil
		case "Infinity":
			return math.Inf(1), true, nil
		case "-Infinity":
			return math.Inf(-1), true, nil
		}
		if n, ok := parseNumber(raw); !ok || n != len(raw) {
			return 0, false, nil
		}
		x, err := strconv.ParseFloat(bstr(raw), bits)
		return x, err == nil, nil
	}
	c := s.in[s.pos]
	if c != '-' && (c < '0' || c > '9') {
		return 0, false, nil
	}
	raw, err := s.number()
	if err != nil {
		return 0, false, err
	}
	x, err := strconv.ParseFloat(bstr(raw), bits)
	return x, err == nil, nil
}

// intOf converts the text of a JSON number to an integer of bits, as
// protobuf-go's Token.Int and Token.Uint: the number must be integral once
// its exponent is applied.
func intOf(raw []byte, bits int, signed bool) (uint64, bool) {
	if v, ok, plain := plainInt(raw, bits, signed); plain {
		return v, ok
	}
	var buf [24]byte
	digits, ok := normalizeInt(raw, buf[:0])
	if !ok {
		return 0, false
	}
	if signed {
		v, err := strconv.ParseInt(bstr(digits), 10, bits)
		return uint64(v), err == nil
	}
	v, err := strconv.ParseUint(bstr(digits), 10, bits)
	return v, err == nil
}

// plainInt converts the common case of intOf, a plain decimal of at most 18
// digits; plain is false for other numbers.
func plainInt(raw []byte, bits int, signed bool) (v uint64, ok, plain bool) {
	d := raw
	neg := d[0] == '-'
	if neg {
		d = d[1:]
	}
	if len(d) == 0 || len(d) > 18 {
		return 0, false, false
	}
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false, false
		}
		v = v*10 + uint64(c-'0')
	}
	switch {
	case neg && !signed:
		return 0, v == 0, true
	case neg:
		n := -int64(v)
		return uint64(n), bits == 64 || n >= -1<<31, true
	case signed && bits == 32:
		return v, v <= 1<<31-1, true
	case bits == 32:
		return v, v <= 1<<32-1, true
	}
	return v, true, true
}

// normalizeInt appends the integer the number raw denotes, in plain decimal,
// to buf (protobuf-go's normalizeToIntString).
func normalizeInt(raw, buf []byte) ([]byte, bool) {
	s := raw
	neg := false
	if s[0] == '-' {
		neg = true
		s = s[1:]
	}
	var intp, frac, exp []byte
	if s[0] == '0' {
		s = s[1:]
	} else {
		n := 0
		for n < len(s) && '0' <= s[n] && s[n] <= '9' {
			n++
		}
		intp, s = s[:n], s[n:]
	}
	if len(s) >= 2 && s[0] == '.' {
		n := 1
		for n < len(s) && '0' <= s[n] && s[n] <= '9' {
			n++
		}
		frac, s = s[1:n], s[n:]
		for len(frac) > 0 && frac[len(frac)-1] == '0' {
			frac = frac[:len(frac)-1]
		}
	}
	if len(s) >= 1 && (s[0] == 'e' || s[0] == 'E') {
		exp = s[1:]
	}
	if len(exp) == 1 && (exp[0] == '+' || exp[0] == '-') {
		return nil, false // protobuf-go's parseNumberParts rejects "1e+"
	}
	if len(intp) == 0 && len(frac) == 0 {
		return append(buf, '0'), true
	}
	e := 0
	if len(exp) > 0 {
		i, err := strconv.ParseInt(bstr(exp), 10, 32)
		if err != nil {
			return nil, false
		}
		e = int(i)
	}
	if neg {
		buf = append(buf, '-')
	}
	if e >= 0 {
		if len(frac) > e || len(intp)+e > 20 {
			return nil, false
		}
		buf = append(buf, intp...)
		buf = append(buf, frac...)
		for range e - len(frac) {
			buf = append(buf, '0')
		}
		return buf, true
	}
	if len(frac) > 0 {
		return nil, false
	}
	index := len(intp) + e
	if index < 0 {
		return nil, false
	}
	for _, c := range intp[index:] {
		if c != '0' {
			return nil, false
		}
	}
	return append(buf, intp[:index]...), true
}

// mapKey parses the member name [start:end] as a key of kind key.kind and
// writes its record (field 1 of the entry).
func (s *state) mapKey(key *fieldPlan, start, end int, esc bool, at int) error {
	if key.kind == protoreflect.StringKind {
		s.writeString(key.tag, true, start, end, esc)
		return nil
	}
	name := s.content(start, end, esc)
	var v uint64
	ok := false
	switch key.kind {
	case protoreflect.BoolKind:
		switch string(name) {
		case "true":
			v, ok = 1, true
		case "false":
			ok = true
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(bstr(name), 10, 32)
		v, ok = uint64(n), err == nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := strconv.ParseInt(bstr(name), 10, 64)
		v, ok = uint64(n), err == nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		v, ok = parseUint(name, 32)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		v, ok = parseUint(name, 64)
	}
	if !ok {
		return s.errf(at, "invalid value for %v key: %s", key.kind, clip(s.in[at:end+1]))
	}
	s.out = append(s.out, key.tag...)
	s.out = appendScalar(s.out, key.kind, v)
	return nil
}

func parseUint(b []byte, bits int) (uint64, bool) {
	v, err := strconv.ParseUint(bstr(b), 10, bits)
	return v, err == nil
}
