package wirejson

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// The well-known types decode as protojson's well_known_types.go does.

// wkt decodes the value of well-known type p; depth is the budget left
// inside it.
func (s *state) wkt(p *msgPlan, depth int) error {
	if s.pos >= len(s.in) {
		return errUnexpectedEOF
	}
	switch p.wkt {
	case wktAny:
		return s.anyValue(p, depth+1)
	case wktTimestamp:
		return s.timestamp()
	case wktDuration:
		return s.duration()
	case wktWrapper:
		_, err := s.scalar(&p.fields[0], true, !p.fields[0].presence)
		return err
	case wktStruct:
		return s.mapValue(&p.fields[0], depth)
	case wktListValue:
		return s.list(&p.fields[0], depth)
	case wktValue:
		return s.knownValue(p, depth)
	case wktFieldMask:
		return s.fieldMask()
	}
	return s.empty(depth)
}

// knownValue decodes a google.protobuf.Value: any JSON value.
func (s *state) knownValue(p *msgPlan, depth int) error {
	// The fields by number (NewDecoder checked the type's shape).
	var field [7]*fieldPlan
	for i := range p.fields {
		if n := p.fields[i].fd.Number(); n >= 1 && n <= 6 {
			field[n] = &p.fields[i]
		}
	}
	for n := 1; n <= 6; n++ {
		if field[n] == nil {
			return errors.New("wirejson: google.protobuf.Value has no field " + strconv.Itoa(n))
		}
	}
	at := s.pos
	switch c := s.in[at]; {
	case c == 'n' && s.literal("null"):
		s.pos += 4
		s.out = append(s.out, field[1].tag...)
		s.out = append(s.out, 0)
	case c == 't' && s.literal("true"), c == 'f' && s.literal("false"):
		_, err := s.scalar(field[4], true, false)
		return err
	case c == '-' || ('0' <= c && c <= '9'):
		f := field[2]
		if _, err := s.scalar(f, true, false); err != nil {
			return s.errf(at, "invalid google.protobuf.Value: %s", quote(s.tokenText(at)))
		}
	case c == '"':
		_, err := s.scalar(field[3], true, false)
		return err
	case c == '{':
		f := field[5]
		m := s.openLen(f.tag)
		if err := s.mapValue(&f.msg.fields[0], depth); err != nil {
			return err
		}
		s.closeLen(m)
	case c == '[':
		f := field[6]
		m := s.openLen(f.tag)
		if err := s.list(&f.msg.fields[0], depth); err != nil {
			return err
		}
		s.closeLen(m)
	default:
		return s.errf(at, "invalid google.protobuf.Value: %s", quote(s.tokenText(at)))
	}
	return nil
}

// stringToken scans the string a Timestamp, Duration or FieldMask must be
// and returns its content.
func (s *state) stringToken() ([]byte, int, error) {
	at := s.pos
	if s.in[at] != '"' {
		return nil, at, s.unexpected()
	}
	start, end, esc, err := s.str()
	if err != nil {
		return nil, at, err
	}
	return s.content(start, end, esc), at, nil
}

const (
	maxTimestampSeconds = 253402300799
	minTimestampSeconds = -62135596800
	maxDurationSeconds  = 315576000000
)

// timestamp decodes an RFC 3339 string.
func (s *state) timestamp() error {
	b, at, err := s.stringToken()
	if err != nil {
		return err
	}
	str := bstr(b)
	t, err := time.Parse(time.RFC3339Nano, str)
	if err != nil {
		return s.errf(at, "invalid google.protobuf.Timestamp value %s", quote(b))
	}
	secs := t.Unix()
	if secs < minTimestampSeconds || secs > maxTimestampSeconds {
		return s.errf(at, "google.protobuf.Timestamp value out of range: %s", quote(b))
	}
	i := strings.LastIndexByte(str, '.')
	j := strings.LastIndexAny(str, "Z-+")
	if i >= 0 && j >= i && j-i > len(".999999999") {
		return s.errf(at, "invalid google.protobuf.Timestamp value %s", quote(b))
	}
	s.appendSecondsNanos(secs, int32(t.Nanosecond()))
	return nil
}

func (s *state) appendSecondsNanos(secs int64, nanos int32) {
	if secs != 0 {
		s.out = append(s.out, 0x08)
		s.out = protowire.AppendVarint(s.out, uint64(secs))
	}
	if nanos != 0 {
		s.out = append(s.out, 0x10)
		s.out = protowire.AppendVarint(s.out, uint64(int64(nanos)))
	}
}

// duration decodes "<seconds>[.<fraction>]s".
func (s *state) duration() error {
	b, at, err := s.stringToken()
	if err != nil {
		return err
	}
	secs, nanos, ok := parseDuration(b)
	if !ok {
		return s.errf(at, "invalid google.protobuf.Duration value %s", quote(b))
	}
	if secs < -maxDurationSeconds || secs > maxDurationSeconds {
		return s.errf(at, "google.protobuf.Duration value out of range: %s", quote(b))
	}
	s.appendSecondsNanos(secs, nanos)
	return nil
}

// parseDuration is protojson's: an optional sign, an integer part and/or a
// fraction of at most 9 digits, then "s".
func parseDuration(b []byte) (int64, int32, bool) {
	size := len(b)
	if size < 2 || b[size-1] != 's' {
		return 0, 0, false
	}
	b = b[:size-1]
	var neg bool
	switch b[0] {
	case '-':
		neg = true
		b = b[1:]
	case '+':
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, 0, false
	}
	var intp []byte
	switch {
	case b[0] == '0':
		b = b[1:]
	case '1' <= b[0] && b[0] <= '9':
		n := 1
		for n < len(b) && '0' <= b[n] && b[n] <= '9' {
			n++
		}
		intp, b = b[:n], b[n:]
	case b[0] == '.':
	default:
		return 0, 0, false
	}
	hasFrac := false
	var frac [9]byte
	if len(b) > 0 {
		if b[0] != '.' {
			return 0, 0, false
		}
		b = b[1:]
		n := 0
		for len(b) > 0 && n < 9 && '0' <= b[0] && b[0] <= '9' {
			frac[n] = b[0]
			n++
			b = b[1:]
		}
		if len(b) > 0 {
			return 0, 0, false
		}
		for i := n; i < 9; i++ {
			frac[i] = '0'
		}
		hasFrac = true
	}
	var secs int64
	if len(intp) > 0 {
		var err error
		if secs, err = strconv.ParseInt(bstr(intp), 10, 64); err != nil {
			return 0, 0, false
		}
	}
	var nanos int64
	if hasFrac {
		for _, c := range frac {
			nanos = nanos*10 + int64(c-'0')
		}
	}
	if neg {
		secs, nanos = -secs, -nanos
	}
	return secs, int32(nanos), true
}

// fieldMask decodes comma-separated lowerCamel paths to snake_case ones.
func (s *state) fieldMask() error {
	b, at, err := s.stringToken()
	if err != nil {
		return err
	}
	str := strings.TrimSpace(bstr(b))
	if str == "" {
		return nil
	}
	for {
		seg, rest, more := strings.Cut(str, ",")
		n := len(seg)
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; c == '_' {
				return s.errf(at, "google.protobuf.FieldMask.paths contains invalid path: %s", quote([]byte(seg)))
			} else if 'A' <= c && c <= 'Z' {
				n++
			}
		}
		s.out = append(s.out, 0x0a)
		s.out = protowire.AppendVarint(s.out, uint64(n))
		p := len(s.out)
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if 'A' <= c && c <= 'Z' {
				s.out = append(s.out, '_', c+'a'-'A')
			} else {
				s.out = append(s.out, c)
			}
		}
		if !protoreflect.FullName(bstr(s.out[p:])).IsValid() {
			return s.errf(at, "google.protobuf.FieldMask.paths contains invalid path: %s", quote([]byte(seg)))
		}
		if !more {
			return nil
		}
		str = rest
	}
}

// empty decodes google.protobuf.Empty: an object with no members (unknown
// ones skipped with DiscardUnknown).
func (s *state) empty(depth int) error {
	if s.in[s.pos] != '{' {
		return s.unexpected()
	}
	for more := s.first('}'); more; {
		_, end, _, at, err := s.name()
		if err != nil {
			return err
		}
		if !s.d.opts.DiscardUnknown {
			return s.errf(at, "unknown field %s", clip(s.in[at:end+1]))
		}
		if err := s.skip(depth); err != nil {
			return err
		}
		if more, err = s.next('}'); err != nil {
			return err
		}
	}
	return nil
}

// anyValue decodes a google.protobuf.Any object with protojson (its payload
// type is known only at run time) and marshals it deterministically, as
// protojson marshals Any.value. depth is the budget before the Any.
func (s *state) anyValue(p *msgPlan, depth int) error {
	start := s.pos
	if s.in[start] != '{' {
		return s.unexpected()
	}
	if err := s.skip(-1); err != nil {
		return err
	}
	m := dynamicpb.NewMessage(p.md)
	err := protojson.UnmarshalOptions{
		AllowPartial:   true,
		DiscardUnknown: s.d.opts.DiscardUnknown,
		RecursionLimit: depth,
		Resolver:       s.d.anyOpts.resolver,
	}.Unmarshal(s.in[start:s.pos], m)
	if err != nil {
		return s.errf(start, "google.protobuf.Any: %v", err)
	}
	s.out, err = proto.MarshalOptions{AllowPartial: true, Deterministic: true}.MarshalAppend(s.out, m)
	return err
}

// anyOptions are the protojson options of Any objects.
type anyOptions struct {
	resolver interface {
		protoregistry.MessageTypeResolver
		protoregistry.ExtensionTypeResolver
	}
}

// urlResolver adapts a FindMessageByURL-only resolver to protojson's.
type urlResolver struct {
	r interface {
		FindMessageByURL(url string) (protoreflect.MessageType, error)
	}
}

func (u urlResolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	return u.r.FindMessageByURL(url)
}

func (u urlResolver) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	if r, ok := u.r.(protoregistry.MessageTypeResolver); ok {
		return r.FindMessageByName(name)
	}
	return nil, protoregistry.NotFound
}

func (u urlResolver) FindExtensionByName(protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return nil, protoregistry.NotFound
}

func (u urlResolver) FindExtensionByNumber(protoreflect.FullName, protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return nil, protoregistry.NotFound
}

func newAnyOptions(opts DecodeOptions) anyOptions {
	switch r := opts.Resolver.(type) {
	case nil:
		return anyOptions{resolver: protoregistry.GlobalTypes}
	case interface {
		protoregistry.MessageTypeResolver
		protoregistry.ExtensionTypeResolver
	}:
		return anyOptions{resolver: r}
	default:
		return anyOptions{resolver: urlResolver{r}}
	}
}
