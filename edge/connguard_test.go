package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/portico-dev/portico/mesh/meshtest"
)

const (
	reasonCLTE   = "both Content-Length and Transfer-Encoding"
	reasonFoldTE = "folded Transfer-Encoding header"
	reasonFoldCL = "folded Content-Length header"
	reasonTE10   = "Transfer-Encoding in an HTTP/1.0 request"
	reasonBareLF = "bare LF line ending"
)

// smuggle is a CL+TE request (Go reads it chunked) with a request behind it.
const smuggle = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
	"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

// cleanPipeline is a GET, a POST with Content-Length, a chunked POST with
// extensions and a trailer, the CRLF old clients send after a POST, a GET.
const cleanPipeline = "GET /a?q=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nUser-Agent: t\r\n\r\n" +
	"POST /b HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\":\"b c\"}" +
	"POST /c HTTP/1.1\r\nHost: x\r\ntransfer-encoding: Chunked\r\nTrailer: X-Sum\r\n\r\n" +
	"5;name=val\r\nhello\r\n6;q=\"a;b\"\t\r\n world\r\nA  \r\n0123456789\r\n0;last\r\nX-Sum: 21\r\n\r\n" +
	"\r\n" +
	"GET /d HTTP/1.1\r\nHost: x\r\nX-Multi: a,\r\n b\r\n\r\n"

// h2Bytes is an HTTP/2 connection's start: preface, SETTINGS, a complete
// HEADERS and a DATA frame whose payload looks like a flawed HTTP/1.1
// request. (Writes to a bytes.Buffer do not fail.)
func h2Bytes() string {
	var buf bytes.Buffer
	buf.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&buf, nil)
	fr.WriteSettings()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: headerBlock(), EndHeaders: true})
	fr.WriteData(1, true, []byte(smuggle))
	return buf.String()
}

func headerBlock() []byte {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/h2"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return hb.Bytes()
}

var scanCases = []struct {
	name string
	in   string
	want []string // what successive requestFlaw calls return (a flaw sticks)
	seen uint64   // header blocks counted for the handler
	off  bool     // the scanner gave up
	h2   bool
}{
	{name: "clean pipeline", in: cleanPipeline, want: []string{"", "", "", "", ""}, seen: 4},
	{name: "HTTP/1.0 with Content-Length", in: "POST /x HTTP/1.0\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.0\r\n\r\n", want: []string{"", ""}, seen: 2},
	{name: "CL+TE", in: smuggle, want: []string{reasonCLTE, reasonCLTE}, seen: 2},
	{name: "TE+CL", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n", want: []string{reasonCLTE}, seen: 1},
	{name: "folded TE", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", want: []string{reasonFoldTE, reasonFoldTE}, seen: 2},
	{name: "TE folded into another field", in: "POST / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tTransfer-Encoding : chunked\r\n\r\n", want: []string{reasonFoldTE}, seen: 1},
	{name: "folded CL", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n  3\r\n\r\nabc", want: []string{reasonFoldCL}, seen: 1},
	{name: "CL folded into another field", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n content-length: 3\r\n\r\n", want: []string{reasonFoldCL}, seen: 1},
	{name: "fold of another field", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b: c\r\n\r\n", want: []string{""}, seen: 1},
	{name: "TE in HTTP/1.0", in: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", want: []string{reasonTE10}, seen: 1},
	{name: "bare LF everywhere", in: "GET / HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", want: []string{reasonBareLF, reasonBareLF}, seen: 2},
	{name: "bare LF in one field", in: "GET / HTTP/1.1\r\nHost: x\nAccept: */*\r\n\r\n", want: []string{reasonBareLF}, seen: 1},
	{name: "bare LF ends the header block", in: "GET / HTTP/1.1\r\nHost: x\r\n\n", want: []string{reasonBareLF}, seen: 1},
	{name: "bare LF in a trailer flags the next request", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", want: []string{"", reasonBareLF}, seen: 2},
	{name: "OPTIONS * passes its flaw on", in: "OPTIONS * HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", want: []string{reasonCLTE, reasonCLTE}, seen: 1},
	{name: "OPTIONS * is not counted", in: "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nOPTIONS /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", want: []string{reasonCLTE}, seen: 1},
	{name: "PRI without the rest of the preface is HTTP/1", in: "PRI * HTTP/2.0\r\n\r\nXY", want: []string{""}, seen: 1},
	{name: "garbage", in: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n", want: []string{""}, off: true},
	{name: "garbage after a request", in: "GET / HTTP/1.1\r\nHost: x\r\n\r\nthis is not http\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", want: []string{"", ""}, seen: 1, off: true},
	{name: "bad Content-Length", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\nTransfer-Encoding: chunked\r\n\r\n", want: []string{""}, off: true},
	{name: "differing Content-Lengths", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", want: []string{""}, off: true},
	{name: "equal Content-Lengths", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length:  2 \r\n\r\nabGET / HTTP/1.1\r\nHost: x\r\n\r\n", want: []string{"", ""}, seen: 2},
	{name: "two Transfer-Encodings", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", want: []string{""}, seen: 1, off: true},
	{name: "bad chunk size", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", want: []string{""}, seen: 1, off: true},
	{name: "bare LF in a chunk line", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n", want: []string{""}, seen: 1, off: true},
	{name: "whitespace before chunk extension", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1 ;a\r\nx\r\n0\r\n\r\n", want: []string{""}, seen: 1, off: true},
	{name: "chunk overhead within Go's allowance", in: chunkOverhead(150) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n", want: []string{"", ""}, seen: 2},
	{name: "chunk overhead beyond Go's allowance", in: chunkOverhead(200) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n", want: []string{"", ""}, seen: 1, off: true},
	{name: "folded first field", in: "GET / HTTP/1.1\r\n Host: x\r\n\r\n", want: []string{""}, off: true},
	{name: "HTTP/2 preface", in: h2Bytes(), want: []string{"", ""}, h2: true},
}

// chunkOverhead is a chunked POST of n one-byte chunks, each with a
// 100-byte extension: 87 bytes of overhead per chunk by net/http's count.
func chunkOverhead(n int) string {
	return "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
		strings.Repeat("1;"+strings.Repeat("e", 100)+"\r\nx\r\n", n) + "0\r\n\r\n"
}

// scanned feeds chunks to a fresh guard and reports what requestFlaw says.
func scanned(t *testing.T, chunks [][]byte, calls int) (*guardConn, []string) {
	t.Helper()
	a, b := net.Pipe()
	c := newGuardConn(a, nil, time.Hour, zap.NewNop())
	t.Cleanup(func() { c.Close(); b.Close() })
	for _, p := range chunks {
		c.scan(p)
	}
	ctx := guardContext(t.Context(), c)
	got := make([]string, calls)
	for i := range got {
		got[i] = requestFlaw(ctx)
	}
	return c, got
}

func TestGuardScansHTTP1(t *testing.T) {
	for _, tc := range scanCases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			splits := map[string][][]byte{"whole": {in}, "bytewise": nil}
			for i := range in {
				splits["bytewise"] = append(splits["bytewise"], in[i:i+1])
			}
			step := 1 + len(in)/512 // long inputs: a sample of the positions
			for i := 1; i < len(in); i += step {
				splits[fmt.Sprint("split at ", i)] = [][]byte{in[:i], in[i:]}
			}
			for how, chunks := range splits {
				c, got := scanned(t, chunks, len(tc.want))
				if !slices.Equal(got, tc.want) {
					t.Fatalf("%s: flaws %q, want %q", how, got, tc.want)
				}
				if c.h1.seen != tc.seen || (c.h1.state == h1Off) != (tc.off || tc.h2) || c.h2.Load() != tc.h2 {
					t.Fatalf("%s: seen %d, state %d, h2 %v; want seen %d, off %v, h2 %v",
						how, c.h1.seen, c.h1.state, c.h2.Load(), tc.seen, tc.off, tc.h2)
				}
			}
			// Where the scanner keeps going, it counts the requests Go reads.
			if !tc.off && !tc.h2 {
				if n := goServed(tc.in); uint64(n) != tc.seen {
					t.Errorf("net/http reads %d requests that reach the handler, the scanner %d", n, tc.seen)
				}
			}
		})
	}
}

// goServed counts the requests net/http's reader gets from in (bodies
// read), leaving out OPTIONS *, as its server loop does.
func goServed(in string) int {
	br := bufio.NewReader(strings.NewReader(in))
	n, last := 0, ""
	for {
		if last == "POST" {
			peek, _ := br.Peek(4)
			k := 0
			for k < len(peek) && (peek[k] == '\r' || peek[k] == '\n') {
				k++
			}
			br.Discard(k)
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return n
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return n
		}
		if req.Method != "OPTIONS" || req.RequestURI != "*" {
			n++
		}
		last = req.Method
	}
}

// FuzzGuardScan: however the bytes are split, the scanner ends the same;
// while it keeps going, it never counts fewer requests than net/http reads
// (it would then attribute a flaw to the wrong request).
func FuzzGuardScan(f *testing.F) {
	for _, tc := range scanCases {
		if !tc.h2 {
			f.Add(tc.in, 7)
		}
	}
	f.Fuzz(func(t *testing.T, in string, cut int) {
		run := func(chunks ...[]byte) (*h1Scanner, []flaw) {
			s := &h1Scanner{out: new(flawLog)}
			for _, p := range chunks {
				s.feed(p)
			}
			var fl []flaw
			for range s.seen {
				fl = append(fl, s.out.next())
			}
			return s, fl
		}
		b := []byte(in)
		cut = max(cut, 0) % (len(b) + 1)
		s1, f1 := run(b)
		s2, f2 := run(b[:cut], b[cut:])
		if s1.seen != s2.seen || s1.state != s2.state || !slices.Equal(f1, f2) {
			t.Fatalf("whole: seen %d state %d %v; cut at %d: seen %d state %d %v", s1.seen, s1.state, f1, cut, s2.seen, s2.state, f2)
		}
		if n := goServed(in); s1.state != h1Off && s1.seen < uint64(n) {
			t.Fatalf("net/http reads %d requests, the scanner %d", n, s1.seen)
		}
	})
}

func TestGuardScansHTTP2Frames(t *testing.T) {
	hdr := func(length int, typ, flags byte) []byte {
		return []byte{byte(length >> 16), byte(length >> 8), byte(length), typ, flags, 0, 0, 0, 1}
	}
	payload := make([]byte, 10)
	var s h2Scanner
	for i, step := range []struct {
		in   []byte
		open bool
	}{
		{hdr(0, 0x4, 0), false},                  // SETTINGS
		{hdr(10, h2Headers, h2EndHeaders), true}, // a whole block in one frame, still arriving
		{payload[:9], true},
		{payload[:1], false},          // arrived
		{hdr(10, h2Headers, 0), true}, // a block without END_HEADERS
		{payload, true},
		{hdr(3, 0x0, 0), true}, // (a DATA frame in a block: Go closes the connection)
		{payload[:3], true},
		{hdr(2, h2Continuation, 0), true},
		{payload[:2], true},
		{hdr(2, h2Continuation, h2EndHeaders), true},
		{payload[:2], false}, // ended
		{hdr(0, h2Headers, h2EndHeaders), false},
		{hdr(0, h2Continuation, h2EndHeaders), false},
	} {
		s.feed(step.in)
		if s.open != step.open {
			t.Fatalf("step %d: open %v, want %v", i, s.open, step.open)
		}
	}
}

// guardHandler refuses flawed requests as edge.Handler does, and records
// the others.
type guardHandler struct {
	mu    sync.Mutex
	paths []string
}

func (h *guardHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f := requestFlaw(r.Context()); f != "" {
		w.Header().Set("Connection", "close")
		http.Error(w, f, http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.paths = append(h.paths, r.URL.Path)
	h.mu.Unlock()
	io.Copy(io.Discard, r.Body)
	st := connTLS(r.Context())
	fmt.Fprintf(w, "%s %s tls=%v", r.Proto, r.URL.Path, st != nil && st.HandshakeComplete)
}

func (h *guardHandler) served() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.paths)
}

// startServer runs the public server as Start builds it, on loopback; its
// cleanup stops it and checks that no goroutine is left.
func startServer(t *testing.T, h http.Handler, edit func(*Config)) *Server {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.ShutdownGrace = 2 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	s := NewServer(cfg, h, zaptest.NewLogger(t))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 5*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}

// roundTrips writes raw bytes on one connection and reads the responses
// until the server closes it.
func roundTrips(t *testing.T, conn net.Conn, raw string) (codes []int, bodies []string) {
	t.Helper()
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return codes, bodies
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("after %d responses: %v", len(codes), err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		codes, bodies = append(codes, resp.StatusCode), append(bodies, string(b))
	}
}

func TestGuardRefusesSmuggledRequest(t *testing.T) {
	certFile, keyFile, pool := meshtest.SelfSigned(t)
	for _, mode := range []string{"plaintext", "tls"} {
		t.Run(mode, func(t *testing.T) {
			h := new(guardHandler)
			s := startServer(t, h, func(c *Config) {
				if mode == "tls" {
					c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile
				}
			})
			conn := dial(t, s.Addr().String(), mode == "tls", pool)
			codes, bodies := roundTrips(t, conn, smuggle)
			if len(codes) != 1 || codes[0] != 400 || !strings.Contains(bodies[0], reasonCLTE) {
				t.Fatalf("responses %v %q, want one 400 naming %q", codes, bodies, reasonCLTE)
			}
			if got := h.served(); len(got) != 0 {
				t.Fatalf("the handler served %q", got)
			}
		})
	}
	// Without the guard, net/http serves the request behind: this is what
	// the guard is for. (Should Go ever refuse CL+TE itself, this fails
	// and the HTTP/1.1 half of the guard is worth revisiting.)
	t.Run("unguarded", func(t *testing.T) {
		h := new(guardHandler)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		done := make(chan struct{})
		go func() { defer close(done); srv.Serve(ln) }()
		defer func() { srv.Close(); <-done }()
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		codes, _ := roundTrips(t, conn, strings.Replace(smuggle, "GET /smuggled HTTP/1.1", "GET /smuggled HTTP/1.0", 1))
		if !slices.Equal(h.served(), []string{"/", "/smuggled"}) {
			t.Fatalf("unguarded: responses %v, served %q", codes, h.served())
		}
	})
}

func TestGuardServesCleanPipeline(t *testing.T) {
	h := new(guardHandler)
	s := startServer(t, h, nil)
	conn := dial(t, s.Addr().String(), false, nil)
	codes, _ := roundTrips(t, conn, cleanPipeline+"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	want := []string{"/a", "/b", "/c", "/d", "/last"}
	if !slices.Equal(codes, []int{200, 200, 200, 200, 200}) || !slices.Equal(h.served(), want) {
		t.Fatalf("responses %v, served %q; want five 200s for %q", codes, h.served(), want)
	}
}

func TestGuardCutsIncompleteHTTP2HeaderBlock(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s := startServer(t, new(guardHandler), func(c *Config) { c.ReadHeaderTimeout = timeout })
	// await reads frames until match or an error.
	await := func(fr *http2.Framer, match func(http2.Frame) bool) error {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return err
			}
			if match(f) {
				return nil
			}
		}
	}
	// open starts a connection and settles SETTINGS first: once a header
	// block is open, any other frame from the client is a protocol error.
	open := func(t *testing.T) *http2.Framer {
		conn := dial(t, s.Addr().String(), false, nil)
		t.Cleanup(func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(timeout + 5*time.Second))
		io.WriteString(conn, http2.ClientPreface)
		fr := http2.NewFramer(conn, conn)
		if err := fr.WriteSettings(); err != nil {
			t.Fatal(err)
		}
		if err := await(fr, func(f http2.Frame) bool { sf, ok := f.(*http2.SettingsFrame); return ok && !sf.IsAck() }); err != nil {
			t.Fatal(err)
		}
		if err := fr.WriteSettingsAck(); err != nil {
			t.Fatal(err)
		}
		return fr
	}
	never := func(http2.Frame) bool { return false }
	block := headerBlock()

	t.Run("left incomplete", func(t *testing.T) {
		fr := open(t)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:2], EndStream: true}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err := await(fr, never)
		took := time.Since(start)
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			t.Fatalf("still open after %s: %v", took, err)
		}
		if took < timeout*8/10 || took > timeout+2*time.Second {
			t.Fatalf("closed after %s (%v), want about %s", took, err, timeout)
		}
	})
	t.Run("completed in time", func(t *testing.T) {
		fr := open(t)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:2], EndStream: true}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(timeout / 3)
		if err := fr.WriteContinuation(1, true, block[2:]); err != nil {
			t.Fatal(err)
		}
		if err := await(fr, func(f http2.Frame) bool {
			return f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream)
		}); err != nil {
			t.Fatalf("no response: %v", err)
		}
		// Idle after a complete block: the connection stays.
		time.Sleep(2 * timeout)
		if err := fr.WritePing(false, [8]byte{1}); err != nil {
			t.Fatal(err)
		}
		if err := await(fr, func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() }); err != nil {
			t.Fatalf("connection cut after a complete header block: %v", err)
		}
	})
}

func TestGuardTerminatesTLS(t *testing.T) {
	certFile, keyFile, pool := meshtest.SelfSigned(t)
	h := new(guardHandler)
	s := startServer(t, h, func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile })
	url := "https://" + s.Addr().String() + "/p"
	for _, tc := range []struct {
		name  string
		h2    bool
		proto string
	}{{"h2 by ALPN", true, "HTTP/2.0"}, {"http/1.1", false, "HTTP/1.1"}} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: tc.h2}
			if !tc.h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := tc.proto + " /p tls=true"; resp.StatusCode != 200 || string(b) != want || resp.TLS == nil {
				t.Fatalf("%d %q over %s, want %q", resp.StatusCode, b, resp.Proto, want)
			}
		})
	}
	t.Run("plaintext request", func(t *testing.T) {
		conn := dial(t, s.Addr().String(), false, nil)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		b, _ := io.ReadAll(conn)
		conn.Close()
		if !bytes.HasPrefix(b, []byte("HTTP/1.0 400 Bad Request")) || !bytes.Contains(b, []byte("HTTPS server")) {
			t.Fatalf("got %q", b)
		}
	})
}

func dial(t *testing.T, addr string, useTLS bool, pool *x509.CertPool) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if !useTLS {
		conn, err := d.DialContext(t.Context(), "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	td := tls.Dialer{NetDialer: &d, Config: &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}}}
	conn, err := td.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// benchRequest is a typical API request: a 400-byte header block and a
// small JSON body.
var benchRequest = func() []byte {
	body := `{"item":"p-1","quantity":2}`
	hdr := "POST /v1/orders?expand=items HTTP/1.1\r\n" +
		"Host: api.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0\r\n" +
		"Accept: application/json\r\n" +
		"Accept-Language: en-GB,en;q=0.9\r\n" +
		"Accept-Encoding: gzip, deflate, br\r\n" +
		"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJl\r\n" +
		"Content-Type: application/json\r\n" +
		"Content-Length: " + fmt.Sprint(len(body)) + "\r\n"
	pad := 400 - len(hdr) - len("X-Request-Id: \r\n\r\n")
	hdr += "X-Request-Id: " + strings.Repeat("7", pad) + "\r\n\r\n"
	return []byte(hdr + body)
}()

// BenchmarkGuardScan is the guard's cost per request on the HTTP/1.1 hot
// path: scanning what net/http reads, then the handler's requestFlaw.
func BenchmarkGuardScan(b *testing.B) {
	a, p := net.Pipe()
	defer p.Close()
	c := newGuardConn(a, nil, time.Hour, zap.NewNop())
	defer c.Close()
	ctx := guardContext(b.Context(), c)
	b.SetBytes(int64(len(benchRequest)))
	b.ReportAllocs()
	for b.Loop() {
		c.scan(benchRequest)
		if f := requestFlaw(ctx); f != "" {
			b.Fatal(f)
		}
	}
}

// Rapid reset: a burst of cancellations is allowed, a flood is not, and
// the bucket refills with time.
func TestH2ResetBucket(t *testing.T) {
	var s h2Scanner
	now := time.Unix(1000, 0)
	for i := range h2ResetBurst {
		if s.reset(now); s.flood {
			t.Fatalf("flood after %d resets, within the burst of %d", i+1, h2ResetBurst)
		}
	}
	now = now.Add(time.Second) // refills h2ResetRate
	for i := range h2ResetRate {
		if s.reset(now); s.flood {
			t.Fatalf("flood after %d resets one second later, want %d allowed", i+1, h2ResetRate)
		}
	}
	if s.reset(now); !s.flood {
		t.Fatal("a reset past the bucket is no flood")
	}
	// Through feed: RST_STREAM frames are counted.
	var f h2Scanner
	rst := []byte{0, 0, 4, h2RSTStream, 0, 0, 0, 0, 1, 0, 0, 0, 8}
	for range h2ResetBurst + 1 {
		f.feed(rst)
	}
	if !f.flood {
		t.Fatalf("%d RST_STREAM frames fed at once are no flood", h2ResetBurst+1)
	}
}

// TestGuardLingersSoTheAnswerArrives: a handler that answers 413 without
// reading an 8 MB body, on connections that then close (the client sends
// Connection: close), over TLS and plaintext: every client gets the 413, not
// a reset or a broken pipe, because the guard half-closes and reads what
// the client still sends before it closes.
func TestGuardLingersSoTheAnswerArrives(t *testing.T) {
	certFile, keyFile, pool := meshtest.SelfSigned(t)
	answer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lingerOnClose(r.Context()) // as edge.Handler does for a body left unread
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	})
	body := bytes.Repeat([]byte("x"), 8<<20)
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			s := startServer(t, answer, func(c *Config) {
				if useTLS {
					c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile
				}
			})
			url := "http://" + s.Addr().String() + "/upload"
			if useTLS {
				url = "https://" + s.Addr().String() + "/upload"
			}
			got := 0
			var errs []string
			for range 20 {
				tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: pool}}
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
				resp, err := (&http.Client{Transport: tr}).Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusRequestEntityTooLarge {
						got++
					} else {
						errs = append(errs, resp.Status)
					}
				} else {
					errs = append(errs, err.Error())
				}
				cancel()
				tr.CloseIdleConnections()
			}
			if got != 20 {
				t.Fatalf("%d of 20 clients got the 413; the others: %q", got, errs[:min(3, len(errs))])
			}
		})
	}
}

// A header block past edge.max_header_bytes gets a 431 with a
// google.rpc.Status body from the guard (Go's own answer is plain text),
// and the connection closes after it; one under the limit is served.
func TestGuardRefusesOversizedHeaders(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:        http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }),
		MaxHeaderBytes: 8 << 10,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(newGuardListener(ln, nil, time.Second, 8<<10, zap.NewNop()))
	}()
	t.Cleanup(func() { _ = srv.Close(); <-done })

	send := func(headers int, before ...string) (string, error) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		var b strings.Builder
		for _, r := range before {
			b.WriteString(r)
		}
		b.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
		for i := range headers {
			fmt.Fprintf(&b, "X-H-%05d: %s\r\n", i, strings.Repeat("v", 40))
		}
		b.WriteString("Connection: close\r\n\r\n")
		go func() { _, _ = c.Write([]byte(b.String())) }() // the guard may answer before it is all sent
		out, err := io.ReadAll(c)
		return string(out), err
	}
	if out, err := send(10); err != nil || !strings.HasPrefix(out, "HTTP/1.1 200 ") || !strings.HasSuffix(out, "ok") {
		t.Fatalf("under the limit: %q %v", out, err)
	}
	out, err := send(1000)
	if err != nil {
		t.Fatalf("over the limit: %v (%q)", err, out)
	}
	head, body, _ := strings.Cut(out, "\r\n\r\n")
	check431 := func(head, body string) {
		t.Helper()
		if !strings.HasPrefix(head, "HTTP/1.1 431 ") || !strings.Contains(head, "Content-Type: application/json") ||
			body != `{"code":8,"message":"request headers exceed the limit of 8192 bytes (edge.max_header_bytes)","details":[]}` {
			t.Fatalf("over the limit: %q", out)
		}
	}
	check431(head, body)
	// A request pipelined before the oversized one, in the same write, is
	// answered first.
	out, err = send(1000, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	first, rest, _ := strings.Cut(out, "ok")
	if err != nil || !strings.HasPrefix(first, "HTTP/1.1 200 ") {
		t.Fatalf("pipelined request before the oversized one: %q %v", out, err)
	}
	head, body, _ = strings.Cut(rest, "\r\n\r\n")
	check431(head, body)
}
