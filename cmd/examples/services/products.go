package services

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
)

type products struct {
	productsv1.UnimplementedProductServiceServer
	mu     sync.Mutex
	byID   map[string]*productsv1.Product
	nextID int
}

// NewProducts returns a products service seeded with p-1 … p-100; each
// product renders as about 1 KB of JSON.
func NewProducts() productsv1.ProductServiceServer {
	p := &products{byID: map[string]*productsv1.Product{}, nextID: 101}
	for i := 1; i <= 100; i++ {
		id := fmt.Sprintf("p-%d", i)
		p.byID[id] = sampleProduct(id, i)
	}
	return p
}

// sampleProduct is deterministic: the same id always gives the same bytes.
func sampleProduct(id string, n int) *productsv1.Product {
	desc := strings.Repeat(fmt.Sprintf("Product %s is a sturdy, well-made example item. ", id), 20)[:600]
	return &productsv1.Product{
		Id: id, Name: fmt.Sprintf("Example product %d", n), Description: desc,
		PriceCents: int64(1000 + n*37), Currency: "EUR",
		Tags:       []string{"example", "demo", "catalog", fmt.Sprintf("batch-%d", n%7), "portico"},
		Attributes: map[string]string{"color": "blue", "size": "M", "material": "cotton", "origin": "PT", "warranty": "2y", "sku": "sku-" + id},
		UpdateTime: timestamppb.New(time.Date(2024, 1, 1, 0, 0, n, 0, time.UTC)),
		Stock:      int32(n * 3), Rating: 4.25, Available: n%5 != 0,
		Dimensions: []*productsv1.Dimension{{Name: "width", Value: 10.5, Unit: "cm"}, {Name: "height", Value: 20, Unit: "cm"}, {Name: "weight", Value: 0.35, Unit: "kg"}},
	}
}

func (p *products) GetProduct(_ context.Context, req *productsv1.GetProductRequest) (*productsv1.Product, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prod, ok := p.byID[req.GetId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "product %q not found", req.GetId())
	}
	return proto.Clone(prod).(*productsv1.Product), nil
}

func (p *products) ListProducts(_ context.Context, req *productsv1.ListProductsRequest) (*productsv1.ListProductsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Error(codes.InvalidArgument, "page_size must be >= 0")
	case size == 0:
		size = 20
	case size > 100:
		size = 100
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := &productsv1.ListProductsResponse{}
	for i := 1; len(out.Products) < size && i < p.nextID; i++ {
		prod, ok := p.byID[fmt.Sprintf("p-%d", i)]
		if !ok {
			continue
		}
		out.Products = append(out.Products, proto.Clone(prod).(*productsv1.Product))
	}
	return out, nil
}

func (p *products) CreateProduct(_ context.Context, req *productsv1.CreateProductRequest) (*productsv1.Product, error) {
	in := req.GetProduct()
	if in == nil || in.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "product.name is required")
	}
	prod := proto.Clone(in).(*productsv1.Product)
	prod.UpdateTime = timestamppb.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if prod.Id == "" {
		prod.Id = fmt.Sprintf("p-%d", p.nextID)
		p.nextID++
	}
	// The benchmark posts the same product over and over: keep the store
	// bounded by not remembering products created with a client-chosen id.
	if strings.HasPrefix(prod.Id, "p-") {
		p.byID[prod.Id] = prod
	}
	return proto.Clone(prod).(*productsv1.Product), nil
}

func (p *products) UpdateProduct(_ context.Context, req *productsv1.UpdateProductRequest) (*productsv1.Product, error) {
	in := req.GetProduct()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.byID[in.GetId()]; !ok {
		return nil, status.Errorf(codes.NotFound, "product %q not found", in.GetId())
	}
	prod := proto.Clone(in).(*productsv1.Product)
	prod.UpdateTime = timestamppb.Now()
	p.byID[prod.Id] = prod
	return proto.Clone(prod).(*productsv1.Product), nil
}

func (p *products) GetAsset(_ context.Context, req *productsv1.GetAssetRequest) (*productsv1.Asset, error) {
	return &productsv1.Asset{Path: req.GetPath(), Size: int64(len(req.GetPath()))}, nil
}

func (p *products) GetShelfBook(_ context.Context, req *productsv1.GetShelfBookRequest) (*productsv1.Asset, error) {
	return &productsv1.Asset{Path: req.GetName(), Size: int64(len(req.GetName()))}, nil
}

func (p *products) GetRegionStock(_ context.Context, req *productsv1.GetProductRequest) (*productsv1.Stock, error) {
	return &productsv1.Stock{Id: req.GetId(), Quantity: 7}, nil
}

func (p *products) PublishAsset(_ context.Context, req *productsv1.GetAssetRequest) (*productsv1.Asset, error) {
	return &productsv1.Asset{Path: req.GetPath(), Size: int64(len(req.GetPath()))}, nil
}

func (p *products) ImportProducts(_ context.Context, req *httpbody.HttpBody) (*productsv1.ImportProductsResponse, error) {
	n := 0
	for line := range bytes.SplitSeq(req.GetData(), []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			n++
		}
	}
	return &productsv1.ImportProductsResponse{Imported: int32(n), ContentType: req.GetContentType()}, nil
}
