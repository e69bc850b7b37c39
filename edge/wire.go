package edge

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	"github.com/portico-dev/portico/policies/chain"
)

// wireCodec is the gRPC codec of the upstream calls: a chain.Payload goes
// out as the wire bytes the transcoder wrote and comes back as the bytes
// the upstream sent, so no message is built on the way unless a stage
// asks for one. Anything else is left to gRPC's proto codec. Its name is
// "proto": the content-subtype on the wire does not change.
type wireCodec struct{}

var (
	protoCodec = encoding.GetCodecV2(proto.Name)
	// callWire makes a call use wireCodec.
	callWire = grpc.ForceCodecV2(wireCodec{})
)

func (wireCodec) Name() string { return proto.Name }

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	p, ok := v.(*chain.Payload)
	if !ok {
		return protoCodec.Marshal(v)
	}
	b, err := p.Wire()
	if err != nil {
		return nil, fmt.Errorf("encoding the upstream request: %w", err)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*chain.Payload)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	// The bytes stay in a pooled buffer until the answer is rendered
	// (the writer releases the payload).
	p.SetBuffer(data.MaterializeToBuffer(mem.DefaultBufferPool()))
	return nil
}
