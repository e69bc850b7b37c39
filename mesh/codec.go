package mesh

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// bindingCodec is the gRPC codec for calls whose messages are dynamicpb
// messages built from reflected descriptors. It differs from grpc-go's
// default proto codec in two ways that matter for dynamic messages, which
// take protobuf-go's slow reflective paths:
//
//   - no proto.Size before Marshal: dynamic messages do not cache sizes, so
//     the default codec walks every request twice;
//   - AllowPartial: proto3 has no required fields, so the initialisation
//     check is a second walk that can find nothing (proto2 upstreams still
//     check their own required fields).
//
// The wire format is unchanged, so its name stays "proto".
type bindingCodec struct{}

var _ encoding.CodecV2 = bindingCodec{}

var (
	marshalOpts   = proto.MarshalOptions{AllowPartial: true}
	unmarshalOpts = proto.UnmarshalOptions{AllowPartial: true}
)

func (bindingCodec) Name() string { return "proto" }

func (bindingCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("mesh: cannot marshal %T: not a proto.Message", v)
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(512)
	out, err := marshalOpts.MarshalAppend((*buf)[:0], m)
	if err != nil {
		pool.Put(buf)
		return nil, err
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func (bindingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("mesh: cannot unmarshal into %T: not a proto.Message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return unmarshalOpts.Unmarshal(buf.ReadOnlyData(), m)
}
