// Package integration holds Portico's end-to-end tests: real gRPC services
// on loopback listeners, Portico composed as the binary composes it, and
// plain HTTP clients.
package integration

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
