package harness

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Redis is a real redis-server (Debian's package) on a loopback port, with
// persistence off. Stop and Start keep the port, so a test can take the
// store away mid-run and bring it back.
type Redis struct {
	Addr string
	tb   testing.TB
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartRedis starts redis-server for the test; Cleanup stops it. The test
// fails (it does not skip) when redis-server is not installed: CI installs
// it (see .ci/run).
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server not found (Debian: apt-get install redis-server): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	r := &Redis{Addr: addr, tb: tb, dir: tb.TempDir()}
	r.start(bin)
	tb.Cleanup(r.Stop)
	return r
}

func (r *Redis) start(bin string) {
	_, port, _ := net.SplitHostPort(r.Addr)
	r.cmd = exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--daemonize", "no", "--loglevel", "warning")
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		r.tb.Fatal(err)
	}
	r.done = make(chan struct{})
	go func() {
		_ = r.cmd.Wait()
		close(r.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r.ping() == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.tb.Fatalf("redis-server on %s never answered PING", r.Addr)
}

// Start brings a stopped server back on the same port (empty).
func (r *Redis) Start() {
	r.tb.Helper()
	bin, _ := exec.LookPath("redis-server")
	r.start(bin)
}

// Stop kills the server and waits for it to exit.
func (r *Redis) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Kill()
	<-r.done
}

// ping speaks just enough RESP to check the server answers.
func (r *Redis) ping() error {
	conn, err := net.DialTimeout("tcp", r.Addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// FlushAll empties the store.
func (r *Redis) FlushAll(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("FLUSHALL\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "+OK") {
		return fmt.Errorf("FLUSHALL: %q %v", line, err)
	}
	return nil
}
