package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/portico-dev/portico/integration/harness"
)

// The limits the hostile table runs Portico with: short, so that every row
// that waits for one is quick.
const (
	hostileReadTimeout       = 2 * time.Second
	hostileReadHeaderTimeout = 1 * time.Second
	hostileWriteTimeout      = 1 * time.Second
	hostileMaxStream         = 3 * time.Second
	hostileStreamIdle        = 2 * time.Second
	// hostileRSSBound is how far a row may push Portico's resident set
	// above what it was before the row.
	hostileRSSBound = 64 << 20
)

// hostileConfig is the YAML of the Portico under attack. Every key the
// rows rely on is spelled out, the new ones (write_timeout,
// max_inflight_body_bytes, trusted_proxies, http2, max_repeated_elements)
// among them: a strict decode that does not know one fails the start.
const hostileConfig = `edge:
  read_timeout: 2s
  read_header_timeout: 1s
  write_timeout: 1s
  idle_timeout: 30s
  upstream_timeout: 5s
  max_stream_duration: 3s
  max_header_bytes: 65536
  max_inflight_body_bytes: 33554432
  trusted_proxies: []
  drain_delay: 0s
  shutdown_grace: 2s
  access_log:
    enabled: false
  http2:
    max_concurrent_streams: 100
    max_read_frame_size: 16384
    max_receive_buffer_per_stream: 65536
    max_receive_buffer_per_connection: 1048576
transcode:
  max_body_bytes: 4194304
  max_json_depth: 64
  max_repeated_elements: 10000
  stream_idle_timeout: 2s
log:
  level: warn
`

// hostile is one `portico serve` process under attack and the in-process
// example services behind it.
type hostile struct {
	bin     string
	cfg     string
	p       *harness.Process
	addr    string // public host:port
	url     string
	admin   string // admin base URL
	rec     *mdRecorder
	streams *streamWatch
	c       *http.Client // HTTP/1.1
	h2c     *http.Client // cleartext HTTP/2, prior knowledge
	ids     atomic.Int64
}

// id is a fresh X-Request-Id, to find a call in the recorders.
func (h *hostile) id(tag string) string {
	return fmt.Sprintf("hostile-%s-%d", tag, h.ids.Add(1))
}

// TestHostile sends a table of hostile inputs to a real `portico serve`
// over real sockets: each row asserts the answer, whether the connection
// was closed, and that Portico's resident set stayed within
// hostileRSSBound of what it was before the row.
func TestHostile(t *testing.T) {
	began := time.Now()
	h := &hostile{bin: harness.BuildPortico(t), rec: newMDRecorder(), streams: newStreamWatch()}
	t.Logf("portico built in %s", time.Since(began).Round(time.Millisecond))
	opts := append(h.rec.options(), grpc.ChainStreamInterceptor(h.streams.intercept))
	b := harness.Services(t, []string{"users", "orders", "products", "accounts"}, nil, opts...)
	h.cfg = filepath.Join(t.TempDir(), "portico.yaml")
	if err := os.WriteFile(h.cfg, []byte(hostileConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	h.p, h.addr, h.admin = startHostilePortico(t, h.bin, h.cfg, b.Addr)
	h.url = "http://" + h.addr
	h.c = harness.Client(t)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	h.h2c = &http.Client{Transport: tr, Timeout: 20 * time.Second}
	if r := do(t, h.c, "GET", h.url+"/v1/users/alice", ""); r.code != 200 {
		t.Fatalf("GET /v1/users/alice before the table: %d %s", r.code, r.body)
	}

	rows := []struct {
		name string
		run  func(*testing.T, *hostile)
	}{
		{"01_declared_body_size", rowDeclaredBodySize},
		{"02_huge_bodies", rowHugeBodies},
		{"03_json_bodies", rowJSONBodies},
		{"04_dot_segments", rowDotSegments},
		{"05_h1_framing", rowH1Framing},
		{"06_header_floods", rowHeaderFloods},
		{"07_h2_floods", rowH2Floods},
		{"08_h2_slow_headers", rowH2SlowHeaders},
		{"09_non_ascii_headers", rowNonASCIIHeaders},
		{"10_grpc_timeout_overflow", rowGRPCTimeoutOverflow},
		{"11_slow_body_dead_upstream", rowSlowBodyDeadUpstream},
		{"12_forwarded_headers", rowForwardedHeaders},
		{"13_head", rowHead},
		{"14_unread_stream", rowUnreadStream},
		{"15_oversized_body_answered", rowOversizedBodyAnswered},
	}
	var summary []string
	pid := h.p.Pid()
	tableStart := time.Now()
	defer func() { t.Logf("table ran in %s", time.Since(tableStart).Round(time.Millisecond)) }()
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			base, err := rssOf(pid)
			if err != nil {
				t.Fatalf("portico is gone: %v", err)
			}
			w := watchRSS(pid)
			start := time.Now()
			defer func() {
				peak := w.Stop(pid)
				line := fmt.Sprintf("%-28s %6s  RSS baseline %s, peak %s (+%s)", row.name,
					time.Since(start).Round(10*time.Millisecond), mib(base), mib(peak), mib(peak-base))
				summary = append(summary, line)
				t.Log(line)
				if peak-base >= hostileRSSBound {
					t.Errorf("RSS grew by %s during the row (baseline %s, peak %s); bound %s", mib(peak-base), mib(base), mib(peak), mib(hostileRSSBound))
				}
				h.alive(t)
			}()
			row.run(t, h)
		})
	}
	t.Log("per row:\n" + strings.Join(summary, "\n"))
}

// startHostilePortico runs `portico serve` with the config file and one
// plaintext upstream and waits until it is ready.
func startHostilePortico(t *testing.T, bin, cfg, upstream string) (p *harness.Process, addr, admin string) {
	t.Helper()
	addr, adm := harness.FreePort(t), harness.FreePort(t)
	p = harness.StartProcess(t, bin, "serve", "--config", cfg, "--listen", addr, "--admin-listen", adm,
		"--upstream", upstream, "--plaintext-upstream")
	c := harness.Client(t)
	c.Timeout = time.Second
	deadline := time.Now().Add(30 * time.Second)
	for {
		if strings.Contains(p.Output(), "portico serve:") {
			t.Fatalf("portico serve did not start:\n%s", p.Output())
		}
		if resp, err := c.Get("http://" + adm + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, addr, "http://" + adm
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("portico not ready after 30 s:\n%s", p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive checks that the process still answers its health check.
func (h *hostile) alive(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.admin+"/healthz", nil)
	resp, err := h.c.Do(req)
	if err != nil {
		t.Fatalf("portico does not answer /healthz after the row: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("portico /healthz after the row: %d", resp.StatusCode)
	}
}

// normalRequests: an ordinary GET over HTTP/1.1 and over h2c succeeds.
func (h *hostile) normalRequests(t *testing.T) {
	t.Helper()
	for _, c := range []struct {
		name string
		c    *http.Client
	}{{"HTTP/1.1", h.c}, {"h2c", h.h2c}} {
		if r := do(t, c.c, "GET", h.url+"/v1/users/alice", ""); r.code != 200 {
			t.Fatalf("a normal %s request right after: %d %s", c.name, r.code, r.body)
		}
	}
}

// rowDeclaredBodySize (1): 200 HTTP/1.1 connections and 250 h2c streams
// each declare a 4 MiB body and send 10 bytes of it. Portico must not
// reserve what was declared, and answers each HTTP/1.1 one 408 when
// read_timeout passes, saying nothing about addresses.
func rowDeclaredBodySize(t *testing.T, h *hostile) {
	const n1, n2 = 200, 250
	const partial = `{"userId":` // 10 bytes
	req := "POST /v1/orders HTTP/1.1\r\nHost: portico.test\r\nContent-Type: application/json\r\nContent-Length: 4194304\r\n\r\n" + partial
	conns := make([]*rawConn, n1)
	for i := range conns {
		conns[i] = dialRaw(t, h.addr, 0)
		if err := conns[i].send(req); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	sent := time.Now()
	c2 := dialH2(t, h.addr)
	err := c2.write(func() error {
		for i := range n2 {
			id := uint32(2*i + 1)
			f := reqFields("POST", "/v1/orders", "content-type", "application/json", "content-length", "4194304")
			if err := c2.headersLocked(id, f, false); err != nil {
				return err
			}
			if err := c2.fr.WriteData(id, false, []byte(partial)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("h2c streams: %v", err)
	}
	// Half-way through read_timeout, while everything hangs, is when the
	// resident set is worth a look: this sleep is the point of the row.
	time.Sleep(hostileReadTimeout / 2)
	if n, err := rssOf(h.p.Pid()); err == nil {
		t.Logf("RSS while %d connections and %d streams hang: %s", n1, n2, mib(n))
	}

	type result struct {
		r   h1Resp
		err error
		at  time.Duration
	}
	results := make([]result, n1)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			r, err := c.response("POST", hostileReadTimeout+5*time.Second)
			results[i] = result{r, err, time.Since(sent)}
		})
	}
	wg.Wait()
	byStatus := map[string]int{}
	var bad []string
	var first, last time.Duration
	for i, res := range results {
		if res.err != nil {
			byStatus["error"]++
			bad = append(bad, fmt.Sprintf("connection %d: %v", i, res.err))
			continue
		}
		byStatus[fmt.Sprint(res.r.code)]++
		if first == 0 || res.at < first {
			first = res.at
		}
		last = max(last, res.at)
		_, msg, err := checkRPCStatus(res.r, http.StatusRequestTimeout, -1)
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("connection %d: %v", i, err))
		case anIP.MatchString(res.r.body) || strings.Contains(res.r.body, "tcp"):
			bad = append(bad, fmt.Sprintf("connection %d: the 408 tells an address or the transport: %q", i, msg))
		}
	}
	t.Logf("HTTP/1.1 answers by status %v, first after %s, last after %s", byStatus, first.Round(time.Millisecond), last.Round(time.Millisecond))
	if len(bad) > 0 {
		t.Errorf("%d of %d HTTP/1.1 connections not answered 408 as they should; first ones:\n%s", len(bad), n1, strings.Join(bad[:min(5, len(bad))], "\n"))
	}

	c2.wait(hostileReadTimeout+5*time.Second, func() bool {
		for i := range n2 {
			if !c2.finishedLocked(uint32(2*i + 1)) {
				return false
			}
		}
		return true
	})
	h2Status := map[string]int{}
	c2.mu.Lock()
	for i := range n2 {
		st := c2.streams[uint32(2*i+1)]
		switch {
		case st == nil:
			h2Status["nothing"]++
		case st.status != 0:
			h2Status[fmt.Sprint(st.status)]++
		case st.rst:
			h2Status["RST "+st.rstCode.String()]++
		default:
			h2Status["nothing"]++
		}
	}
	c2.mu.Unlock()
	t.Logf("h2c streams by outcome %v; connection: %s", h2Status, c2.describe())
}

// rowHugeBodies (2): 100 MB bodies, declared and chunked, over HTTP/1.1
// and h2c, are answered 413 RESOURCE_EXHAUSTED without being read; the
// HTTP/1.1 connection is closed after the answer.
func rowHugeBodies(t *testing.T, h *hostile) {
	const size = 100 << 20
	for _, chunked := range []bool{false, true} {
		name := map[bool]string{false: "h1_content_length", true: "h1_chunked"}[chunked]
		t.Run(name, func(t *testing.T) {
			c := dialRaw(t, h.addr, 0)
			hdr := "POST /v1/orders HTTP/1.1\r\nHost: portico.test\r\nContent-Type: application/json\r\n"
			if chunked {
				hdr += "Transfer-Encoding: chunked\r\n\r\n"
			} else {
				hdr += fmt.Sprintf("Content-Length: %d\r\n\r\n", size)
			}
			if err := c.send(hdr); err != nil {
				t.Fatal(err)
			}
			var written atomic.Int64
			stop, wrote := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(wrote)
				piece := strings.Repeat(" ", 64<<10)
				frame := piece
				if chunked {
					frame = fmt.Sprintf("%x\r\n%s\r\n", len(piece), piece)
				}
				for written.Load() < size {
					select {
					case <-stop:
						return
					default:
					}
					if err := c.send(frame); err != nil {
						return
					}
					written.Add(int64(len(piece)))
				}
				if chunked {
					_ = c.send("0\r\n\r\n")
				}
			}()
			r, err := c.response("POST", 20*time.Second)
			atAnswer := written.Load()
			close(stop)
			closed, extra := false, ""
			if err == nil {
				closed, extra = c.closedWithin(5 * time.Second)
			}
			c.conn.Close()
			<-wrote
			t.Logf("uploaded %s of %s when the answer came", mib(atAnswer), mib(size))
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			rpcStatus(t, r, http.StatusRequestEntityTooLarge, 8)
			if atAnswer >= size {
				t.Errorf("the whole %s body was uploaded before the answer: Portico read it", mib(size))
			}
			if !closed {
				t.Errorf("the connection stayed open after the 413 with %s of body unread", mib(size-atAnswer))
			}
			if extra != "" {
				t.Errorf("more bytes after the answer: %s", truncateText(extra, 200))
			}
		})
	}
	for _, declared := range []bool{true, false} {
		name := map[bool]string{true: "h2c_content_length", false: "h2c_undeclared"}[declared]
		t.Run(name, func(t *testing.T) {
			c := dialH2(t, h.addr)
			kv := []string{"content-type", "application/json"}
			if declared {
				kv = append(kv, "content-length", fmt.Sprint(size))
			}
			if err := c.headers(1, reqFields("POST", "/v1/orders", kv...), false); err != nil {
				t.Fatal(err)
			}
			sent := c.upload(1, size, true)
			c.wait(10*time.Second, func() bool { return c.finishedLocked(1) })
			r := c.response(1)
			t.Logf("uploaded %s of %s when the answer came; connection: %s", mib(sent), mib(size), c.describe())
			if r.code == 0 {
				t.Fatalf("no answer on the stream: %s", c.describe())
			}
			rpcStatus(t, r, http.StatusRequestEntityTooLarge, 8)
			if sent >= size {
				t.Errorf("the whole %s body was uploaded before the answer: Portico read it", mib(size))
			}
		})
	}
}

// rowJSONBodies (3): hostile JSON on body "*" routes (and one body field
// route for a repeated string) is a 400 INVALID_ARGUMENT, small and fast.
func rowJSONBodies(t *testing.T, h *hostile) {
	const deep = 100000
	items := func(n int) string { return `{"userId":"a","items":[` + strings.Repeat("{},", n-1) + "{}]}" }
	tags := func(n int) string { return `{"tags":[` + strings.Repeat(`"",`, n-1) + `""]}` }
	hugeInt := `{"userId":"a","items":[{"sku":"s","quantity":1,"unitPriceCents":"` + strings.Repeat("9", 4<<20-200) + `"}]}`
	cases := []struct {
		name, path, body string
		msgHas           []string // fragments the message must contain
		maxBody          int      // largest acceptable answer, 0 for no bound
		fast             bool
	}{
		{name: "deep_arrays", path: "/v1/orders", body: strings.Repeat("[", deep) + strings.Repeat("]", deep)},
		{name: "deep_objects", path: "/v1/orders", body: strings.Repeat(`{"a":`, deep) + "1" + strings.Repeat("}", deep)},
		{name: "deep_value", path: "/v1/orders/o-1001/notes", body: `{"meta":` + strings.Repeat("[", deep) + strings.Repeat("]", deep) + "}"},
		{name: "duplicate_keys", path: "/v1/orders", body: `{"userId":"a","userId":"b","items":[{"sku":"s","quantity":1}]}`},
		{name: "invalid_utf8", path: "/v1/orders", body: "{\"userId\":\"\xff\xfe\xfd\",\"items\":[{\"sku\":\"s\",\"quantity\":1}]}"},
		{name: "nan_int", path: "/v1/orders", body: `{"userId":"a","items":[{"sku":"s","quantity":NaN}]}`},
		{name: "nan_string_int", path: "/v1/orders", body: `{"userId":"a","items":[{"sku":"s","quantity":"NaN"}]}`},
		{name: "int64_out_of_range", path: "/v1/orders", body: `{"userId":"a","items":[{"sku":"s","quantity":1,"unitPriceCents":"99999999999999999999"}]}`},
		{name: "int32_out_of_range", path: "/v1/orders", body: `{"userId":"a","items":[{"sku":"s","quantity":3000000000}]}`},
		{name: "trailing_garbage", path: "/v1/orders", body: `{"userId":"a","items":[{"sku":"s","quantity":1}]} garbage`},
		{name: "million_items", path: "/v1/orders", body: items(1000000), msgHas: []string{"items", "10000"}, fast: true},
		{name: "million_strings", path: "/v1/products", body: tags((4<<20 - 64) / 3), msgHas: []string{"tags", "10000"}, fast: true},
		{name: "huge_invalid_int64", path: "/v1/orders", body: hugeInt, maxBody: 2048},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := h.id("json")
			start := time.Now()
			r := do(t, h.c, "POST", h.url+tc.path, tc.body, "X-Request-Id", id)
			took := time.Since(start)
			t.Logf("%d-byte body: %d in %s (reached the service: %v)", len(tc.body), r.code, took.Round(time.Millisecond), h.rec.get(id) != nil)
			_, msg := rpcStatus(t, h1Resp(r), http.StatusBadRequest, 3)
			for _, frag := range tc.msgHas {
				if !strings.Contains(msg, frag) {
					t.Errorf("message %q does not contain %q", truncateText(msg, 300), frag)
				}
			}
			if tc.maxBody > 0 && len(r.body) >= tc.maxBody {
				t.Errorf("the answer is %d bytes; want < %d", len(r.body), tc.maxBody)
			}
			// A limit on elements is checked while scanning, not after
			// building a million messages: a loose bound, to catch that.
			if tc.fast && took > 5*time.Second {
				t.Errorf("answered in %s; want a fast rejection", took)
			}
		})
	}
}

// rowDotSegments (4): "." and ".." segments, plain or percent-encoded,
// are a 400 INVALID_ARGUMENT and never reach a service.
func rowDotSegments(t *testing.T, h *hostile) {
	for _, p := range []string{
		"/v1/users/%2e%2e", "/v1/users/%2E%2E", "/v1/users/%2e%2e/x", "/v1/users/..", "/v1/users/.",
		"/v1/users/%2e", "/v1/users/.%2e", "/v1/users/%2e%2e/avatar", "/v1/orders/%2e%2e",
		"/v1/assets/a/%2e%2e/b", "/v1/assets/a/../b", "/v1/assets/./b",
	} {
		t.Run(strings.ReplaceAll(p, "/", "_"), func(t *testing.T) {
			id := h.id("dots")
			c := dialRaw(t, h.addr, 0)
			if err := c.send("GET " + p + " HTTP/1.1\r\nHost: portico.test\r\nX-Request-Id: " + id + "\r\nConnection: close\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			r, err := c.response("GET", 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			reached := h.rec.get(id) != nil
			if reached {
				t.Errorf("GET %s reached the service", p)
			}
			rpcStatus(t, r, http.StatusBadRequest, 3)
		})
	}
}

// rowH1Framing (5): a bare-LF request, and requests smuggled with both
// Content-Length and Transfer-Encoding (plain or folded), get one 400 and
// a closed connection.
func rowH1Framing(t *testing.T, h *hostile) {
	const smuggled = "0\r\n\r\nGET /v1/users/1 HTTP/1.1\r\nHost: portico.test\r\n\r\n"
	for _, tc := range []struct{ name, req string }{
		{"bare_lf", "GET /v1/users/alice HTTP/1.1\nHost: portico.test\n\n"},
		{"cl_and_te", "POST /v1/orders HTTP/1.1\r\nHost: portico.test\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled},
		{"cl_and_folded_te", "POST /v1/orders HTTP/1.1\r\nHost: portico.test\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n" + smuggled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, h.addr, 0)
			if err := c.send(tc.req); err != nil {
				t.Fatal(err)
			}
			method, _, _ := strings.Cut(tc.req, " ")
			r, err := c.response(method, 5*time.Second)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			closed, extra := c.closedWithin(3 * time.Second)
			if r.code != http.StatusBadRequest {
				t.Errorf("got %s; want 400", r)
			} else if r.header.Get("Content-Type") == "application/json" {
				rpcStatus(t, r, http.StatusBadRequest, 3)
			}
			if extra != "" {
				t.Errorf("more than one response on the connection; then: %s", truncateText(extra, 300))
			}
			if !closed {
				t.Error("the connection stayed open")
			}
		})
	}
}

// rowHeaderFloods (6): 10k headers. HTTP/1.1: 431 with a google.rpc.Status
// body from the connection guard.
// h2c: the stream or the connection is refused; Portico serves on.
func rowHeaderFloods(t *testing.T, h *hostile) {
	t.Run("h1", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("GET /v1/users/alice HTTP/1.1\r\nHost: portico.test\r\n")
		for i := range 10000 {
			fmt.Fprintf(&b, "X-H-%05d: v\r\n", i)
		}
		b.WriteString("\r\n")
		c := dialRaw(t, h.addr, 0)
		_ = c.send(b.String()) // the server may stop reading early
		r, err := c.response("GET", 5*time.Second)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		if r.code != http.StatusRequestHeaderFieldsTooLarge || r.header.Get("Content-Type") != "application/json" ||
			!strings.Contains(r.body, `"code":8,"message":"request headers exceed the limit of`) {
			t.Fatalf("got %s %q; want 431 with a google.rpc.Status body", r, r.body)
		}
	})
	t.Run("h2c", func(t *testing.T) {
		c := dialH2(t, h.addr)
		f := reqFields("GET", "/v1/users/alice")
		for i := range 10000 {
			f = append(f, hpack.HeaderField{Name: fmt.Sprintf("x-h-%05d", i), Value: "v"})
		}
		if err := c.headers(1, f, true); err != nil {
			t.Logf("writing the header block: %v", err)
		}
		c.wait(5*time.Second, func() bool { return c.answeredLocked(1) })
		r := c.response(1)
		st := c.stream(1)
		c.mu.Lock()
		refused := c.goneLocked() || st.rst || st.status == http.StatusRequestHeaderFieldsTooLarge
		c.mu.Unlock()
		t.Logf("stream: %s; connection: %s", r, c.describe())
		if !refused {
			t.Errorf("10k header fields were not refused: %s", r)
		}
		h.normalRequests(t)
	})
}

// rowH2Floods (7): rapid reset and a CONTINUATION flood end the connection;
// Portico serves on.
func rowH2Floods(t *testing.T, h *hostile) {
	t.Run("rapid_reset", func(t *testing.T) {
		c := dialH2(t, h.addr)
		const n = 10000
		f := reqFields("GET", "/v1/users/alice")
		sent := 0
		var werr error
		for i := 0; i < n && werr == nil; i += 100 {
			werr = c.write(func() error {
				for j := i; j < min(i+100, n); j++ {
					id := uint32(2*j + 1)
					if err := c.headersLocked(id, f, true); err != nil {
						return err
					}
					if err := c.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
						return err
					}
					sent++
				}
				return nil
			})
			if c.wait(0, c.goneLocked) {
				break
			}
		}
		gone := c.wait(5*time.Second, c.goneLocked)
		t.Logf("opened and reset %d streams (write error: %v); connection: %s", sent, werr, c.describe())
		if !gone {
			t.Errorf("the connection survived %d rapid resets", sent)
		}
		h.normalRequests(t)
	})
	// Junk that is not HPACK at all, and junk that is: literal header
	// fields that decode fine and never end.
	random := make([]byte, 16<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	var literals []byte
	for len(literals)+109 <= 16<<10 {
		// Literal without indexing, new name "x-junk", a 100-byte value.
		literals = append(literals, 0x00, 6)
		literals = append(literals, "x-junk"...)
		literals = append(literals, 100)
		literals = append(literals, strings.Repeat("a", 100)...)
	}
	for _, tc := range []struct {
		name string
		junk []byte
	}{{"continuation_flood_random", random}, {"continuation_flood_hpack", literals}} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialH2(t, h.addr)
			err := c.write(func() error {
				return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.encodeLocked(reqFields("GET", "/v1/users/alice")), EndStream: true})
			})
			if err != nil {
				t.Fatal(err)
			}
			total := 0
			for total < 4<<20 {
				if err := c.write(func() error { return c.fr.WriteContinuation(1, false, tc.junk) }); err != nil {
					t.Logf("writing CONTINUATION: %v", err)
					break
				}
				total += len(tc.junk)
				if c.wait(0, c.goneLocked) {
					break
				}
			}
			gone := c.wait(5*time.Second, c.goneLocked)
			t.Logf("sent %s of CONTINUATION; connection: %s", mib(int64(total)), c.describe())
			if !gone {
				t.Errorf("the connection survived %s of CONTINUATION frames", mib(int64(total)))
			}
			h.normalRequests(t)
		})
	}
}

// rowH2SlowHeaders (8): a header block never finished is cut off within
// read_header_timeout: as the connection's first one, and after a request
// completed on it (when Go's server no longer has a read deadline set).
func rowH2SlowHeaders(t *testing.T, h *hostile) {
	for _, after := range []bool{false, true} {
		name := map[bool]string{false: "first_block", true: "after_a_request"}[after]
		t.Run(name, func(t *testing.T) {
			c := dialH2(t, h.addr)
			id := uint32(1)
			if after {
				if err := c.headers(id, reqFields("GET", "/v1/users/alice"), true); err != nil {
					t.Fatal(err)
				}
				if !c.wait(5*time.Second, func() bool { return c.finishedLocked(id) }) || c.response(id).code != 200 {
					t.Fatalf("a normal request first: %s; %s", c.response(id), c.describe())
				}
				id = 3
			}
			start := time.Now()
			err := c.write(func() error {
				return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.encodeLocked(reqFields("GET", "/v1/users/alice")), EndStream: true})
			})
			if err != nil {
				t.Fatal(err)
			}
			bound := hostileReadHeaderTimeout + time.Second
			closed := c.wait(bound, func() bool { return c.closed })
			t.Logf("after %s: %s", time.Since(start).Round(time.Millisecond), c.describe())
			if !closed {
				t.Fatalf("the connection with an unfinished header block is still open after %s", bound)
			}
			c.mu.Lock()
			took := c.closeAt.Sub(start)
			c.mu.Unlock()
			t.Logf("closed %s after the HEADERS frame", took.Round(time.Millisecond))
		})
	}
}

// rowNonASCIIHeaders (9): UTF-8 header values are never a 500; a
// Grpc-Metadata- one is a 400 that names the header.
func rowNonASCIIHeaders(t *testing.T, h *hostile) {
	for _, tc := range []struct {
		name, header string
		check        func(*testing.T, h1Resp)
	}{
		{"user_agent", "User-Agent: café", func(t *testing.T, r h1Resp) {
			if r.code != 200 {
				t.Errorf("got %s; want 200", r)
			}
		}},
		{"accept_language", "Accept-Language: café", func(t *testing.T, r h1Resp) {
			if r.code != 200 {
				t.Errorf("got %s; want 200", r)
			}
		}},
		{"grpc_metadata", "Grpc-Metadata-Foo: café", func(t *testing.T, r h1Resp) {
			_, msg := rpcStatus(t, r, http.StatusBadRequest, 3)
			if !strings.Contains(strings.ToLower(msg), "grpc-metadata-foo") {
				t.Errorf("message %q does not name the header", msg)
			}
		}},
		{"authorization", "Authorization: Bearer café", func(t *testing.T, r h1Resp) {
			if r.code == 500 {
				t.Errorf("got %s; want anything but 500", r)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, h.addr, 0)
			if err := c.send("GET /v1/users/alice HTTP/1.1\r\nHost: portico.test\r\n" + tc.header + "\r\nConnection: close\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			r, err := c.response("GET", 5*time.Second)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			t.Logf("%s", r)
			tc.check(t, r)
		})
	}
}

// rowGRPCTimeoutOverflow (10): a Grpc-Timeout whose nanoseconds overflow
// int64 is a long deadline, not an expired one.
func rowGRPCTimeoutOverflow(t *testing.T, h *hostile) {
	for _, v := range []string{"99999999H", "2562048H"} {
		t.Run(v, func(t *testing.T) {
			id := h.id("timeout")
			r := do(t, h.c, "GET", h.url+"/v1/users/alice", "", "Grpc-Timeout", v, "X-Request-Id", id)
			if r.code != 200 {
				t.Errorf("Grpc-Timeout %s: %d %s; want 200", v, r.code, r.body)
			}
			if h.rec.get(id) == nil {
				t.Errorf("Grpc-Timeout %s: the service was not called", v)
			}
		})
	}
}

// rowSlowBodyDeadUpstream (11): a body slower than read_timeout is a 408
// that tells no addresses; an instance gone after the routes were built is
// a 503 that tells no addresses either and carries the request id.
func rowSlowBodyDeadUpstream(t *testing.T, h *hostile) {
	t.Run("slow_body", func(t *testing.T) {
		c := dialRaw(t, h.addr, 0)
		if err := c.send("POST /v1/orders HTTP/1.1\r\nHost: portico.test\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{"); err != nil {
			t.Fatal(err)
		}
		stop, dribbled := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(dribbled)
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for range 62 {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if c.send(" ") != nil {
					return
				}
			}
		}()
		r, err := c.response("POST", hostileReadTimeout+5*time.Second)
		close(stop)
		<-dribbled
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		_, msg := rpcStatus(t, r, http.StatusRequestTimeout, -1)
		if anIP.MatchString(r.body) || strings.Contains(r.body, "tcp") {
			t.Errorf("the 408 tells an address or the transport: %q", msg)
		}
	})
	t.Run("dead_upstream", func(t *testing.T) {
		b := harness.Services(t, []string{"orders"}, nil)
		_, addr, _ := startHostilePortico(t, h.bin, h.cfg, b.Addr)
		url := "http://" + addr + "/v1/orders/o-1001"
		if r := do(t, h.c, "GET", url, ""); r.code != 200 {
			t.Fatalf("before the backend stopped: %d %s", r.code, r.body)
		}
		b.Server.Stop()
		r := do(t, h.c, "GET", url, "")
		id := r.header.Get("X-Request-Id")
		_, msg := rpcStatus(t, h1Resp(r), http.StatusServiceUnavailable, 14)
		t.Logf("503: %s", r.body)
		if strings.Contains(strings.ToLower(r.body), "dial") || anIPPort.MatchString(r.body) {
			t.Errorf("the 503 tells how Portico dials its upstream: %q", msg)
		}
		if id == "" || !strings.Contains(r.body, id) {
			t.Errorf("the 503 does not carry the request id %q: %s", id, r.body)
		}
	})
}

// rowForwardedHeaders (12): an untrusted peer's X-Forwarded-For is
// replaced by the peer address, and trace context and baggage sent as
// Grpc-Metadata- headers never reach the service.
func rowForwardedHeaders(t *testing.T, h *hostile) {
	const (
		traceID     = "0af7651916cd43dd8448eb211c80319c"
		traceparent = "00-" + traceID + "-b7ad6b7169203331-01"
		tracestate  = "evil=1"
		baggage     = "userId=mallory"
	)
	id := h.id("xff")
	r := do(t, h.c, "GET", h.url+"/v1/users/alice", "", "X-Request-Id", id,
		"X-Forwarded-For", "6.6.6.6", "X-Forwarded-Host", "evil.example", "X-Forwarded-Proto", "https",
		"Grpc-Metadata-Baggage", baggage, "Grpc-Metadata-Tracestate", tracestate, "Grpc-Metadata-Traceparent", traceparent)
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	md := h.rec.get(id)
	if md == nil {
		t.Fatal("the service saw no call with the request id")
	}
	t.Logf("upstream saw x-forwarded-for %q, -host %q, -proto %q, traceparent %q, tracestate %q, baggage %q",
		md.Get("x-forwarded-for"), md.Get("x-forwarded-host"), md.Get("x-forwarded-proto"), md.Get("traceparent"), md.Get("tracestate"), md.Get("baggage"))
	if got := md.Get("x-forwarded-for"); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Errorf("x-forwarded-for %q; want only the peer address [127.0.0.1]", got)
	}
	for key, sent := range map[string]string{"traceparent": traceID, "tracestate": tracestate, "baggage": baggage} {
		if slices.ContainsFunc(md.Get(key), func(v string) bool { return strings.Contains(v, sent) }) {
			t.Errorf("the client's %s reached the service: %q", key, md.Get(key))
		}
	}
}

// rowHead (13): HEAD on a GET route answers as the GET would, without a
// body; HEAD on an unknown path is a 404.
func rowHead(t *testing.T, h *hostile) {
	exchange := func(t *testing.T, method, path string) (h1Resp, []byte) {
		t.Helper()
		c := dialRaw(t, h.addr, 0)
		if err := c.send(method + " " + path + " HTTP/1.1\r\nHost: portico.test\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		raw, err := c.readAll(5 * time.Second)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%s %s: %v in %q", method, path, err, raw)
		}
		resp.Body.Close()
		_, body, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
		return h1Resp{code: resp.StatusCode, header: resp.Header, body: string(body)}, body
	}
	get, _ := exchange(t, "GET", "/v1/users/alice")
	if get.code != 200 || get.header.Get("Content-Length") == "" {
		t.Fatalf("GET: %s, Content-Length %q; want 200 with a Content-Length", get, get.header.Get("Content-Length"))
	}
	head, body := exchange(t, "HEAD", "/v1/users/alice")
	if head.code != 200 {
		t.Errorf("HEAD on a GET route: %s; want 200", head)
	}
	if got, want := head.header.Get("Content-Length"), get.header.Get("Content-Length"); got != want {
		t.Errorf("HEAD Content-Length %q, GET %q", got, want)
	}
	if len(body) != 0 {
		t.Errorf("HEAD sent %d body bytes: %q", len(body), body)
	}
	missing, body := exchange(t, "HEAD", "/v1/no/such/route")
	if missing.code != 404 {
		t.Errorf("HEAD on an unknown path: %s; want 404", missing)
	}
	if len(body) != 0 {
		t.Errorf("HEAD 404 sent %d body bytes: %q", len(body), body)
	}
}

// rowUnreadStream (14): a server stream whose client never reads ends
// upstream within max_stream_duration + write_timeout (+2 s slack).
func rowUnreadStream(t *testing.T, h *hostile) {
	id := h.id("stream")
	c := dialRaw(t, h.addr, 4096)
	start := time.Now()
	if err := c.send("GET /v1/orders:stream?count=1000000&intervalMs=0 HTTP/1.1\r\nHost: portico.test\r\nX-Request-Id: " + id + "\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	bound := hostileMaxStream + hostileWriteTimeout + 2*time.Second
	began, ended, ok := h.streams.wait(t, id, bound)
	if began.IsZero() {
		t.Fatal("the stream never reached the service")
	}
	if !ok {
		t.Fatalf("the upstream stream is still running %s after the request (bound %s)", time.Since(start).Round(time.Millisecond), bound)
	}
	t.Logf("upstream stream began after %s, its context ended after %s",
		began.Sub(start).Round(time.Millisecond), ended.Sub(start).Round(time.Millisecond))
}

// streamWatch records when each upstream server stream (by request id)
// began and when its context ended.
type streamWatch struct {
	mu    sync.Mutex
	began map[string]time.Time
	ended map[string]time.Time
}

func newStreamWatch() *streamWatch {
	return &streamWatch{began: map[string]time.Time{}, ended: map[string]time.Time{}}
}

func (w *streamWatch) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	if ids := md.Get("x-request-id"); len(ids) > 0 {
		id := ids[0]
		w.mu.Lock()
		w.began[id] = time.Now()
		w.mu.Unlock()
		context.AfterFunc(ss.Context(), func() {
			w.mu.Lock()
			w.ended[id] = time.Now()
			w.mu.Unlock()
		})
	}
	return handler(srv, ss)
}

// wait waits at most d for the stream's context to end.
func (w *streamWatch) wait(t *testing.T, id string, d time.Duration) (began, ended time.Time, ok bool) {
	deadline := time.Now().Add(d)
	for {
		w.mu.Lock()
		began, ended = w.began[id], w.ended[id]
		w.mu.Unlock()
		if !ended.IsZero() {
			return began, ended, true
		}
		if time.Now().After(deadline) || t.Context().Err() != nil {
			return began, ended, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
