// Package integration holds Portico's end-to-end tests: real gRPC services
// on loopback listeners, Portico composed as the binary composes it, and
// plain HTTP clients.
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
