// Command bench runs Portico and grpc-gateway (generated from the same
// example protos) in front of one backend on loopback and reports, per
// case, requests/s, p50/p99 latency and the gateway process's CPU time per
// request.
//
//	go run ./integration/bench [-duration 5s] [-concurrency 8] [-warmup 1s] [-cases get1k,post1k,list20k]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"

	"github.com/portico-dev/portico/cmd/examples/services"
)

type benchCase struct {
	name, method, path, body string
}

var allCases = []benchCase{
	{name: "get1k", method: "GET", path: "/v1/products/p-1"},
	{name: "post1k", method: "POST", path: "/v1/products", body: postBody()},
	{name: "list20k", method: "GET", path: "/v1/products?page_size=20"},
}

func postBody() string {
	desc := strings.Repeat("A well-made example item for the benchmark. ", 14)[:600]
	return fmt.Sprintf(`{"id":"bench-1","name":"Benchmark product","description":%q,"priceCents":"1999","currency":"EUR",`+
		`"tags":["a","b","c","d","e"],"attributes":{"color":"blue","size":"M","material":"cotton","origin":"PT","warranty":"2y","sku":"sku-b"},`+
		`"stock":12,"rating":4.5,"available":true,"dimensions":[{"name":"width","value":10.5,"unit":"cm"},{"name":"height","value":20,"unit":"cm"}]}`, desc)
}

type gateway struct {
	name string
	url  string
	cmd  *exec.Cmd
}

type result struct {
	gw        string
	requests  int
	errors    int
	rps       float64
	p50, p99  time.Duration
	cpuPerReq float64 // microseconds
}

func main() {
	duration := flag.Duration("duration", 5*time.Second, "measured time per case and gateway")
	warmup := flag.Duration("warmup", time.Second, "unmeasured load before each measurement")
	concurrency := flag.Int("concurrency", 8, "closed-loop clients")
	casesFlag := flag.String("cases", "get1k,post1k,list20k", "cases to run")
	accessLog := flag.Bool("access-log", false, "keep Portico's access log on (written to a discarded stdout); grpc-gateway has none")
	attack := flag.Bool("attack", false, "instead: a normal client's throughput alone and beside four clients sending 2 MB repeated-element bodies (see attack.go)")
	porticoBin := flag.String("portico-bin", "", "with -attack: run this portico binary instead of building one (to compare two versions)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *attack {
		if err := runAttack(ctx, *duration, *porticoBin); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, *duration, *warmup, *concurrency, *casesFlag, *accessLog); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, duration, warmup time.Duration, conc int, casesFlag string, accessLog bool) error {
	var cases []benchCase
	for _, name := range strings.Split(casesFlag, ",") {
		found := false
		for _, c := range allCases {
			if c.name == name {
				cases, found = append(cases, c), true
			}
		}
		if !found {
			return fmt.Errorf("unknown case %q", name)
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "portico-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Println("building portico and grpc-gateway…")
	if err := goBuild(ctx, root, filepath.Join(dir, "portico"), "./cmd/portico"); err != nil {
		return err
	}
	if err := goBuild(ctx, root, filepath.Join(dir, "gateway"), "./integration/bench/gateway"); err != nil {
		return err
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	backend := grpc.NewServer()
	if err := services.Register(backend, services.Names()...); err != nil {
		return err
	}
	go func() { _ = backend.Serve(lis) }()
	defer backend.Stop()
	baddr := lis.Addr().String()

	pAddr, gAddr := freeAddr(), freeAddr()
	cfg := filepath.Join(dir, "portico.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "edge:\n  access_log:\n    enabled: %t\n", accessLog), 0o600); err != nil {
		return err
	}
	gws := []*gateway{
		{name: "portico", url: "http://" + pAddr, cmd: exec.Command(filepath.Join(dir, "portico"), "serve", "--config", cfg, "--listen", pAddr, "--upstream", baddr, "--plaintext-upstream", "--log-level", "warn")},
		{name: "grpc-gateway", url: "http://" + gAddr, cmd: exec.Command(filepath.Join(dir, "gateway"), "-listen", gAddr, "-backend", baddr)},
	}
	for _, g := range gws {
		g.cmd.Stdout, g.cmd.Stderr = io.Discard, os.Stderr // stdout: Portico's access log
		if err := g.cmd.Start(); err != nil {
			return err
		}
		defer terminate(g.cmd)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc, MaxIdleConns: conc * 2}, Timeout: 10 * time.Second}
	for _, g := range gws {
		if err := waitReady(ctx, client, g.url+"/v1/products/p-1"); err != nil {
			return fmt.Errorf("%s: %w", g.name, err)
		}
	}
	tck := clockTicks()
	fmt.Printf("cores=%d concurrency=%d duration=%s warmup=%s clk_tck=%d\n", runtime.NumCPU(), conc, duration, warmup, tck)
	for _, c := range cases {
		for _, g := range gws {
			code, size, err := once(ctx, client, g.url, c)
			if err != nil || code != 200 {
				return fmt.Errorf("%s %s: status %d, %v", g.name, c.name, code, err)
			}
			fmt.Printf("  %-8s %-13s response %6d bytes\n", c.name, g.name, size)
		}
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tgateway\trequests\terrors\treq/s\tp50 ms\tp99 ms\tCPU µs/req\t")
	failed := false
	for i, c := range cases {
		order := gws
		if i%2 == 1 {
			order = []*gateway{gws[1], gws[0]}
		}
		res := map[string]result{}
		for _, g := range order {
			_ = load(ctx, client, g, c, conc, warmup, tck)
			r := load(ctx, client, g, c, conc, duration, tck)
			res[g.name] = r
			if r.errors > 0 {
				failed = true
			}
		}
		for _, g := range gws {
			r := res[g.name]
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.1f\t\n", c.name, g.name, r.requests, r.errors, r.rps,
				ms(r.p50), ms(r.p99), r.cpuPerReq)
		}
		p, gg := res["portico"], res["grpc-gateway"]
		if gg.cpuPerReq <= 0 {
			failed = true
			fmt.Fprintf(tw, "%s\tratio\t\t\t\t\t\tn/a\t\n", c.name)
		} else {
			fmt.Fprintf(tw, "%s\tportico/gw\t\t\t%.2fx\t\t\t%.2fx\t\n", c.name, p.rps/gg.rps, p.cpuPerReq/gg.cpuPerReq)
		}
	}
	_ = tw.Flush()
	if failed {
		return errors.New("errors during measurement or a ratio could not be computed")
	}
	return ctx.Err()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// load runs a closed loop of conc clients for d and measures the gateway's
// CPU over exactly that window.
func load(ctx context.Context, client *http.Client, g *gateway, c benchCase, conc int, d time.Duration, tck int64) result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	before, _ := procTicks(g.cmd.Process.Pid)
	start := time.Now()
	lat := make([][]time.Duration, conc)
	errs := make([]int, conc)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				code, _, err := once(ctx, client, g.url, c)
				if ctx.Err() != nil {
					return
				}
				if err != nil || code != 200 {
					errs[w]++
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	after, _ := procTicks(g.cmd.Process.Pid)
	var all []time.Duration
	r := result{gw: g.name}
	for w := range conc {
		all = append(all, lat[w]...)
		r.errors += errs[w]
	}
	sortDurations(all)
	r.requests = len(all)
	r.rps = float64(len(all)) / elapsed.Seconds()
	r.p50, r.p99 = percentile(all, 50), percentile(all, 99)
	if r.requests > 0 {
		r.cpuPerReq = float64(after-before) / float64(tck) * 1e6 / float64(r.requests)
	}
	return r
}

func once(ctx context.Context, client *http.Client, base string, c benchCase) (int, int, error) {
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, base+c.path, body)
	if err != nil {
		return 0, 0, err
	}
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, int(n), err
}

func waitReady(ctx context.Context, client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("not ready: %w", ctx.Err())
		case <-t.C:
		}
	}
}

func terminate(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		_ = cmd.Process.Kill()
		<-done
	}
}

func procTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return cpuTicks(string(b))
}

func clockTicks() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 100
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:18080"
	}
	defer l.Close()
	return l.Addr().String()
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the module")
	}
	return filepath.Dir(mod), nil
}

func goBuild(ctx context.Context, root, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, stderr.String())
	}
	return nil
}
