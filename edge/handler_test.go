package edge

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/policies/chain"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
	"github.com/portico-dev/portico/transcode"
)

// memConn is an upstream in memory: each call gets what answer returns for
// its method, with the metadata it saw. Messages cross it as wire bytes,
// through the codec the call asks for, as over a connection.
type memConn struct {
	answer func(ctx context.Context, method string, req proto.Message) (proto.Message, error)
}

func (m memConn) Invoke(ctx context.Context, method string, req, resp any, opts ...grpc.CallOption) error {
	codec := encoding.GetCodecV2(grpcproto.Name)
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = metadata.Pairs("x-upstream", "mem")
		case grpc.ForceCodecV2CallOption:
			codec = o.CodecV2
		}
	}
	data, err := codec.Marshal(req)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	in := req.(*chain.Payload).Type().New().Interface()
	if err := proto.Unmarshal(data.Materialize(), in); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	out, err := m.answer(ctx, method, in)
	if err != nil {
		return err
	}
	wire, err := proto.Marshal(out)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, resp)
}

func (memConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "no streams in memory")
}

// memHandler serves the products example's routes, compiled with pc (nil:
// no policies), from an in-memory upstream.
func memHandler(t *testing.T, pc *policies.Compiler, conn memConn) *Handler {
	t.Helper()
	sd := productsv1.File_examples_products_v1_products_proto.Services().Get(0)
	refl := &mesh.Reflection{Upstream: "mem", Services: []*mesh.Service{{Name: sd.FullName(), Desc: sd, Upstream: "mem", Conn: conn}}}
	cfg := DefaultConfig()
	tel, err := NewTelemetry(cfg, prometheus.NewRegistry(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	tables := NewTables()
	table := BuildTable([]*mesh.Reflection{refl}, transcode.NewCompiler(transcode.DefaultConfig()), pc, NewCalls(tel, NewDrain(), CallLimits{Timeout: time.Second, MaxStreamDuration: time.Minute, StreamIdle: time.Minute}))
	if len(table.Rejected) > 0 {
		t.Fatal(table.Rejected)
	}
	tables.Store(table)
	return NewHandler(cfg, tables, tel, nil, zap.NewNop())
}

func serveMem(h *Handler, method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// statusBody decodes a google.rpc.Status answer.
func statusBody(t *testing.T, w *httptest.ResponseRecorder) (code int, message string, details []map[string]any) {
	t.Helper()
	var st struct {
		Code    int              `json:"code"`
		Message string           `json:"message"`
		Details []map[string]any `json:"details"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("not a google.rpc.Status answer (%v): %s %q", err, w.Header().Get("Content-Type"), w.Body)
	}
	return st.Code, st.Message, st.Details
}

func TestHandlerServesThroughTheChain(t *testing.T) {
	var seen metadata.MD
	h := memHandler(t, nil, memConn{answer: func(ctx context.Context, method string, req proto.Message) (proto.Message, error) {
		seen, _ = metadata.FromOutgoingContext(ctx)
		switch method {
		case "/portico.examples.products.v1.ProductService/GetProduct":
			id := req.ProtoReflect().Get(req.ProtoReflect().Descriptor().Fields().ByName("id")).String()
			switch id {
			case "missing":
				return nil, status.Error(codes.NotFound, "no product missing")
			case "leaky":
				return nil, status.Error(codes.Unavailable, "connection error: desc = \"dial tcp 10.0.0.7:9003: connect: connection refused\"")
			case "who":
				return nil, status.Error(codes.Unauthenticated, "who are you")
			}
			return &productsv1.Product{Id: id, Name: "Lamp"}, nil
		}
		return nil, status.Error(codes.Unimplemented, method)
	}})

	w := serveMem(h, "GET", "/v1/products/p-1", "", "X-Request-Id", "req-1", "Grpc-Metadata-Tenant", "acme")
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"name":"Lamp"`) || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET: %d %s %q", w.Code, w.Header(), w.Body)
	}
	if w.Header().Get("Grpc-Metadata-X-Upstream") != "mem" || w.Header().Get("X-Request-Id") != "req-1" {
		t.Fatalf("answer headers: %v", w.Header())
	}
	if seen.Get("tenant")[0] != "acme" || seen.Get("x-request-id")[0] != "req-1" {
		t.Fatalf("upstream metadata: %v", seen)
	}

	tests := []struct {
		desc, method, target, body string
		hdr                        []string
		want                       int
		grpc                       codes.Code
		msg                        string
		header, headerWant         string
	}{
		{desc: "no route", method: "GET", target: "/v1/nothing", want: 404, grpc: codes.NotFound, msg: "no route for GET /v1/nothing"},
		{desc: "wrong method", method: "DELETE", target: "/v1/products/p-1", want: 405, grpc: codes.Unimplemented, msg: "not allowed", header: "Allow", headerWant: "GET"},
		{desc: "dot segment", method: "GET", target: "/v1/products/%2e%2e", want: 400, grpc: codes.InvalidArgument, msg: "invalid path"},
		{desc: "upstream status", method: "GET", target: "/v1/products/missing", want: 404, grpc: codes.NotFound, msg: "no product missing", header: "Grpc-Metadata-X-Upstream", headerWant: "mem"},
		{desc: "upstream internals hidden", method: "GET", target: "/v1/products/leaky", want: 503, grpc: codes.Unavailable, msg: "the upstream service is unavailable; retry later"},
		{desc: "upstream 401 gets a challenge", method: "GET", target: "/v1/products/who", want: 401, grpc: codes.Unauthenticated, msg: "who are you", header: "Www-Authenticate", headerWant: `Bearer realm="portico"`},
		{desc: "bad metadata header", method: "GET", target: "/v1/products/p-1", hdr: []string{"Grpc-Metadata-Bad Key", "x"}, want: 400, grpc: codes.InvalidArgument, msg: "metadata key"},
		{desc: "bad Grpc-Timeout", method: "GET", target: "/v1/products/p-1", hdr: []string{"Grpc-Timeout", "soon"}, want: 400, grpc: codes.InvalidArgument, msg: "Grpc-Timeout header"},
		{desc: "bad JSON body", method: "POST", target: "/v1/products", body: `{"name":`, want: 400, grpc: codes.InvalidArgument, msg: "invalid JSON body"},
		{desc: "unsupported media type", method: "POST", target: "/v1/products", body: `x`, hdr: []string{"Content-Type", "text/plain"}, want: 415, grpc: codes.InvalidArgument, msg: "Content-Type must be application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			w := serveMem(h, tt.method, tt.target, tt.body, tt.hdr...)
			code, msg, details := statusBody(t, w)
			if w.Code != tt.want || codes.Code(code) != tt.grpc || !strings.Contains(msg, tt.msg) {
				t.Fatalf("got %d %v %q; want %d %v containing %q", w.Code, codes.Code(code), msg, tt.want, tt.grpc, tt.msg)
			}
			if tt.header != "" && !strings.Contains(strings.Join(w.Header().Values(tt.header), ","), tt.headerWant) {
				t.Fatalf("%s: %q, want %q", tt.header, w.Header().Values(tt.header), tt.headerWant)
			}
			if strings.Contains(w.Body.String(), "10.0.0.7") {
				t.Fatalf("an internal address reached the client: %s", w.Body)
			}
			if tt.desc == "upstream internals hidden" && (len(details) != 1 || details[0]["requestId"] == "") {
				t.Fatalf("want a RequestInfo detail, got %v", details)
			}
		})
	}
}
