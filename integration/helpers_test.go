package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/portico-dev/portico/integration/harness"
)

type response struct {
	code   int
	header http.Header
	body   string
}

// do sends one request and reads the whole response.
func do(t *testing.T, c *http.Client, method, url, body string, hdr ...string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// jsonOf decodes a JSON object.
func jsonOf(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not a JSON object: %q: %v", s, err)
	}
	return m
}

// wantStatus checks an error response: HTTP code, google.rpc.Status code
// and a message fragment.
func wantStatus(t *testing.T, r response, httpCode int, grpcCode float64, msg string) map[string]any {
	t.Helper()
	if r.code != httpCode {
		t.Fatalf("HTTP %d, want %d; body %s", r.code, httpCode, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	st := jsonOf(t, r.body)
	if st["code"] != grpcCode || !strings.Contains(st["message"].(string), msg) {
		t.Fatalf("status %v, want code %v with message containing %q", st, grpcCode, msg)
	}
	if _, ok := st["details"]; !ok {
		t.Fatalf("status %v has no details field", st)
	}
	return st
}

// mdRecorder remembers the incoming metadata of each call by request id.
type mdRecorder struct {
	mu   sync.Mutex
	byID map[string]metadata.MD
}

func newMDRecorder() *mdRecorder { return &mdRecorder{byID: map[string]metadata.MD{}} }

func (r *mdRecorder) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	if ids := md.Get("x-request-id"); len(ids) > 0 {
		r.mu.Lock()
		r.byID[ids[0]] = md.Copy()
		r.mu.Unlock()
	}
}

func (r *mdRecorder) get(id string) metadata.MD {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byID[id]
}

func (r *mdRecorder) options() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			r.record(ctx)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			r.record(ss.Context())
			return h(srv, ss)
		}),
	}
}

// env is the common setup: all three example services behind one Portico.
type env struct {
	url string
	c   *http.Client
	md  *mdRecorder
}

func newEnv(t *testing.T) *env {
	t.Helper()
	rec := newMDRecorder()
	b := harness.Services(t, []string{"users", "orders", "products"}, nil, rec.options()...)
	e := harness.Portico(t, nil, b.Addr)
	return &env{url: e.URL, c: harness.Client(t), md: rec}
}

// keyHash is the hex SHA-256 an API key is stored as (api_keys sources).
func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
