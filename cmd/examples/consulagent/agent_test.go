package consulagent

import (
	"context"
	"net"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestBuildModulePinsVersion(t *testing.T) {
	b, err := os.ReadFile("build/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\s*(require\s+)?github\.com/hashicorp/consul ` + regexp.QuoteMeta(Version) + `(\s*//.*)?$`)
	if !re.Match(b) {
		t.Fatalf("build/go.mod does not require github.com/hashicorp/consul %s; keep Version and the nested module in step", Version)
	}
}

func TestAgentRestartKeepsState(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	a, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c := a.Client()
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "probe", Port: 1}); err != nil {
		t.Fatal(err)
	}
	roots, _, err := c.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Stop()
	if _, err := c.Agent().Services(); err == nil {
		t.Fatal("a stopped agent still answers")
	}
	if err := a.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	svcs, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["probe"]; !ok {
		t.Fatalf("registration lost across a restart: %v", svcs)
	}
	again, _, err := c.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.TrustDomain != roots.TrustDomain || again.ActiveRootID != roots.ActiveRootID {
		t.Fatalf("CA changed across a restart: %s/%s → %s/%s", roots.TrustDomain, roots.ActiveRootID, again.TrustDomain, again.ActiveRootID)
	}
}

func TestHTTPPortIsUsedOrFallsBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	taken := l.Addr().(*net.TCPAddr).Port
	a, err := Start(ctx, Options{HTTPPort: taken})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.HTTPAddr == l.Addr().String() {
		t.Fatalf("HTTPAddr %s is the taken port", a.HTTPAddr)
	}
	l.Close() // now free: a second agent gets it
	b, err := Start(ctx, Options{HTTPPort: taken})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if want := l.Addr().String(); b.HTTPAddr != want {
		t.Fatalf("HTTPAddr %s, want the free port asked for, %s", b.HTTPAddr, want)
	}
	if _, err := b.Client().Status().Leader(); err != nil {
		t.Fatal(err)
	}
}
