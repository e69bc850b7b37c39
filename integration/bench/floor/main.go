// Command floor is the benchmark's memory floor of Portico: a program that
// links what Portico's serve command composes (the app package and,
// through it, every dependency: gRPC, protobuf, Consul's API, OpenTelemetry,
// CEL, protovalidate, Redis, Prometheus, zap, fx) and runs their package
// initialization, then does nothing: no listener, no reflection, no route.
// The benchmark driver reads its resident memory as the part of Portico's
// that no request, route or configuration adds.
package main

import (
	"os"
	"os/signal"
	"syscall"

	_ "github.com/portico-dev/portico/cmd/portico/app"
)

func main() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
	<-ch
}
