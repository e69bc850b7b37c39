// Command gobuild is `go build -o OUT PACKAGES` that reports progress on a
// long build: packages compiled out of those that need compiling, and the
// elapsed time, every few seconds (package gobuild). The Makefile's demo and
// portico targets build through it, so a first build on a fresh machine,
// which takes minutes, does not look stuck.
//
// Usage:
//
//	gobuild [-label NAME] [-every 10s] -o OUT PACKAGE...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/portico-dev/portico/cmd/examples/consulagent/gobuild"
)

func main() {
	label := flag.String("label", "", "what is built, in the progress lines (default: the packages)")
	out := flag.String("o", "", "output file (go build -o)")
	every := flag.Duration("every", gobuild.DefaultEvery, "interval between progress lines")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: gobuild [-label NAME] [-every 10s] -o OUT PACKAGE...")
		os.Exit(2)
	}
	if *label == "" {
		*label = fmt.Sprint(flag.Args())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := gobuild.Build(ctx, gobuild.Options{Label: *label, Output: *out, Packages: flag.Args(), Every: *every})
	if err != nil && ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "gobuild: interrupted; the next run goes on from the packages already compiled (Go's build cache)")
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gobuild:", err)
		os.Exit(1)
	}
}
