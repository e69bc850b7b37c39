package services

import (
	"bytes"
	"context"
	"fmt"
	"slices"
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

// seededProducts is how many products NewProducts starts with: enough for
// the largest page ListProducts returns.
const seededProducts = maxPageSize

const (
	defaultPageSize = 20
	maxPageSize     = 100
)

// products is the in-memory ProductService. mu guards every field below it.
type products struct {
	productsv1.UnimplementedProductServiceServer

	mu     sync.Mutex
	byID   map[string]*productsv1.Product
	ids    []string // insertion order, the order ListProducts uses
	nextID int
}

// NewProducts returns a products service seeded with p-1 … p-100; each
// product renders as about 1 KB of JSON, so the default page of
// ListProducts is about 20 KB. Each call returns an independent store.
func NewProducts() productsv1.ProductServiceServer {
	p := &products{byID: map[string]*productsv1.Product{}, nextID: seededProducts + 1}
	for i := 1; i <= seededProducts; i++ {
		id := fmt.Sprintf("p-%d", i)
		p.put(sampleProduct(id, i))
	}
	return p
}

// put stores prod, keeping the listing order of an id already present; the
// caller holds mu (or owns p).
func (p *products) put(prod *productsv1.Product) {
	if _, ok := p.byID[prod.GetId()]; !ok {
		p.ids = append(p.ids, prod.GetId())
	}
	p.byID[prod.GetId()] = prod
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

// ListProducts returns the first page_size products (default 20, at most
// 100) in creation order; with tags, only products carrying at least one of
// them.
func (p *products) ListProducts(_ context.Context, req *productsv1.ListProductsRequest) (*productsv1.ListProductsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Errorf(codes.InvalidArgument, "page_size must be >= 0, got %d", size)
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	tags := req.GetTags()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := &productsv1.ListProductsResponse{Products: make([]*productsv1.Product, 0, min(size, len(p.ids)))}
	for _, id := range p.ids {
		if len(out.Products) == size {
			break
		}
		prod := p.byID[id]
		if len(tags) > 0 && !slices.ContainsFunc(prod.GetTags(), func(t string) bool { return slices.Contains(tags, t) }) {
			continue
		}
		out.Products = append(out.Products, proto.Clone(prod).(*productsv1.Product))
	}
	return out, nil
}

// CreateProduct stores the product and echoes it with update_time set and,
// when it had none, a new id. A client-chosen id that exists is replaced, so
// the benchmark posting the same product over and over keeps the store
// bounded.
func (p *products) CreateProduct(_ context.Context, req *productsv1.CreateProductRequest) (*productsv1.Product, error) {
	if req.GetProduct() == nil {
		return nil, status.Error(codes.InvalidArgument, "product is required")
	}
	if req.GetProduct().GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "product.name is required")
	}
	prod := proto.Clone(req.GetProduct()).(*productsv1.Product)
	prod.UpdateTime = timestamppb.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for prod.Id == "" {
		// Skip ids a client already chose for itself.
		if id := fmt.Sprintf("p-%d", p.nextID); p.byID[id] == nil {
			prod.Id = id
		}
		p.nextID++
	}
	p.put(prod)
	return proto.Clone(prod).(*productsv1.Product), nil
}

// UpdateProduct replaces an existing product and sets its update_time.
func (p *products) UpdateProduct(_ context.Context, req *productsv1.UpdateProductRequest) (*productsv1.Product, error) {
	if req.GetProduct().GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "product.id is required")
	}
	prod := proto.Clone(req.GetProduct()).(*productsv1.Product)
	prod.UpdateTime = timestamppb.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.byID[prod.GetId()]; !ok {
		return nil, status.Errorf(codes.NotFound, "product %q not found", prod.GetId())
	}
	p.put(prod)
	return proto.Clone(prod).(*productsv1.Product), nil
}

// GetAsset, GetShelfBook and PublishAsset echo the bound path; the size is
// its length.
func (p *products) GetAsset(_ context.Context, req *productsv1.GetAssetRequest) (*productsv1.Asset, error) {
	return &productsv1.Asset{Path: req.GetPath(), Size: int64(len(req.GetPath()))}, nil
}

func (p *products) GetShelfBook(_ context.Context, req *productsv1.GetShelfBookRequest) (*productsv1.Asset, error) {
	return &productsv1.Asset{Path: req.GetName(), Size: int64(len(req.GetName()))}, nil
}

// GetRegionStock reports 7 in stock for any id, known or not.
func (p *products) GetRegionStock(_ context.Context, req *productsv1.GetProductRequest) (*productsv1.Stock, error) {
	return &productsv1.Stock{Id: req.GetId(), Quantity: 7}, nil
}

func (p *products) PublishAsset(_ context.Context, req *productsv1.GetAssetRequest) (*productsv1.Asset, error) {
	return &productsv1.Asset{Path: req.GetPath(), Size: int64(len(req.GetPath()))}, nil
}

// ImportProducts counts the non-blank lines of the body (one product each).
func (p *products) ImportProducts(_ context.Context, req *httpbody.HttpBody) (*productsv1.ImportProductsResponse, error) {
	n := 0
	for line := range bytes.SplitSeq(req.GetData(), []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			n++
		}
	}
	return &productsv1.ImportProductsResponse{Imported: int32(n), ContentType: req.GetContentType()}, nil
}
