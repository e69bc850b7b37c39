package services_test

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-dev/portico/cmd/examples/services"
	ordersv1 "github.com/portico-dev/portico/protos/examples/orders/v1"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
	usersv1 "github.com/portico-dev/portico/protos/examples/users/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// dial starts the three examples on a loopback listener and returns a client
// connection; both are closed by t.Cleanup.
func dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	if err := services.Register(s, services.Names()...); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.Stop()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cc.Close(); err != nil {
			t.Error(err)
		}
		s.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return cc
}

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails unless err is a status with code c whose message contains msg.
func wantCode(t *testing.T, err error, c codes.Code, msg string) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != c || !strings.Contains(st.Message(), msg) {
		t.Fatalf("error %v, want code %v with message containing %q", err, c, msg)
	}
	return st
}

func TestRegister(t *testing.T) {
	s := grpc.NewServer()
	defer s.Stop()
	if err := services.Register(s, "users", "nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("unknown name: %v", err)
	}
	if err := services.Register(s, "orders", "orders"); err == nil {
		t.Fatal("repeated name: no error")
	}
	if len(s.GetServiceInfo()) != 0 {
		t.Fatalf("a failed Register registered %v", s.GetServiceInfo())
	}
	if err := services.Register(s, "orders"); err != nil {
		t.Fatal(err)
	}
	if err := services.Register(s, "users"); err == nil {
		t.Fatal("second Register on one server: no error")
	}
	for _, svc := range []string{"portico.examples.orders.v1.OrderService", "portico.examples.orders.v1.OrderAdmin",
		"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} {
		if _, ok := s.GetServiceInfo()[svc]; !ok {
			t.Errorf("%s not registered", svc)
		}
	}
	if got := services.Names(); !slices.Equal(got, []string{"users", "orders", "products", "accounts"}) {
		t.Fatalf("Names() = %v", got)
	}
}

func TestHealthAndReflection(t *testing.T) {
	cc, ctx := dial(t), ctxFor(t)
	hc := healthpb.NewHealthClient(cc)
	for _, svc := range []string{"", "portico.examples.users.v1.UserService", "portico.examples.orders.v1.OrderService", "portico.examples.products.v1.ProductService"} {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q: %v %v", svc, r, err)
		}
	}

	rs, err := reflectionv1.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range r.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	if !slices.Contains(names, "portico.examples.products.v1.ProductService") {
		t.Fatalf("reflection lists %v", names)
	}
}

func TestUsers(t *testing.T) {
	c, ctx := usersv1.NewUserServiceClient(dial(t)), ctxFor(t)

	alice, err := c.GetUser(ctx, &usersv1.GetUserRequest{Name: "users/alice"})
	if err != nil {
		t.Fatal(err)
	}
	if alice.GetPhone() == "" || alice.GetNickname().GetValue() == "" || len(alice.GetLabels()) == 0 ||
		alice.GetAttributes().GetFields()["plan"].GetStringValue() != "pro" || alice.GetCreateTime() == nil || len(alice.GetAvatarSha256()) != 32 {
		t.Fatalf("seeded alice is incomplete: %v", alice)
	}
	bob, err := c.GetUser(ctx, &usersv1.GetUserRequest{Name: "users/bob"})
	if err != nil || bob.GetSlackHandle() != "@bob" || bob.GetAttributes() == nil || bob.GetNickname() == nil {
		t.Fatalf("bob: %v %v", bob, err)
	}
	_, err = c.GetUser(ctx, &usersv1.GetUserRequest{Name: "users/zed"})
	wantCode(t, err, codes.NotFound, `user "users/zed" not found`)

	_, err = c.CreateUser(ctx, &usersv1.CreateUserRequest{})
	wantCode(t, err, codes.InvalidArgument, "user is required")
	_, err = c.CreateUser(ctx, &usersv1.CreateUserRequest{User: &usersv1.User{DisplayName: "No Mail"}})
	wantCode(t, err, codes.InvalidArgument, "user.email")
	carol, err := c.CreateUser(ctx, &usersv1.CreateUserRequest{UserId: "carol", User: &usersv1.User{
		DisplayName: "Carol", Email: "carol@example.com", Contact: &usersv1.User_Phone{Phone: "+1"}, Roles: []string{"ops"},
	}})
	if err != nil || carol.GetName() != "users/carol" || carol.GetId() == 0 || carol.GetCreateTime() == nil {
		t.Fatalf("create: %v %v", carol, err)
	}
	_, err = c.CreateUser(ctx, &usersv1.CreateUserRequest{UserId: "carol", User: &usersv1.User{Email: "x@example.com"}})
	wantCode(t, err, codes.AlreadyExists, "users/carol")
	anon, err := c.CreateUser(ctx, &usersv1.CreateUserRequest{User: &usersv1.User{Email: "anon@example.com"}})
	if err != nil || !strings.HasPrefix(anon.GetName(), "users/") {
		t.Fatalf("create without id: %v %v", anon, err)
	}

	// A mask changes only its paths; other fields in the request are ignored.
	upd, err := c.UpdateUser(ctx, &usersv1.UpdateUserRequest{
		User:       &usersv1.User{Name: "users/carol", DisplayName: "Caroline", Email: "ignored@example.com", Contact: &usersv1.User_SlackHandle{SlackHandle: "@c"}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name", "slackHandle", "profile.location"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if upd.GetDisplayName() != "Caroline" || upd.GetEmail() != "carol@example.com" || upd.GetSlackHandle() != "@c" || upd.GetPhone() != "" ||
		upd.GetProfile() == nil || !slices.Equal(upd.GetRoles(), []string{"ops"}) || upd.GetId() != carol.GetId() {
		t.Fatalf("masked update: %v", upd)
	}
	for _, p := range []string{"nope", "id", "profile.nope", "labels.team"} {
		_, err = c.UpdateUser(ctx, &usersv1.UpdateUserRequest{User: &usersv1.User{Name: "users/carol"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{p}}})
		wantCode(t, err, codes.InvalidArgument, "update_mask")
	}
	// An empty mask replaces every field but the output-only ones.
	upd, err = c.UpdateUser(ctx, &usersv1.UpdateUserRequest{User: &usersv1.User{Name: "users/carol", Email: "c@example.com"}})
	if err != nil || upd.GetDisplayName() != "" || upd.GetEmail() != "c@example.com" || upd.GetRoles() != nil ||
		upd.GetId() != carol.GetId() || !proto.Equal(upd.GetCreateTime(), carol.GetCreateTime()) {
		t.Fatalf("full update: %v %v", upd, err)
	}
	_, err = c.UpdateUser(ctx, &usersv1.UpdateUserRequest{User: &usersv1.User{Name: "users/zed"}})
	wantCode(t, err, codes.NotFound, "users/zed")

	list := func(req *usersv1.ListUsersRequest) []string {
		t.Helper()
		r, err := c.ListUsers(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, u := range r.GetUsers() {
			names = append(names, u.GetName())
		}
		return names
	}
	if got := list(&usersv1.ListUsersRequest{States: []usersv1.State{usersv1.State_STATE_SUSPENDED}}); !slices.Equal(got, []string{"users/bob"}) {
		t.Fatalf("states filter: %v", got)
	}
	if got := list(&usersv1.ListUsersRequest{Verified: wrapperspb.Bool(true)}); !slices.Equal(got, []string{"users/alice"}) {
		t.Fatalf("verified filter: %v", got)
	}
	if got := list(&usersv1.ListUsersRequest{Roles: []string{"nope", "dev"}}); !slices.Equal(got, []string{"users/alice", "users/bob"}) {
		t.Fatalf("roles filter: %v", got)
	}
	after := timestamppb.New(alice.GetCreateTime().AsTime().Add(time.Hour))
	if got := list(&usersv1.ListUsersRequest{CreatedAfter: after}); slices.Contains(got, "users/alice") || !slices.Contains(got, "users/bob") {
		t.Fatalf("created_after filter: %v", got)
	}
	page, err := c.ListUsers(ctx, &usersv1.ListUsersRequest{PageSize: 1})
	if err != nil || len(page.GetUsers()) != 1 || page.GetNextPageToken() == "" {
		t.Fatalf("page 1: %v %v", page, err)
	}
	page, err = c.ListUsers(ctx, &usersv1.ListUsersRequest{PageSize: 1, PageToken: page.GetNextPageToken()})
	if err != nil || len(page.GetUsers()) != 1 || page.GetUsers()[0].GetName() == "users/alice" {
		t.Fatalf("page 2: %v %v", page, err)
	}
	_, err = c.ListUsers(ctx, &usersv1.ListUsersRequest{PageSize: -1})
	wantCode(t, err, codes.InvalidArgument, "page_size")

	av, err := c.GetAvatar(ctx, &usersv1.GetAvatarRequest{Name: "users/alice"})
	if err != nil || av.GetContentType() != "image/png" || !strings.HasPrefix(string(av.GetData()), "\x89PNG") {
		t.Fatalf("alice avatar: %v %v", av, err)
	}
	_, err = c.GetAvatar(ctx, &usersv1.GetAvatarRequest{Name: "users/bob"})
	wantCode(t, err, codes.NotFound, "no avatar")
	set, err := c.SetAvatar(ctx, &usersv1.SetAvatarRequest{Name: "users/bob", Avatar: &httpbody.HttpBody{ContentType: "image/gif", Data: []byte("GIF89a")}})
	if err != nil || len(set.GetAvatarSha256()) != 32 {
		t.Fatalf("set avatar: %v %v", set, err)
	}
	av, err = c.GetAvatar(ctx, &usersv1.GetAvatarRequest{Name: "users/bob"})
	if err != nil || av.GetContentType() != "image/gif" || string(av.GetData()) != "GIF89a" {
		t.Fatalf("bob avatar: %v %v", av, err)
	}

	if _, err := c.DeleteUser(ctx, &usersv1.DeleteUserRequest{Name: "users/carol"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteUser(ctx, &usersv1.DeleteUserRequest{Name: "users/carol"})
	wantCode(t, err, codes.NotFound, "users/carol")
}

func TestWatchUsers(t *testing.T) {
	c, ctx := usersv1.NewUserServiceClient(dial(t)), ctxFor(t)
	st, err := c.WatchUsers(ctx, &usersv1.WatchUsersRequest{Count: 2, IntervalMs: 5})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for {
		ev, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, ev.GetKind())
	}
	if want := []string{"existing", "existing", "tick", "tick"}; !slices.Equal(kinds, want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}

	// A long watch ends as soon as the client goes away.
	wctx, cancel := context.WithCancel(ctx)
	st, err = c.WatchUsers(wctx, &usersv1.WatchUsersRequest{Count: 1000, IntervalMs: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	for err == nil {
		_, err = st.Recv()
	}
	wantCode(t, err, codes.Canceled, "")
}

func TestOrders(t *testing.T) {
	c, ctx := ordersv1.NewOrderServiceClient(dial(t)), ctxFor(t)

	var header, trailer metadata.MD
	o, err := c.GetOrder(ctx, &ordersv1.GetOrderRequest{OrderId: "o-1001"}, grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	if o.GetUserId() != "alice" || len(o.GetItems()) != 2 || o.GetTotalCents() != 2999 {
		t.Fatalf("o-1001: %v", o)
	}
	if got := header.Get("x-example-service"); !slices.Equal(got, []string{"orders"}) {
		t.Fatalf("header x-example-service = %v", got)
	}
	if got := trailer.Get("x-example-trailer"); !slices.Equal(got, []string{"done"}) {
		t.Fatalf("trailer x-example-trailer = %v", got)
	}
	if _, err := c.GetOrder(ctx, &ordersv1.GetOrderRequest{OrderId: "o-1001", UserId: "alice"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetOrder(ctx, &ordersv1.GetOrderRequest{OrderId: "o-1001", UserId: "bob"})
	wantCode(t, err, codes.NotFound, `for user "bob"`)
	_, err = c.GetOrder(ctx, &ordersv1.GetOrderRequest{OrderId: "o-9"})
	wantCode(t, err, codes.NotFound, `order "o-9" not found`)

	created, err := c.CreateOrder(ctx, &ordersv1.CreateOrderRequest{UserId: "bob", Items: []*ordersv1.LineItem{{Sku: "sku-9", Quantity: 3, UnitPriceCents: 100}}})
	if err != nil || created.GetTotalCents() != 300 || created.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_OPEN {
		t.Fatalf("create: %v %v", created, err)
	}

	ids := func(req *ordersv1.ListOrdersRequest) []string {
		t.Helper()
		r, err := c.ListOrders(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, o := range r.GetOrders() {
			out = append(out, o.GetOrderId())
		}
		return out
	}
	for name, tc := range map[string]struct {
		req  *ordersv1.ListOrdersRequest
		want []string
	}{
		"all":       {&ordersv1.ListOrdersRequest{}, []string{"o-1001", created.GetOrderId()}},
		"user":      {&ordersv1.ListOrdersRequest{UserId: "bob"}, []string{created.GetOrderId()}},
		"min total": {&ordersv1.ListOrdersRequest{Filter: &ordersv1.OrderFilter{MinTotalCents: 1000}}, []string{"o-1001"}},
		"skus":      {&ordersv1.ListOrdersRequest{Filter: &ordersv1.OrderFilter{Skus: []string{"sku-9", "nope"}}}, []string{created.GetOrderId()}},
		"status":    {&ordersv1.ListOrdersRequest{Filter: &ordersv1.OrderFilter{Status: ordersv1.OrderStatus_ORDER_STATUS_PAID}}, nil},
		"limit":     {&ordersv1.ListOrdersRequest{Limit: wrapperspb.Int32(1)}, []string{"o-1001"}},
		"max age":   {&ordersv1.ListOrdersRequest{MaxAge: durationpb.New(time.Hour)}, []string{created.GetOrderId()}},
	} {
		if got := ids(tc.req); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", name, got, tc.want)
		}
	}

	note := &ordersv1.Note{Text: "gift wrap"}
	if note.Payload, err = anypb.New(&ordersv1.LineItem{Sku: "wrap", Quantity: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := c.AddNote(ctx, &ordersv1.AddNoteRequest{OrderId: "o-1001", Note: note})
	if err != nil || !proto.Equal(got, note) {
		t.Fatalf("note echo: %v %v", got, err)
	}

	cancelled, err := c.CancelOrder(ctx, &ordersv1.CancelOrderRequest{OrderId: "o-1001", Reason: "changed my mind"})
	if err != nil || cancelled.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_CANCELLED || cancelled.GetCancelReason() != "changed my mind" ||
		len(cancelled.GetNotes()) != 1 {
		t.Fatalf("cancel: %v %v", cancelled, err)
	}
	_, err = c.CancelOrder(ctx, &ordersv1.CancelOrderRequest{OrderId: "o-1001"})
	wantCode(t, err, codes.FailedPrecondition, "already cancelled")
	if st, err := c.GetOrderStatus(ctx, &ordersv1.GetOrderRequest{OrderId: "o-1001"}); err != nil || st.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_CANCELLED {
		t.Fatalf("status: %v %v", st, err)
	}
	if _, err := c.PurgeOrder(ctx, &ordersv1.GetOrderRequest{OrderId: "o-1001"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetOrder(ctx, &ordersv1.GetOrderRequest{OrderId: "o-1001"})
	wantCode(t, err, codes.NotFound, "o-1001")
	if _, err := c.Ping(ctx, &emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
}

func TestStreamOrders(t *testing.T) {
	c, ctx := ordersv1.NewOrderServiceClient(dial(t)), ctxFor(t)
	st, err := c.StreamOrders(ctx, &ordersv1.StreamOrdersRequest{Count: 3, IntervalMs: 1, FailCode: int32(codes.Unavailable)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for {
		o, err := st.Recv()
		if err != nil {
			wantCode(t, err, codes.Unavailable, "stream failed after 3 orders")
			break
		}
		ids = append(ids, o.GetOrderId())
	}
	if want := []string{"s-1", "s-2", "s-3"}; !slices.Equal(ids, want) {
		t.Fatalf("streamed %v, want %v", ids, want)
	}

	st, err = c.StreamOrders(ctx, &ordersv1.StreamOrdersRequest{Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; ; n++ {
		if _, err = st.Recv(); err != nil {
			break
		}
	}
	if !errors.Is(err, io.EOF) || n != 2 {
		t.Fatalf("clean stream: %d orders, then %v", n, err)
	}
}

func TestFail(t *testing.T) {
	c, ctx := ordersv1.NewOrderServiceClient(dial(t)), ctxFor(t)
	if _, err := c.Fail(ctx, &ordersv1.FailRequest{}); err != nil {
		t.Fatalf("code 0: %v", err)
	}
	_, err := c.Fail(ctx, &ordersv1.FailRequest{Code: int32(codes.NotFound)})
	wantCode(t, err, codes.NotFound, "requested failure")

	_, err = c.Fail(ctx, &ordersv1.FailRequest{Code: int32(codes.InvalidArgument), Message: "bad email", BadField: "email"})
	st := wantCode(t, err, codes.InvalidArgument, "bad email")
	d := st.Details()
	if len(d) != 1 {
		t.Fatalf("details: %v", d)
	}
	br, ok := d[0].(*errdetails.BadRequest)
	if !ok || len(br.GetFieldViolations()) != 1 ||
		br.GetFieldViolations()[0].GetField() != "email" || br.GetFieldViolations()[0].GetDescription() != "is bad" {
		t.Fatalf("details: %v", d)
	}

	// The sleep gives way to the caller's deadline.
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Fail(dctx, &ordersv1.FailRequest{Code: int32(codes.Internal), SleepMs: 10_000})
	wantCode(t, err, codes.DeadlineExceeded, "")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Fail ignored the deadline: returned after %s", d)
	}

	_, err = c.Fail(ctx, &ordersv1.FailRequest{Code: -1})
	wantCode(t, err, codes.InvalidArgument, "code")
}

func TestProducts(t *testing.T) {
	c, ctx := productsv1.NewProductServiceClient(dial(t)), ctxFor(t)

	p1, err := c.GetProduct(ctx, &productsv1.GetProductRequest{Id: "p-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p1.GetDescription()) < 500 || len(p1.GetTags()) != 5 || len(p1.GetAttributes()) != 6 || len(p1.GetDimensions()) != 3 || p1.GetUpdateTime() == nil {
		t.Fatalf("p-1 lacks fields: %v", p1)
	}
	js, err := protojson.Marshal(p1)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(js); n < 900 || n > 1400 {
		t.Fatalf("p-1 is %d bytes of JSON, want about 1 KB", n)
	}
	again, err := services.NewProducts().GetProduct(ctx, &productsv1.GetProductRequest{Id: "p-1"})
	if err != nil || !proto.Equal(again, p1) {
		t.Fatalf("p-1 differs between instances: %v", err)
	}
	_, err = c.GetProduct(ctx, &productsv1.GetProductRequest{Id: "p-nope"})
	wantCode(t, err, codes.NotFound, `product "p-nope" not found`)

	list, err := c.ListProducts(ctx, &productsv1.ListProductsRequest{})
	if err != nil || len(list.GetProducts()) != 20 {
		t.Fatalf("default list: %d products, %v", len(list.GetProducts()), err)
	}
	if js, _ := protojson.Marshal(list); len(js) < 18_000 || len(js) > 28_000 {
		t.Fatalf("default list is %d bytes of JSON, want about 20 KB", len(js))
	}
	if list, err := c.ListProducts(ctx, &productsv1.ListProductsRequest{PageSize: 1000}); err != nil || len(list.GetProducts()) != 100 {
		t.Fatalf("capped list: %d products, %v", len(list.GetProducts()), err)
	}
	if list, err := c.ListProducts(ctx, &productsv1.ListProductsRequest{PageSize: 100, Tags: []string{"batch-3"}}); err != nil || len(list.GetProducts()) == 0 || len(list.GetProducts()) > 20 {
		t.Fatalf("tag filter: %d products, %v", len(list.GetProducts()), err)
	}

	created, err := c.CreateProduct(ctx, &productsv1.CreateProductRequest{Product: &productsv1.Product{Name: "New"}})
	if err != nil || created.GetId() == "" || created.GetUpdateTime() == nil {
		t.Fatalf("create: %v %v", created, err)
	}
	created.Name = "Renamed"
	upd, err := c.UpdateProduct(ctx, &productsv1.UpdateProductRequest{Product: created})
	if err != nil || upd.GetName() != "Renamed" {
		t.Fatalf("update: %v %v", upd, err)
	}
	_, err = c.UpdateProduct(ctx, &productsv1.UpdateProductRequest{Product: &productsv1.Product{Id: "p-nope"}})
	wantCode(t, err, codes.NotFound, "p-nope")

	if a, err := c.GetAsset(ctx, &productsv1.GetAssetRequest{Path: "img/a%2Fb.png"}); err != nil || a.GetPath() != "img/a%2Fb.png" || a.GetSize() != 13 {
		t.Fatalf("asset: %v %v", a, err)
	}
	if a, err := c.GetShelfBook(ctx, &productsv1.GetShelfBookRequest{Name: "shelves/1/books/2"}); err != nil || a.GetPath() != "shelves/1/books/2" {
		t.Fatalf("shelf book: %v %v", a, err)
	}
	if s, err := c.GetRegionStock(ctx, &productsv1.GetProductRequest{Id: "p-2"}); err != nil || s.GetId() != "p-2" || s.GetQuantity() != 7 {
		t.Fatalf("stock: %v %v", s, err)
	}
	if a, err := c.PublishAsset(ctx, &productsv1.GetAssetRequest{Path: "assets/x"}); err != nil || a.GetPath() != "assets/x" {
		t.Fatalf("publish: %v %v", a, err)
	}
	imp, err := c.ImportProducts(ctx, &httpbody.HttpBody{ContentType: "text/csv", Data: []byte("p-1,a\r\np-2,b\n\n  \np-3,c")})
	if err != nil || imp.GetImported() != 3 || imp.GetContentType() != "text/csv" {
		t.Fatalf("import: %v %v", imp, err)
	}
}

// TestInstancesAreIndependent checks that each constructor returns its own
// store.
func TestInstancesAreIndependent(t *testing.T) {
	ctx := t.Context()
	a, b := services.NewUsers(), services.NewUsers()
	if _, err := a.DeleteUser(ctx, &usersv1.DeleteUserRequest{Name: "users/bob"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetUser(ctx, &usersv1.GetUserRequest{Name: "users/bob"}); err != nil {
		t.Fatalf("deleting from one instance affected another: %v", err)
	}
	oa, ob := services.NewOrders(), services.NewOrders()
	if _, err := oa.PurgeOrder(ctx, &ordersv1.GetOrderRequest{OrderId: "o-1001"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ob.GetOrder(ctx, &ordersv1.GetOrderRequest{OrderId: "o-1001"}); err != nil {
		t.Fatalf("purging from one instance affected another: %v", err)
	}
}

// TestConcurrentUse runs mixed calls in parallel; run with -race.
func TestConcurrentUse(t *testing.T) {
	cc, ctx := dial(t), ctxFor(t)
	uc, pc := usersv1.NewUserServiceClient(cc), productsv1.NewProductServiceClient(cc)
	errs := make(chan error, 16)
	for i := range cap(errs) {
		go func() {
			var err error
			switch i % 4 {
			case 0:
				_, err = uc.CreateUser(ctx, &usersv1.CreateUserRequest{User: &usersv1.User{Email: "x@example.com"}})
			case 1:
				_, err = uc.ListUsers(ctx, &usersv1.ListUsersRequest{})
			case 2:
				_, err = pc.CreateProduct(ctx, &productsv1.CreateProductRequest{Product: &productsv1.Product{Name: "x"}})
			case 3:
				_, err = pc.ListProducts(ctx, &productsv1.ListProductsRequest{})
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
