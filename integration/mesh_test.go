package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-dev/portico/integration/harness"
)

// loadStats counts the outcome of a closed-loop load.
type loadStats struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	samples    []string
}

func (s *loadStats) fail(msg string) {
	s.failed.Add(1)
	s.mu.Lock()
	if len(s.samples) < 5 {
		s.samples = append(s.samples, msg)
	}
	s.mu.Unlock()
}

func (s *loadStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%d ok, %d failed %v", s.ok.Load(), s.failed.Load(), s.samples)
}

// runLoad sends GETs to url from workers goroutines until the returned stop
// is called; stop waits for them and returns the counts.
func runLoad(t *testing.T, url string, workers int) (stop func() *loadStats) {
	t.Helper()
	c := harness.Client(t)
	st := &loadStats{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
				resp, err := c.Do(req)
				if err != nil {
					st.fail(err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					st.fail(fmt.Sprintf("%d %s", resp.StatusCode, b))
					continue
				}
				st.ok.Add(1)
			}
		})
	}
	return func() *loadStats {
		cancel()
		wg.Wait()
		return st
	}
}

// eventually polls cond every 10 ms for up to d and reports when it held.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, d)
	return time.Time{}
}

func TestConsulDiscoveryMTLSAndSelfRegistration(t *testing.T) {
	agent := harness.Consul(t)
	a := harness.Native(t, agent, "products", harness.NativeOptions{})
	b := harness.Native(t, agent, "products", harness.NativeOptions{})
	harness.Native(t, agent, "users", harness.NativeOptions{})
	e := harness.Portico(t, harness.ConsulConfig(agent))
	c := harness.Client(t)

	eventually(t, 10*time.Second, "routes of both services", func() bool {
		return do(t, c, "GET", e.URL+"/v1/products/p-1", "").code == 200 && do(t, c, "GET", e.URL+"/v1/users/alice", "").code == 200
	})
	seen := map[string]int{}
	for range 20 {
		r := do(t, c, "GET", e.URL+"/v1/products/p-2", "")
		if r.code != 200 || !strings.Contains(r.body, `"p-2"`) {
			t.Fatalf("GET product: %d %s", r.code, r.body)
		}
		seen[r.header.Get("Grpc-Metadata-X-Instance")]++
	}
	if seen[a.ID] < 5 || seen[b.ID] < 5 {
		t.Fatalf("round_robin should spread 20 calls over both instances, got %v", seen)
	}

	// Portico proves its own Connect identity: the services saw a verified
	// client certificate for "portico" (intentions are checked against it).
	id := e.Mesh.Identity.Identity()
	if id == nil || !strings.HasSuffix(id.ID, "/svc/portico") {
		t.Fatalf("portico identity: %+v", id)
	}

	// Portico registered itself with a passing check on /readyz.
	var portico string
	eventually(t, 10*time.Second, "portico registered and passing", func() bool {
		entries, _, err := agent.Client().Health().Service("portico", "", true, nil)
		if err != nil || len(entries) != 1 {
			return false
		}
		portico = entries[0].Service.ID
		return true
	})
	r := do(t, c, "GET", e.AdminURL+"/readyz", "")
	if r.code != 200 || jsonOf(t, r.body)["status"] != "ready" {
		t.Fatalf("readyz: %d %s", r.code, r.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.App.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	svcs, err := agent.Client().Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs[portico]; ok {
		t.Fatalf("portico %s still registered after shutdown", portico)
	}
}
