package policies

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-dev/portico/policies/chain"
)

// emptyCodec decodes every request as an empty message of the method's
// input type and renders every answer as {}.
type emptyCodec struct {
	in protoreflect.MessageDescriptor
}

func (c emptyCodec) DecodeRequest(*http.Request, []string) (*chain.Payload, error) {
	return chain.MessagePayload(dynamicpb.NewMessage(c.in)), nil
}

func (emptyCodec) EncodeResponse(dst []byte, _ *chain.Payload) ([]byte, string, error) {
	return append(dst, "{}"...), "application/json", nil
}

// testChain compiles the chain of one binding of md whose upstream answers
// at once.
func testChain(c *Compiler, mp *MethodPolicy, md protoreflect.MethodDescriptor, httpMethod string) *Chain {
	return c.Chain(mp, httpMethod, "/x", Target{
		Codec:   emptyCodec{md.Input()},
		Timeout: time.Second,
		Call: func(_ context.Context, c *chain.Call) error {
			c.Resp = chain.MessagePayload(dynamicpb.NewMessage(md.Output()))
			return nil
		},
	})
}

// admit serves r through ch and returns the caller the chain found.
func admit(ch *Chain, w http.ResponseWriter, r *http.Request) (*Caller, error) {
	c := &chain.Call{W: w, R: r, MD: metadata.MD{}}
	err := ch.Serve(r.Context(), c)
	return c.Caller, err
}

// The stages run in the written order: a request refused by a header
// stage is never decoded, and the writer answers once the call returns.
func TestChainOrderAndWriter(t *testing.T) {
	var order []string
	stage := func(name string, fail error) chain.Stage {
		return func(ctx context.Context, c *chain.Call, next chain.Next) error {
			order = append(order, name)
			if fail != nil {
				return fail
			}
			return next(ctx, c)
		}
	}
	last := func(_ context.Context, c *chain.Call) error {
		order = append(order, "call")
		c.Out = &chain.Response{Body: []byte(`{"ok":true}`), ContentType: "application/json"}
		return nil
	}
	run := chain.Build([]chain.Stage{respond(emptyCodec{}), stage("a", nil), nil, stage("b", nil)}, last)
	w := httptest.NewRecorder()
	if err := run(t.Context(), &chain.Call{W: w}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, ","); got != "a,b,call" || w.Code != 200 || w.Body.String() != `{"ok":true}` {
		t.Fatalf("order %s, answer %d %s", got, w.Code, w.Body)
	}
	order = nil
	refused := status.Error(codes.PermissionDenied, "no")
	run = chain.Build([]chain.Stage{respond(emptyCodec{}), stage("a", refused), stage("b", nil)}, last)
	w = httptest.NewRecorder()
	if err := run(t.Context(), &chain.Call{W: w}); err != refused {
		t.Fatalf("error %v, want the refusal", err)
	}
	if got := strings.Join(order, ","); got != "a" || w.Body.Len() != 0 {
		t.Fatalf("after a refusal: order %s, body %q", got, w.Body)
	}
}

// The timeout and deadline stages bound the rest of the chain by the
// method's timeout, shortened (never lengthened) by the client's
// Grpc-Timeout.
func TestDeadlineStage(t *testing.T) {
	p := &Policy{timeout: time.Minute}
	stage := func(ctx context.Context, c *chain.Call, next chain.Next) error {
		return chain.Build([]chain.Stage{p.timeoutStage(Target{Timeout: time.Hour}), deadlineStage(Target{})}, next)(ctx, c)
	}
	for _, tt := range []struct {
		header string
		max    time.Duration // the deadline is at most this far
		min    time.Duration
		err    string
	}{
		{"", time.Minute, 59 * time.Second, ""},
		{"100m", 100 * time.Millisecond, 0, ""},
		{"2H", time.Minute, 59 * time.Second, ""},
		{"0S", 0, -time.Hour, ""},
		{"soon", 0, 0, "Grpc-Timeout header"},
	} {
		r := httptest.NewRequest("GET", "/x", nil)
		if tt.header != "" {
			r.Header.Set(GrpcTimeoutHeader, tt.header)
		}
		var left time.Duration
		err := stage(t.Context(), &chain.Call{R: r}, func(ctx context.Context, _ *chain.Call) error {
			dl, ok := ctx.Deadline()
			if !ok {
				t.Fatalf("%q: no deadline", tt.header)
			}
			left = time.Until(dl)
			return nil
		})
		if tt.err != "" {
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("%q: error %v", tt.header, err)
			}
			continue
		}
		if err != nil || left > tt.max || left < tt.min {
			t.Fatalf("%q: %v left (want %v..%v), error %v", tt.header, left, tt.min, tt.max, err)
		}
	}
}

// A cached route whose upstream outlives the caller's deadline answers
// DEADLINE_EXCEEDED (504), never a bare context error (which the edge would
// have to call an internal failure).
func TestCachedCallPastItsDeadline(t *testing.T) {
	var bg sync.WaitGroup
	var group singleflight.Group
	cp := &cachePolicy{
		route: "GET /x", ttl: time.Minute, maxEntry: 1 << 20, timeout: time.Second,
		store: newMemoryCache(1 << 20), flight: &group, metrics: NewMetrics(nil),
		errLog: rate.NewLimiter(1, 1), log: zap.NewNop(), bg: &bg,
	}
	p := &Policy{timeout: time.Second, cache: cp}
	slow := func(ctx context.Context, c *chain.Call) error {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-time.After(2 * time.Second):
			c.Resp = chain.MessagePayload(wrapperspb.String("late"))
			return nil
		}
	}
	run := chain.Build([]chain.Stage{p.timeoutStage(Target{}), cp.stage(rawCodec{}), deadlineStage(Target{})}, slow)
	for _, timeout := range []string{"50m", "0S"} {
		r := httptest.NewRequest("GET", "/x", nil)
		r.Header.Set(GrpcTimeoutHeader, timeout)
		err := run(t.Context(), &chain.Call{W: httptest.NewRecorder(), R: r, Req: chain.MessagePayload(wrapperspb.String("k" + timeout))})
		if st, ok := status.FromError(err); !ok || st.Code() != codes.DeadlineExceeded {
			t.Fatalf("Grpc-Timeout %s: %v (%T); want a DEADLINE_EXCEEDED status", timeout, err, err)
		}
	}
	bg.Wait()
}
