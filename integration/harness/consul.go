package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/cmd/examples/consulagent"
	"github.com/portico-dev/portico/cmd/examples/services"
	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/mesh/native"
)

// Consul starts a real Consul agent (built once from the pinned module) for
// the test and stops it at cleanup.
func Consul(tb testing.TB) *consulagent.Agent {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := tb.TempDir()
	a, err := consulagent.Start(ctx, consulagent.Options{Dir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(a.Close)
	// Runs before Close: a failed test shows what the agent said last.
	tb.Cleanup(func() {
		if !tb.Failed() {
			return
		}
		b, _ := os.ReadFile(filepath.Join(dir, "consul.log"))
		if len(b) > 8000 {
			b = b[len(b)-8000:]
		}
		tb.Logf("end of the consul agent's log:\n%s", b)
	})
	return a
}

// Instance is one mesh-native example instance in the test process.
type Instance struct {
	ID     string
	Server *native.Server
	// Calls counts calls this instance served.
	Calls atomic.Int64

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// NativeOptions shape an instance.
type NativeOptions struct {
	// ID is the Consul instance id; default <service>-<n>.
	ID string
	// Meta is registered with the instance (beside the descriptor hash).
	Meta map[string]string
	// Examples are the example services to serve; default [service].
	Examples []string
	// Identity overrides the Consul Connect identity.
	Identity mesh.IdentitySource
	// Seen, if set, records every call: instance id and time.
	Seen *CallLog
	// FailWith, if set, fails every call of the example services with
	// this code: a broken instance that Consul still reports passing.
	FailWith codes.Code
}

// CallLog records which instance served each call, and when.
type CallLog struct {
	mu    sync.Mutex
	calls []Call
}

// Call is one served call.
type Call struct {
	Instance string
	At       time.Time
}

func (l *CallLog) add(id string) {
	l.mu.Lock()
	l.calls = append(l.calls, Call{Instance: id, At: time.Now()})
	l.mu.Unlock()
}

// Calls returns a copy of the log.
func (l *CallLog) Calls() []Call {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Call(nil), l.calls...)
}

var instanceSeq atomic.Int64

// Native starts a mesh-native instance of an example service registered in
// agent, and waits until Consul reports it passing. Every response carries
// the header x-instance with the instance id. Cleanup stops it gracefully.
func Native(tb testing.TB, agent *consulagent.Agent, service string, o NativeOptions) *Instance {
	tb.Helper()
	if o.ID == "" {
		o.ID = fmt.Sprintf("%s-%d", service, instanceSeq.Add(1))
	}
	if o.Examples == nil {
		o.Examples = []string{service}
	}
	inst := &Instance{ID: o.ID, done: make(chan error, 1)}
	tag := func(ctx context.Context) {
		inst.Calls.Add(1)
		if o.Seen != nil {
			o.Seen.add(inst.ID)
		}
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-instance", inst.ID))
	}
	cc := api.DefaultNonPooledConfig()
	cc.Address = agent.HTTPAddr
	srv, err := native.New(native.Config{
		Service: service, ID: o.ID, Listen: "127.0.0.1:0", Consul: cc, Identity: o.Identity, Meta: o.Meta,
		DeregisterDelay: 200 * time.Millisecond, Grace: 5 * time.Second,
	}, zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel)).Named(o.ID),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if !strings.HasPrefix(info.FullMethod, "/grpc.") {
				tag(ctx)
				if o.FailWith != codes.OK {
					return nil, status.Errorf(o.FailWith, "instance %s is broken (test)", o.ID)
				}
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if !strings.HasPrefix(info.FullMethod, "/grpc.") {
				tag(ss.Context())
			}
			return h(srv, ss)
		}),
	)
	if err != nil {
		tb.Fatal(err)
	}
	if err := services.RegisterServices(srv.GRPC, o.Examples...); err != nil {
		tb.Fatal(err)
	}
	inst.Server = srv
	ctx, cancel := context.WithCancel(context.Background())
	inst.cancel = cancel
	go func() { inst.done <- srv.Run(ctx) }()
	tb.Cleanup(inst.Stop)
	if srv.Addr() == "" {
		tb.Fatalf("instance %s did not start: %v", o.ID, <-inst.done)
	}
	WaitInstance(tb, agent, service, o.ID, true)
	return inst
}

// Stop deregisters the instance and drains it (a graceful shutdown).
func (i *Instance) Stop() {
	i.once.Do(func() {
		i.cancel()
		<-i.done
	})
}

// Kill stops the instance at once without deregistering: a crash.
func (i *Instance) Kill() {
	i.once.Do(func() {
		i.Server.Abort()
		<-i.done
		i.cancel()
	})
}

// WaitInstance waits (up to 20 s) until Consul reports instance id of
// service passing (or, with passing false, not passing) and returns when
// it saw that.
func WaitInstance(tb testing.TB, agent *consulagent.Agent, service, id string, passing bool) time.Time {
	tb.Helper()
	c := agent.Client()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		entries, _, err := c.Health().Service(service, "", true, nil)
		if err == nil {
			found := false
			for _, e := range entries {
				found = found || e.Service.ID == id
			}
			if found == passing {
				return time.Now()
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Say what the agent has instead: its own view of the checks, with
	// their last output (the catalog gets an output that changes without
	// the status only every few minutes).
	var state []string
	checks, err := c.Agent().Checks()
	for _, ch := range checks {
		if ch.ServiceID == id {
			state = append(state, fmt.Sprintf("%s %s: %s", ch.CheckID, ch.Status, strings.TrimSpace(ch.Output)))
		}
	}
	tb.Fatalf("consul never reported %s/%s passing=%v; the agent's checks of it: %v (query error %v)", service, id, passing, state, err)
	return time.Time{}
}

// ConsulConfig sets cfg up for Consul discovery on agent with Connect mTLS,
// fast enough for tests.
func ConsulConfig(agent *consulagent.Agent) func(*app.Config) {
	return func(cfg *app.Config) {
		cfg.Mesh.Consul.Address = agent.HTTPAddr
		cfg.Mesh.Consul.QueryRate = 100
		cfg.Mesh.Consul.Register.CheckInterval = 500 * time.Millisecond
	}
}
