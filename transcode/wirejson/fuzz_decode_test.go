package wirejson

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
)

// FuzzDecodeDifferential checks the decoder against protojson: (1) a random
// message of type allMessages()[idx], rendered by protojson with random
// options, decodes to the same message; (2) raw, as a JSON body of that
// type, is accepted by both or rejected by both, to proto.Equal messages.
func FuzzDecodeDifferential(f *testing.F) {
	hostile := []string{
		`{}`, `{"a":1}garbage`, `{"id":"x","id":"y"}`, `{"id":"\ud800"}`, `{"id":"\udc00"}`, "{\"id\":\"\xff\xfe\"}",
		`{"i32":1e2147483648}`, `{"i32":0.` + strings.Repeat("0", 1000) + `1e1001}`,
		`{"strStr":{"a":"1","a":"2"}}`, `{"maps":{"i32I32":{"1":1,"01":2}}}`,
		`{"any":{"@type":"type.googleapis.com/wirejson.kitchen.v1.Tree","left":{"name":"x"}}}`,
		`{"wkt":{"st":{"a":[{"b":null}]},"ts":"2020-02-29T12:00:00.5+02:00","dur":"-1.5s","mask":"aB.c"}}`,
		`{"foo":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`,
		// Large inputs as repetitions (see expand), so that the fuzzer's
		// mutations and minimization stay small.
		rep(13, "", `{"child":`, ""),
		rep(13, "", `{"left":`, `{}`) + strings.Repeat("}", 10000),
		rep(13, `{"val":`, "[", ""),
		rep(13, `{"val":`, "[", "") + strings.Repeat("]", 8192) + "}",
		rep(20, `{"i32":[`, "1,", "1]}"),
		rep(20, `{"nums":[`, "1,", "1]}"),
		rep(12, `{"i64":"`, "9", `"}`),
		rep(12, `{"db":1`, "0", `}`),
		rep(14, `{"s":"`, `\u00e9\n\ud83d\ude00`, `"}`),
		rep(14, `{"s":"`, `\ud800`, `"}`),
		rep(16, `{"strStr":{`, `"a":"b",`, `"c":"d"}}`),
		rep(10, `{"repeats":{"nested":[`, `{"leaf":{"name":"x"}},`, `{}]}}`),
	}
	for i, h := range hostile {
		f.Add(uint64(i), uint16(i*7), []byte(h))
	}
	for i := range 16 {
		f.Add(uint64(1000+i), uint16(i*13), []byte(`{"i32":1}`))
	}
	f.Fuzz(func(t *testing.T, seed uint64, idx uint16, raw []byte) {
		mds := allMessages(t)
		md := mds[int(idx)%len(mds)]
		r := rand.New(rand.NewPCG(seed, seed>>32^0x9e3779b97f4a7c15))
		res := testResolver(t)

		// (1) protojson's rendering of a random message.
		orig := genMessage(r, md, 1+r.IntN(4))
		mo := protojson.MarshalOptions{Resolver: res, UseProtoNames: r.IntN(2) == 0, EmitUnpopulated: r.IntN(2) == 0}
		if r.IntN(3) == 0 {
			mo.Multiline, mo.Indent = true, []string{"", " ", "\t"}[r.IntN(3)]
		}
		data, err := mo.Marshal(orig)
		if err != nil {
			t.Fatalf("protojson.Marshal: %v", err)
		}
		wire, err := decoderFor(t, md, false, 0).Append(nil, data)
		if err != nil {
			t.Fatalf("%s: rejected protojson's output %.300s: %v", md.FullName(), data, err)
		}
		got := dynamicpb.NewMessage(md)
		if err := wireUnmarshal(res).Unmarshal(wire, got); err != nil {
			t.Fatalf("%s: unmarshaling: %v", md.FullName(), err)
		}
		// The reference is protojson's own decoding of its output: the
		// original message, except where the JSON round trip changes it
		// (genMessage may set a google.protobuf.NullValue field to a number
		// other than 0, which protojson renders as null).
		ref := dynamicpb.NewMessage(md)
		if err := (protojson.UnmarshalOptions{Resolver: res}).Unmarshal(data, ref); err != nil {
			t.Fatalf("protojson.Unmarshal of its own output: %v", err)
		}
		want := proto.Message(orig)
		if !proto.Equal(ref, orig) {
			want = ref
		}
		if !proto.Equal(got, want) {
			t.Fatalf("%s: decoded %.300s\n  to %v\n  want %v", md.FullName(), data, got, want)
		}
		// The same output with MaxDepth and DiscardUnknown set differently.
		depth := []int{1, 2, 3, 64}[r.IntN(4)]
		decDiff(t, md, data, r.IntN(2) == 0, depth)

		// (2) raw as a body.
		if len(raw) > 64<<10 {
			return // large inputs come from expand
		}
		raw, expanded := expand(raw)
		decDiff(t, md, raw, seed&1 == 1, []int{0, 1, 2, 5, 64}[seed>>1%5])
		// And raw spliced into protojson's rendering, for inputs that get
		// past the first member.
		if i := bytes.IndexByte(data, ':'); i > 0 && !expanded {
			spliced := append(append(append([]byte{}, data[:i+1]...), raw...), data[i+1:]...)
			decDiff(t, md, spliced, seed&2 == 2, 0)
		}
	})
}

// rep is an input of expand: prefix, unit repeated 1<<k times, suffix.
func rep(k byte, prefix, unit, suffix string) string {
	return "\x00" + string([]byte{k}) + prefix + "\x00" + unit + "\x00" + suffix
}

// expand turns "\x00" k prefix "\x00" unit "\x00" suffix into prefix, unit
// repeated 1<<k times (at most 2 MB), suffix. Other inputs are returned as
// they are.
func expand(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != 0 {
		return raw, false
	}
	parts := bytes.SplitN(raw[2:], []byte{0}, 3)
	if len(parts) != 3 || len(parts[1]) == 0 {
		return raw, false
	}
	n := 1 << (raw[1] % 22)
	if n*len(parts[1]) > 2<<20 {
		n = (2 << 20) / len(parts[1])
	}
	out := make([]byte, 0, len(parts[0])+n*len(parts[1])+len(parts[2]))
	out = append(out, parts[0]...)
	out = append(out, bytes.Repeat(parts[1], n)...)
	return append(out, parts[2]...), true
}
