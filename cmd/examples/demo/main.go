// Command demo runs the local demo environment on loopback: a real Consul
// agent (built once from the pinned module), the example services as
// mesh-native Consul services (mTLS with Connect certificates, intentions,
// gRPC health checks) and Portico in consul mode in front of them, composed
// exactly as `portico serve --consul` composes it. It prints curl lines that
// work, and stops everything on Ctrl-C.
//
// Which example services run, and how many instances of each, comes from
// docker-compose.yml (-compose), so the demo and `docker compose up` have
// the same topology: users, orders, accounts and two products instances.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/portico-dev/portico/cmd/examples/services"
	"github.com/portico-dev/portico/cmd/examples/topology"
	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/consulagent"
	"github.com/portico-dev/portico/mesh/native"
	"github.com/portico-dev/portico/policies"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8080", "Portico's public address")
	admin := flag.String("admin-listen", "127.0.0.1:9901", "Portico's admin address (/readyz, /metrics)")
	host := flag.String("host", "127.0.0.1", "address the example services listen on")
	firstPort := flag.Int("first-port", 9001, "port of the first example instance; the others follow")
	compose := flag.String("compose", "docker-compose.yml", "compose file whose example services (label "+topology.Label+") the demo starts")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	topo, err := topology.FromFile(ctx, *compose)
	if err != nil {
		return err
	}

	fmt.Println("starting a Consul agent on loopback…")
	agent, err := consulagent.Start(ctx, consulagent.Options{})
	if err != nil {
		return err
	}
	defer agent.Close()
	fmt.Printf("consul agent HTTP API on %s\n", agent.HTTPAddr)

	log, err := zap.NewDevelopment()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	svcCtx, stopServices := context.WithCancel(context.Background())
	defer stopServices()
	port := *firstPort
	for _, t := range topo {
		for i := range t.Instances {
			addr := net.JoinHostPort(*host, fmt.Sprint(port))
			port++
			cc := api.DefaultNonPooledConfig()
			cc.Address = agent.HTTPAddr
			srv, err := native.New(native.Config{
				Service: t.Service, ID: fmt.Sprintf("%s-%d", t.Service, i+1), Listen: addr, Consul: cc,
			}, log.Named(t.Service).WithOptions(zap.IncreaseLevel(zap.WarnLevel)))
			if err != nil {
				return err
			}
			if err := services.RegisterServices(srv.GRPC, t.Service); err != nil {
				return err
			}
			wg.Go(func() {
				if err := srv.Run(svcCtx); err != nil {
					fmt.Fprintf(os.Stderr, "demo: %s on %s: %v\n", t.Service, addr, err)
				}
			})
			if srv.Addr() == "" {
				return fmt.Errorf("%s could not listen on %s (is another demo running? try -first-port)", t.Service, addr)
			}
			fmt.Printf("example service %-8s instance %d: mTLS gRPC on %s\n", t.Service, i+1, addr)
		}
	}
	if err := waitPassing(ctx, agent, topo); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "portico-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	idp, err := newDemoIDP(dir)
	if err != nil {
		return err
	}
	cfg := app.DefaultConfig()
	cfg.Edge.Listen = *listen
	cfg.Edge.AdminListen = *admin
	cfg.Mesh.Consul.Address = agent.HTTPAddr
	cfg.Policies.JWT = []policies.JWTProvider{{Name: "demo", Issuer: demoIssuer, JWKSFile: idp.jwks}}
	cfg.Log.Format = "console"
	cfg.Edge.DrainDelay = time.Second // nothing balances over the demo: a short drain on Ctrl-C
	if err := cfg.Validate(); err != nil {
		return err
	}
	plog, err := cfg.Log.NewLogger()
	if err != nil {
		return err
	}
	a := fx.New(app.Options(cfg, plog))
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.Start(startCtx); err != nil {
		return err
	}
	printTour("http://"+*listen, "http://"+*admin, agent.HTTPAddr)
	alice, err := idp.token("alice", "paid", []string{})
	if err != nil {
		return err
	}
	bob, err := idp.token("bob", "free", []string{})
	if err != nil {
		return err
	}
	admin2, err := idp.token("root", "paid", []string{"admin"})
	if err != nil {
		return err
	}
	printPolicyTour("http://"+*listen, alice, bob, admin2)
	<-ctx.Done()
	fmt.Println("\nstopping…")
	stopCtx, cancelStop := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelStop()
	err = a.Stop(stopCtx)
	stopServices()
	return err
}

// waitPassing waits until every instance of the topology passes its check.
func waitPassing(ctx context.Context, agent *consulagent.Agent, topo []topology.Example) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for _, t := range topo {
		for {
			entries, _, err := agent.Client().Health().Service(t.Service, "portico", true, (&api.QueryOptions{}).WithContext(ctx))
			if err == nil && len(entries) == t.Instances {
				break
			}
			select {
			case <-ctx.Done():
				return errors.New("example services did not pass their Consul checks within 30s")
			case <-tick.C:
			}
		}
	}
	return nil
}

func printTour(base, admin, consul string) {
	fmt.Printf(`
Portico is serving on %[1]s. Try:

  curl -s %[1]s/v1/users/alice
  curl -s '%[1]s/v1/users?states=STATE_ACTIVE&pageSize=5'
  curl -s -X POST %[1]s/v1/users -H 'Content-Type: application/json' -d '{"displayName":"Carol","email":"carol@example.com"}'
  curl -s -X PATCH '%[1]s/v1/users/alice?updateMask=display_name' -H 'Content-Type: application/json' -d '{"displayName":"Alice A."}'
  curl -s %[1]s/v1/users/alice/orders/o-1001
  curl -s -X POST %[1]s/v1/orders/o-1001:cancel -H 'Content-Type: application/json' -d '{"reason":"demo"}'
  curl -s %[1]s/v1/orders/o-1001/status
  curl -sN '%[1]s/v1/orders:stream?count=5&intervalMs=300'
  curl -sN -H 'Accept: text/event-stream' '%[1]s/v1/users:watch?count=3&intervalMs=500'
  curl -s %[1]s/v1/products/p-1
  curl -s '%[1]s/v1/assets/img/logo%%2Fv2.png'
  curl -s -o /dev/null -D - %[1]s/v1/users/alice/avatar
  curl -s %[1]s/v1/debug/fail/5?message=gone
  curl -s -X POST %[1]s/v1/users -H 'Content-Type: application/json' -d '{"bogus":1}'

Readiness and metrics:             curl -s %[2]s/readyz ; curl -s %[2]s/metrics | grep portico_
Consul (HTTP API):                 curl -s http://%[3]s/v1/health/service/products?passing
Deny Portico → orders (403 within a second), then allow again:
  curl -s -X PUT http://%[3]s/v1/connect/intentions/exact?source=portico\&destination=orders -d '{"Action":"deny"}'
  curl -s -X DELETE http://%[3]s/v1/connect/intentions/exact?source=portico\&destination=orders
The route table:                   go run ./cmd/portico routes --consul %[3]s
Ctrl-C stops everything.
`, base, admin, consul)
}
