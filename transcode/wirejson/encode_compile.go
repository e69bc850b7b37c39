package wirejson

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// encMsg is the compiled encoder of one message type.
type encMsg struct {
	md     protoreflect.MessageDescriptor
	wkt    wktKind
	fields []encField // in declaration (index) order
	// small maps a field number below len(small) to its index + 1 (0: no
	// such field); large holds the other numbers.
	small   []int16
	large   map[protowire.Number]int
	noneofs int // oneofs, synthetic ones included
}

// encField is the compiled encoder of one field, or of a map entry's key or
// value.
type encField struct {
	fd   protoreflect.FieldDescriptor
	kind protoreflect.Kind
	wt   protowire.Type // wire type of one (unpacked) value
	name []byte         // `"jsonName":`
	// packable: a repeated field of this kind may come packed.
	packable bool
	list     bool
	isMap    bool
	// oneof is the index of the field's oneof (synthetic ones for proto3
	// optional included), or -1.
	oneof int
	// presence: absent, the field renders null (explicit presence, no
	// oneof).
	presence bool
	utf8     bool     // proto.Unmarshal validates UTF-8 (proto3 strings)
	null     bool     // a google.protobuf.NullValue: always null
	def      []byte   // JSON of the field's default value (scalars, enums)
	msg      *encMsg  // message kinds (and map values of message kind)
	enum     *encEnum // enum kinds
	key, val *encField
}

// encEnum holds an enum's value names, JSON-encoded with quotes.
type encEnum struct {
	min    int32
	dense  [][]byte // number min+i → name; nil: not a value
	sparse map[int32][]byte
}

func (e *encEnum) appendValue(dst []byte, n int32) []byte {
	if i := int64(n) - int64(e.min); i >= 0 && i < int64(len(e.dense)) && e.dense[i] != nil {
		return append(dst, e.dense[i]...)
	}
	if name, ok := e.sparse[n]; ok {
		return append(dst, name...)
	}
	return encAppendInt(dst, int64(n))
}

// lookup returns the index of the field numbered num, or -1.
func (m *encMsg) lookup(num protowire.Number) int {
	if num >= 0 && int(num) < len(m.small) {
		return int(m.small[num]) - 1
	}
	if i, ok := m.large[num]; ok {
		return i
	}
	return -1
}

type encCompiler struct {
	msgs map[protoreflect.FullName]*encMsg
}

func declined(name protoreflect.FullName, format string, args ...any) error {
	return &encDeclined{name: name, reason: fmt.Sprintf(format, args...)}
}

// message compiles md and the message types reachable from it; a type
// already being compiled (recursion) is shared by pointer.
func (c *encCompiler) message(md protoreflect.MessageDescriptor) (*encMsg, error) {
	if m := c.msgs[md.FullName()]; m != nil {
		return m, nil
	}
	m := &encMsg{md: md, noneofs: md.Oneofs().Len()}
	c.msgs[md.FullName()] = m
	if md.ExtensionRanges().Len() > 0 {
		return nil, declined(md.FullName(), "it has extension ranges (extensions and MessageSets are not rendered)")
	}
	fds := md.Fields()
	m.fields = make([]encField, fds.Len())
	var maxSmall protowire.Number
	for i := range fds.Len() {
		if n := fds.Get(i).Number(); n < 1024 && n > maxSmall {
			maxSmall = n
		}
	}
	m.small = make([]int16, maxSmall+1)
	for i := range fds.Len() {
		fd := fds.Get(i)
		f := &m.fields[i]
		if err := c.field(f, fd); err != nil {
			return nil, err
		}
		if fd.Number() <= maxSmall {
			m.small[fd.Number()] = int16(i + 1)
		} else {
			if m.large == nil {
				m.large = map[protowire.Number]int{}
			}
			m.large[fd.Number()] = i
		}
	}
	m.wkt = wktOf(md)
	if m.wkt == wktEmpty {
		m.wkt = wktNone // Empty renders as the plain message it is: {}
	}
	if m.wkt != wktNone && !encWKTShape(m) {
		return nil, declined(md.FullName(), "its fields are not those of the well-known type")
	}
	return m, nil
}

// field compiles fd into f.
func (c *encCompiler) field(f *encField, fd protoreflect.FieldDescriptor) error {
	if fd.Cardinality() == protoreflect.Required {
		return declined(fd.FullName(), "required fields are not rendered (protojson checks them)")
	}
	f.name = encAppendString(nil, fd.JSONName())
	f.name = append(f.name, ':')
	f.list, f.isMap = fd.IsList(), fd.IsMap()
	f.oneof = -1
	if od := fd.ContainingOneof(); od != nil {
		f.oneof = od.Index()
	} else {
		f.presence = fd.HasPresence()
	}
	if f.isMap {
		f.fd, f.kind, f.wt = fd, fd.Kind(), protowire.BytesType
		f.key, f.val = new(encField), new(encField)
		if err := c.elem(f.key, fd.MapKey()); err != nil {
			return err
		}
		return c.elem(f.val, fd.MapValue())
	}
	return c.elem(f, fd)
}

// elem compiles the kind-specific part of fd (a field, a map key or value).
func (c *encCompiler) elem(f *encField, fd protoreflect.FieldDescriptor) error {
	f.fd, f.kind = fd, fd.Kind()
	switch f.kind {
	case protoreflect.GroupKind:
		return declined(fd.FullName(), "groups (delimited encoding) are not rendered")
	case protoreflect.MessageKind:
		m, err := c.message(fd.Message())
		if err != nil {
			return err
		}
		f.msg, f.wt = m, protowire.BytesType
		return nil
	case protoreflect.StringKind, protoreflect.BytesKind:
		f.wt = protowire.BytesType
		f.utf8 = f.kind == protoreflect.StringKind && encEnforceUTF8(fd)
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		f.wt, f.packable = protowire.Fixed32Type, true
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		f.wt, f.packable = protowire.Fixed64Type, true
	case protoreflect.EnumKind:
		f.wt, f.packable = protowire.VarintType, true
		ed := fd.Enum()
		if ed.IsClosed() {
			return declined(fd.FullName(), "closed enum %s (unknown numbers are unknown fields) is not rendered", ed.FullName())
		}
		if ed.FullName() == "google.protobuf.NullValue" {
			f.null = true
		} else {
			f.enum = encCompileEnum(ed)
		}
	default:
		f.wt, f.packable = protowire.VarintType, true
	}
	// The default's JSON, rendered as a value of the field would be.
	var err error
	f.def, err = encDefault(f, encDefaultOf(fd))
	return err
}

// encDefaultOf is fd's default value (some descriptor implementations give
// none for proto3 fields: the zero value, or an enum's first value).
func encDefaultOf(fd protoreflect.FieldDescriptor) protoreflect.Value {
	if v := fd.Default(); v.IsValid() {
		return v
	}
	switch fd.Kind() {
	case protoreflect.EnumKind:
		if vals := fd.Enum().Values(); vals.Len() > 0 {
			return protoreflect.ValueOfEnum(vals.Get(0).Number())
		}
		return protoreflect.ValueOfEnum(0)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("")
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(nil)
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(false)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(0)
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(0)
	}
	return protoreflect.ValueOfInt64(0)
}

// encEnforceUTF8 reports whether proto.Unmarshal validates the UTF-8 of
// string field fd (as the protobuf runtime decides it).
func encEnforceUTF8(fd protoreflect.FieldDescriptor) bool {
	if fd.Syntax() == protoreflect.Editions {
		if fd, ok := fd.(interface{ EnforceUTF8() bool }); ok {
			return fd.EnforceUTF8()
		}
	}
	return fd.Syntax() == protoreflect.Proto3
}

func encCompileEnum(ed protoreflect.EnumDescriptor) *encEnum {
	vals := ed.Values()
	e := &encEnum{}
	lo, hi := int64(math.MaxInt32), int64(math.MinInt32)
	for i := range vals.Len() {
		n := int64(vals.Get(i).Number())
		lo, hi = min(lo, n), max(hi, n)
	}
	dense := vals.Len() > 0 && hi-lo < 1024
	if dense {
		e.min, e.dense = int32(lo), make([][]byte, hi-lo+1)
	} else {
		e.sparse = map[int32][]byte{}
	}
	for i := range vals.Len() {
		n := vals.Get(i).Number()
		// JSON names a number by its first value (aliases).
		name := encAppendString(nil, string(vals.ByNumber(n).Name()))
		if dense {
			e.dense[int64(n)-lo] = name
		} else {
			e.sparse[int32(n)] = name
		}
	}
	return e
}

// encDefault is the JSON of v as a value of the scalar or enum field f.
func encDefault(f *encField, v protoreflect.Value) ([]byte, error) {
	var r encRec
	var wire []byte
	switch f.kind {
	case protoreflect.BoolKind:
		if v.Bool() {
			r.v = 1
		}
	case protoreflect.EnumKind:
		r.v = uint64(int64(v.Enum()))
	case protoreflect.Int32Kind, protoreflect.Int64Kind:
		r.v = uint64(v.Int())
	case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		r.v = protowire.EncodeZigZag(v.Int())
	case protoreflect.Sfixed32Kind:
		r.v = uint64(uint32(int32(v.Int())))
	case protoreflect.Sfixed64Kind:
		r.v = uint64(v.Int())
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		r.v = v.Uint()
	case protoreflect.FloatKind:
		r.v = uint64(math.Float32bits(float32(v.Float())))
	case protoreflect.DoubleKind:
		r.v = math.Float64bits(v.Float())
	case protoreflect.StringKind:
		wire = []byte(v.String())
	case protoreflect.BytesKind:
		wire = v.Bytes()
	}
	r.end = len(wire)
	s := encState{wire: wire}
	return s.scalar(nil, f, r)
}

// encWKTShape reports whether m has the fields its well-known rule reads:
// the rules find them by number.
func encWKTShape(m *encMsg) bool {
	has := func(num protowire.Number, kind protoreflect.Kind, list bool) bool {
		i := m.lookup(num)
		return i >= 0 && m.fields[i].kind == kind && m.fields[i].list == list && !m.fields[i].isMap
	}
	switch m.wkt {
	case wktAny:
		return has(1, protoreflect.StringKind, false) && has(2, protoreflect.BytesKind, false)
	case wktTimestamp, wktDuration:
		return has(1, protoreflect.Int64Kind, false) && has(2, protoreflect.Int32Kind, false)
	case wktWrapper:
		return m.lookup(1) >= 0 && !m.fields[m.lookup(1)].list && m.fields[m.lookup(1)].msg == nil
	case wktStruct:
		i := m.lookup(1)
		return i >= 0 && m.fields[i].isMap && m.fields[i].val.msg != nil && m.fields[i].val.msg.md.FullName() == "google.protobuf.Value"
	case wktListValue:
		i := m.lookup(1)
		return i >= 0 && m.fields[i].list && m.fields[i].msg != nil && m.fields[i].msg.md.FullName() == "google.protobuf.Value"
	case wktValue:
		od := m.md.Oneofs().ByName("kind")
		if od == nil {
			return false
		}
		for n := protowire.Number(1); n <= 6; n++ {
			i := m.lookup(n)
			if i < 0 || m.fields[i].oneof != od.Index() {
				return false
			}
		}
		return has(2, protoreflect.DoubleKind, false)
	case wktFieldMask:
		return has(1, protoreflect.StringKind, true)
	}
	return true
}
