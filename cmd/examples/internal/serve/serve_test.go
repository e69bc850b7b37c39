package serve_test

import (
	"context"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/portico-dev/portico/cmd/examples/internal/serve"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
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

func TestRunAnswersItsVersion(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	core, logs := observer.New(zap.InfoLevel)
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, zap.New(core), serve.Options{Name: "products", Listen: "127.0.0.1:0", Grace: time.Second, Meta: map[string]string{"version": "2"}})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run after stop: %v", err)
		}
	}()
	var addr string
	deadline := time.Now().Add(10 * time.Second)
	for addr == "" {
		if l := logs.FilterMessage("example service listening (plaintext)").All(); len(l) > 0 {
			addr, _ = l[0].ContextMap()["addr"].(string)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not start listening")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var md metadata.MD
	if _, err := productsv1.NewProductServiceClient(cc).GetProduct(t.Context(), &productsv1.GetProductRequest{Id: "p-1"}, grpc.Header(&md)); err != nil {
		t.Fatal(err)
	}
	if got := md.Get("x-served-version"); len(got) != 1 || got[0] != "2" {
		t.Fatalf("x-served-version %q, want [2]", got)
	}
}

func TestMetaFlag(t *testing.T) {
	m := map[string]string{}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(serve.MetaFlag(m), "meta", "")
	if err := fs.Parse([]string{"-meta", "version=2", "-meta=team=a=b", "-meta", "empty="}); err != nil {
		t.Fatal(err)
	}
	if got := serve.MetaFlag(m).String(); got != "empty=,team=a=b,version=2" {
		t.Fatalf("meta %s", got)
	}
	for _, bad := range []string{"version", "=1", "version=3"} {
		if err := serve.MetaFlag(m).Set(bad); err == nil {
			t.Errorf("-meta %s accepted", bad)
		}
	}
}
