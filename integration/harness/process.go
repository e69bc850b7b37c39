package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildPortico returns the path of a portico binary built from this tree.
// Tests that need real signals (SIGTERM, SIGHUP) run it as a separate
// process. It is built once per test binary (linking it takes 10 to 20 s
// on a busy machine), however many tests ask and whether or not they run in
// parallel, into a directory that RemoveBuilds deletes: the package's
// TestMain calls it after the tests.
func BuildPortico(tb testing.TB) string {
	tb.Helper()
	build.once.Do(func() { build.bin, build.err = buildPortico() })
	if build.err != nil {
		tb.Fatal(build.err)
	}
	return build.bin
}

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func buildPortico() (string, error) {
	goBin, err := exec.LookPath("go") // go test puts its own go first on PATH
	if err != nil {
		return "", fmt.Errorf("building portico: %w", err)
	}
	build.dir, err = os.MkdirTemp("", "portico-test-bin-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(build.dir, "portico")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "github.com/portico-dev/portico/cmd/portico")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build portico: %w\n%s", err, b)
	}
	return out, nil
}

// RemoveBuilds deletes what BuildPortico built; call it once the tests are
// over (from TestMain).
func RemoveBuilds() {
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
}

// FreePort returns a loopback address that was free a moment ago.
func FreePort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Process is a running command whose output is kept.
type Process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartProcess runs bin with args; stdout and stderr are kept together. The
// test's Cleanup kills it if it still runs.
func StartProcess(tb testing.TB, bin string, args ...string) *Process {
	tb.Helper()
	p := &Process{cmd: exec.Command(bin, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if tb.Failed() {
			tb.Logf("output of %s:\n%s", filepath.Base(bin), p.Output())
		}
	})
	return p
}

// Pid is the process id (for /proc/<pid>/status and the like).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output is what the process wrote so far.
func (p *Process) Output() string { return p.out.String() }

// Signal sends sig.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM and waits at most d for the exit; it returns the
// exit error (nil for status 0).
func (p *Process) Stop(d time.Duration) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("did not exit within " + d.String() + " of SIGTERM")
	}
}

// WaitOutput waits at most d for s to appear in the output.
func (p *Process) WaitOutput(s string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Output(), s) {
			return true
		}
		select {
		case <-p.done:
			return strings.Contains(p.Output(), s)
		default:
			time.Sleep(20 * time.Millisecond)
		}
	}
	return false
}
