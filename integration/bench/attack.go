package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/portico-dev/portico/cmd/examples/services"
)

// runAttack measures what a few hostile clients cost everyone else: one
// closed-loop client's GET throughput alone, then beside four attackers
// that together send 1.2 requests per second, each a 2 MB body holding
// ~700k repeated elements (`{"tags":["","",…]}` on POST /v1/products).
// Before the pre-scan such a body cost the edge most of a CPU-second to
// refuse; now it is refused after the first transcode.max_repeated_elements
// elements. A second round runs the attackers closed-loop with bodies just
// under the limit, the most an attacker can make the decoder do.
func runAttack(ctx context.Context, d time.Duration, bin string) error {
	dir, err := os.MkdirTemp("", "portico-attack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		bin = filepath.Join(dir, "portico")
		fmt.Println("building portico…")
		if err := goBuild(ctx, root, bin, "./cmd/portico"); err != nil {
			return err
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	backend := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	if err := services.Register(backend, services.Names()...); err != nil {
		return err
	}
	go func() { _ = backend.Serve(lis) }()
	defer backend.Stop()
	cfg := filepath.Join(dir, "portico.yaml")
	if err := os.WriteFile(cfg, []byte("edge:\n  access_log:\n    enabled: false\n"), 0o600); err != nil {
		return err
	}
	g, err := startPortico("portico", bin, cfg, lis.Addr().String())
	if err != nil {
		return err
	}
	defer stopAll([]*contender{g})
	base := g.url
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 30 * time.Second}
	if err := waitReady(ctx, client, g, base+"/v1/products/p-1"); err != nil {
		return err
	}
	get := benchCase{name: "get1k", method: "GET", path: "/v1/products/p-1"}
	tck := clockTicks()
	if _, err := load(ctx, client, g, get, 1, time.Second, tck); err != nil {
		return err
	}
	alone, err := load(ctx, client, g, get, 1, d, tck)
	if err != nil {
		return err
	}
	fmt.Printf("normal client alone:            %6.0f req/s  p99 %6.2f ms\n", alone.rps, ms(alone.p99))

	huge := tagsBody(2 << 20)
	statuses, under := attackers(ctx, client, base, huge, 4, 10*time.Second/3, func() {
		r, _ := load(ctx, client, g, get, 1, d, tck)
		fmt.Printf("beside 4 attackers, 1.2 req/s:  %6.0f req/s  p99 %6.2f ms  (%.0f%% of alone)\n", r.rps, ms(r.p99), 100*r.rps/alone.rps)
	})
	fmt.Printf("  attackers' answers: %v; %d attack bodies of %d bytes\n", statuses, under, len(huge))

	near := tagsBodyElems(9999)
	statuses, under = attackers(ctx, client, base, near, 4, 0, func() {
		r, _ := load(ctx, client, g, get, 1, d, tck)
		fmt.Printf("beside 4 closed-loop attackers at 9999 elements: %6.0f req/s  p99 %6.2f ms  (%.0f%% of alone)\n", r.rps, ms(r.p99), 100*r.rps/alone.rps)
	})
	fmt.Printf("  attackers' answers: %v; %d attack bodies of %d bytes\n", statuses, under, len(near))
	return ctx.Err()
}

// attackers runs n clients each sending body every interval (0: back to
// back) while measure runs; it returns the status counts and requests sent.
func attackers(ctx context.Context, client *http.Client, base string, body []byte, n int, interval time.Duration, measure func()) (map[int]int, int) {
	ctx, cancel := context.WithCancel(ctx)
	var (
		mu    sync.Mutex
		codes = map[int]int{}
		sent  atomic.Int64
		wg    sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			// Stagger the attackers so that their requests spread out.
			next := time.Now().Add(time.Duration(i) * interval / time.Duration(n))
			for ctx.Err() == nil {
				if interval > 0 {
					t := time.NewTimer(time.Until(next))
					select {
					case <-ctx.Done():
						t.Stop()
						return
					case <-t.C:
					}
					next = next.Add(interval)
				}
				req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/products", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				sent.Add(1)
				code := 0
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				if ctx.Err() == nil {
					mu.Lock()
					codes[code]++
					mu.Unlock()
				}
			}
		})
	}
	measure()
	cancel()
	wg.Wait()
	return codes, int(sent.Load())
}

// tagsBody is `{"id":"x","tags":["","",…]}` of about size bytes.
func tagsBody(size int) []byte {
	return tagsBodyElems((size - 20) / 3)
}

func tagsBodyElems(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id":"attack","tags":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`""`)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}
