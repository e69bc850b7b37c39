package consulagent

import (
	"context"
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
