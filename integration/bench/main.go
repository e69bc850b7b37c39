// Command bench runs Portico, grpc-gateway (generated from the same example
// protos), a second grpc-gateway process as an A/A control, and a plain
// HTTP reverse proxy that translates nothing, each in front of a backend on
// loopback, and reports per case requests/s, p50/p99 latency, the
// contender process's CPU time per request and its peak RSS.
//
//	go run ./integration/bench [-rounds 5] [-duration 3s] [-warmup 1s] [-concurrency 8]
//	    [-cases get1k,post1k,list20k] [-contenders portico,grpc-gateway,grpc-gateway-aa,proxy]
//	    [-access-log=false] [-portico-bin FILE] [-portico-bin2 FILE]
//
// Every round runs every case on every contender (warmup, then the
// measurement), the contenders in an order rotated by one each round, so
// that drift over the run hits all of them alike. The key figure is, per
// case, the median over rounds of the ratio of a contender's CPU per
// request to grpc-gateway's in the same round, with the range of those
// ratios; the A/A row shows how far two identical processes differ.
package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

// The contenders -contenders may name, in their default order. portico-b
// is the -portico-bin2 binary.
const (
	cPortico  = "portico"
	cPorticoB = "portico-b"
	cGateway  = "grpc-gateway"
	cGatewayA = "grpc-gateway-aa"
	cProxy    = "proxy"
)

var knownContenders = []string{cPortico, cPorticoB, cGateway, cGatewayA, cProxy}

// base is the contender every ratio is taken against.
const base = cGateway

type options struct {
	rounds, conc            int
	duration, warmup        time.Duration
	cases                   []benchCase
	contenders              []string
	accessLog               bool
	porticoBin, porticoBin2 string
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 5, "rounds; each runs every case on every contender, in an order rotated by one each round")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "measured time per round, case and contender")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each measurement")
	flag.IntVar(&o.conc, "concurrency", 8, "closed-loop clients")
	casesFlag := flag.String("cases", "get1k,post1k,list20k", "cases to run")
	contFlag := flag.String("contenders", "portico,grpc-gateway,grpc-gateway-aa,proxy",
		"contenders to run: portico, grpc-gateway, grpc-gateway-aa (a second grpc-gateway process: the A/A control), proxy\n"+
			"(httputil.ReverseProxy in front of a net/http server answering Portico's bytes), portico-b (needs -portico-bin2)")
	flag.BoolVar(&o.accessLog, "access-log", true, "Portico's access log as shipped (on); -access-log=false turns it off (grpc-gateway and the proxy have none)")
	attack := flag.Bool("attack", false, "instead: a normal client's throughput alone and beside four clients sending 2 MB repeated-element bodies (see attack.go)")
	flag.StringVar(&o.porticoBin, "portico-bin", "", "run this portico binary instead of building one from this module (also for -attack)")
	flag.StringVar(&o.porticoBin2, "portico-bin2", "", "add a second Portico contender, portico-b, running this binary (to measure two versions in one run)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *attack {
		if err := runAttack(ctx, o.duration, o.porticoBin); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	var err error
	if o.cases, err = parseCases(*casesFlag); err == nil {
		o.contenders, err = parseContenders(*contFlag, o.porticoBin2 != "")
	}
	if err == nil && o.rounds < 1 {
		err = errors.New("-rounds must be at least 1")
	}
	if err == nil {
		err = run(ctx, o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

func parseCases(s string) ([]benchCase, error) {
	var cases []benchCase
	for name := range strings.SplitSeq(s, ",") {
		i := slices.IndexFunc(allCases, func(c benchCase) bool { return c.name == name })
		if i < 0 {
			return nil, fmt.Errorf("unknown case %q", name)
		}
		cases = append(cases, allCases[i])
	}
	return cases, nil
}

// parseContenders checks the names and adds portico-b when a second
// binary is given.
func parseContenders(s string, haveBin2 bool) ([]string, error) {
	var out []string
	for name := range strings.SplitSeq(s, ",") {
		if !slices.Contains(knownContenders, name) {
			return nil, fmt.Errorf("unknown contender %q (known: %s)", name, strings.Join(knownContenders, ", "))
		}
		if slices.Contains(out, name) {
			return nil, fmt.Errorf("contender %q named twice", name)
		}
		if name == cPorticoB && !haveBin2 {
			return nil, errors.New("contender portico-b needs -portico-bin2")
		}
		out = append(out, name)
	}
	if haveBin2 && !slices.Contains(out, cPorticoB) {
		out = append(out, cPorticoB)
	}
	return out, nil
}

// contender is one process under test, serving url.
type contender struct {
	name    string
	url     string
	admin   string // Portico's admin listener (its /metrics); "" for others
	cmd     *exec.Cmd
	access  *lineCounter // Portico's stdout, the access log
	exited  chan struct{}
	waitErr error
}

func (c *contender) isPortico() bool { return c.name == cPortico || c.name == cPorticoB }

// lineCounter counts the bytes and lines written to it and keeps nothing.
type lineCounter struct{ bytes, lines atomic.Int64 }

func (l *lineCounter) Write(p []byte) (int, error) {
	l.bytes.Add(int64(len(p)))
	l.lines.Add(int64(bytes.Count(p, []byte{'\n'})))
	return len(p), nil
}

func run(ctx context.Context, o options) error {
	perMeasure := o.warmup + o.duration
	n := o.rounds * len(o.cases) * len(o.contenders)
	fmt.Fprintf(os.Stderr, "plan: %d rounds × %d cases × %d contenders (%s) × (%s warmup + %s) ≈ %s of load, plus building and start-up\n",
		o.rounds, len(o.cases), len(o.contenders), strings.Join(o.contenders, ", "), o.warmup, o.duration,
		(time.Duration(n) * perMeasure).Round(time.Second))

	dir, err := os.MkdirTemp("", "portico-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bins, err := buildAll(ctx, dir, o)
	if err != nil {
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

	org := &origin{}
	olis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	osrv := &http.Server{Handler: org, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go func() { _ = osrv.Serve(olis) }()
	defer osrv.Close()

	var cfg string
	if !o.accessLog {
		cfg = filepath.Join(dir, "portico.yaml")
		if err := os.WriteFile(cfg, []byte("edge:\n  access_log:\n    enabled: false\n"), 0o600); err != nil {
			return err
		}
	}
	var floor memory
	if bins.floor != "" {
		if floor, err = measureFloor(ctx, bins.floor); err != nil {
			return fmt.Errorf("link floor: %w", err)
		}
	}
	var cs []*contender
	defer func() { stopAll(cs) }()
	for _, name := range o.contenders {
		var c *contender
		switch name {
		case cPortico:
			c, err = startPortico(name, bins.portico, cfg, baddr)
		case cPorticoB:
			c, err = startPortico(name, bins.portico2, cfg, baddr)
		case cGateway, cGatewayA:
			addr := freeAddr()
			c, err = start(name, "http://"+addr, nil, bins.gateway, "-listen", addr, "-backend", baddr)
		case cProxy:
			addr := freeAddr()
			c, err = start(name, "http://"+addr, nil, bins.proxy, "-listen", addr, "-target", "http://"+olis.Addr().String())
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		cs = append(cs, c)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.conc, MaxIdleConns: o.conc * (len(cs) + 1)}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for _, c := range cs {
		if c.name == cProxy {
			continue // ready once the origin has Portico's answers
		}
		if err := waitReady(ctx, client, c, c.url+"/v1/products/p-1"); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}

	traceHeader := ""
	if slices.Contains(o.contenders, cProxy) {
		// The origin answers each case with the bytes Portico answers.
		src := findContender(cs, cPortico, cPorticoB)
		if src == nil {
			tmp, err := startPortico("portico (to capture its answers)", bins.portico, cfg, baddr)
			if err != nil {
				return err
			}
			err = waitReady(ctx, client, tmp, tmp.url+"/v1/products/p-1")
			if err == nil {
				traceHeader, err = org.capture(ctx, client, tmp.url, o.cases)
			}
			stopAll([]*contender{tmp})
			if err != nil {
				return err
			}
		} else if traceHeader, err = org.capture(ctx, client, src.url, o.cases); err != nil {
			return err
		}
		p := findContender(cs, cProxy)
		if err := waitReady(ctx, client, p, p.url+"/v1/products/p-1"); err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
	}
	fmt.Fprintln(os.Stderr, "response sizes:")
	for _, bc := range o.cases {
		for _, c := range cs {
			resp, err := once(ctx, client, c.url, bc, false)
			if err != nil || resp.code != 200 {
				return fmt.Errorf("%s %s: status %d, %v", c.name, bc.name, resp.code, err)
			}
			if c.isPortico() && traceHeader == "" {
				traceHeader = resp.traceID
			}
			fmt.Fprintf(os.Stderr, "  %-8s %-16s %6d bytes\n", bc.name, c.name, resp.size)
		}
	}

	tck := clockTicks()
	// res[case][contender] holds one result per round.
	res := make(map[string]map[string][]result, len(o.cases))
	for _, bc := range o.cases {
		res[bc.name] = map[string][]result{}
	}
	for r := range o.rounds {
		for _, bc := range o.cases {
			for _, i := range rotation(len(cs), r) {
				c := cs[i]
				if err := ctx.Err(); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "round %d/%d  %-8s %-16s ", r+1, o.rounds, bc.name, c.name)
				if _, err := load(ctx, client, c, bc, o.conc, o.warmup, tck); err != nil {
					fmt.Fprintln(os.Stderr)
					return fmt.Errorf("%s %s warmup: %w", c.name, bc.name, err)
				}
				m, err := load(ctx, client, c, bc, o.conc, o.duration, tck)
				if err != nil {
					fmt.Fprintln(os.Stderr)
					return fmt.Errorf("%s %s: %w", c.name, bc.name, err)
				}
				fmt.Fprintf(os.Stderr, "%7.0f req/s  %7.1f CPU µs/req  %d errors  (other load on the machine: %.2f cores)\n",
					m.rps, m.cpuPerReq, m.errors, m.otherCores)
				res[bc.name][c.name] = append(res[bc.name][c.name], m)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	// Peak RSS and Portico's own counts, read before the processes stop.
	rss := map[string]int64{}
	// What holds the memory now: anonymous pages (heap, stacks) and file
	// pages (the binary's code and data as touched).
	anon, file := map[string]int64{}, map[string]int64{}
	for _, c := range cs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
		if err == nil {
			rss[c.name], err = peakRSS(string(b))
		}
		if err == nil {
			anon[c.name], err = statusBytes(string(b), "RssAnon")
		}
		if err == nil {
			file[c.name], err = statusBytes(string(b), "RssFile")
		}
		if err != nil {
			return fmt.Errorf("%s: peak RSS: %w", c.name, err)
		}
	}
	var evidence []string
	for _, c := range cs {
		if !c.isPortico() {
			continue
		}
		counted, ok := scrapeRequests(ctx, client, c.admin)
		e := fmt.Sprintf("%s: /metrics portico_http_requests_total=%.0f", c.name, counted)
		if !ok {
			e = c.name + ": /metrics did not answer with portico_http_requests_total"
		}
		evidence = append(evidence, e)
	}
	stopAll(cs) // flushes Portico's buffered access log
	for _, c := range cs {
		if c.isPortico() {
			evidence = append(evidence, fmt.Sprintf("%s: access log %d lines (%.1f MB)", c.name, c.access.lines.Load(), float64(c.access.bytes.Load())/1e6))
		}
	}

	failed, aa := report(os.Stdout, o, cs, res, rss, anon, file, floor)
	fmt.Println()
	fmt.Println(telemetryLine(o, bins, traceHeader))
	fmt.Println("  seen: " + strings.Join(evidence, "; "))
	var others []float64
	for _, byC := range res {
		for _, rounds := range byC {
			for _, r := range rounds {
				others = append(others, r.otherCores)
			}
		}
	}
	_, maxOther := minMax(others)
	fmt.Printf("other load: the rest of the machine (not the bench, not the contender measured) used a median %.2f, at most %.2f cores during the measurements\n",
		median(others), maxOther)
	if median(others) > 0.25 {
		fmt.Println("warning: other work competed with the contenders for the cores during this run, so its ratios are noisier " +
			"(see the A/A row); for figures to quote, rerun on an otherwise idle machine")
	}
	spread := "run grpc-gateway-aa beside grpc-gateway to see it"
	if len(aa) > 0 {
		lo, hi := minMax(aa)
		spread = fmt.Sprintf("this run's A/A per-round ratios span %.2f–%.2f", lo, hi)
	}
	fmt.Printf("note: %d cores (GOMAXPROCS %d) shared by the load generator, the backend and the contender measured; "+
		"concurrency=%d, %d rounds of %s (+%s warmup) per case and contender. On a 2-core machine the ratios vary by "+
		"about the A/A spread (%s): differences within it are noise.\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), o.conc, o.rounds, o.duration, o.warmup, spread)
	if failed {
		return errors.New("errors during measurement or a ratio could not be computed")
	}
	return nil
}

// report prints the table and the peak RSS, says whether anything failed
// (errors, or no ratio where one was due) and returns the A/A control's
// per-round CPU ratios of every case.
func report(w io.Writer, o options, cs []*contender, res map[string]map[string][]result, rss, anon, file map[string]int64, floor memory) (failed bool, aa []float64) {
	fmt.Fprintf(w, "medians over %d rounds; ×gw: median of the per-round ratios to grpc-gateway in the same round [min–max]\n", o.rounds)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tcontender\treq/s\tp50 ms\tp99 ms\tCPU µs/req\tCPU ×gw\t[min–max]\treq/s ×gw\terrors\t")
	for _, bc := range o.cases {
		b := res[bc.name][base]
		for _, c := range cs {
			rounds := res[bc.name][c.name]
			s := summarize(rounds, b)
			if c.name == cGatewayA {
				aa = append(aa, s.cpuRatios...)
			}
			if s.errors > 0 {
				failed = true
			}
			ratio, rng, rps := "", "", ""
			switch {
			case c.name == base:
				ratio, rng, rps = "base", "", "base"
			case !s.hasBase:
				ratio = "n/a"
			case len(s.cpuRatios) == 0:
				ratio, failed = "none", true
			default:
				ratio = fmt.Sprintf("%.2fx", s.cpuRatio)
				rng = fmt.Sprintf("[%.2f–%.2f]", s.cpuLo, s.cpuHi)
				rps = fmt.Sprintf("%.2fx", s.rpsRatio)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.2f\t%.2f\t%.1f\t%s\t%s\t%s\t%d\t\n",
				bc.name, c.name, s.rps, s.p50ms, s.p99ms, s.cpu, ratio, rng, rps, s.errors)
		}
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "contender\tpeak RSS MiB\tRSS ×gw\tnow: anon MiB\tfile MiB\t")
	for _, c := range cs {
		ratio := "n/a"
		switch g, ok := rss[base]; {
		case c.name == base:
			ratio = "base"
		case ok && g > 0:
			ratio = fmt.Sprintf("%.2fx", float64(rss[c.name])/float64(g))
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%.1f\t%.1f\t\n", c.name, float64(rss[c.name])/(1<<20), ratio,
			float64(anon[c.name])/(1<<20), float64(file[c.name])/(1<<20))
	}
	if floor.peak > 0 {
		ratio := "n/a"
		if g := rss[base]; g > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(floor.peak)/float64(g))
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%.1f\t%.1f\t\n", "portico link floor", float64(floor.peak)/(1<<20), ratio,
			float64(floor.anon)/(1<<20), float64(floor.file)/(1<<20))
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "peak RSS: VmHWM of each process at the end of the run (after every round); now: RssAnon (heap, stacks) and RssFile (the binary's pages it touched) at that moment")
	if floor.peak > 0 {
		fmt.Fprintln(w, "portico link floor: a program linking what Portico's serve command composes, measured 1 s after its package initialization, serving nothing (integration/bench/floor): the memory no route, request or setting adds")
	}
	return failed, aa
}

// memory is one process's resident memory, in bytes.
type memory struct{ peak, anon, file int64 }

// measureFloor runs the link floor alone, reads its memory once its
// package initialization is over, and stops it.
func measureFloor(ctx context.Context, bin string) (memory, error) {
	c, err := start("floor", "", nil, bin)
	if err != nil {
		return memory{}, err
	}
	defer stopAll([]*contender{c})
	wait := time.NewTimer(time.Second)
	defer wait.Stop()
	select {
	case <-wait.C:
	case <-c.exited:
		return memory{}, fmt.Errorf("exited: %v", c.waitErr)
	case <-ctx.Done():
		return memory{}, ctx.Err()
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	if m.peak, err = peakRSS(string(b)); err == nil {
		if m.anon, err = statusBytes(string(b), "RssAnon"); err == nil {
			m.file, err = statusBytes(string(b), "RssFile")
		}
	}
	return m, err
}

// telemetryLine says what Portico ran with. The defaults named are this
// module's (edge.DefaultConfig); a -portico-bin binary has its own.
func telemetryLine(o options, bins binaries, traceHeader string) string {
	var b strings.Builder
	if o.accessLog {
		b.WriteString("telemetry: Portico runs with no config file, i.e. as shipped: ")
	} else {
		b.WriteString("telemetry: Portico runs as shipped except for a config file with edge.access_log.enabled: false (-access-log=false): ")
	}
	if o.accessLog {
		b.WriteString("access log ON (a JSON line per request, buffered, on stdout, which the bench reads and discards); ")
	} else {
		b.WriteString("access log OFF; ")
	}
	b.WriteString("Prometheus request metrics ON (recorded per request; /metrics on its own loopback admin listener, not scraped during the run); " +
		"tracing ON with the default exporter \"none\": a trace id made per request, sent upstream as traceparent")
	if traceHeader != "" {
		b.WriteString(" and returned in " + traceHeader)
	}
	b.WriteString(", spans never sampled or exported (exporting needs edge.tracing.exporter: otlp and a collector endpoint; " +
		"the default config has neither). grpc-gateway and the proxy run no telemetry.")
	if o.porticoBin != "" || o.porticoBin2 != "" {
		b.WriteString(" These are this module's defaults; a -portico-bin binary runs with its own.")
	}
	if bins.portico != "" {
		fmt.Fprintf(&b, "\n  portico binary: %s%s", bins.porticoHow, vcsInfo(bins.portico))
	}
	if bins.portico2 != "" {
		fmt.Fprintf(&b, "\n  portico-b binary: -portico-bin2%s", vcsInfo(bins.portico2))
	}
	return b.String()
}

// gitState names the commit checked out at root and whether the tree has
// changes, or nothing when git cannot tell.
func gitState(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	s := " at commit " + strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		s += " with uncommitted changes"
	}
	return s
}

// vcsInfo names the Go version and the commit a binary was built from, as
// far as the binary says.
func vcsInfo(bin string) string {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return ""
	}
	rev, modified := "", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return " (" + bi.GoVersion + ")"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += " with uncommitted changes"
	}
	return " (" + bi.GoVersion + ", commit " + rev + ")"
}

type binaries struct {
	portico, portico2, gateway, proxy, floor string
	porticoHow                               string
}

// buildAll builds what the contenders need that was not given.
func buildAll(ctx context.Context, dir string, o options) (binaries, error) {
	var b binaries
	needs := func(names ...string) bool {
		return slices.ContainsFunc(o.contenders, func(c string) bool { return slices.Contains(names, c) })
	}
	var err error
	type job struct {
		out        *string
		pkg, label string
	}
	var jobs []job
	if needs(cPortico, cProxy) { // the proxy's origin answers what Portico answers
		if o.porticoBin != "" {
			if b.portico, err = filepath.Abs(o.porticoBin); err != nil {
				return b, err
			}
			b.porticoHow = "-portico-bin"
		} else {
			b.porticoHow = "built from this module"
			jobs = append(jobs, job{&b.portico, "./cmd/portico", "portico"})
		}
	}
	if needs(cPortico) {
		jobs = append(jobs, job{&b.floor, "./integration/bench/floor", "Portico's link floor"})
	}
	if o.porticoBin2 != "" {
		if b.portico2, err = filepath.Abs(o.porticoBin2); err != nil {
			return b, err
		}
	}
	if needs(cGateway, cGatewayA) {
		jobs = append(jobs, job{&b.gateway, "./integration/bench/gateway", "grpc-gateway"})
	}
	if needs(cProxy) {
		jobs = append(jobs, job{&b.proxy, "./integration/bench/proxy", "proxy"})
	}
	root := ""
	if len(jobs) > 0 {
		if root, err = moduleRoot(); err != nil {
			return b, err
		}
		if b.porticoHow != "" && o.porticoBin == "" {
			b.porticoHow += gitState(root)
		}
	}
	for _, j := range jobs {
		fmt.Fprintf(os.Stderr, "building %s…\n", j.label)
		out := filepath.Join(dir, filepath.Base(j.pkg))
		if err := goBuild(ctx, root, out, j.pkg); err != nil {
			return b, err
		}
		*j.out = out
	}
	for _, bin := range []string{b.portico, b.portico2} {
		if bin == "" {
			continue
		}
		if st, err := os.Stat(bin); err != nil {
			return b, err
		} else if st.IsDir() || st.Mode()&0o111 == 0 {
			return b, fmt.Errorf("%s is not an executable file", bin)
		}
	}
	return b, nil
}

func findContender(cs []*contender, names ...string) *contender {
	for _, n := range names {
		for _, c := range cs {
			if c.name == n {
				return c
			}
		}
	}
	return nil
}

// startPortico runs a Portico with the shipped defaults (cfg "": no config
// file), its own listen and admin addresses.
func startPortico(name, bin, cfg, backend string) (*contender, error) {
	addr, admin := freeAddr(), freeAddr()
	args := []string{"serve", "--listen", addr, "--admin-listen", admin, "--upstream", backend, "--plaintext-upstream", "--log-level", "warn"}
	if cfg != "" {
		args = append(args, "--config", cfg)
	}
	access := &lineCounter{}
	c, err := start(name, "http://"+addr, access, bin, args...)
	if err != nil {
		return nil, err
	}
	c.admin = "http://" + admin
	return c, nil
}

// start runs bin in its own process group (Ctrl-C reaches the bench, which
// stops it) that the kernel kills should the bench die without stopping
// it. stdout goes to access (nil: the null device), stderr to ours.
func start(name, url string, access *lineCounter, bin string, args ...string) (*contender, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	if access != nil {
		cmd.Stdout = access
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &contender{name: name, url: url, cmd: cmd, access: access, exited: make(chan struct{})}
	go func() { c.waitErr = cmd.Wait(); close(c.exited) }()
	return c, nil
}

// stopAll sends every process SIGTERM, waits up to 10 s for them all (a
// stopping Portico serves on for edge.drain_delay, 5 s by default, then
// flushes its access log), kills what is left and waits for it.
func stopAll(cs []*contender) {
	running := 0
	for _, c := range cs {
		select {
		case <-c.exited:
		default:
			running++
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	if running == 0 {
		return
	}
	fmt.Fprintf(os.Stderr, "stopping %d processes (Portico drains for edge.drain_delay first)…\n", running)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for _, c := range cs {
		select {
		case <-c.exited:
			continue
		case <-t.C:
		}
		for _, c := range cs {
			_ = c.cmd.Process.Kill()
		}
		break
	}
	for _, c := range cs {
		<-c.exited
	}
}

// load runs a closed loop of conc clients for d and measures the
// contender's CPU over exactly that window: at d the clients send no new
// request, and the window ends when the last one's answer is in (no
// request is cancelled, so connections stay open for the next run).
func load(ctx context.Context, client *http.Client, c *contender, bc benchCase, conc int, d time.Duration, tck int64) (result, error) {
	var stop atomic.Bool
	before, err := procTicks(c.cmd.Process.Pid)
	if err != nil {
		return result{}, fmt.Errorf("process gone: %w", err)
	}
	selfBefore, _ := procTicks(os.Getpid())
	busyBefore, _ := readBusy()
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	lat := make([][]time.Duration, conc)
	errs := make([]int, conc)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			for !stop.Load() && ctx.Err() == nil {
				t0 := time.Now()
				resp, err := once(ctx, client, c.url, bc, false)
				if ctx.Err() != nil {
					return
				}
				if err != nil || resp.code != 200 {
					errs[w]++
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	after, err := procTicks(c.cmd.Process.Pid)
	if err != nil {
		return result{}, fmt.Errorf("process gone: %w", err)
	}
	selfAfter, _ := procTicks(os.Getpid())
	busyAfter, _ := readBusy()
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	var all []time.Duration
	var r result
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
	other := (busyAfter - busyBefore) - (selfAfter - selfBefore) - (after - before)
	r.otherCores = max(float64(other), 0) / float64(tck) / elapsed.Seconds()
	return r, nil
}

type answer struct {
	code, size  int
	body        []byte // only when kept
	contentType string
	traceID     string // the header that carried one, if any
}

// once sends one request of bc and reads the answer, keeping its body if
// keep.
func once(ctx context.Context, client *http.Client, base string, bc benchCase, keep bool) (answer, error) {
	var body io.Reader
	if bc.body != "" {
		body = strings.NewReader(bc.body)
	}
	req, err := http.NewRequestWithContext(ctx, bc.method, base+bc.path, body)
	if err != nil {
		return answer{}, err
	}
	if bc.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	a := answer{code: resp.StatusCode, contentType: resp.Header.Get("Content-Type")}
	if resp.Header.Get("X-Trace-Id") != "" {
		a.traceID = "X-Trace-Id"
	}
	if keep {
		a.body, err = io.ReadAll(resp.Body)
		a.size = len(a.body)
		return a, err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	a.size = int(n)
	return a, err
}

// origin is the plain net/http server behind the proxy: it answers each
// case with the bytes Portico answered it with.
type origin struct {
	answers atomic.Pointer[map[string]answer] // by method and request URI
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	m := o.answers.Load()
	if m == nil {
		http.Error(w, "not captured yet", http.StatusServiceUnavailable)
		return
	}
	a, ok := (*m)[r.Method+" "+r.URL.RequestURI()]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("Content-Length", fmt.Sprint(len(a.body)))
	w.WriteHeader(a.code)
	_, _ = w.Write(a.body)
}

// capture asks Portico at base for every case, and for the ready check's
// GET, and keeps the answers; it returns the trace id header Portico set.
func (o *origin) capture(ctx context.Context, client *http.Client, base string, cases []benchCase) (string, error) {
	m := map[string]answer{}
	traceHeader := ""
	for _, bc := range append(slices.Clone(cases), allCases[0]) {
		a, err := once(ctx, client, base, bc, true)
		if err != nil || a.code != 200 {
			return "", fmt.Errorf("capturing Portico's answer to %s: status %d, %v", bc.name, a.code, err)
		}
		if a.traceID != "" {
			traceHeader = a.traceID
		}
		m[bc.method+" "+bc.path] = a
	}
	o.answers.Store(&m)
	return traceHeader, nil
}

// scrapeRequests sums portico_http_requests_total from admin's /metrics.
func scrapeRequests(ctx context.Context, client *http.Client, admin string) (float64, bool) {
	req, err := http.NewRequestWithContext(ctx, "GET", admin+"/metrics", nil)
	if err != nil {
		return 0, false
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return 0, false
	}
	return sumMetric(string(b), "portico_http_requests_total")
}

func waitReady(ctx context.Context, client *http.Client, c *contender, url string) error {
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
		case <-c.exited:
			t.Stop()
			return fmt.Errorf("exited: %v", c.waitErr)
		case <-t.C:
		}
	}
}

// readBusy is the machine's busy CPU ticks so far, 0 when unknown.
func readBusy() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return machineBusy(string(b))
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
		var n int64
		if _, err := fmt.Sscan(strings.TrimSpace(string(out)), &n); err == nil && n > 0 {
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
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, stderr.String())
	}
	return nil
}
