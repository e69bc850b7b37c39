package integration

import (
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/portico-dev/portico/integration/harness"
	"github.com/portico-dev/portico/policies"
)

// TestRetryBudgetAndOutlierEjection: Echo is a public GET with 3 attempts.
// One of two instances fails every call while Consul reports it passing:
// retries hide it from clients and outlier detection ejects it. Then every
// instance fails: the retry budget keeps the extra load near 20 %.
func TestRetryBudgetAndOutlierEjection(t *testing.T) {
	agent := harness.Consul(t)
	healthy := harness.Native(t, agent, "accounts", harness.NativeOptions{})
	broken := harness.Native(t, agent, "accounts", harness.NativeOptions{FailWith: codes.Unavailable})
	e := harness.Portico(t, harness.ConsulConfig(agent))
	c := harness.Client(t)
	url := e.URL + "/v1/echo/hi"
	sent := 0 // every request of the test: the budget's window counts them
	eventually(t, 20*time.Second, "echo routed", func() bool { sent++; return do(t, c, "GET", url, "").code == http.StatusOK })

	// Phase 1: one broken instance.
	const phase1 = 400
	failed := 0
	for range phase1 {
		sent++
		if r := do(t, c, "GET", url, ""); r.code != http.StatusOK {
			failed++
		}
	}
	ejected := e.Mesh.Catalog.Ejected("accounts")
	t.Logf("one broken instance: %d of %d GETs failed; broken instance saw %d calls, healthy %d; ejected %v",
		failed, phase1, broken.Calls.Load(), healthy.Calls.Load(), ejected)
	if failed != 0 {
		t.Fatalf("%d GETs failed although a healthy instance was there to retry on", failed)
	}
	if len(ejected) != 1 {
		t.Fatalf("ejected = %v; want the broken instance", ejected)
	}
	if n := broken.Calls.Load(); n > 10 {
		t.Fatalf("the broken instance got %d calls; ejection should stop them after 5", n)
	}
	fams := scrape(t, e.AdminURL)
	for state, want := range map[string]float64{"healthy": 1, "ejected": 1} {
		if got := value(fams, "portico_upstream_instances", map[string]string{"service": "accounts", "state": state}); got != want {
			t.Errorf("portico_upstream_instances{service=accounts,state=%s} = %v, want %v", state, got, want)
		}
	}
	if got := value(fams, "portico_upstream_retries_total", map[string]string{"outcome": "retried"}); got < 1 {
		t.Errorf("portico_upstream_retries_total{outcome=retried} = %v", got)
	}

	// Phase 2: the healthy instance leaves and a second broken one joins.
	// The ejection cap (50 %) keeps the new one in rotation: every call
	// fails, and retries are bounded by the budget instead of tripling the
	// load.
	broken2 := harness.Native(t, agent, "accounts", harness.NativeOptions{FailWith: codes.Unavailable})
	healthy.Stop()
	eventually(t, 10*time.Second, "healthy instance gone", func() bool {
		sent++
		r := do(t, c, "GET", url, "")
		return r.code == http.StatusServiceUnavailable
	})
	before := broken.Calls.Load() + broken2.Calls.Load()
	const phase2 = 1000
	failed = 0
	for range phase2 {
		sent++
		if r := do(t, c, "GET", url, ""); r.code != http.StatusServiceUnavailable {
			t.Fatalf("want 503 with every instance broken, got %d %s", r.code, r.body)
		}
		failed++
	}
	attempts := broken.Calls.Load() + broken2.Calls.Load() - before
	// The budget over its 10 s window: 20 % of all calls in it (both phases)
	// plus 10 retries a second.
	bound := float64(phase2) + policies.DefaultRetryBudgetRatio*float64(sent) + float64(policies.DefaultRetryBudgetMin*10)
	t.Logf("every instance broken: %d requests made %d upstream attempts (%.2f per request; without a budget 3.00); bound %.0f",
		phase2, attempts, float64(attempts)/phase2, bound)
	if float64(attempts) > bound {
		t.Fatalf("%d attempts for %d requests exceeds the retry budget's %.0f", attempts, phase2, bound)
	}
	if attempts <= phase2 {
		t.Fatalf("no retries at all (%d attempts): the budget's minimum should allow some", attempts)
	}
}
