package edge_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/integration/harness"
	"github.com/portico-dev/portico/policies/chain"
)

// FuzzHTTP1Request parses raw HTTP/1.1 request bytes as Go's server does
// and serves whatever parses with Portico's public handler, composed as
// `portico serve` composes it, over the example services: never a panic, a
// valid status, no 500 unless the backend answered with a code that maps to
// 500, and every JSON error answer is a google.rpc.Status.
func FuzzHTTP1Request(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	calls := newBackendCalls()
	b := harness.Services(f, []string{"users", "orders", "products", "accounts"}, nil, calls.options()...)
	h := fuzzHandler(f, b.Addr)
	probe := httptest.NewRequestWithContext(f.Context(), "GET", "/v1/users/alice", nil)
	w := httptest.NewRecorder()
	if h.ServeHTTP(w, probe); w.Code != 200 {
		f.Fatalf("GET /v1/users/alice before fuzzing: %d %s", w.Code, w.Body)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		req = req.WithContext(ctx)
		req.RemoteAddr = "192.0.2.7:40000" // ReadRequest leaves it empty; the server never does
		calls.reset()
		w := cappedRecorder{httptest.NewRecorder()}
		h.ServeHTTP(w, req)

		code := w.Code
		if code < 100 || code > 599 {
			t.Fatalf("status %d for %q", code, data)
		}
		if code == http.StatusInternalServerError {
			id := w.Header().Get("X-Request-Id")
			if c, called := calls.get(id); !called || chain.HTTPStatus(c) != http.StatusInternalServerError {
				t.Fatalf("500 for a request the backend did not fail (backend called: %v, code %v):\nrequest %q\nanswer %s",
					called, c, data, w.Body)
			}
		}
		if code >= 400 && w.Header().Get("Content-Type") == "application/json" {
			if err := isRPCStatus(w.Body.Bytes()); err != nil {
				t.Fatalf("%d answer is not a google.rpc.Status (%v):\nrequest %q\nanswer %q", code, err, data, w.Body)
			}
		}
	})
}

// fuzzHandler starts Portico's fx application, as the harness and `portico
// serve` compose it, with short upstream limits so that no input holds the
// fuzzer, and returns its public handler. The listener it also opens on
// loopback is not used.
func fuzzHandler(f *testing.F, upstream string) http.Handler {
	cfg := app.DefaultConfig()
	cfg.Edge.Listen = "127.0.0.1:0"
	cfg.Edge.AdminListen = ""
	cfg.Edge.DrainDelay = 0
	cfg.Edge.ShutdownGrace = 2 * time.Second
	cfg.Edge.UpstreamTimeout = time.Second
	cfg.Edge.MaxStreamDuration = time.Second
	cfg.Transcode.StreamIdleTimeout = 500 * time.Millisecond
	off := false
	cfg.Edge.AccessLog.Enabled = &off
	cfg.Mesh.Upstreams = append(cfg.Mesh.Upstreams, app.PlaintextUpstream(upstream))
	if err := cfg.Validate(); err != nil {
		f.Fatal(err)
	}
	var h *edge.Handler
	a := fx.New(app.Options(cfg, zap.NewNop()), fx.Populate(&h))
	ctx, cancel := context.WithTimeout(f.Context(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(f.Context()), 30*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			f.Errorf("stopping portico: %v", err)
		}
	})
	return h
}

// cappedRecorder keeps at most 1 MiB of a response; past it writes fail as
// they would for a client that went away (a long server stream ends).
type cappedRecorder struct{ *httptest.ResponseRecorder }

const maxRecorded = 1 << 20

var errRecorderFull = errors.New("recorder full: the client went away")

func (w cappedRecorder) Write(p []byte) (int, error) {
	if w.Body.Len()+len(p) > maxRecorded {
		return 0, errRecorderFull
	}
	return w.ResponseRecorder.Write(p)
}

func (w cappedRecorder) WriteString(s string) (int, error) {
	if w.Body.Len()+len(s) > maxRecorded {
		return 0, errRecorderFull
	}
	return w.ResponseRecorder.WriteString(s)
}

// isRPCStatus checks a google.rpc.Status JSON object: an integer "code"
// and a string "message".
func isRPCStatus(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var st map[string]any
	if err := dec.Decode(&st); err != nil {
		return err
	}
	n, ok := st["code"].(json.Number)
	if !ok {
		return fmt.Errorf("code is %T, not a number", st["code"])
	}
	if _, err := n.Int64(); err != nil {
		return fmt.Errorf("code %s is not an integer", n)
	}
	if _, ok := st["message"].(string); !ok {
		return fmt.Errorf("message is %T, not a string", st["message"])
	}
	return nil
}

// backendCalls records, by request id, the code each backend call ended
// with. Fuzz executions in one process are sequential: reset starts one.
type backendCalls struct {
	mu   sync.Mutex
	byID map[string]codes.Code
}

func newBackendCalls() *backendCalls { return &backendCalls{byID: map[string]codes.Code{}} }

func (b *backendCalls) reset() {
	b.mu.Lock()
	clear(b.byID)
	b.mu.Unlock()
}

func (b *backendCalls) record(ctx context.Context, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if ids := md.Get("x-request-id"); len(ids) > 0 {
		b.mu.Lock()
		b.byID[ids[0]] = status.Code(err)
		b.mu.Unlock()
	}
}

func (b *backendCalls) get(id string) (codes.Code, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.byID[id]
	return c, ok
}

func (b *backendCalls) options() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			b.record(ctx, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := h(srv, ss)
			b.record(ss.Context(), err)
			return err
		}),
	}
}

// fuzzSeeds are realistic requests for every kind of route and a few
// hostile ones.
func fuzzSeeds() []string {
	req := func(method, target, body string, hdr ...string) string {
		var b strings.Builder
		b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: portico.test\r\n")
		chunked := false
		for i := 0; i+1 < len(hdr); i += 2 {
			b.WriteString(hdr[i] + ": " + hdr[i+1] + "\r\n")
			chunked = chunked || (strings.EqualFold(hdr[i], "Transfer-Encoding") || strings.EqualFold(hdr[i], "Content-Length"))
		}
		if body != "" && !chunked {
			fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
		}
		b.WriteString("\r\n" + body)
		return b.String()
	}
	const js = "Content-Type"
	return []string{
		req("GET", "/v1/users/alice?readMask=name&x=%20", "", "Accept", "application/json"),
		req("GET", "/v1/users?pageSize=1&states=STATE_ACTIVE&verified=true&createdAfter=2024-01-01T00:00:00Z", ""),
		req("POST", "/v1/orders", `{"userId":"alice","items":[{"sku":"s","quantity":1,"unitPriceCents":"100"}],"tags":{"a":1}}`, js, "application/json"),
		req("HEAD", "/v1/products/p-1", ""),
		req("OPTIONS", "/v1/accounts/a1", "", "Origin", "https://app.example.com", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "authorization"),
		req("GET", "/v1/users/%zz", ""), // Go's parser refuses it: a mutation may not
		req("GET", "/v1/users/%c0%ae%c0%ae/x%00?q=%ff", ""),
		req("GET", "/v1/users/%2e%2e/avatar", ""),
		req("POST", "/v1/orders", `{"userId":`, js, "application/json", "Content-Length", "99999999999"),
		req("POST", "/v1/products", "7\r\n{\"id\":1\r\n1\r\n}\r\n0\r\n\r\n", js, "application/json", "Transfer-Encoding", "chunked"),
		req("GET", "/v1/orders:stream?count=3&intervalMs=1", ""),
		req("PUT", "/v1/products/p-1", `{"name":"x","tags":["a"],"attributes":{"k":"v"},"priceCents":"12"}`, js, "application/json"),
		req("GET", "/v1/debug/fail/5?message=nope&badField=id", ""),
		req("PATCH", "/v1/users/bob?updateMask=displayName", `{"displayName":"B"}`, js, "application/json",
			"Grpc-Metadata-Tenant", "t1", "Grpc-Timeout", "5S", "X-Request-Id", "fuzz-1"),
		req("POST", "/v1/products:import", "id,name\np-9,x\n", js, "text/csv"),
		req("GET", "/v1/echo/hi", "", "Authorization", "Bearer x.y.z", "X-Forwarded-For", "6.6.6.6"),
		req("POST", "/v1/orders/o-1001/notes", `{"text":"t","meta":{"a":[1,null,{"b":true}]},"history":[1,"x"]}`, js, "application/json"),
		req("GET", "/v1/users/alice", "", "Grpc-Timeout", "99999999H", "User-Agent", "caf\xc3\xa9"),
	}
}
