package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/policies/chain"
)

// The connection guard sits between the listener and net/http, where the
// raw bytes are still visible: Go's server accepts a request carrying both
// Content-Length and Transfer-Encoding (or a folded Transfer-Encoding),
// deletes both headers before the handler runs and keeps the connection, so
// a request smuggled behind it is served. guardConn follows the HTTP/1.1
// framing exactly as Go's server reads it, records per header block why it
// must be refused (requestFlaw), and for HTTP/2 cuts a connection whose
// header block stays incomplete for longer than edge.read_header_timeout.
// It also terminates TLS, so that it sees plaintext; HTTP/2 over TLS then
// reaches net/http as the prior-knowledge preface.

// Limits Go's HTTP/1.1 reader enforces, mirrored so that the guard stops
// (and never flags) where Go's parser would stop.
const (
	// maxChunkLine is the longest chunk-size line Go reads, CRLF included
	// (its bufio buffer).
	maxChunkLine = 4096
	// maxChunkExcess is the chunk overhead beyond 16 bytes plus twice the
	// data per chunk that Go tolerates in one body.
	maxChunkExcess = 16 << 10
	// maxTrailerBytes is the longest chunked trailer section Go reads.
	maxTrailerBytes = 4096
	// maxQueuedFlaws bounds the flaws waiting for their request. Go reads
	// at most its 4 KiB buffer ahead of the handler, so a connection whose
	// handler calls requestFlaw never holds that many; a handler that does
	// not loses the oldest ones rather than growing the queue.
	maxQueuedFlaws = 256
)

// flaw is why a request's header block must be refused; smaller values
// win when a block has several.
type flaw uint8

const (
	flawNone flaw = iota
	flawCLTE
	flawFoldedTE
	flawFoldedCL
	flawTE10
	flawBareLF
)

var flawReasons = [...]string{
	flawNone:     "",
	flawCLTE:     "both Content-Length and Transfer-Encoding",
	flawFoldedTE: "folded Transfer-Encoding header",
	flawFoldedCL: "folded Content-Length header",
	flawTE10:     "Transfer-Encoding in an HTTP/1.0 request",
	flawBareLF:   "bare LF line ending",
}

// add keeps the stronger of the flaws f and g.
func (f *flaw) add(g flaw) {
	if *f == flawNone || (g != flawNone && g < *f) {
		*f = g
	}
}

// h2Preface is what an HTTP/2 client sends first; net/http peeks exactly
// these bytes before handing the connection to its HTTP/2 server.
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// guardKey is the context key of a request's *guardConn.
type guardKey struct{}

// guardContext is the http.Server's ConnContext: it makes the connection's
// guard reachable from its requests.
func guardContext(ctx context.Context, c net.Conn) context.Context {
	if g, ok := c.(*guardConn); ok {
		return context.WithValue(ctx, guardKey{}, g)
	}
	return ctx
}

// requestFlaw returns why the raw HTTP/1.1 header block of the request being served on this
// connection must be refused, or "" (always "" for HTTP/2 and for connections not guarded).
// Each call consumes the next header block's entry: call it exactly once per h1 request.
// Once it has returned a reason, it returns it for every later request on the connection,
// which the handler should close (Connection: close) with its 400.
func requestFlaw(ctx context.Context) string {
	g, _ := ctx.Value(guardKey{}).(*guardConn)
	if g == nil || g.h2.Load() {
		return ""
	}
	return flawReasons[g.flaws.next()]
}

// connTLS returns the TLS handshake's state of the request's connection,
// nil for plaintext (it stands in for Request.TLS, which is nil since the
// guard terminates TLS). The state is shared: do not modify it.
func connTLS(ctx context.Context) *tls.ConnectionState {
	if g, _ := ctx.Value(guardKey{}).(*guardConn); g != nil {
		return g.tlsState.Load()
	}
	return nil
}

// guardListener terminates TLS when tlsConf is set (the handshake runs on
// the connection's first Read, under net/http's read deadline, so Accept
// never blocks) and wraps every connection in a guard.
type guardListener struct {
	net.Listener
	tls           *tls.Config
	headerTimeout time.Duration
	maxHeader     int
	log           *zap.Logger
	frontend      string // a frontend's own listener: its name
}

// newGuardListener guards the connections ln accepts; headerTimeout bounds
// an HTTP/2 header block (edge.read_header_timeout), maxHeader an HTTP/1.1
// request line and header fields (edge.max_header_bytes).
func newGuardListener(ln net.Listener, tlsConf *tls.Config, headerTimeout time.Duration, maxHeader int, log *zap.Logger) net.Listener {
	return &guardListener{Listener: ln, tls: tlsConf, headerTimeout: headerTimeout, maxHeader: maxHeader, log: log}
}

func (l *guardListener) Accept() (net.Conn, error) {
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := newGuardConn(raw, l.tls, l.headerTimeout, l.log)
	c.maxHeader = uint64(max(l.maxHeader, 0))
	c.frontend = l.frontend
	return c, nil
}

// listenerFrontend is the frontend whose own listener
// (edge.frontends[].listen) accepted the request's connection; "": the
// public listener.
func listenerFrontend(ctx context.Context) string {
	if g, _ := ctx.Value(guardKey{}).(*guardConn); g != nil {
		return g.frontend
	}
	return ""
}

// guardConn watches the bytes net/http reads from one connection.
type guardConn struct {
	net.Conn          // raw, or the TLS connection over it
	raw      net.Conn // the TCP connection
	tlsConn  *tls.Conn
	tlsState atomic.Pointer[tls.ConnectionState]
	log      *zap.Logger
	// maxHeader bounds an HTTP/1.1 request line and header fields; 0: Go's
	// own limit only. It is at least minMaxHeaderBytes: net/http reads at
	// most 4 KiB at a time, so a block can only go past it in a read that
	// holds nothing of the request before it, and while no handler runs.
	maxHeader uint64
	// frontend is the frontend of the listener that accepted it ("": the
	// public listener's connections).
	frontend string

	// Read state: net/http never reads concurrently from one connection.
	pre     int  // preface bytes matched so far, -1 once decided
	tlsDone bool // handshake outcome seen
	h1      h1Scanner
	frames  h2Scanner
	armed   bool // the header timer runs

	h2    atomic.Bool // the connection speaks HTTP/2
	flaws flawLog
	// lingerWanted: a request left its body unread; Close lingers.
	lingerWanted atomic.Bool
	// refused: the guard answered the connection; net/http writes nothing more.
	refused atomic.Bool

	mu            sync.Mutex // guards the fields below, shared with the timer
	headerTimeout time.Duration
	timer         *time.Timer
	deadline      time.Time // zero when no header block is open
	closed        bool
}

func newGuardConn(raw net.Conn, tlsConf *tls.Config, headerTimeout time.Duration, log *zap.Logger) *guardConn {
	c := &guardConn{Conn: raw, raw: raw, log: log, headerTimeout: headerTimeout}
	if tlsConf != nil {
		c.tlsConn = tls.Server(raw, tlsConf)
		c.Conn = c.tlsConn
	}
	c.h1.out = &c.flaws
	return c
}

func (c *guardConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.tlsConn != nil && !c.tlsDone && (n > 0 || err != nil) {
		c.handshaken(err)
	}
	if n > 0 {
		c.scan(p[:n])
		if c.maxHeader > 0 && c.h1.takeHeaderBytes() > c.maxHeader {
			return 0, c.refuseHeaders()
		}
	}
	return n, err
}

// Write sends p, unless the guard has answered the connection itself.
func (c *guardConn) Write(p []byte) (int, error) {
	if c.refused.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// errHeadersTooLarge ends the read of a header block past edge.max_header_bytes.
var errHeadersTooLarge = errors.New("request header block exceeds edge.max_header_bytes")

// refuseHeaders answers an HTTP/1.1 header block past edge.max_header_bytes
// with 431 and a google.rpc.Status body, as every other refusal (Go's own
// answer, which it would send a few kilobytes later, is plain text). To
// net/http the read fails; whatever it writes after that (a 400 for the
// header line cut short) is dropped. The close lingers so that the client,
// still sending headers, reads the answer.
func (c *guardConn) refuseHeaders() error {
	c.h1.state = h1Off
	body := chain.MarshalStatus(status.New(codes.ResourceExhausted,
		"request headers exceed the limit of "+strconv.FormatUint(c.maxHeader, 10)+" bytes (edge.max_header_bytes)"), nil)
	resp := make([]byte, 0, 256+len(body))
	resp = append(resp, "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"+
		"X-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: "...)
	resp = strconv.AppendInt(resp, int64(len(body)), 10)
	resp = append(resp, "\r\n\r\n"...)
	resp = append(resp, body...)
	_ = c.Conn.SetWriteDeadline(time.Now().Add(lingerTimeout))
	_, _ = c.Conn.Write(resp)
	c.refused.Store(true)
	c.lingerWanted.Store(true)
	return &net.OpError{Op: "read", Net: "tcp", Source: c.raw.LocalAddr(), Addr: c.raw.RemoteAddr(), Err: errHeadersTooLarge}
}

// scan feeds bytes read to the HTTP/2 preface check, then to the parser of
// the protocol it chose.
func (c *guardConn) scan(p []byte) {
	if c.pre >= 0 {
		for i, b := range p {
			if b != h2Preface[c.pre] {
				c.h1.feed(h2Preface[:c.pre])
				c.pre = -1
				p = p[i:]
				break
			}
			if c.pre++; c.pre == len(h2Preface) {
				c.pre = -1
				c.h2.Store(true)
				c.h1.state = h1Off
				p = p[i+1:]
				break
			}
		}
		if c.pre >= 0 {
			return
		}
	}
	if !c.h2.Load() {
		c.h1.feed(p)
		return
	}
	c.frames.feed(p)
	if c.frames.flood {
		c.frames.flood = false
		c.log.Debug("HTTP/2 client cancels streams faster than the edge allows (rapid reset): closing the connection",
			zap.Stringer("remote", c.raw.RemoteAddr()))
		c.raw.Close()
		return
	}
	if c.frames.open != c.armed {
		c.armed = c.frames.open
		c.setHeaderTimer(c.armed)
	}
}

// setHeaderTimer starts (on) or stops the HTTP/2 header block's deadline.
func (c *guardConn) setHeaderTimer(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed, c.headerTimeout <= 0:
	case !on:
		c.deadline = time.Time{}
		if c.timer != nil {
			c.timer.Stop()
		}
	case c.timer == nil:
		c.deadline = time.Now().Add(c.headerTimeout)
		c.timer = time.AfterFunc(c.headerTimeout, c.headerTimedOut)
	default:
		c.deadline = time.Now().Add(c.headerTimeout)
		c.timer.Reset(c.headerTimeout)
	}
}

// headerTimedOut cuts the connection when its header block is still open
// at the deadline (a stale run after a Reset finds a later deadline).
func (c *guardConn) headerTimedOut() {
	c.mu.Lock()
	cut := !c.closed && !c.deadline.IsZero() && !time.Now().Before(c.deadline)
	c.mu.Unlock()
	if !cut {
		return
	}
	c.log.Debug("HTTP/2 header block not completed within edge.read_header_timeout: closing the connection",
		zap.Stringer("remote", c.raw.RemoteAddr()), zap.Duration("read_header_timeout", c.headerTimeout))
	c.raw.Close() // not the TLS close: it could wait on a client that does not read
}

// handshaken records the TLS handshake's state once it is done, or why it
// failed, answering a plaintext HTTP request as net/http would.
func (c *guardConn) handshaken(err error) {
	c.tlsDone = true
	if st := c.tlsConn.ConnectionState(); st.HandshakeComplete {
		c.tlsState.Store(&st)
		return
	}
	if err == nil {
		return
	}
	reason := err.Error()
	if re, ok := errors.AsType[tls.RecordHeaderError](err); ok && re.Conn != nil && recordLooksLikeHTTP(re.RecordHeader) {
		io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		re.Conn.Close()
		reason = "client sent an HTTP request to an HTTPS server"
	}
	c.log.Info("TLS handshake error", zap.Stringer("remote", c.raw.RemoteAddr()), zap.String("error", reason))
}

// recordLooksLikeHTTP is net/http's test for a plaintext request on a TLS
// listener.
func recordLooksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

func (c *guardConn) Close() error {
	if c.lingerWanted.Swap(false) {
		_ = c.CloseWrite()
	}
	c.mu.Lock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// Lingering close. An HTTP/1.1 request answered with its body unread (413,
// the body budget's 503, a 401 before the body, a framing 400) ends with
// the connection closed, the client's bytes still arriving. Closing a
// socket with bytes unread makes the kernel reset the connection, and a
// reset can destroy the answer in the client's receive buffer before the
// client reads it: a client still writing sees "broken pipe" or "connection
// reset" instead of its 413 (15 of 20 tries with Go's client on loopback).
// net/http half-closes and waits half a second in some of these cases, and
// in others (a request with Connection: close, whose declared body is left
// unread) closes at once. So, as RFC 9112 §9.6 asks, the guard ends such a
// connection itself: the handler marks it (lingerOnClose), and Close (or
// net/http's CloseWrite, first) sends the answer's end (TLS close_notify,
// then TCP FIN) and reads and discards what the client is still sending,
// until the client closes (it has had the answer), lingerBytes are read, or
// lingerTimeout passes.
const (
	// lingerTimeout bounds how long a closing connection keeps reading.
	lingerTimeout = 2 * time.Second
	// lingerBytes bounds what it reads: twice the default
	// transcode.max_body_bytes, so a client that writes its whole body
	// before it reads (rather than both at once, as Go's client and curl
	// do) still gets the answer to a body of up to about that size.
	lingerBytes = 8 << 20
)

var lingerBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// CloseWrite half-closes and drains (see lingerTimeout); net/http looks for
// the method on the connection before it hangs up after an error response.
func (c *guardConn) CloseWrite() error {
	c.lingerWanted.Store(false)
	if c.tlsConn != nil && c.tlsState.Load() != nil {
		_ = c.tlsConn.CloseWrite() // close_notify; it leaves the TCP connection open
	}
	cw, ok := c.raw.(interface{ CloseWrite() error })
	if !ok {
		return nil
	}
	err := cw.CloseWrite()
	if err == nil {
		c.linger()
	}
	return err
}

// lingerOnClose marks the request's HTTP/1.1 connection to linger when it
// is closed (see lingerTimeout): its body was not read to the end.
func lingerOnClose(ctx context.Context) {
	if g, _ := ctx.Value(guardKey{}).(*guardConn); g != nil && !g.h2.Load() {
		g.lingerWanted.Store(true)
	}
}

// linger reads and discards until the client closes, or the limits.
func (c *guardConn) linger() {
	if err := c.raw.SetReadDeadline(time.Now().Add(lingerTimeout)); err != nil {
		return
	}
	bp := lingerBufs.Get().(*[]byte)
	defer lingerBufs.Put(bp)
	for n := 0; n < lingerBytes; {
		k, err := c.raw.Read(*bp)
		n += k
		if err != nil {
			return
		}
	}
}

// flawLog hands the flaws found by the scanner (which runs ahead, as Go's
// buffered reader does) to the requests they belong to, by sequence number:
// header block n goes to the n-th requestFlaw call.
type flawLog struct {
	served  atomic.Uint64 // requestFlaw calls so far
	queued  atomic.Int32  // len(list), read without the lock
	refused atomic.Uint32 // the first flaw returned
	mu      sync.Mutex
	list    []flawAt
}

// flawAt is the flaw of header block seq.
type flawAt struct {
	seq uint64
	f   flaw
}

func (l *flawLog) add(seq uint64, f flaw) {
	l.mu.Lock()
	if len(l.list) == maxQueuedFlaws {
		l.list = l.list[1:]
	}
	l.list = append(l.list, flawAt{seq, f})
	l.queued.Store(int32(len(l.list)))
	l.mu.Unlock()
}

// next is the flaw of the next request served. Once it has returned one,
// it returns that one for every later request: a handler that refuses a
// request but leaves the connection open still never serves the request
// smuggled behind it.
func (l *flawLog) next() flaw {
	seq := l.served.Add(1)
	if f := flaw(l.refused.Load()); f != flawNone {
		return f
	}
	if l.queued.Load() == 0 {
		return flawNone
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.list) > 0 && l.list[0].seq < seq {
		l.list = l.list[1:]
	}
	f := flawNone
	if len(l.list) > 0 && l.list[0].seq == seq {
		f = l.list[0].f
		l.list = l.list[1:]
		l.refused.Store(uint32(f))
	}
	l.queued.Store(int32(len(l.list)))
	return f
}
