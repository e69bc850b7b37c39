package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// h1Resp is one HTTP response as a raw client saw it.
type h1Resp struct {
	code   int
	header http.Header
	body   string
}

func (r h1Resp) String() string {
	return fmt.Sprintf("HTTP %d %s %s", r.code, r.header.Get("Content-Type"), truncateText(r.body, 300))
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:n]) + fmt.Sprintf("… (%d bytes)", len(s))
}

// rawConn is an HTTP/1.1 client connection that writes raw bytes.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

// dialRaw connects to addr; rcvbuf, if > 0, is the socket's SO_RCVBUF
// (set before connecting, so the window the client advertises stays small).
// The test's Cleanup closes it.
func dialRaw(t *testing.T, addr string, rcvbuf int) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	conn, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// send writes b; a write that makes no progress for 10 s fails.
func (c *rawConn) send(b string) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := io.WriteString(c.conn, b)
	return err
}

// response reads the next response (its body up to 1 MiB) within d.
func (c *rawConn) response(method string, d time.Duration) (h1Resp, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		return h1Resp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	r := h1Resp{code: resp.StatusCode, header: resp.Header, body: string(b)}
	if err != nil {
		return r, fmt.Errorf("reading the body of %s: %w", r, err)
	}
	return r, nil
}

// closedWithin reports whether the server closed the connection within d
// (EOF or a reset); anything it sends meanwhile is returned.
func (c *rawConn) closedWithin(d time.Duration) (closed bool, extra string) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(c.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, string(b)
	}
	return true, string(b)
}

// readAll reads until EOF (at most d): for Connection: close exchanges
// whose exact bytes matter (HEAD).
func (c *rawConn) readAll(d time.Duration) ([]byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	return io.ReadAll(c.br)
}

var (
	// anIP matches IPv4 addresses and bracketed IPv6 ones.
	anIP = regexp.MustCompile(`\b(?:\d{1,3}\.){3}\d{1,3}\b|\[[0-9a-fA-F:]*:[0-9a-fA-F:]*\]`)
	// anIPPort matches host:port with a numeric host.
	anIPPort = regexp.MustCompile(`(?:\d{1,3}\.){3}\d{1,3}:\d+|\[[0-9a-fA-F:]+\]:\d+`)
)

// rpcStatus checks that r is a google.rpc.Status answer: HTTP code,
// Content-Type application/json, integer code (wantCode unless negative),
// string message, details array. It returns the code and message.
func rpcStatus(t *testing.T, r h1Resp, httpCode, wantCode int) (code int, message string) {
	t.Helper()
	code, message, err := checkRPCStatus(r, httpCode, wantCode)
	if err != nil {
		t.Fatal(err)
	}
	return code, message
}

// checkRPCStatus is rpcStatus returning the failure.
func checkRPCStatus(r h1Resp, httpCode, wantCode int) (code int, message string, err error) {
	if r.code != httpCode {
		return 0, "", fmt.Errorf("got %s; want HTTP %d", r, httpCode)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		return 0, "", fmt.Errorf("got %s; want Content-Type application/json", r)
	}
	var st struct {
		Code    *json.Number     `json:"code"`
		Message *string          `json:"message"`
		Details *json.RawMessage `json:"details"`
	}
	dec := json.NewDecoder(strings.NewReader(r.body))
	dec.UseNumber()
	if err := dec.Decode(&st); err != nil || st.Code == nil || st.Message == nil || st.Details == nil {
		return 0, "", fmt.Errorf("got %s; want a google.rpc.Status object with code, message and details (%v)", r, err)
	}
	n, err := st.Code.Int64()
	if err != nil {
		return 0, "", fmt.Errorf("got %s; code is not an integer", r)
	}
	if wantCode >= 0 && int(n) != wantCode {
		return 0, "", fmt.Errorf("got %s; want google.rpc.Status code %d", r, wantCode)
	}
	if d := bytes.TrimSpace(*st.Details); len(d) == 0 || d[0] != '[' {
		return 0, "", fmt.Errorf("got %s; details is not an array", r)
	}
	return int(n), *st.Message, nil
}

// rssOf is the resident set of process pid, in bytes.
func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
}

// rssWatch samples a process's RSS every 10 ms and keeps the peak.
type rssWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	peak int64
}

func watchRSS(pid int) *rssWatch {
	w := &rssWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if n, err := rssOf(pid); err == nil {
				w.mu.Lock()
				w.peak = max(w.peak, n)
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// Peak is the highest RSS sampled so far.
func (w *rssWatch) Peak() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak
}

// Stop ends the sampling and returns the peak.
func (w *rssWatch) Stop(pid int) int64 {
	close(w.stop)
	<-w.done
	if n, err := rssOf(pid); err == nil {
		w.peak = max(w.peak, n)
	}
	return w.peak
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
