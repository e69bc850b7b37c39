package wirejson

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The decoder is compiled once per request message type: a msgPlan per
// message type reachable from it (recursive types share their plan), with
// its fields' tags pre-encoded and a name table that finds a field by its
// JSON or proto name without converting the member name to a string.

// msgPlan is the compiled decoder of one message type.
type msgPlan struct {
	md     protoreflect.MessageDescriptor
	wkt    wktKind
	fields []fieldPlan
	names  nameTable
	// words is the size of the seen set of one object, in uint64s: a bit per
	// field, then a bit per oneof.
	words int
}

// fieldPlan is the compiled decoder of one field.
type fieldPlan struct {
	fd   protoreflect.FieldDescriptor
	name string // JSON name, for errors
	kind protoreflect.Kind
	// tag is the encoded tag of the field's records: length-delimited for
	// messages, strings, bytes, maps and packed lists.
	tag      []byte
	list     bool
	isMap    bool
	packed   bool
	presence bool // explicit presence: a zero value is written too
	// nullOK: JSON null is a value of the field (google.protobuf.Value,
	// google.protobuf.NullValue), not "unset".
	nullOK bool
	index  int // bit of the field in its message's seen set
	oneof  int // bit of its oneof in the seen set, or -1
	msg    *msgPlan
	enum   *nameTable // enum value names, indexes are numbers' positions
	enumNs []int32
	key    *fieldPlan // map entry key (number 1)
	val    *fieldPlan // map entry value (number 2)
}

// DeclinedError says why NewDecoder declined a message type.
type DeclinedError struct {
	Message protoreflect.FullName
	Reason  string
}

func (e *DeclinedError) Error() string {
	return "wirejson: " + string(e.Message) + ": " + e.Reason
}

type compiler struct {
	plans map[protoreflect.FullName]*msgPlan
}

func (c *compiler) message(md protoreflect.MessageDescriptor) (*msgPlan, error) {
	if p := c.plans[md.FullName()]; p != nil {
		return p, nil
	}
	p := &msgPlan{md: md, wkt: wktOf(md)}
	c.plans[md.FullName()] = p
	if p.wkt == wktAny {
		// Any objects are decoded by protojson (their payload type is only
		// known at run time); the plan needs no fields.
		return p, nil
	}
	decline := func(format string, args ...any) error {
		return &DeclinedError{Message: md.FullName(), Reason: fmt.Sprintf(format, args...)}
	}
	if md.ExtensionRanges().Len() > 0 {
		return nil, decline("declares extension ranges (extensions and message sets are not decoded)")
	}
	fields := md.Fields()
	oneofs := md.Oneofs()
	p.words = (fields.Len() + oneofs.Len() + 63) / 64
	p.fields = make([]fieldPlan, fields.Len())
	var names []tableName
	for i := range fields.Len() {
		fd := fields.Get(i)
		f := &p.fields[i]
		if err := c.field(f, fd, decline); err != nil {
			return nil, err
		}
		f.index = i
		f.oneof = -1
		if od := fd.ContainingOneof(); od != nil {
			f.oneof = fields.Len() + od.Index()
		}
		names = append(names, tableName{fd.JSONName(), int32(i)})
	}
	// protojson looks a member up by JSON name first, then by proto name;
	// a name both ways resolves to the JSON name's field.
	for i := range fields.Len() {
		names = append(names, tableName{fields.Get(i).TextName(), int32(i)})
	}
	p.names = newNameTable(names)
	if p.wkt != wktNone && !wktShapeOK(p) {
		return nil, decline("does not have the fields of the well-known type")
	}
	return p, nil
}

func msgOf(p *msgPlan, n protoreflect.FieldNumber) *msgPlan {
	for i := range p.fields {
		if p.fields[i].fd.Number() == n {
			return p.fields[i].msg
		}
	}
	return nil
}

// wktShapeOK checks a well-known type's descriptor has the fields its
// decoder writes (a descriptor set could define its own google.protobuf.*).
func wktShapeOK(p *msgPlan) bool {
	has := func(n protoreflect.FieldNumber, k protoreflect.Kind, list bool) bool {
		for i := range p.fields {
			if f := &p.fields[i]; f.fd.Number() == n {
				return f.kind == k && f.list == list
			}
		}
		return false
	}
	switch p.wkt {
	case wktTimestamp, wktDuration:
		return len(p.fields) == 2 && p.fields[0].fd.Number() == 1 && p.fields[1].fd.Number() == 2
	case wktWrapper:
		return len(p.fields) == 1 && p.fields[0].fd.Number() == 1 && !p.fields[0].list &&
			p.fields[0].kind != protoreflect.EnumKind && p.fields[0].kind != protoreflect.MessageKind
	case wktStruct:
		return len(p.fields) == 1 && p.fields[0].isMap && p.fields[0].key.kind == protoreflect.StringKind &&
			p.fields[0].val.msg != nil && p.fields[0].val.msg.wkt == wktValue
	case wktListValue:
		return len(p.fields) == 1 && p.fields[0].list && p.fields[0].msg != nil && p.fields[0].msg.wkt == wktValue
	case wktValue:
		return has(1, protoreflect.EnumKind, false) && has(2, protoreflect.DoubleKind, false) &&
			has(3, protoreflect.StringKind, false) && has(4, protoreflect.BoolKind, false) &&
			has(5, protoreflect.MessageKind, false) && has(6, protoreflect.MessageKind, false) &&
			msgOf(p, 5).wkt == wktStruct && msgOf(p, 6).wkt == wktListValue
	case wktFieldMask:
		return len(p.fields) == 1 && p.fields[0].fd.Number() == 1 && p.fields[0].list && p.fields[0].kind == protoreflect.StringKind
	}
	return true
}

func (c *compiler) field(f *fieldPlan, fd protoreflect.FieldDescriptor, decline func(string, ...any) error) error {
	f.fd = fd
	f.name = fd.JSONName()
	f.kind = fd.Kind()
	f.list = fd.IsList()
	f.isMap = fd.IsMap()
	f.presence = fd.HasPresence()
	switch f.kind {
	case protoreflect.GroupKind:
		return decline("field %s uses group (delimited) encoding", fd.Name())
	case protoreflect.MessageKind:
		f.nullOK = fd.Message().FullName() == "google.protobuf.Value"
	case protoreflect.EnumKind:
		ed := fd.Enum()
		if ed.IsClosed() {
			return decline("field %s has the closed enum %s", fd.Name(), ed.FullName())
		}
		f.nullOK = ed.FullName() == "google.protobuf.NullValue"
		vals := ed.Values()
		names := make([]tableName, vals.Len())
		f.enumNs = make([]int32, vals.Len())
		for i := range vals.Len() {
			names[i] = tableName{string(vals.Get(i).Name()), int32(i)}
			f.enumNs[i] = int32(vals.Get(i).Number())
		}
		t := newNameTable(names)
		f.enum = &t
	}
	if fd.Cardinality() == protoreflect.Required {
		return decline("field %s is required (protojson checks initialization)", fd.Name())
	}
	wt := wireType(f.kind)
	switch {
	case f.isMap:
		entry := fd.Message()
		f.key = &fieldPlan{}
		f.val = &fieldPlan{}
		if err := c.field(f.key, entry.Fields().ByNumber(1), decline); err != nil {
			return err
		}
		if err := c.field(f.val, entry.Fields().ByNumber(2), decline); err != nil {
			return err
		}
		f.key.presence, f.val.presence = true, true
		f.nullOK = false
		wt = protowire.BytesType
	case f.list && wt != protowire.BytesType:
		f.packed = true
		wt = protowire.BytesType
	}
	f.tag = protowire.AppendTag(nil, fd.Number(), wt)
	if f.kind == protoreflect.MessageKind && !f.isMap {
		mp, err := c.message(fd.Message())
		if err != nil {
			return err
		}
		f.msg = mp
	}
	return nil
}

func wireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	}
	return protowire.VarintType
}

// tableName is one name of a nameTable and what it resolves to.
type tableName struct {
	name string
	idx  int32
}

// nameTable is an open-addressed hash table from names to small ints, the
// first entry of a name winning. Lookups take the name as bytes and do not
// allocate.
type nameTable struct {
	mask  uint32
	slots []tableName // idx < 0: empty
}

func newNameTable(names []tableName) nameTable {
	size := 4
	for size < 2*len(names) {
		size *= 2
	}
	t := nameTable{mask: uint32(size - 1), slots: make([]tableName, size)}
	for i := range t.slots {
		t.slots[i].idx = -1
	}
	for _, n := range names {
		h := hashName([]byte(n.name)) & t.mask
		for {
			s := &t.slots[h]
			if s.idx < 0 {
				*s = n
				break
			}
			if s.name == n.name {
				break
			}
			h = (h + 1) & t.mask
		}
	}
	return t
}

// find returns the index name resolves to, or -1.
func (t *nameTable) find(name []byte) int32 {
	if len(t.slots) == 0 {
		return -1
	}
	h := hashName(name) & t.mask
	for {
		s := &t.slots[h]
		if s.idx < 0 {
			return -1
		}
		if s.name == string(name) {
			return s.idx
		}
		h = (h + 1) & t.mask
	}
}

// hashName is FNV-1a, mixed with the length.
func hashName(b []byte) uint32 {
	h := uint32(2166136261) ^ uint32(len(b))
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h ^ h>>15
}
