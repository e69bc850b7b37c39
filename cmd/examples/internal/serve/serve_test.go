package serve_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/portico-dev/portico/cmd/examples/internal/serve"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	core, logs := observer.New(zap.InfoLevel)
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, zap.New(core), serve.Options{Name: "orders", Listen: "127.0.0.1:0", Grace: time.Second})
	}()
	// Stop it once it serves, not before it got that far.
	deadline := time.Now().Add(10 * time.Second)
	for logs.FilterMessage("example service listening (plaintext)").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not start listening")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestRunErrors(t *testing.T) {
	log := zap.NewNop()
	if err := serve.Run(t.Context(), log, serve.Options{Name: "nope", Listen: "127.0.0.1:0", Grace: time.Second}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown service: %v", err)
	}
	if err := serve.Run(t.Context(), log, serve.Options{Name: "users", Listen: "127.0.0.1:-1", Grace: time.Second}); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("bad address: %v", err)
	}
}
