package chain

import (
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// countingPool counts the buffers given back.
type countingPool struct {
	mem.BufferPool
	put int
}

func (p *countingPool) Put(b *[]byte) { p.put++; p.BufferPool.Put(b) }

func TestPayloadWireAndMessage(t *testing.T) {
	wire, _ := proto.Marshal(wrapperspb.String("hello"))
	typ := wrapperspb.String("").ProtoReflect().Type()

	p := WirePayload(typ, wire)
	m, err := p.Message()
	if err != nil || m.(*wrapperspb.StringValue).GetValue() != "hello" {
		t.Fatalf("decoded %v, %v", m, err)
	}
	if got, _ := p.Wire(); string(got) != string(wire) {
		t.Fatal("the wire bytes changed once decoded")
	}

	q := MessagePayload(wrapperspb.String("hello"))
	if got, err := q.Wire(); err != nil || string(got) != string(wire) {
		t.Fatalf("marshalled %x, %v; want %x", got, err, wire)
	}
}

func TestPayloadRelease(t *testing.T) {
	// Buffers below gRPC's pooling threshold (1 KiB) are not pooled.
	long := strings.Repeat("pooled ", 300)
	wire, _ := proto.Marshal(wrapperspb.String(long))
	typ := wrapperspb.String("").ProtoReflect().Type()
	pool := &countingPool{BufferPool: mem.NewTieredBufferPool(64)}

	p := EmptyPayload(typ)
	buf := pool.Get(len(wire))
	copy(*buf, wire)
	p.SetBuffer(mem.NewBuffer(buf, pool))
	if got, err := p.Wire(); err != nil || string(got) != string(wire) {
		t.Fatalf("wire %x, %v", got, err)
	}
	p.Release()
	p.Release() // twice is harmless
	if pool.put != 1 {
		t.Fatalf("buffer returned %d times, want 1", pool.put)
	}
	if _, err := p.Wire(); err == nil {
		t.Fatal("a released payload still hands out its (freed) bytes")
	}
	if _, err := p.Message(); err == nil {
		t.Fatal("a released payload still decodes its (freed) bytes")
	}

	// A message decoded before the release holds copies: it stays.
	buf = pool.Get(len(wire))
	copy(*buf, wire)
	p = EmptyPayload(typ)
	p.SetBuffer(mem.NewBuffer(buf, pool))
	if _, err := p.Message(); err != nil {
		t.Fatal(err)
	}
	p.Release()
	if pool.put != 2 {
		t.Fatalf("buffers returned %d times, want 2", pool.put)
	}
	if m, err := p.Message(); err != nil || m.(*wrapperspb.StringValue).GetValue() != long {
		t.Fatalf("after release: %v, %v", m, err)
	}
	if got, err := p.Wire(); err != nil || string(got) != string(wire) {
		t.Fatalf("after release, re-marshalled %x, %v", got, err)
	}
	var nilPayload *Payload
	nilPayload.Release()
}

// TestUnmarshalRecovers: a panic in protobuf-go's decoder (it panics on
// some malformed map entries in dynamic messages; transcode/wirejson's fuzz
// corpus keeps one) is an error, not a crash. A read-only message makes it
// panic here.
func TestUnmarshalRecovers(t *testing.T) {
	wire, _ := proto.Marshal(wrapperspb.String("x"))
	readOnly := (*wrapperspb.StringValue)(nil) // protobuf-go panics writing into it
	err := unmarshal(wire, readOnly)
	if err == nil || !strings.Contains(err.Error(), "malformed message") {
		t.Fatalf("got %v, want the panic as an error", err)
	}
}
