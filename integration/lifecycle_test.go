package integration

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
)

// TestDrainOrder: on stop Portico first fails readiness and leaves Consul
// while it still answers (each answer closing its connection), ends an
// open server stream with a final UNAVAILABLE message once the drain delay
// is over, and only then closes the listener.
func TestDrainOrder(t *testing.T) {
	agent := harness.Consul(t)
	harness.Native(t, agent, "orders", harness.NativeOptions{})
	e := harness.Portico(t, func(cfg *app.Config) {
		harness.ConsulConfig(agent)(cfg)
		cfg.Edge.DrainDelay = 2 * time.Second
	})
	c := harness.Client(t)
	eventually(t, 10*time.Second, "orders routes, portico passing in consul", func() bool {
		entries, _, err := agent.Client().Health().Service("portico", "", true, nil)
		return err == nil && len(entries) == 1 && do(t, c, "GET", e.URL+"/v1/orders/o-1001/status", "").code == 200
	})

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.URL+"/v1/orders:stream?count=1000&intervalMs=100", nil)
	resp, err := harness.Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), `{"result":`) {
		t.Fatalf("first stream line: %q", lines.Text())
	}

	stopped := make(chan error, 1)
	go func() { stopped <- e.App.Stop(ctx) }()
	unready := eventually(t, time.Second, "readyz 503 draining", func() bool {
		r := do(t, c, "GET", e.AdminURL+"/readyz", "")
		return r.code == 503 && strings.Contains(r.body, "draining")
	})
	eventually(t, 2*time.Second, "portico gone from consul", func() bool {
		entries, _, err := agent.Client().Health().Service("portico", "", false, nil)
		return err == nil && len(entries) == 0
	})
	dr, err := c.Get(e.URL + "/v1/orders/o-1001/status")
	if err != nil {
		t.Fatal(err)
	}
	dr.Body.Close()
	if dr.StatusCode != 200 || !dr.Close {
		t.Fatalf("request while draining: %d, close %v; want 200 and Connection: close", dr.StatusCode, dr.Close)
	}

	var last string
	n := 0
	for lines.Scan() {
		last = lines.Text()
		n++
	}
	streamEnded := time.Now()
	if !strings.Contains(last, `"code":14`) || !strings.Contains(last, "shutting down") {
		t.Fatalf("stream's last line after %d messages: %q; want an UNAVAILABLE shutting-down error", n, last)
	}
	if streamEnded.Before(unready) {
		t.Fatal("the stream ended before readiness failed")
	}
	if err := <-stopped; err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := http.Get(e.URL + "/v1/orders/o-1001/status"); err == nil {
		t.Fatal("listener still open after stop")
	}
}

// TestRestartBehindBalancerZeroFailures: two Portico processes behind a TCP
// round-robin balancer that checks /readyz; one gets SIGTERM and is started
// again while clients keep calling. No request fails.
func TestRestartBehindBalancerZeroFailures(t *testing.T) {
	bin := harness.BuildPortico(t)
	b := harness.Services(t, []string{"products"}, nil)
	cfg := filepath.Join(t.TempDir(), "portico.yaml")
	if err := os.WriteFile(cfg, []byte("edge:\n  drain_delay: 1s\n  shutdown_grace: 10s\n  access_log:\n    enabled: false\nlog:\n  level: info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := []string{harness.FreePort(t), harness.FreePort(t)}
	adm := []string{harness.FreePort(t), harness.FreePort(t)}
	start := func(i int) *harness.Process {
		return harness.StartProcess(t, bin, "serve", "--config", cfg, "--listen", pub[i], "--admin-listen", adm[i],
			"--upstream", b.Addr, "--plaintext-upstream")
	}
	procs := []*harness.Process{start(0), start(1)}
	lb := harness.StartBalancer(t,
		harness.BalancerBackend{Addr: pub[0], HealthURL: "http://" + adm[0] + "/readyz"},
		harness.BalancerBackend{Addr: pub[1], HealthURL: "http://" + adm[1] + "/readyz"})
	eventually(t, 20*time.Second, "both instances up at the balancer", func() bool { return lb.Up(0) && lb.Up(1) })

	load := runLoad(t, "http://"+lb.Addr+"/v1/products/p-1", 8)
	load.succeeded(100) // clients on keep-alive connections to both
	began := time.Now()
	if err := procs[0].Stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	took := time.Since(began)
	if !strings.Contains(procs[0].Output(), "draining") {
		t.Fatal("the stopped instance did not log its drain")
	}
	procs[0] = start(0)
	eventually(t, 20*time.Second, "the restarted instance up at the balancer", func() bool { return lb.Up(0) })
	load.succeeded(50) // and on after the restarted instance came back
	one := load.stop()
	t.Logf("restart of 1 of 2 instances under load (8 clients): %s; SIGTERM to exit %s", one, took.Round(time.Millisecond))
	if one.failed.Load() != 0 || one.ok.Load() < 100 {
		t.Fatalf("want zero failed requests: %s", one)
	}

	// Then the other one (a rolling restart): the clients, whose
	// keep-alive connections all went to it, move to the first.
	load = runLoad(t, "http://"+lb.Addr+"/v1/products/p-1", 8)
	load.succeeded(100)
	if err := procs[1].Stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	procs[1] = start(1)
	eventually(t, 20*time.Second, "the second instance up again", func() bool { return lb.Up(1) })
	load.succeeded(50)
	two := load.stop()
	t.Logf("then the other instance: %s", two)
	if two.failed.Load() != 0 || two.ok.Load() < 100 {
		t.Fatalf("want zero failed requests: %s", two)
	}
	// The first restarted instance took its share again.
	fams := scrape(t, "http://"+adm[0])
	if got := value(fams, "portico_http_requests_total", map[string]string{"code": "200"}); got < 1 {
		t.Fatalf("restarted instance served %v requests", got)
	}
}

// TestReloadWithBrokenFile: SIGHUP re-reads the config. A broken file keeps
// the running config and says why; a good one switches the JWT provider
// without closing the client's connection.
func TestReloadWithBrokenFile(t *testing.T) {
	t.Parallel()
	bin := harness.BuildPortico(t)
	b := harness.Services(t, []string{"accounts"}, nil)
	idpA, idpB := harness.NewIDP(t), harness.NewIDP(t)
	cfg := filepath.Join(t.TempDir(), "portico.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	provider := func(idp *harness.IDP) string {
		return "edge:\n  drain_delay: 0s\npolicies:\n  jwt:\n    - name: corp\n      issuer: " + idp.Issuer + "\n      audiences: [portico]\n      jwks_url: " + idp.URL + "\n"
	}
	write(provider(idpA))
	pub, adm := harness.FreePort(t), harness.FreePort(t)
	p := harness.StartProcess(t, bin, "serve", "--config", cfg, "--listen", pub, "--admin-listen", adm, "--upstream", b.Addr, "--plaintext-upstream")
	c := harness.Client(t)
	url := "http://" + pub + "/v1/whoami"
	tokA := idpA.Token("alice", map[string]any{"scope": "accounts"})
	tokB := idpB.Token("alice", map[string]any{"scope": "accounts"})
	eventually(t, 20*time.Second, "serving with provider A", func() bool {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+tokA)
		resp, err := c.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body) // a drained body keeps the connection
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// Every call from here on must reuse the first connection.
	reused := func(tok string) int {
		t.Helper()
		var wasReused bool
		ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { wasReused = i.Reused }})
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if !wasReused {
			t.Fatal("the client's connection was not reused across the reload")
		}
		return resp.StatusCode
	}

	write("policies:\n  jwt: [this is not: valid\n")
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !p.WaitOutput("config reload rejected", 10*time.Second) {
		t.Fatalf("no rejection logged:\n%s", p.Output())
	}
	if code := reused(tokA); code != 200 {
		t.Fatalf("after a broken reload, provider A's token: %d; want the old config kept", code)
	}
	// A valid YAML with an invalid value is rejected too.
	write(provider(idpA) + "  max_token_bytes: -1\n")
	_ = p.Signal(syscall.SIGHUP)
	if !waitCount(p, "config reload rejected", 2, 10*time.Second) {
		t.Fatalf("invalid value not rejected:\n%s", p.Output())
	}

	// So is a provider whose keys cannot be fetched: every token would fail.
	write("policies:\n  jwt:\n    - name: corp\n      issuer: " + idpA.Issuer + "\n      jwks_url: http://" + harness.FreePort(t) + "/jwks\n")
	_ = p.Signal(syscall.SIGHUP)
	if !waitCount(p, "config reload rejected", 3, 15*time.Second) {
		t.Fatalf("unreachable JWKS not rejected:\n%s", p.Output())
	}
	if code := reused(tokA); code != 200 {
		t.Fatalf("after a rejected reload, provider A's token: %d", code)
	}

	write(provider(idpB))
	_ = p.Signal(syscall.SIGHUP)
	if !p.WaitOutput("config reloaded", 10*time.Second) {
		t.Fatalf("no reload logged:\n%s", p.Output())
	}
	if code := reused(tokB); code != 200 {
		t.Fatalf("provider B's token after the reload: %d", code)
	}
	if code := reused(tokA); code != 401 {
		t.Fatalf("provider A's token after the reload: %d, want 401", code)
	}
	if err := p.Stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}

func waitCount(p *harness.Process, s string, n int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Count(p.Output(), s) >= n {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
