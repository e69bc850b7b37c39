package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rowOversizedBodyAnswered (15): a client that sends a body over the limit
// gets its 413, every time. The edge answers before reading the body; if it
// then closed the connection with the client's bytes unread, the kernel
// would reset it, and a reset can destroy the 413 in the client's receive
// buffer before the client reads it (10 of 20 tries with Go's client did).
// The connection guard closes the write side and reads what the client is
// still sending (bounded) before it closes.
func rowOversizedBodyAnswered(t *testing.T, h *hostile) {
	const tries = 20
	const size = 8 << 20 // twice transcode.max_body_bytes
	body := bytes.Repeat([]byte("x"), size)
	for _, v := range []struct{ chunked, keepAlive bool }{{false, true}, {false, false}, {true, true}, {true, false}} {
		chunked := v.chunked
		lost := 0
		var seen []string
		n := tries
		if chunked {
			n = 4 // each reads (and drops) 4 MiB before its 413: RSS
		}
		for i := range n {
			// Without keep-alives Go's client sends Connection: close, and
			// net/http then closes at once, without its half-close.
			tr := &http.Transport{DisableKeepAlives: !v.keepAlive}
			c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
			var rd io.Reader = bytes.NewReader(body)
			if chunked {
				rd = io.MultiReader(rd) // no length: sent chunked
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			req, _ := http.NewRequestWithContext(ctx, "POST", h.url+"/v1/orders", rd)
			req.Header.Set("Content-Type", "application/json")
			resp, err := c.Do(req)
			outcome := ""
			if err != nil {
				outcome = "error: " + err.Error()
			} else {
				b, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				r := h1Resp{code: resp.StatusCode, header: resp.Header, body: string(b)}
				if _, _, cerr := checkRPCStatus(r, http.StatusRequestEntityTooLarge, 8); cerr != nil || rerr != nil {
					outcome = fmt.Sprintf("%d %q %v %v", resp.StatusCode, truncateText(string(b), 120), cerr, rerr)
				}
			}
			cancel()
			tr.CloseIdleConnections()
			if outcome != "" {
				lost++
				seen = append(seen, fmt.Sprintf("try %d: %s", i+1, outcome))
			}
		}
		t.Logf("chunked=%v keep-alive=%v: %d of %d tries got the 413", chunked, v.keepAlive, n-lost, n)
		if lost > 0 {
			t.Errorf("chunked=%v keep-alive=%v: %d of %d tries did not get a 413 RESOURCE_EXHAUSTED:\n%s", chunked, v.keepAlive, lost, n, strings.Join(seen[:min(5, len(seen))], "\n"))
		}
	}
}
