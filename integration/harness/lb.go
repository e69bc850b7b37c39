package harness

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Balancer is a TCP round-robin load balancer on loopback that behaves like
// HAProxy in `mode tcp` with `option httpchk GET /readyz` and `redispatch`:
// every 100 ms it checks each backend's health URL (down after one failed
// check, up after two good ones), sends each new connection to the next
// backend that is up, and tries the next one when a connect fails. Bytes
// are copied both ways; when one side closes, so does the other.
type Balancer struct {
	Addr string

	ln       net.Listener
	backends []*lbBackend
	next     atomic.Uint64
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

type lbBackend struct {
	addr, health string
	up           atomic.Bool
	good         int // consecutive good checks, owned by the checker
}

// BalancerBackend is one backend: its TCP address and health URL.
type BalancerBackend struct{ Addr, HealthURL string }

// StartBalancer listens on 127.0.0.1:0; the test's Cleanup stops it.
func StartBalancer(tb testing.TB, backends ...BalancerBackend) *Balancer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Balancer{Addr: ln.Addr().String(), ln: ln, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	for _, be := range backends {
		b.backends = append(b.backends, &lbBackend{addr: be.Addr, health: be.HealthURL})
	}
	b.wg.Go(b.check)
	b.wg.Go(b.accept)
	tb.Cleanup(b.Close)
	return b
}

// Up reports whether backend i passes its checks.
func (b *Balancer) Up(i int) bool { return b.backends[i].up.Load() }

func (b *Balancer) check() {
	c := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		for _, be := range b.backends {
			ok := false
			if req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, be.health, nil); err == nil {
				if resp, err := c.Do(req); err == nil {
					_ = resp.Body.Close()
					ok = resp.StatusCode == http.StatusOK
				}
			}
			if !ok {
				be.good = 0
				be.up.Store(false)
				continue
			}
			if be.good++; be.good >= 2 {
				be.up.Store(true)
			}
		}
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (b *Balancer) accept() {
	for {
		conn, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.wg.Go(func() { b.serve(conn) })
	}
}

func (b *Balancer) serve(client net.Conn) {
	defer client.Close()
	var upstream net.Conn
	d := net.Dialer{Timeout: time.Second}
	n := len(b.backends)
	start := int(b.next.Add(1))
	for i := range n {
		be := b.backends[(start+i)%n]
		if !be.up.Load() {
			continue
		}
		c, err := d.DialContext(b.ctx, "tcp", be.addr)
		if err == nil {
			upstream = c
			break
		}
	}
	if upstream == nil {
		return // no backend: the client sees the connection close
	}
	defer upstream.Close()
	if !b.track(client, upstream) {
		return
	}
	defer b.untrack(client, upstream)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Pass the close on: a half-close keeps HTTP semantics (the
		// client reads the response to its last request, then EOF).
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(upstream, client)
	go pipe(client, upstream)
	<-done
	<-done
}

func (b *Balancer) track(cs ...net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ctx.Err() != nil {
		return false
	}
	for _, c := range cs {
		b.conns[c] = struct{}{}
	}
	return true
}

func (b *Balancer) untrack(cs ...net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range cs {
		delete(b.conns, c)
	}
}

// Close stops accepting, closes every proxied connection and waits.
func (b *Balancer) Close() {
	b.cancel()
	_ = b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}
