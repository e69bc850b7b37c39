// Package integration holds Portico's end-to-end tests: real gRPC services
// on loopback listeners, Portico composed as the binary composes it, and
// plain HTTP clients.
//
// Tests that share nothing run in parallel (t.Parallel). These stay serial:
// tests that drive a closed-loop load (runLoad, hammer) or a hostile flood,
// which saturate this process so that a parallel test's 1 s Consul health
// probe or 500 ms write timeout could starve; tests that assert sub-second
// delays or a retry budget over a time window; and tests that restart
// something on ports picked earlier (Consul, Redis, portico processes),
// which a parallel test could take meanwhile.
package integration

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/portico-dev/portico/integration/harness"
)

func TestMain(m *testing.M) {
	// goleak's Cleanup replaces its os.Exit: exit with the code it passes.
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		harness.RemoveBuilds()
		os.Exit(code)
	}))
}
