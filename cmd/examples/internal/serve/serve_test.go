package serve_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/portico-dev/portico/cmd/examples/internal/serve"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), "orders", "127.0.0.1:0", time.Second)
	}()
	time.Sleep(50 * time.Millisecond)
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
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := serve.Run(t.Context(), log, "nope", "127.0.0.1:0", time.Second); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown service: %v", err)
	}
	if err := serve.Run(t.Context(), log, "users", "127.0.0.1:-1", time.Second); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("bad address: %v", err)
	}
}
