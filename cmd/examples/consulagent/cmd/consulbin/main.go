// Command consulbin builds the pinned Consul agent into the user cache (once
// per version) and prints its path; a build reports its progress on stderr
// every 10 s (packages compiled, elapsed time). `make consul` and CI run it
// before the tests so the one-time build is visible on its own; operators
// can use the binary for their own experiments.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/portico-dev/portico/cmd/examples/consulagent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	bin, err := consulagent.Binary(ctx)
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		fmt.Fprintln(os.Stderr, "consulbin: interrupted; the next run goes on from the packages already compiled (Go's build cache)")
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "consulbin:", err)
		os.Exit(1)
	}
	fmt.Println(bin)
}
