package compose

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo answers its request prefixed with name.
func echo(name string) Invoke {
	return func(ctx context.Context, req []byte) ([]byte, error) {
		return append([]byte(name+":"), req...), ctx.Err()
	}
}

// same builds one request: the composite request itself.
func same(_ context.Context, req []byte, _ [][]byte) ([][]byte, error) { return [][]byte{req}, nil }

// fields reads the top-level length-delimited fields of wire.
func fields(t *testing.T, wire []byte) map[protowire.Number][][]byte {
	t.Helper()
	out := map[protowire.Number][][]byte{}
	for len(wire) > 0 {
		num, typ, n := protowire.ConsumeTag(wire)
		if n < 0 || typ != protowire.BytesType {
			t.Fatalf("malformed wire %q", wire)
		}
		v, m := protowire.ConsumeBytes(wire[n:])
		if m < 0 {
			t.Fatalf("malformed wire %q", wire)
		}
		out[num] = append(out[num], v)
		wire = wire[n+m:]
	}
	return out
}

func runPlan(t *testing.T, p *Plan, req string) (*Result, error) {
	t.Helper()
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
	return p.Run(context.Background(), []byte(req), "test")
}

// TestParallel: calls without dependencies are in flight together (each
// waits until all have started, which a sequential run never reaches) and
// each answer lands in its own field.
func TestParallel(t *testing.T) {
	var started sync.WaitGroup
	started.Add(3)
	barrier := func(name string) Invoke {
		return func(ctx context.Context, req []byte) ([]byte, error) {
			started.Done()
			started.Wait()
			return echo(name)(ctx, req)
		}
	}
	p := &Plan{Budget: 10 * time.Second, Calls: []Call{
		{Name: "a", Invoke: barrier("a"), Build: same, Target: []protowire.Number{1}},
		{Name: "b", Invoke: barrier("b"), Build: same, Target: []protowire.Number{2}},
		{Name: "c", Invoke: barrier("c"), Build: same, Target: []protowire.Number{3, 7}},
	}}
	res, err := runPlan(t, p, "q")
	if err != nil {
		t.Fatal(err)
	}
	f := fields(t, res.Wire)
	if string(f[1][0]) != "a:q" || string(f[2][0]) != "b:q" || len(res.Degraded) != 0 {
		t.Fatalf("answer %q, degraded %v", res.Wire, res.Degraded)
	}
	if inner := fields(t, f[3][0]); string(inner[7][0]) != "c:q" {
		t.Fatalf("nested target: %q", f[3][0])
	}
}

// TestDependency: a call starts after the one it reads, with its answer.
func TestDependency(t *testing.T) {
	var aDone atomic.Bool
	p := &Plan{Calls: []Call{
		{Name: "a", Build: same, Target: []protowire.Number{1}, Invoke: func(ctx context.Context, req []byte) ([]byte, error) {
			defer aDone.Store(true)
			return []byte("user-7"), nil
		}},
		{Name: "b", After: []int{0}, Target: []protowire.Number{2},
			Build: func(_ context.Context, req []byte, answers [][]byte) ([][]byte, error) {
				if !aDone.Load() {
					return nil, errors.New("built before a answered")
				}
				return [][]byte{answers[0]}, nil
			},
			Invoke: echo("b")},
	}}
	res, err := runPlan(t, p, "q")
	if err != nil {
		t.Fatal(err)
	}
	if f := fields(t, res.Wire); string(f[2][0]) != "b:user-7" {
		t.Fatalf("answer %q", res.Wire)
	}
}

// blocked waits for its context and reports how it ended.
func blocked(ended chan<- error) Invoke {
	return func(ctx context.Context, _ []byte) ([]byte, error) {
		<-ctx.Done()
		ended <- context.Cause(ctx)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// TestRequiredFailure: a required call's status fails the request, named
// after the call, and the calls still running are cancelled.
func TestRequiredFailure(t *testing.T) {
	ended := make(chan error, 1)
	started := make(chan struct{})
	slow := blocked(ended)
	p := &Plan{Calls: []Call{
		{Name: "slow", Build: same, Target: []protowire.Number{1}, Invoke: func(ctx context.Context, req []byte) ([]byte, error) {
			close(started)
			return slow(ctx, req)
		}},
		{Name: "profile", Build: same, Target: []protowire.Number{2}, Invoke: func(context.Context, []byte) ([]byte, error) {
			<-started // only a call in flight can be seen cancelled
			return nil, status.Error(codes.NotFound, "user 7 not found")
		}},
	}}
	_, err := runPlan(t, p, "q")
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "call profile: user 7 not found" {
		t.Fatalf("got %v", err)
	}
	if cause := <-ended; status.Code(cause) != codes.NotFound {
		t.Fatalf("sibling ended by %v, want the failure's cancellation", cause)
	}
}

// TestOptionalFailure: an optional call degrades to its fallback, or to
// nothing, and is reported; the answer keeps the other calls'.
func TestOptionalFailure(t *testing.T) {
	fails := func(context.Context, []byte) ([]byte, error) { return nil, status.Error(codes.Unavailable, "down") }
	p := &Plan{Calls: []Call{
		{Name: "profile", Build: same, Target: []protowire.Number{1}, Invoke: echo("p")},
		{Name: "promos", Build: same, Target: []protowire.Number{2}, Invoke: fails, Optional: true, Fallback: Fallback{Literal: []byte("none today")}},
		{Name: "recs", Build: same, Target: []protowire.Number{3}, Invoke: fails, Optional: true},
	}}
	res, err := runPlan(t, p, "q")
	if err != nil {
		t.Fatal(err)
	}
	f := fields(t, res.Wire)
	if string(f[1][0]) != "p:q" || string(f[2][0]) != "none today" || f[3] != nil {
		t.Fatalf("answer %q", res.Wire)
	}
	want := []Degraded{
		{Call: "promos", Code: codes.Unavailable, Message: "call promos: down", Fallback: "literal"},
		{Call: "recs", Code: codes.Unavailable, Message: "call recs: down", Fallback: "none"},
	}
	if fmt.Sprint(res.Degraded) != fmt.Sprint(want) {
		t.Fatalf("degraded %v, want %v", res.Degraded, want)
	}
}

// TestBudget: every call's deadline is within the composite's budget; a
// required call still running when it ends fails the request with
// DEADLINE_EXCEEDED saying so, and an optional one that times out on its
// own timeout is reported as such.
func TestBudget(t *testing.T) {
	deadlines := make(chan time.Duration, 2)
	ended := make(chan error, 2)
	record := func(inv Invoke) Invoke {
		return func(ctx context.Context, req []byte) ([]byte, error) {
			d, ok := ctx.Deadline()
			if !ok {
				return nil, errors.New("no deadline")
			}
			deadlines <- time.Until(d)
			return inv(ctx, req)
		}
	}
	const budget = 200 * time.Millisecond
	p := &Plan{Budget: budget, Calls: []Call{
		{Name: "slow", Build: same, Target: []protowire.Number{1}, Invoke: record(blocked(ended))},
		{Name: "promos", Build: same, Target: []protowire.Number{2}, Invoke: record(blocked(ended)), Optional: true, Timeout: 20 * time.Millisecond},
	}}
	_, err := runPlan(t, p, "q")
	st := status.Convert(err)
	if st.Code() != codes.DeadlineExceeded || st.Message() != "call slow: the composite request's budget of 200ms ran out" {
		t.Fatalf("got %v", err)
	}
	for range 2 {
		if d := <-deadlines; d > budget || d <= 0 {
			t.Fatalf("a call got %v, more than the budget %v", d, budget)
		}
	}
	for range 2 {
		<-ended
	}

	// The optional call alone, past its own timeout: degraded.
	p.Calls[0].Invoke = record(echo("a"))
	res, err := runPlan(t, p, "q")
	if err != nil {
		t.Fatal(err)
	}
	<-deadlines
	<-deadlines
	<-ended
	if len(res.Degraded) != 1 || res.Degraded[0].Code != codes.DeadlineExceeded ||
		res.Degraded[0].Message != "call promos: no answer within its timeout of 20ms" {
		t.Fatalf("degraded %v", res.Degraded)
	}
}

// memStore is a LastGood in memory, for the tests.
type memStore struct {
	mu sync.Mutex
	m  map[string][]byte
	at time.Time
}

func (s *memStore) Get(_ context.Context, key string) ([]byte, time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.m[key]
	return a, s.at, ok
}

func (s *memStore) Put(_ context.Context, key string, a []byte, _ time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key], s.at = bytes.Clone(a), time.Now()
}

// TestLastGood: a call that answered once, then fails, gives that answer,
// marked; past its maximum age, the literal or nothing.
func TestLastGood(t *testing.T) {
	var down atomic.Bool
	inv := func(ctx context.Context, req []byte) ([]byte, error) {
		if down.Load() {
			return nil, status.Error(codes.Unavailable, "down")
		}
		return echo("recs")(ctx, req)
	}
	store := &memStore{m: map[string][]byte{}}
	p := &Plan{Calls: []Call{{Name: "recs", Build: same, Target: []protowire.Number{4}, Invoke: inv, Optional: true,
		Fallback: Fallback{LastGood: store, MaxAge: time.Hour}}}}
	if _, err := runPlan(t, p, "q"); err != nil {
		t.Fatal(err)
	}
	down.Store(true)
	res, err := runPlan(t, p, "q")
	if err != nil {
		t.Fatal(err)
	}
	if f := fields(t, res.Wire); string(f[4][0]) != "recs:q" || len(res.Degraded) != 1 || res.Degraded[0].Fallback != "last_good" {
		t.Fatalf("answer %q, degraded %v", res.Wire, res.Degraded)
	}
	// Another request has no last good answer of its own.
	if res, _ := runPlan(t, p, "other"); len(res.Wire) != 0 || res.Degraded[0].Fallback != "none" {
		t.Fatalf("answer %q, degraded %v", res.Wire, res.Degraded)
	}
	store.at = time.Now().Add(-2 * time.Hour)
	if res, _ := runPlan(t, p, "q"); len(res.Wire) != 0 || res.Degraded[0].Fallback != "none" {
		t.Fatalf("stale: answer %q, degraded %v", res.Wire, res.Degraded)
	}
}

// TestFanOut: one call per element, at most Concurrency at once, answers
// in element order into the repeated target; its dependents read them as
// field 1; past MaxFanOut the call fails.
func TestFanOut(t *testing.T) {
	var inFlight, most atomic.Int32
	inv := func(ctx context.Context, req []byte) ([]byte, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(time.Millisecond) // overlap, were the limit broken
		return echo("p")(ctx, req)
	}
	ids := func(_ context.Context, req []byte, _ [][]byte) ([][]byte, error) {
		var out [][]byte
		for _, id := range strings.Split(string(req), ",") {
			out = append(out, []byte(id))
		}
		return out, nil
	}
	var seen []byte
	p := &Plan{Calls: []Call{
		{Name: "products", Build: ids, Invoke: inv, FanOut: true, MaxFanOut: 6, Concurrency: 2, Target: []protowire.Number{5}},
		{Name: "after", After: []int{0}, Invoke: echo("x"), Build: func(_ context.Context, _ []byte, a [][]byte) ([][]byte, error) {
			seen = a[0]
			return [][]byte{nil}, nil
		}},
	}}
	res, err := runPlan(t, p, "1,2,3,4,5")
	if err != nil {
		t.Fatal(err)
	}
	got := fields(t, res.Wire)[5]
	if len(got) != 5 || string(got[0]) != "p:1" || string(got[4]) != "p:5" {
		t.Fatalf("answers %q", got)
	}
	if most.Load() > 2 {
		t.Fatalf("%d calls in flight at once, more than Concurrency 2", most.Load())
	}
	if f := fields(t, seen); len(f[1]) != 5 || string(f[1][2]) != "p:3" {
		t.Fatalf("dependent read %q", seen)
	}
	_, err = runPlan(t, p, "1,2,3,4,5,6,7")
	if st := status.Convert(err); st.Code() != codes.OutOfRange || !strings.Contains(st.Message(), "7 elements, more than its maximum of 6") {
		t.Fatalf("past MaxFanOut: %v", err)
	}
}

func TestCheck(t *testing.T) {
	ok := Call{Name: "a", Invoke: echo("a"), Build: same}
	for _, tc := range []struct {
		calls []Call
		want  string
	}{
		{[]Call{ok, ok}, `name "a" is empty or taken`},
		{[]Call{{Name: "b", Invoke: echo("b"), Build: same, After: []int{0}}}, "does not come before it"},
		{[]Call{{Name: "c", Invoke: echo("c"), Build: same, FanOut: true}}, "maximum count"},
		{[]Call{{Name: "d", Build: same}}, "no Invoke or Build"},
	} {
		if err := (&Plan{Calls: tc.calls}).Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.calls, err, tc.want)
		}
	}
}

// TestFailedDependency: a call that needs the answer of an optional call
// that failed with nothing to fall back to is not made; it degrades (or,
// required, fails the request) with the dependency's status.
func TestFailedDependency(t *testing.T) {
	var made atomic.Int32
	fails := func(context.Context, []byte) ([]byte, error) { return nil, status.Error(codes.Unavailable, "down") }
	counted := func(ctx context.Context, req []byte) ([]byte, error) { made.Add(1); return echo("b")(ctx, req) }
	p := &Plan{Calls: []Call{
		{Name: "a", Build: same, Invoke: fails, Optional: true},
		{Name: "b", Build: same, Invoke: counted, After: []int{0}, Optional: true, Target: []protowire.Number{2}},
	}}
	res, err := runPlan(t, p, "q")
	if err != nil || made.Load() != 0 || len(res.Degraded) != 2 ||
		res.Degraded[1].Message != "call b: needs the answer of call a, which failed: call a: down" || res.Degraded[1].Code != codes.Unavailable {
		t.Fatalf("made %d, %v, %+v", made.Load(), err, res)
	}
	p.Calls[1].Optional = false
	_, err = runPlan(t, p, "q")
	if st := status.Convert(err); st.Code() != codes.Unavailable || made.Load() != 0 {
		t.Fatalf("required: %v (made %d)", err, made.Load())
	}
}
