//go:build compose

package compose

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The environment under test: the real compose file, with the images
// `make images` builds from this machine's binaries (images.env), as a
// project of its own.
const (
	project = "portico-it"
	envFile = "images/images.env"
)

// The published ports of the file.
var (
	edgeURLs  = []string{"http://127.0.0.1:8080", "http://127.0.0.1:8081"}
	adminURLs = []string{"http://127.0.0.1:9901", "http://127.0.0.1:9902"}
	consulURL = "http://127.0.0.1:8500"
)

// TestEnvironment brings the integration environment up on the Docker
// engine with the real compose file, runs the scenarios operators care
// about, and always tears it down (down -v: no container, network or
// volume left). Every wait is bounded. Run by `make compose-test` (after
// `make images`), which CI runs when a Docker engine answers.
func TestEnvironment(t *testing.T) {
	dc := newCompose(t)
	for _, img := range []string{"portico:dev", "portico-offline/consul:1.20", "portico-offline/redis:7"} {
		if _, err := dc.docker(30*time.Second, "image", "inspect", img); err != nil {
			t.Fatalf("image %s is missing: run make images first (%v)", img, err)
		}
	}
	dc.down() // what an interrupted run may have left
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := dc.compose(60*time.Second, "logs", "--no-color", "--tail", "15")
			t.Logf("the environment's last logs:\n%s", logs)
		}
		dc.down()
		for _, kind := range []string{"container", "network", "volume"} {
			left, err := dc.docker(30*time.Second, kind, "ls", "-q", "--filter", "label=com.docker.compose.project="+project)
			if err != nil || strings.TrimSpace(left) != "" {
				t.Errorf("%ss left behind: %q %v", kind, left, err)
			}
		}
	})
	start := time.Now()
	if out, err := dc.compose(5*time.Minute, "up", "-d", "--no-build"); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	dc.waitHealthy(t, 3*time.Minute)
	healthy := time.Since(start)
	// Healthy edges have a route table; the services they route to may
	// register a moment later: every call through each edge answers
	// within a bound.
	calls := []string{"/v1/users/alice", "/v1/orders?userId=alice", "/v1/products/p-1", "/v1/plans", "/api/home/alice?productIds=p-1"}
	for _, base := range edgeURLs {
		for _, path := range calls {
			eventually(t, 60*time.Second, base+path+" answers 200", func() bool { return get(base+path) == 200 })
		}
	}
	served := time.Since(start)
	t.Logf("FIGURE cold up (offline images): healthy in %s, every call answered through both edges at %s", healthy.Round(100*time.Millisecond), served.Round(100*time.Millisecond))

	t.Run("published ports", func(t *testing.T) {
		for _, u := range adminURLs {
			if c := get(u + "/readyz"); c != 200 {
				t.Errorf("%s/readyz: %d", u, c)
			}
		}
		var leader string
		if err := getJSON(consulURL+"/v1/status/leader", &leader); err != nil || leader == "" {
			t.Errorf("consul on :8500: leader %q, %v", leader, err)
		}
		// Both edges are registered in Consul, passing.
		var entries []struct {
			Service struct{ ID string }
		}
		if err := getJSON(consulURL+"/v1/health/service/portico?passing=1", &entries); err != nil || len(entries) != 2 {
			t.Errorf("portico instances passing in Consul: %d (%v)", len(entries), err)
		}
		if c := get(edgeURLs[0] + "/openapi.json"); c != 200 {
			t.Errorf("openapi.json: %d", c)
		}
	})

	t.Run("products split by Consul's config entries", func(t *testing.T) {
		// products-1 runs as version 1, products-2 as 2; the splitter the
		// consul service bootstraps sends 90 % to v1, 10 % to v2, anonymous
		// callers per request.
		eventually(t, 60*time.Second, "both products versions passing in Consul", func() bool {
			var entries []struct {
				Service struct{ Meta map[string]string }
			}
			if getJSON(consulURL+"/v1/health/service/products?passing=1", &entries) != nil {
				return false
			}
			versions := map[string]bool{}
			for _, e := range entries {
				versions[e.Service.Meta["version"]] = true
			}
			return versions["1"] && versions["2"]
		})
		const explain = "/traffic?service=products&method=/portico.examples.products.v1.ProductService/GetProduct&subject=alice"
		var ex struct {
			Chain string
			Split *struct {
				Weights map[string]float64
				Key     string
			}
			Subset    string
			Instances []struct{ ID string }
		}
		eventually(t, 60*time.Second, "portico-1 routes products by its discovery chain", func() bool {
			return getJSON(adminURLs[0]+explain, &ex) == nil && ex.Chain == "configured" && len(ex.Instances) > 0
		})
		if ex.Split == nil || len(ex.Split.Weights) != 2 || ex.Split.Key != "subject" {
			t.Errorf("%s: split %+v, want two weighted subsets placed by subject", explain, ex.Split)
		}
		t.Logf("explained: alice's calls go to subset %s (instances %v), split %+v", ex.Subset, ex.Instances, ex.Split)

		const n = 300
		counts := map[string]int{}
		for range n {
			resp, err := client.Get(edgeURLs[0] + "/v1/products/p-1")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("GET /v1/products/p-1: %d", resp.StatusCode)
			}
			counts[resp.Header.Get("Grpc-Metadata-X-Served-Version")]++
		}
		share := float64(counts["2"]) / n
		t.Logf("FIGURE products split over %d GETs through portico-1: version 1 %d, version 2 %d (%.1f %%), other %d; portico_traffic_requests_total v1 %v, v2 %v",
			n, counts["1"], counts["2"], 100*share, n-counts["1"]-counts["2"],
			metric(t, adminURLs[0], `portico_traffic_requests_total{service="products",subset="v1"}`),
			metric(t, adminURLs[0], `portico_traffic_requests_total{service="products",subset="v2"}`))
		if counts["1"]+counts["2"] != n {
			t.Errorf("%d answers without Grpc-Metadata-X-Served-Version 1 or 2: %v", n-counts["1"]-counts["2"], counts)
		}
		// 10 % of 300 is 30, its standard deviation 5.2: 9..60 is far
		// outside chance.
		if counts["1"] == 0 || counts["2"] == 0 || share < 0.03 || share > 0.20 {
			t.Errorf("version 2 answered %.1f %% (%v), want both versions and 3 %%..20 %%", 100*share, counts)
		}
	})

	// Each products instance is killed under load in turn: products-2, the
	// canary (version 2, 10 % of the calls), then products-1, all of the
	// stable v1. A call the splitter sends to a killed instance's subset
	// is refused by the edge before it is sent and goes elsewhere: from v2
	// to the stable subset, from v1 to v2, the failover the resolver
	// declares. A call in flight on the instance when it dies is retried
	// (GET). None fails.
	for _, kill := range []struct{ instance, from, to string }{
		{"products-2", "v2", "v1"},
		{"products-1", "v1", "v2"},
	} {
		t.Run(kill.instance+" killed under load", func(t *testing.T) {
			fallbacks := func() (n float64) {
				for _, u := range adminURLs {
					n += metric(t, u, `portico_traffic_fallbacks_total{from="`+kill.from+`",service="products",to="`+kill.to+`"}`)
				}
				return n
			}
			before := fallbacks()
			l := startLoad(t, "/v1/products/p-1")
			time.Sleep(time.Second)
			if out, err := dc.docker(30*time.Second, "kill", dc.container(t, kill.instance)); err != nil {
				t.Fatalf("kill: %v %s", err, out)
			}
			time.Sleep(5 * time.Second)
			l.stop(t, kill.instance+" ("+kill.from+") killed")
			moved := fallbacks() - before
			t.Logf("FIGURE %s killed: %v calls for %s went to %s instead (portico_traffic_fallbacks_total, both edges)", kill.instance, moved, kill.from, kill.to)
			if moved == 0 {
				t.Errorf("no call went from %s to %s", kill.from, kill.to)
			}
			if out, err := dc.compose(60*time.Second, "up", "-d", "--no-build", kill.instance); err != nil {
				t.Fatalf("restarting %s: %v %s", kill.instance, err, out)
			}
			dc.waitHealthy(t, 90*time.Second)
		})
	}

	t.Run("products cut off the network", func(t *testing.T) {
		ctr := dc.container(t, "products-2")
		network := dc.network(t, ctr)
		l := startLoad(t, "/v1/products/p-1")
		time.Sleep(time.Second)
		cut := time.Now()
		if out, err := dc.docker(30*time.Second, "network", "disconnect", network, ctr); err != nil {
			t.Fatalf("disconnect: %v %s", err, out)
		}
		// It still answers its own health check, inside its container.
		eventually(t, 30*time.Second, "products-2 reported critical by Consul", func() bool {
			var entries []struct{ Service struct{ Address string } }
			_ = getJSON(consulURL+"/v1/health/service/products?passing=1", &entries)
			for _, e := range entries {
				if e.Service.Address == "products-2" {
					return false
				}
			}
			return len(entries) > 0
		})
		t.Logf("FIGURE products-2 cut off: out of Consul's passing set after %s", time.Since(cut).Round(100*time.Millisecond))
		time.Sleep(3 * time.Second)
		l.stop(t, "products-2 cut off")
		if out, err := dc.docker(30*time.Second, "network", "connect", "--alias", "products-2", network, ctr); err != nil {
			t.Fatalf("reconnect: %v %s", err, out)
		}
		dc.waitHealthy(t, 90*time.Second)
	})

	t.Run("consul restarted under load", func(t *testing.T) {
		l := startLoad(t, "/v1/users/alice")
		time.Sleep(time.Second)
		var sawDegraded atomic.Bool
		watch, stopWatch := context.WithCancel(t.Context())
		var watching sync.WaitGroup
		watching.Go(func() {
			for watch.Err() == nil {
				var ready struct{ Status string }
				if err := getJSON(adminURLs[0]+"/readyz", &ready); err != nil || ready.Status != "ready" {
					sawDegraded.Store(true)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
		restarted := time.Now()
		if out, err := dc.docker(60*time.Second, "restart", dc.container(t, "consul")); err != nil {
			stopWatch()
			watching.Wait()
			t.Fatalf("restart consul: %v %s", err, out)
		}
		dc.waitHealthy(t, 2*time.Minute)
		eventually(t, 60*time.Second, "portico-1 ready again", func() bool {
			var ready struct{ Status string }
			return getJSON(adminURLs[0]+"/readyz", &ready) == nil && ready.Status == "ready"
		})
		stopWatch()
		watching.Wait()
		t.Logf("FIGURE consul restarted: ready again after %s; /readyz degraded meanwhile: %v", time.Since(restarted).Round(100*time.Millisecond), sawDegraded.Load())
		l.stop(t, "consul restarted")
		if !sawDegraded.Load() {
			t.Error("/readyz never reported the lost Consul")
		}
	})

	t.Run("portico restarted", func(t *testing.T) {
		l := startLoadOn(t, edgeURLs[1:], "/v1/users/alice")
		time.Sleep(time.Second)
		restarted := time.Now()
		if out, err := dc.docker(60*time.Second, "restart", dc.container(t, "portico-1")); err != nil {
			t.Fatalf("restart portico-1: %v %s", err, out)
		}
		eventually(t, 90*time.Second, "portico-1 serves again", func() bool { return get(edgeURLs[0]+"/v1/users/alice") == 200 })
		t.Logf("FIGURE portico-1 restarted: serving again %s after the restart began (its drain included)", time.Since(restarted).Round(100*time.Millisecond))
		l.stop(t, "portico-1 restarted, load on portico-2")
	})

	t.Run("shared rate limit", func(t *testing.T) {
		// GET /v1/quota: 600 calls a minute per subject, counted in Redis
		// across both edges. The caller is an API key stored in Consul's
		// KV (the edges watch the prefix).
		const key = "sk-compose-0f1e2d3c4b5a69788796a5b4"
		sum := sha256.Sum256([]byte(key))
		entry := fmt.Sprintf(`{"name": "quota-tester", "sha256": %q, "scopes": ["accounts"]}`, hex.EncodeToString(sum[:]))
		req, _ := http.NewRequest("PUT", consulURL+"/v1/kv/portico/api-keys/quota-tester", strings.NewReader(entry))
		if resp, err := client.Do(req); err != nil || resp.StatusCode != 200 {
			t.Fatalf("writing the API key to Consul: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
		quota := func(base string) int { return getWith(base+"/v1/quota", "X-API-Key", key) }
		var firstOK time.Time
		for _, base := range edgeURLs {
			eventually(t, 30*time.Second, base+" accepts the key", func() bool {
				sent := time.Now()
				if quota(base) != 200 {
					return false
				}
				if firstOK.IsZero() {
					firstOK = sent
				}
				return true
			})
		}
		// The bucket starts full again a minute after those calls at the
		// latest; a fresh minute is not waited for: those calls are few
		// and counted as spent.
		const n, period = 600, time.Minute
		var ok, limited, other atomic.Int64
		var first, last atomic.Int64
		first.Store(firstOK.UnixNano())
		ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
		defer cancel()
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				base := edgeURLs[i%2]
				for ctx.Err() == nil {
					sent := time.Now().UnixNano()
					switch quota(base) {
					case 200:
						ok.Add(1)
						for {
							f := first.Load()
							if sent >= f || first.CompareAndSwap(f, sent) {
								break
							}
						}
						for {
							l := last.Load()
							if now := time.Now().UnixNano(); now <= l || last.CompareAndSwap(l, now) {
								break
							}
						}
					case 429:
						limited.Add(1)
					default:
						other.Add(1)
					}
				}
			})
		}
		wg.Wait()
		// The calls that checked the key came first: they were counted.
		warm := int64(len(edgeURLs))
		span := time.Duration(last.Load() - first.Load())
		want := float64(n) + float64(n)*span.Seconds()/period.Seconds()
		got := float64(ok.Load() + warm)
		t.Logf("FIGURE shared rate limit over both edges (%d a minute): accepted %d (+%d before), limited %d, other %d; the exact limiter allows %.1f in %s: off by %.2f%% of %d",
			n, ok.Load(), warm, limited.Load(), other.Load(), want, span.Round(time.Millisecond), 100*(got-want)/n, n)
		// A Redis call past policies.redis.timeout lets the call through
		// uncounted (on_store_error: allow): none may have.
		for _, u := range adminURLs {
			if n := metric(t, u, `portico_policy_store_errors_total{store="rate_limit"}`); n != 0 {
				t.Errorf("%s: %v rate-limit store errors (calls let through uncounted)", u, n)
			}
		}
		if other.Load() != 0 || limited.Load() == 0 {
			t.Fatalf("other answers %d, limited %d", other.Load(), limited.Load())
		}
		if d := got - want; d > 0.01*n || d < -0.01*n {
			t.Errorf("accepted %v, want %.1f ± 1%% of %d", got, want, n)
		}
	})
}

// compose runs docker compose (or docker-compose) on the file.
type compose struct {
	tb   testing.TB
	base []string
}

func newCompose(tb testing.TB) *compose {
	args := []string{"-p", project, "-f", "../../docker-compose.yml", "--env-file", envFile}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return &compose{tb: tb, base: append([]string{"docker", "compose"}, args...)}
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return &compose{tb: tb, base: append([]string{"docker-compose"}, args...)}
	}
	tb.Fatal("neither docker compose nor docker-compose is installed")
	return nil
}

func (c *compose) compose(timeout time.Duration, args ...string) (string, error) {
	return run(timeout, append(slices.Clone(c.base), args...)...)
}

func (c *compose) docker(timeout time.Duration, args ...string) (string, error) {
	return run(timeout, append([]string{"docker"}, args...)...)
}

func run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: no answer within %s", strings.Join(args, " "), timeout)
	}
	return string(out), err
}

// down removes the project's containers, networks and volumes.
func (c *compose) down() {
	if out, err := c.compose(3*time.Minute, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
		c.tb.Errorf("down: %v\n%s", err, out)
	}
}

// container is the id of a service's container.
func (c *compose) container(t *testing.T, service string) string {
	t.Helper()
	out, err := c.compose(30*time.Second, "ps", "-q", service)
	id := strings.TrimSpace(out)
	if err != nil || id == "" || strings.Contains(id, "\n") {
		t.Fatalf("the container of %s: %q %v", service, out, err)
	}
	return id
}

// network is the (one) network a container is on.
func (c *compose) network(t *testing.T, ctr string) string {
	t.Helper()
	out, err := c.docker(30*time.Second, "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", ctr)
	nets := strings.Fields(out)
	if err != nil || len(nets) != 1 {
		t.Fatalf("networks of %s: %q %v", ctr, out, err)
	}
	return nets[0]
}

// waitHealthy waits until every container of the project is running and
// healthy.
func (c *compose) waitHealthy(t *testing.T, limit time.Duration) {
	t.Helper()
	var last string
	ok := poll(limit, func() bool {
		out, err := c.compose(30*time.Second, "ps", "-a", "-q")
		if err != nil {
			last = err.Error()
			return false
		}
		ids := strings.Fields(out)
		if len(ids) == 0 {
			last = "no containers"
			return false
		}
		args := append([]string{"inspect", "-f", "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"}, ids...)
		out, err = c.docker(30*time.Second, args...)
		if err != nil {
			last = err.Error()
			return false
		}
		var waiting []string
		for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) < 3 || f[1] != "running" || f[2] != "healthy" {
				waiting = append(waiting, line)
			}
		}
		last = strings.Join(waiting, "; ")
		return len(waiting) == 0
	})
	if !ok {
		t.Fatalf("not every service healthy within %s: %s", limit, last)
	}
}

// load sends GETs from 8 clients until stopped, counting failures.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ok     atomic.Int64
	mu     sync.Mutex
	fails  []string
}

func startLoad(t *testing.T, path string) *load { return startLoadOn(t, edgeURLs, path) }

func startLoadOn(t *testing.T, bases []string, path string) *load {
	ctx, cancel := context.WithCancel(t.Context())
	l := &load{cancel: cancel}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for i := range 8 {
		l.wg.Go(func() {
			url := bases[i%len(bases)] + path
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
				resp, err := client.Do(req)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					l.fail(fmt.Sprintf("%s: %v", url, err))
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					l.fail(fmt.Sprintf("%s: %d %.200s", url, resp.StatusCode, b))
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	return l
}

func (l *load) fail(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fails = append(l.fails, msg)
}

// stop ends the load and fails the test if any request failed.
func (l *load) stop(t *testing.T, what string) {
	t.Helper()
	l.cancel()
	l.wg.Wait()
	t.Logf("FIGURE %s: %d requests answered, %d failed", what, l.ok.Load(), len(l.fails))
	if len(l.fails) > 0 {
		t.Errorf("%s: %d of %d requests failed; the first: %s", what, len(l.fails), int(l.ok.Load())+len(l.fails), l.fails[0])
	}
	if l.ok.Load() == 0 {
		t.Errorf("%s: no request answered", what)
	}
}

var client = &http.Client{Timeout: 10 * time.Second}

func get(url string) int { return getWith(url) }

// getWith is a GET with hdr as name, value pairs: its status, 0 when it
// failed.
func getWith(url string, hdr ...string) int {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// metric is the value of one series on an admin listener's /metrics (0
// when absent).
func metric(t *testing.T, admin, series string) float64 {
	t.Helper()
	resp, err := client.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			_, _ = fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

func getJSON(url string, into any) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return errors.New(resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

func poll(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(limit, cond) {
		t.Fatalf("%s: not within %s", what, limit)
	}
}
