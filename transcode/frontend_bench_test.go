package transcode_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/portico-dev/portico/policies"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
	"github.com/portico-dev/portico/transcode"
)

// BenchmarkFrontendPruning renders one ~1 KB product answer through the
// GetProduct binding of two frontends: web sees every field, the partner
// (include mode) four of twelve. The partner's view prunes on the wire:
// the fields it does not see are unknown to its encoder and skipped, with
// no per-request copy. Reported: ns per KB of the upstream's answer.
func BenchmarkFrontendPruning(b *testing.B) {
	sd := productsv1.File_examples_products_v1_products_proto.Services().ByName("ProductService")
	product := &productsv1.Product{
		Id: "p-1", Name: "Example product 1", PriceCents: 1037, Currency: "EUR", Stock: 3, Rating: 4.25, Available: true,
		Description: strings.Repeat("A sturdy example item. ", 26), Tags: []string{"example", "demo", "catalog"},
		Attributes: map[string]string{"color": "blue", "size": "M", "origin": "PT"}, UpdateTime: timestamppb.Now(),
		Dimensions: []*productsv1.Dimension{{Name: "width", Value: 10.5, Unit: "cm"}, {Name: "height", Value: 20, Unit: "cm"}},
	}
	wire, err := proto.Marshal(product)
	if err != nil {
		b.Fatal(err)
	}
	for _, fe := range []*policies.Audience{{Frontend: "web"}, {Frontend: "partner", Include: true}} {
		b.Run(fe.Frontend, func(b *testing.B) {
			view, err := policies.View(sd, fe)
			if err != nil {
				b.Fatal(err)
			}
			methods, err := transcode.NewCompiler(transcode.DefaultConfig()).CompileService(view, nil)
			if err != nil {
				b.Fatal(err)
			}
			var codec transcode.Codec
			for _, m := range methods {
				if m.Desc.Name() == "GetProduct" {
					codec = m.Bindings[0].Codec()
				}
			}
			resp := codec.NewResponse()
			resp.SetWire(wire)
			var buf []byte
			b.ReportAllocs()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				if buf, _, err = codec.EncodeResponse(buf[:0], resp); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(float64(len(wire))/1024), "ns/KB")
			b.ReportMetric(float64(len(buf)), "out-bytes")
		})
	}
}
