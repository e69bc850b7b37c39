package integration

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Conn is a raw cleartext HTTP/2 client connection (prior knowledge)
// that writes whatever frames a test asks for, valid or not. One owned
// goroutine reads the server's frames into the state below; tests wait on
// that state with wait. Close stops the reader and waits for it.
type h2Conn struct {
	t    *testing.T
	conn net.Conn

	wmu    sync.Mutex // guards bw, the framer's writes, enc and encBuf
	bw     *bufio.Writer
	fr     *http2.Framer
	enc    *hpack.Encoder
	encBuf bytes.Buffer

	changed chan struct{} // poked (never blocking) on every state change
	done    chan struct{} // closed when the reader exited

	mu      sync.Mutex // guards the fields below
	streams map[uint32]*h2Stream
	goAway  *h2GoAway
	closed  bool      // the reader saw EOF or an error
	closeAt time.Time // when
	readErr error
	connWin int64 // our send window on the connection
	initWin int64 // the server's SETTINGS_INITIAL_WINDOW_SIZE
	frames  int   // frames read
	// settings is the server's first SETTINGS frame, for the log.
	settings string
}

// h2Stream is what the server sent on one stream.
type h2Stream struct {
	status  int
	header  http.Header
	body    bytes.Buffer // the first MiB
	ended   bool         // END_STREAM seen
	rst     bool
	rstCode http2.ErrCode
	win     int64 // our send window on the stream
}

type h2GoAway struct {
	code  http2.ErrCode
	last  uint32
	debug string
}

// h2MaxBody bounds what a stream keeps of a response body.
const h2MaxBody = 1 << 20

// dialH2 opens a connection, sends the preface, our SETTINGS (a large
// receive window: the tests never want to be the slow reader here) and a
// connection WINDOW_UPDATE, and starts the reader.
func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &h2Conn{
		t: t, conn: conn, bw: bufio.NewWriterSize(conn, 64<<10),
		changed: make(chan struct{}, 1), done: make(chan struct{}),
		streams: map[uint32]*h2Stream{}, connWin: 65535, initWin: 65535,
	}
	c.fr = http2.NewFramer(c.bw, conn)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	c.enc = hpack.NewEncoder(&c.encBuf)
	err = c.write(func() error {
		if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
			return err
		}
		if err := c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30}); err != nil {
			return err
		}
		return c.fr.WriteWindowUpdate(0, 1<<30)
	})
	if err != nil {
		conn.Close()
		t.Fatalf("h2 preface: %v", err)
	}
	go c.readLoop()
	t.Cleanup(c.Close)
	return c
}

// Close closes the connection and waits for the reader.
func (c *h2Conn) Close() {
	_ = c.conn.Close()
	<-c.done
}

// write runs fn with the write lock held, then flushes; writes that make
// no progress for 10 s fail.
func (c *h2Conn) write(fn func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := fn(); err != nil {
		return err
	}
	return c.bw.Flush()
}

// encodeLocked hpack-encodes fields; the caller holds wmu. The result is a
// copy.
func (c *h2Conn) encodeLocked(fields []hpack.HeaderField) []byte {
	c.encBuf.Reset()
	for _, f := range fields {
		_ = c.enc.WriteField(f)
	}
	return bytes.Clone(c.encBuf.Bytes())
}

// headersLocked writes one header block as HEADERS plus as many
// CONTINUATION frames as 16 KiB frames need, the last with END_HEADERS;
// the caller holds wmu.
func (c *h2Conn) headersLocked(id uint32, fields []hpack.HeaderField, endStream bool) error {
	block := c.encodeLocked(fields)
	const frame = 16 << 10
	first := block[:min(len(block), frame)]
	rest := block[len(first):]
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(rest) == 0,
	}); err != nil {
		return err
	}
	for len(rest) > 0 {
		n := min(len(rest), frame)
		if err := c.fr.WriteContinuation(id, n == len(rest), rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}

// headers sends a complete header block on stream id.
func (c *h2Conn) headers(id uint32, fields []hpack.HeaderField, endStream bool) error {
	c.stream(id)
	return c.write(func() error { return c.headersLocked(id, fields, endStream) })
}

// stream returns the state of stream id, made on first use.
func (c *h2Conn) stream(id uint32) *h2Stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streamLocked(id)
}

func (c *h2Conn) streamLocked(id uint32) *h2Stream {
	st := c.streams[id]
	if st == nil {
		st = &h2Stream{header: http.Header{}, win: c.initWin}
		c.streams[id] = st
	}
	return st
}

// update changes the state under mu and wakes the waiters.
func (c *h2Conn) update(fn func()) {
	c.mu.Lock()
	fn()
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// wait reports whether pred (called with mu held) became true within d.
func (c *h2Conn) wait(d time.Duration, pred func() bool) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	check := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return pred()
	}
	for {
		if check() {
			return true
		}
		select {
		case <-c.changed:
		case <-timer.C:
			return check()
		case <-c.t.Context().Done():
			return false
		}
	}
}

// gone reports, with mu held, whether the server ended the connection.
func (c *h2Conn) goneLocked() bool { return c.closed || c.goAway != nil }

// answeredLocked: the stream got a final status, a reset, or the
// connection went.
func (c *h2Conn) answeredLocked(id uint32) bool {
	st := c.streams[id]
	return c.goneLocked() || (st != nil && (st.status >= 200 || st.rst))
}

// finishedLocked: the stream ended, was reset, or the connection went.
func (c *h2Conn) finishedLocked(id uint32) bool {
	st := c.streams[id]
	return c.goneLocked() || (st != nil && (st.ended || st.rst))
}

// describe summarises what the server did, for failure messages.
func (c *h2Conn) describe() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := "server " + strings.TrimSuffix(c.settings, ";") + ", frames read " + strconv.Itoa(c.frames)
	if c.goAway != nil {
		s += ", GOAWAY " + c.goAway.code.String() + " last stream " + strconv.Itoa(int(c.goAway.last)) + " " + strconv.Quote(c.goAway.debug)
	}
	if c.closed {
		s += ", closed (" + errText(c.readErr) + ")"
	}
	return s
}

func errText(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func (c *h2Conn) readLoop() {
	defer close(c.done)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.update(func() { c.closed, c.closeAt, c.readErr = true, time.Now(), err })
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				break
			}
			c.update(func() {
				c.frames++
				_ = f.ForeachSetting(func(s http2.Setting) error {
					if c.settings == "" || !strings.HasSuffix(c.settings, ";") {
						c.settings += s.String() + " "
					}
					if s.ID == http2.SettingInitialWindowSize {
						delta := int64(s.Val) - c.initWin
						c.initWin = int64(s.Val)
						for _, st := range c.streams {
							st.win += delta
						}
					}
					return nil
				})
				c.settings = strings.TrimSuffix(c.settings, " ") + ";"
			})
			_ = c.write(func() error { return c.fr.WriteSettingsAck() })
		case *http2.PingFrame:
			c.update(func() { c.frames++ })
			if !f.IsAck() {
				data := f.Data
				_ = c.write(func() error { return c.fr.WritePing(true, data) })
			}
		case *http2.WindowUpdateFrame:
			c.update(func() {
				c.frames++
				if f.StreamID == 0 {
					c.connWin += int64(f.Increment)
				} else {
					c.streamLocked(f.StreamID).win += int64(f.Increment)
				}
			})
		case *http2.MetaHeadersFrame:
			c.update(func() {
				c.frames++
				st := c.streamLocked(f.StreamID)
				for _, hf := range f.Fields {
					if hf.Name == ":status" {
						if n, err := strconv.Atoi(hf.Value); err == nil && (st.status < 200 || n >= 200) {
							st.status = n
						}
						continue
					}
					st.header.Add(hf.Name, hf.Value)
				}
				if f.StreamEnded() {
					st.ended = true
				}
			})
		case *http2.DataFrame:
			c.update(func() {
				c.frames++
				st := c.streamLocked(f.StreamID)
				if room := h2MaxBody - st.body.Len(); room > 0 {
					st.body.Write(f.Data()[:min(room, len(f.Data()))])
				}
				if f.StreamEnded() {
					st.ended = true
				}
			})
		case *http2.RSTStreamFrame:
			c.update(func() {
				c.frames++
				st := c.streamLocked(f.StreamID)
				st.rst, st.rstCode = true, f.ErrCode
			})
		case *http2.GoAwayFrame:
			c.update(func() {
				c.frames++
				c.goAway = &h2GoAway{code: f.ErrCode, last: f.LastStreamID, debug: string(f.DebugData())}
			})
		default:
			c.update(func() { c.frames++ })
		}
	}
}

// reqFields is a request header block: pseudo-headers, then name/value
// pairs.
func reqFields(method, path string, kv ...string) []hpack.HeaderField {
	fs := []hpack.HeaderField{
		{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "portico.test"}, {Name: ":path", Value: path},
	}
	for i := 0; i+1 < len(kv); i += 2 {
		fs = append(fs, hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return fs
}

// upload sends size bytes of filler as DATA on stream id within the
// flow-control windows the server grants, until everything is sent, the
// stream is answered or the connection goes; it returns the bytes sent.
// endStream ends the stream after the last byte.
func (c *h2Conn) upload(id uint32, size int64, endStream bool) int64 {
	chunk := bytes.Repeat([]byte(" "), 16<<10)
	var sent int64
	for sent < size {
		var n int64
		ok := c.wait(10*time.Second, func() bool {
			if c.answeredLocked(id) {
				return true
			}
			st := c.streamLocked(id)
			n = min(c.connWin, st.win, int64(len(chunk)), size-sent)
			return n > 0
		})
		if !ok {
			c.t.Logf("h2 upload on stream %d stalled after %d bytes: %s", id, sent, c.describe())
			return sent
		}
		answered := false
		c.update(func() {
			if c.answeredLocked(id) {
				answered = true
				return
			}
			c.connWin -= n
			c.streamLocked(id).win -= n
		})
		if answered {
			return sent
		}
		last := sent+n == size
		if err := c.write(func() error { return c.fr.WriteData(id, last && endStream, chunk[:n]) }); err != nil {
			return sent
		}
		sent += n
	}
	return sent
}

// response is the stream's answer as an h1Resp (status 0 without one).
func (c *h2Conn) response(id uint32) h1Resp {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[id]
	if st == nil {
		return h1Resp{}
	}
	return h1Resp{code: st.status, header: st.header.Clone(), body: st.body.String()}
}
