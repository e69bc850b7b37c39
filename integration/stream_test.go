package integration

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/portico-dev/portico/cmd/examples/services"
	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
	ordersv1 "github.com/portico-dev/portico/protos/examples/orders/v1"
)

func TestStreamNDJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := do(t, e.c, "GET", e.url+"/v1/orders:stream?count=3", "")
	if r.code != 200 || r.header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("%d %q", r.code, r.header.Get("Content-Type"))
	}
	lines := strings.Split(strings.TrimSpace(r.body), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines, got %q", r.body)
	}
	for _, l := range lines {
		if res, ok := jsonOf(t, l)["result"].(map[string]any); !ok || res["orderId"] == nil {
			t.Fatalf("line %q is not a result envelope", l)
		}
	}
}

func TestStreamErrorAfterFirstMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := do(t, e.c, "GET", e.url+"/v1/orders:stream?count=2&failCode=14", "")
	// The status line went out with the first message; the failure is the
	// last line, never a clean end of a 200.
	if r.code != 200 {
		t.Fatalf("%d", r.code)
	}
	lines := strings.Split(strings.TrimSpace(r.body), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 2 results and an error, got %q", r.body)
	}
	errObj, ok := jsonOf(t, lines[2])["error"].(map[string]any)
	if !ok || errObj["code"] != 14.0 || !strings.Contains(errObj["message"].(string), "stream failed after 2") {
		t.Fatalf("last line %q", lines[2])
	}
	// Failing before the first message keeps the real status.
	wantStatus(t, do(t, e.c, "GET", e.url+"/v1/orders:stream?count=0&failCode=7", ""), 403, 7, "stream failed")
	// An empty successful stream is a 200 with no lines.
	if r := do(t, e.c, "GET", e.url+"/v1/orders:stream?count=0", ""); r.code != 200 || r.body != "" {
		t.Fatalf("empty stream: %d %q", r.code, r.body)
	}
}

func TestStreamSSE(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := do(t, e.c, "GET", e.url+"/v1/orders:stream?count=2&failCode=13", "", "Accept", "text/event-stream")
	if r.code != 200 || r.header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %q", r.code, r.header.Get("Content-Type"))
	}
	events := strings.Split(strings.TrimSuffix(r.body, "\n\n"), "\n\n")
	if len(events) != 3 || !strings.HasPrefix(events[0], "data: {") || !strings.HasPrefix(events[2], "event: error\ndata: {\"code\":13") {
		t.Fatalf("events %q", r.body)
	}
}

// TestStreamFlushesEachMessage reads the first line while the upstream is
// still sleeping before the second.
func TestStreamFlushesEachMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/v1/orders:stream?count=2&intervalMs=3000", nil)
	resp, err := e.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, `{"result":`) {
		t.Fatalf("first line %q: %v", line, err)
	}
	if waited := time.Since(start); waited > 2500*time.Millisecond {
		t.Fatalf("first message arrived after %s: not flushed on arrival", waited)
	}
}

// cancelWatch records when the upstream sees its stream's context end.
type cancelWatch struct {
	ordersv1.OrderServiceServer
	once     sync.Once
	canceled chan struct{}
}

func (c *cancelWatch) StreamOrders(req *ordersv1.StreamOrdersRequest, s grpc.ServerStreamingServer[ordersv1.Order]) error {
	err := c.OrderServiceServer.StreamOrders(req, s)
	if s.Context().Err() != nil {
		c.once.Do(func() { close(c.canceled) })
	}
	return err
}

func TestClientGoneCancelsUpstream(t *testing.T) {
	t.Parallel()
	w := &cancelWatch{OrderServiceServer: services.NewOrders(), canceled: make(chan struct{})}
	b := harness.Services(t, nil, func(s *grpc.Server) { ordersv1.RegisterOrderServiceServer(s, w) })
	e := harness.Portico(t, nil, b.Addr)
	c := harness.Client(t)

	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.URL+"/v1/orders:stream?count=1000&intervalMs=20", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case <-w.canceled:
	case <-timer.C:
		t.Fatal("upstream stream still running 5s after the client went away")
	}
}

// edge.write_timeout bounds writes, not waits: a slow upstream answer and a
// stream with long gaps between messages complete over HTTP/1.1 and h2c
// alike (on HTTP/2 a write deadline is a stream timer, set only around
// writes).
func TestWriteTimeoutIsNotAnIdleTimeout(t *testing.T) {
	t.Parallel()
	b := harness.Services(t, []string{"orders"}, nil)
	e := harness.Portico(t, func(c *app.Config) { c.Edge.WriteTimeout = 500 * time.Millisecond }, b.Addr)
	h2 := new(http.Protocols)
	h2.SetUnencryptedHTTP2(true)
	h2tr := &http.Transport{Protocols: h2}
	t.Cleanup(h2tr.CloseIdleConnections)
	clients := map[string]*http.Client{"HTTP/1.1": harness.Client(t), "h2c": {Transport: h2tr, Timeout: 20 * time.Second}}
	for name, c := range clients {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := do(t, c, "GET", e.URL+"/v1/debug/fail/0?sleepMs=1200", "")
			if r.code != 200 {
				t.Fatalf("slow unary call: %d %s", r.code, r.body)
			}
			r = do(t, c, "GET", e.URL+"/v1/orders:stream?count=3&intervalMs=800", "")
			if n := strings.Count(strings.TrimSpace(r.body), "\n") + 1; r.code != 200 || n != 3 || strings.Contains(r.body, `"error"`) {
				t.Fatalf("quiet stream: %d, %d lines: %s", r.code, n, r.body)
			}
		})
	}
}
