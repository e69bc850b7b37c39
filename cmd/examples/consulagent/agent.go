// Package consulagent builds and runs a real Consul agent on loopback for the
// integration tests and the demo.
//
// The agent is built from the github.com/hashicorp/consul module pinned in the
// nested module under build/, once per version, into the user cache directory,
// so every later run (and CI on the same machine) starts in about a second.
//
// It lives beside the examples, not under integration/, because the demo (a
// binary the project ships) runs it; integration/harness uses it too.
package consulagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/portico-dev/portico/cmd/examples/consulagent/gobuild"
)

// Version is the Consul release the nested module pins; a test checks that
// build/go.mod agrees.
const Version = "v1.20.0"

// Binary returns the path of the cached Consul binary, building it first if
// needed: about 1,900 packages, 5 to 10 minutes on 2 cores (see the
// README), with a progress line on stderr every 10 s. Concurrent callers, in
// this process or others, wait for one build.
func Binary(ctx context.Context) (string, error) {
	if p := os.Getenv("PORTICO_CONSUL_BIN"); p != "" {
		return p, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir() // no HOME: still build once per machine boot
	}
	dir := filepath.Join(cache, "portico", "consul-"+Version+"-"+runtime.GOOS+"-"+runtime.GOARCH)
	bin := filepath.Join(dir, "consul")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		fmt.Fprintf(os.Stderr, "consulagent: another process is building Consul %s into %s; waiting for it\n", Version, dir)
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX)
	}
	if err != nil {
		return "", fmt.Errorf("consul binary: lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // released on close anyway
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // another process built it while we waited
	}
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("consul binary: cannot locate the build module")
	}
	tmp := bin + ".tmp"
	fmt.Fprintf(os.Stderr, "consulagent: building Consul %s once into %s; the first build on a machine takes 5 to 10 minutes (make consul does it ahead)\n", Version, dir)
	err = gobuild.Build(ctx, gobuild.Options{
		Label:    "Consul " + Version,
		Dir:      filepath.Join(filepath.Dir(self), "build"),
		Env:      []string{"GOWORK=off", "CGO_ENABLED=0"},
		Flags:    []string{"-trimpath"},
		Output:   tmp,
		Packages: []string{"github.com/hashicorp/consul"},
	})
	if err != nil {
		return "", fmt.Errorf("consul binary: %w", err)
	}
	return bin, os.Rename(tmp, bin)
}

// Options shape an agent.
type Options struct {
	// Dir holds the agent's data, config and log; a temporary directory if
	// empty. The data survives Restart.
	Dir string
	// Log receives the agent's output; nil discards it (it is always kept in
	// Dir/consul.log).
	Log func(line string)
	// HTTPPort asks for the HTTP API on this loopback port (the demo asks
	// for Consul's default, 8500). When it is taken, or 0, Start picks a
	// free port; HTTPAddr says which it got.
	HTTPPort int
}

// Agent is a running single-node Consul server with Connect enabled.
type Agent struct {
	// HTTPAddr is the agent's HTTP API, host:port on loopback.
	HTTPAddr string
	// Datacenter is the agent's datacenter.
	Datacenter string

	bin    string
	dir    string
	ownDir bool
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	logf   *os.File
}

// Start builds (if needed) and starts an agent, returning once it has a
// leader and a Connect CA.
func Start(ctx context.Context, opts Options) (*Agent, error) {
	bin, err := Binary(ctx)
	if err != nil {
		return nil, err
	}
	a := &Agent{bin: bin, dir: opts.Dir, Datacenter: "dc1"}
	if a.dir == "" {
		if a.dir, err = os.MkdirTemp("", "portico-consul-"); err != nil {
			return nil, err
		}
		a.ownDir = true
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	if opts.HTTPPort != 0 && portFree(opts.HTTPPort) && !slices.Contains(ports[1:], opts.HTTPPort) {
		ports[0] = opts.HTTPPort
	}
	a.HTTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	// A persistent single server (not -dev) so that a restart keeps the
	// catalog, the intentions and the CA, as a real server would.
	cfg := fmt.Sprintf(`
datacenter = %q
data_dir = %q
server = true
bootstrap_expect = 1
bind_addr = "127.0.0.1"
client_addr = "127.0.0.1"
advertise_addr = "127.0.0.1"
log_level = "INFO"
disable_update_check = true
ui_config { enabled = false }
connect { enabled = true }
performance { raft_multiplier = 1 }
ports {
  http = %d
  serf_lan = %d
  serf_wan = %d
  server = %d
  dns = -1
  grpc = -1
  grpc_tls = -1
}
`, a.Datacenter, filepath.Join(a.dir, "data"), ports[0], ports[1], ports[2], ports[3])
	if err := os.WriteFile(filepath.Join(a.dir, "agent.hcl"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if err := a.start(ctx); err != nil {
		a.cleanup()
		return nil, err
	}
	return a, nil
}

func (a *Agent) start(ctx context.Context) error {
	logf, err := os.OpenFile(filepath.Join(a.dir, "consul.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(a.bin, "agent", "-config-file", filepath.Join(a.dir, "agent.hcl"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start consul: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	a.mu.Lock()
	a.cmd, a.exited, a.logf = cmd, exited, logf
	a.mu.Unlock()
	if err := a.waitReady(ctx, exited); err != nil {
		a.kill()
		return fmt.Errorf("consul agent did not become ready: %w\n%s", err, a.tail())
	}
	return nil
}

// waitReady polls until the agent has a leader, its node is in the catalog
// and the Connect CA has an active root.
func (a *Agent) waitReady(ctx context.Context, exited <-chan struct{}) error {
	c := a.Client()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		roots, _, err := c.Agent().ConnectCARoots((&api.QueryOptions{}).WithContext(ctx))
		if err == nil && roots != nil && roots.ActiveRootID != "" {
			if nodes, _, err := c.Catalog().Nodes((&api.QueryOptions{}).WithContext(ctx)); err == nil && len(nodes) > 0 {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("the agent exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Client returns an API client for the agent.
func (a *Agent) Client() *api.Client {
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = a.HTTPAddr
	c, err := api.NewClient(cfg)
	if err != nil {
		panic(err) // only fails for an invalid TLS config, which this has not
	}
	return c
}

// Stop stops the agent (SIGINT, then SIGKILL after 10 s) and keeps its data
// for Restart.
func (a *Agent) Stop() { a.halt(10 * time.Second) }

// kill stops the agent at once.
func (a *Agent) kill() { a.halt(0) }

// halt asks the agent to leave (SIGINT) and kills its process group if it
// has not exited within grace.
func (a *Agent) halt(grace time.Duration) {
	a.mu.Lock()
	cmd, exited, logf := a.cmd, a.exited, a.logf
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	if grace > 0 {
		_ = cmd.Process.Signal(os.Interrupt)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	logf.Close()
}

// Restart starts a stopped agent again on the same ports with the same data.
func (a *Agent) Restart(ctx context.Context) error { return a.start(ctx) }

// Close stops the agent and removes a directory Start created.
func (a *Agent) Close() {
	a.Stop()
	a.cleanup()
}

func (a *Agent) cleanup() {
	if a.ownDir {
		_ = os.RemoveAll(a.dir)
	}
}

// tail returns the end of the agent's log, for error messages.
func (a *Agent) tail() string {
	b, _ := os.ReadFile(filepath.Join(a.dir, "consul.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return strings.TrimSpace(string(b))
}

// portFree reports whether the loopback TCP port can be listened on now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// freePorts reserves n distinct loopback TCP ports and releases them for the
// agent to take. Serf also needs the UDP port of the same number, which is
// free in practice when the TCP one is.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
