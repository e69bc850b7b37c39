package wirejson

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// encodeFixture is every message type of the fixture with its compiled
// encoder.
type encodeFixture struct {
	msgs []protoreflect.MessageDescriptor
	encs []*Encoder
	res  resolver
}

func newEncodeFixture(tb testing.TB) encodeFixture {
	tb.Helper()
	fx := encodeFixture{msgs: allMessages(tb), res: testResolver(tb)}
	for _, md := range fx.msgs {
		enc, err := NewEncoder(md, EncodeOptions{Resolver: fx.res})
		if err != nil {
			tb.Fatalf("NewEncoder(%s): %v", md.FullName(), err)
		}
		fx.encs = append(fx.encs, enc)
	}
	return fx
}

// FuzzEncodeDifferential checks the encoder against protojson: (1) on a
// random message of type allMessages()[idx] generated from seed, marshaled
// and sometimes scrambled (records interleaved, packed lists split, messages
// split into records that merge); (2) on raw as wire bytes of that type,
// where proto.Unmarshal + protojson and the encoder must agree on failing,
// and on the JSON when both succeed.
func FuzzEncodeDifferential(f *testing.F) {
	fx := newEncodeFixture(f)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range 24 {
		idx := uint16(r.IntN(len(fx.msgs)))
		raw, err := proto.Marshal(genMessage(r, fx.msgs[idx], 3))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint64(i), idx, raw)
	}
	f.Add(uint64(0), uint16(0), []byte{})
	f.Add(uint64(1), uint16(1), []byte{0x08, 0x96, 0x01})
	f.Add(uint64(2), uint16(2), []byte{0x0a, 0x02, 0x08})
	f.Fuzz(func(t *testing.T, seed uint64, idx uint16, raw []byte) {
		i := int(idx) % len(fx.msgs)
		md, enc := fx.msgs[i], fx.encs[i]

		// (1) A generated message.
		r := rand.New(rand.NewPCG(seed, seed>>32|1))
		m := genMessage(r, md, 1+r.IntN(4))
		want, err := marshalReference(m, fx.res)
		if err != nil {
			t.Fatalf("%s: protojson: %v", md.FullName(), err)
		}
		wire, err := proto.MarshalOptions{Deterministic: r.IntN(2) == 0}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if r.IntN(2) == 0 {
			wire = scramble(r, md, wire)
		}
		got, err := enc.Append(nil, wire)
		if err != nil {
			t.Fatalf("%s: wire %x: %v\nwant %s", md.FullName(), wire, err, want)
		}
		assertSameJSON(t, got, want)

		// (2) Raw wire bytes.
		dm := dynamicpb.NewMessage(md)
		var refErr error
		want = nil
		panicked := false
		if panicked, refErr = unmarshalReference(raw, dm); refErr == nil {
			want, refErr = marshalReference(dm, fx.res)
		}
		got, err = enc.Append(nil, raw)
		switch {
		case panicked:
			// protobuf-go cannot judge this input (its dynamic-message
			// decoder panics on it): the encoder must not panic, whatever
			// it answers.
		case (err == nil) != (refErr == nil):
			t.Fatalf("%s: wire %x: encoder error %v, reference error %v\ngot  %s\nwant %s", md.FullName(), raw, err, refErr, got, want)
		case err == nil:
			assertSameJSON(t, got, want)
		}
	})
}

// unmarshalReference is proto.Unmarshal into dm, reporting a panic: on some
// malformed map entries inside nested messages, protobuf-go's decoder of
// dynamic messages panics ("type mismatch: cannot convert nil to map key";
// testdata/fuzz/FuzzEncodeDifferential/ba908e9d6ad32f42 is one).
func unmarshalReference(raw []byte, dm *dynamicpb.Message) (panicked bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			panicked, err = true, fmt.Errorf("proto.Unmarshal panicked: %v", r)
		}
	}()
	return false, proto.Unmarshal(raw, dm)
}

// scramble rewrites the wire bytes of a message of type md without changing
// the message: the records of different fields interleave at random
// (records of one field keep their order), packed lists are split into
// packed and unpacked records, and messages (at any depth) are split into
// several records, which merge.
func scramble(r *rand.Rand, md protoreflect.MessageDescriptor, wire []byte) []byte {
	type record struct {
		num protowire.Number
		b   []byte
	}
	var byNum [][]record
	index := map[protowire.Number]int{}
	add := func(num protowire.Number, b []byte) {
		i, ok := index[num]
		if !ok {
			i = len(byNum)
			index[num] = i
			byNum = append(byNum, nil)
		}
		byNum[i] = append(byNum[i], record{num, b})
	}
	for len(wire) > 0 {
		num, wt, n := protowire.ConsumeTag(wire)
		if n < 0 {
			return wire
		}
		m := protowire.ConsumeFieldValue(num, wt, wire[n:])
		if m < 0 {
			return wire
		}
		rec := wire[:n+m]
		wire = wire[n+m:]
		fd := md.Fields().ByNumber(num)
		if fd != nil && r.IntN(6) == 0 {
			add(num, noise(r, md, fd))
		}
		if fd == nil || wt != protowire.BytesType {
			add(num, rec)
			continue
		}
		payload, _ := protowire.ConsumeBytes(rec[n:])
		switch {
		case fd.IsList() && fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.StringKind && fd.Kind() != protoreflect.BytesKind:
			// A packed list: elements in runs, each packed or not.
			elemType := protowire.VarintType
			switch fd.Kind() {
			case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
				elemType = protowire.Fixed32Type
			case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
				elemType = protowire.Fixed64Type
			}
			var run []byte
			flush := func() {
				if len(run) > 0 {
					b := protowire.AppendTag(nil, num, protowire.BytesType)
					add(num, protowire.AppendBytes(b, run))
					run = nil
				}
			}
			for len(payload) > 0 {
				k := protowire.ConsumeFieldValue(num, elemType, payload)
				if k < 0 {
					return wire
				}
				elem := payload[:k]
				payload = payload[k:]
				switch r.IntN(3) {
				case 0:
					flush()
					add(num, append(protowire.AppendTag(nil, num, elemType), elem...))
				case 1:
					flush()
					fallthrough
				default:
					run = append(run, elem...)
				}
			}
			flush()
		case fd.Kind() == protoreflect.MessageKind && !fd.IsMap():
			inner := scramble(r, fd.Message(), payload)
			if fd.IsList() || r.IntN(2) == 0 {
				add(num, protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), inner))
				continue
			}
			// Split a singular message in two records at a record boundary.
			cut := 0
			for rest := inner; len(rest) > 0; {
				n1, wt1, k := protowire.ConsumeTag(rest)
				k2 := protowire.ConsumeFieldValue(n1, wt1, rest[k:])
				if k < 0 || k2 < 0 {
					break
				}
				rest = rest[k+k2:]
				if r.IntN(2) == 0 {
					cut = len(inner) - len(rest)
				}
			}
			for _, part := range [][]byte{inner[:cut], inner[cut:]} {
				add(num, protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), part))
			}
		default:
			add(num, rec)
		}
	}
	if r.IntN(4) == 0 {
		add(0, noise(r, md, nil))
	}
	var out []byte
	for len(byNum) > 0 {
		i := r.IntN(len(byNum))
		out = append(out, byNum[i][0].b...)
		if byNum[i] = byNum[i][1:]; len(byNum[i]) == 0 {
			byNum = append(byNum[:i], byNum[i+1:]...)
		}
	}
	return out
}

// noise is a record that does not change a message of type md when it comes
// before the records of field fd: an unknown field, fd's number with another
// wire type, or a value that a later record of fd replaces (for a oneof
// member, any member's value).
func noise(r *rand.Rand, md protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor) []byte {
	if fd != nil && !fd.IsList() && !fd.IsMap() && r.IntN(2) == 0 {
		target := fd
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			target = od.Fields().Get(r.IntN(od.Fields().Len()))
		}
		if target != fd || fd.Kind() != protoreflect.MessageKind {
			m := dynamicpb.NewMessage(md)
			genField(r, m, target, 2)
			if m.Has(target) || target.ContainingOneof() != nil {
				b, err := proto.Marshal(m)
				if err == nil {
					return b
				}
			}
		}
	}
	num := protowire.Number(1 + r.IntN(3000))
	if fd != nil && r.IntN(2) == 0 {
		num = fd.Number() // with a wire type it does not take
	} else if md.Fields().ByNumber(num) != nil {
		num = 536870911 - protowire.Number(r.IntN(100))
		if md.Fields().ByNumber(num) != nil {
			return nil
		}
	}
	wt := []protowire.Type{protowire.VarintType, protowire.Fixed32Type, protowire.Fixed64Type, protowire.StartGroupType}[r.IntN(4)]
	if fd != nil && fd.Number() == num && wt == ownWireType(fd) {
		return nil
	}
	b := protowire.AppendTag(nil, num, wt)
	switch wt {
	case protowire.VarintType:
		return protowire.AppendVarint(b, r.Uint64()>>r.IntN(64))
	case protowire.Fixed32Type:
		return protowire.AppendFixed32(b, r.Uint32())
	case protowire.Fixed64Type:
		return protowire.AppendFixed64(b, r.Uint64())
	}
	// A group: start, a varint, end.
	b = protowire.AppendTag(b[:0], num, protowire.StartGroupType)
	b = protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.VarintType), 1)
	return protowire.AppendTag(b, num, protowire.EndGroupType)
}

// ownWireType is the wire type of one value of fd.
func ownWireType(fd protoreflect.FieldDescriptor) protowire.Type {
	if fd.IsMap() {
		return protowire.BytesType
	}
	switch fd.Kind() {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	}
	return protowire.VarintType
}
