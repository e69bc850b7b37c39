package services

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ordersv1 "github.com/portico-dev/portico/protos/examples/orders/v1"
)

// orders is the in-memory OrderService. mu guards every field below it.
type orders struct {
	ordersv1.UnimplementedOrderServiceServer

	mu     sync.Mutex
	byID   map[string]*ordersv1.Order
	nextID int
}

// NewOrders returns an orders service seeded with order o-1001: open, owned
// by user "alice", two line items. Each call returns an independent store.
func NewOrders() ordersv1.OrderServiceServer {
	o := &orders{byID: map[string]*ordersv1.Order{}, nextID: 1002}
	o.byID["o-1001"] = &ordersv1.Order{
		OrderId: "o-1001", UserId: "alice", Status: ordersv1.OrderStatus_ORDER_STATUS_OPEN,
		Items: []*ordersv1.LineItem{
			{Sku: "sku-1", Quantity: 2, UnitPriceCents: 1250},
			{Sku: "sku-2", Quantity: 1, UnitPriceCents: 499},
		},
		TotalCents: 2999,
		CreateTime: timestamppb.New(time.Date(2024, 5, 1, 9, 30, 0, 0, time.UTC)),
		Tags:       map[string]int32{"priority": 1},
	}
	return o
}

func total(items []*ordersv1.LineItem) int64 {
	var t int64
	for _, it := range items {
		t += int64(it.GetQuantity()) * it.GetUnitPriceCents()
	}
	return t
}

func (o *orders) get(id string) (*ordersv1.Order, error) {
	ord, ok := o.byID[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "order %q not found", id)
	}
	return ord, nil
}

func (o *orders) CreateOrder(_ context.Context, req *ordersv1.CreateOrderRequest) (*ordersv1.Order, error) {
	if req.GetUserId() == "" {
		return nil, status.Error(codes.InvalidArgument, "user_id is required")
	}
	if len(req.GetItems()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "items must not be empty")
	}
	for i, it := range req.GetItems() {
		if it.GetQuantity() <= 0 {
			return nil, status.Errorf(codes.InvalidArgument, "items[%d].quantity must be > 0", i)
		}
		if it.GetUnitPriceCents() < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "items[%d].unit_price_cents must be >= 0", i)
		}
	}
	// Stored below: keep no references into the request.
	req = proto.Clone(req).(*ordersv1.CreateOrderRequest)
	o.mu.Lock()
	defer o.mu.Unlock()
	id := fmt.Sprintf("o-%d", o.nextID)
	o.nextID++
	ord := &ordersv1.Order{
		OrderId: id, UserId: req.GetUserId(), Items: req.GetItems(), Status: ordersv1.OrderStatus_ORDER_STATUS_OPEN,
		TotalCents: total(req.GetItems()), CreateTime: timestamppb.Now(), Tags: req.GetTags(),
	}
	o.byID[id] = ord
	return proto.Clone(ord).(*ordersv1.Order), nil
}

// GetOrder sets the response header x-example-service and the trailer
// x-example-trailer so that metadata forwarding can be observed. With
// user_id set, another user's order is NotFound.
func (o *orders) GetOrder(ctx context.Context, req *ordersv1.GetOrderRequest) (*ordersv1.Order, error) {
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-example-service", "orders"))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-example-trailer", "done"))
	o.mu.Lock()
	defer o.mu.Unlock()
	ord, err := o.get(req.GetOrderId())
	if err != nil {
		return nil, err
	}
	if req.GetUserId() != "" && req.GetUserId() != ord.GetUserId() {
		return nil, status.Errorf(codes.NotFound, "order %q not found for user %q", req.GetOrderId(), req.GetUserId())
	}
	return proto.Clone(ord).(*ordersv1.Order), nil
}

// ListOrders returns orders in id order; every set filter must match (skus:
// at least one item with one of the skus), and limit caps the result.
func (o *orders) ListOrders(_ context.Context, req *ordersv1.ListOrdersRequest) (*ordersv1.ListOrdersResponse, error) {
	if req.GetLimit() != nil && req.GetLimit().GetValue() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "limit must be >= 0, got %d", req.GetLimit().GetValue())
	}
	if req.GetMaxAge() != nil && req.GetMaxAge().AsDuration() < 0 {
		return nil, status.Error(codes.InvalidArgument, "max_age must not be negative")
	}
	if req.GetLimit() != nil && req.GetLimit().GetValue() == 0 {
		return &ordersv1.ListOrdersResponse{}, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	ids := slices.Sorted(maps.Keys(o.byID))
	now := time.Now()
	out := &ordersv1.ListOrdersResponse{}
	f := req.GetFilter()
	for _, id := range ids {
		ord := o.byID[id]
		switch {
		case f.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_UNSPECIFIED && ord.GetStatus() != f.GetStatus(),
			ord.GetTotalCents() < f.GetMinTotalCents(),
			req.GetUserId() != "" && ord.GetUserId() != req.GetUserId(),
			req.GetMaxAge() != nil && now.Sub(ord.GetCreateTime().AsTime()) > req.GetMaxAge().AsDuration(),
			len(f.GetSkus()) > 0 && !slices.ContainsFunc(ord.GetItems(), func(it *ordersv1.LineItem) bool { return slices.Contains(f.GetSkus(), it.GetSku()) }):
			continue
		}
		out.Orders = append(out.Orders, proto.Clone(ord).(*ordersv1.Order))
		if req.GetLimit() != nil && len(out.Orders) >= int(req.GetLimit().GetValue()) {
			break
		}
	}
	return out, nil
}

func (o *orders) CancelOrder(_ context.Context, req *ordersv1.CancelOrderRequest) (*ordersv1.Order, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ord, err := o.get(req.GetOrderId())
	if err != nil {
		return nil, err
	}
	if ord.GetStatus() == ordersv1.OrderStatus_ORDER_STATUS_CANCELLED {
		return nil, status.Errorf(codes.FailedPrecondition, "order %q is already cancelled", ord.GetOrderId())
	}
	ord.Status, ord.CancelReason = ordersv1.OrderStatus_ORDER_STATUS_CANCELLED, req.GetReason()
	return proto.Clone(ord).(*ordersv1.Order), nil
}

// GetOrderStatus returns the whole order; the HTTP binding picks the status.
func (o *orders) GetOrderStatus(ctx context.Context, req *ordersv1.GetOrderRequest) (*ordersv1.Order, error) {
	return o.GetOrder(ctx, req)
}

func (o *orders) PurgeOrder(_ context.Context, req *ordersv1.GetOrderRequest) (*emptypb.Empty, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, err := o.get(req.GetOrderId()); err != nil {
		return nil, err
	}
	delete(o.byID, req.GetOrderId())
	return &emptypb.Empty{}, nil
}

// AddNote appends the note to the order and echoes it back untouched.
func (o *orders) AddNote(_ context.Context, req *ordersv1.AddNoteRequest) (*ordersv1.Note, error) {
	if req.GetNote() == nil {
		return nil, status.Error(codes.InvalidArgument, "note is required")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	ord, err := o.get(req.GetOrderId())
	if err != nil {
		return nil, err
	}
	ord.Notes = append(ord.Notes, proto.Clone(req.GetNote()).(*ordersv1.Note))
	return req.GetNote(), nil
}

// StreamOrders sends count synthetic orders s-1, s-2, … waiting interval_ms
// between them, then ends with fail_code (and the message "stream failed
// after N orders") when that is non-zero.
func (o *orders) StreamOrders(req *ordersv1.StreamOrdersRequest, stream grpc.ServerStreamingServer[ordersv1.Order]) error {
	if req.GetCount() < 0 || req.GetIntervalMs() < 0 {
		return status.Error(codes.InvalidArgument, "count and interval_ms must be >= 0")
	}
	if req.GetFailCode() < 0 {
		return status.Errorf(codes.InvalidArgument, "fail_code must be >= 0, got %d", req.GetFailCode())
	}
	ctx := stream.Context()
	for i := int32(1); i <= req.GetCount(); i++ {
		if i > 1 {
			if err := sleep(ctx, time.Duration(req.GetIntervalMs())*time.Millisecond); err != nil {
				return status.FromContextError(err).Err()
			}
		}
		ord := &ordersv1.Order{
			OrderId: fmt.Sprintf("s-%d", i), UserId: "alice", Status: ordersv1.OrderStatus_ORDER_STATUS_OPEN,
			Items: []*ordersv1.LineItem{{Sku: "sku-1", Quantity: i, UnitPriceCents: 100}}, TotalCents: int64(i) * 100,
		}
		if err := stream.Send(ord); err != nil {
			return err
		}
	}
	if c := req.GetFailCode(); c != 0 {
		return status.Errorf(codes.Code(c), "stream failed after %d orders", req.GetCount())
	}
	return nil
}

// Fail sleeps sleep_ms (cut short by the deadline or cancellation), then
// answers with the requested code: OK gives Empty, anything else the message
// (default "requested failure") and, with bad_field, a google.rpc.BadRequest
// detail. Codes above 16 are sent as they are.
func (o *orders) Fail(ctx context.Context, req *ordersv1.FailRequest) (*emptypb.Empty, error) {
	if req.GetCode() < 0 || req.GetSleepMs() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "code and sleep_ms must be >= 0, got %d and %d", req.GetCode(), req.GetSleepMs())
	}
	if err := sleep(ctx, time.Duration(req.GetSleepMs())*time.Millisecond); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if req.GetCode() == 0 {
		return &emptypb.Empty{}, nil
	}
	msg := req.GetMessage()
	if msg == "" {
		msg = "requested failure"
	}
	st := status.New(codes.Code(req.GetCode()), msg)
	if f := req.GetBadField(); f != "" {
		d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: f, Description: "is bad"}}})
		if err != nil {
			return nil, status.Errorf(codes.Internal, "attach BadRequest detail: %v", err)
		}
		st = d
	}
	return nil, st.Err()
}

func (o *orders) Ping(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}
