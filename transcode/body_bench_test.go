package transcode

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// repeatedScalarBody is a JSON body of n int64 elements, about 2n bytes.
func repeatedScalarBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"nums":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('1')
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// BenchmarkDecodeRepeatedScalarBody decodes a 2 MB body of one million
// repeated int64 elements (the limit on repeated elements raised so that it
// is decoded): the figure to watch is MB/s, the decoder's cost per byte.
func BenchmarkDecodeRepeatedScalarBody(b *testing.B) {
	cfg := DefaultConfig()
	cfg.MaxRepeatedElements = 2 << 20
	r := kitchenRouter(b, cfg)
	body := repeatedScalarBody(1 << 20)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/sinks", bytes.NewReader(body))
		bd, vars := match(b, r, req)
		if err := wireOf(bd.Codec(), req, vars); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRejectRepeatedScalarBody is the same body under the default
// limit: the cost of refusing it.
func BenchmarkRejectRepeatedScalarBody(b *testing.B) {
	r := kitchenRouter(b, DefaultConfig())
	body := repeatedScalarBody(1 << 20)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/sinks", bytes.NewReader(body))
		bd, vars := match(b, r, req)
		if err := wireOf(bd.Codec(), req, vars); err == nil || !strings.Contains(err.Error(), "nums") {
			b.Fatalf("want an error naming nums, got %v", err)
		}
	}
}

// BenchmarkScanBody is the pre-scan alone over the same 2 MB body, under
// limits it stays below: as requests see it (the byte counts clear it) and
// the schema walk that bodies near a limit get.
func BenchmarkScanBody(b *testing.B) {
	md := parseService(b, kitchenProto, "kitchen.v1.Kitchen").Methods().ByName("Echo").Input()
	body := repeatedScalarBody(1 << 20)
	for _, bc := range []struct {
		name string
		scan func([]byte, protoreflect.MessageDescriptor, protoreflect.FieldDescriptor, int, int) error
	}{{"scan", scanBody}, {"walk", walkBody}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.scan(body, md, nil, 64, 2<<20); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
