package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
)

// Registrar keeps one service instance registered with the local Consul
// agent: it registers at start, registers again whenever the agent no longer
// knows the instance (an agent that lost its state), retries with backoff
// while the agent is unreachable, and deregisters on Deregister.
type Registrar struct {
	client *api.Client
	reg    *api.AgentServiceRegistration
	log    *zap.Logger

	registered chan struct{}
	once       sync.Once
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// Registration interval: how often the registrar checks that the agent still
// knows the instance.
const registrarCheckEvery = 5 * time.Second

// StartRegistrar registers reg now (in the background if the agent does not
// answer) and keeps it registered until Deregister.
func StartRegistrar(client *api.Client, reg *api.AgentServiceRegistration, log *zap.Logger) *Registrar {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registrar{client: client, reg: reg, log: log.With(zap.String("service_id", reg.ID)), registered: make(chan struct{}), cancel: cancel}
	r.wg.Go(func() { r.loop(ctx) })
	return r
}

// Registered is closed after the first successful registration.
func (r *Registrar) Registered() <-chan struct{} { return r.registered }

func (r *Registrar) loop(ctx context.Context) {
	backoff := watchRetryMin
	for {
		wait := registrarCheckEvery
		if err := r.ensure(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("consul registration failed; retrying", zap.Error(err), zap.Duration("retry_in", backoff))
			wait = backoff
			backoff = min(backoff*2, watchRetryMax)
		} else {
			backoff = watchRetryMin
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// ensure registers the instance unless the agent already has it.
func (r *Registrar) ensure(ctx context.Context) error {
	q := (&api.QueryOptions{}).WithContext(ctx)
	svc, _, err := r.client.Agent().Service(r.reg.ID, q)
	if err == nil && svc != nil {
		return nil
	}
	var se api.StatusError
	if err != nil && !(errors.As(err, &se) && se.Code == 404) {
		return err
	}
	if err := r.client.Agent().ServiceRegisterOpts(r.reg, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return err
	}
	r.log.Info("registered in consul", zap.String("service", r.reg.Name), zap.String("address", net.JoinHostPort(r.reg.Address, strconv.Itoa(r.reg.Port))))
	r.once.Do(func() { close(r.registered) })
	return nil
}

// Stop stops the loop and leaves the registration in place (a crash).
func (r *Registrar) Stop() {
	r.cancel()
	r.wg.Wait()
}

// Deregister stops the loop and removes the instance from the agent,
// waiting at most timeout.
func (r *Registrar) Deregister(timeout time.Duration) error {
	r.cancel()
	r.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := r.client.Agent().ServiceDeregisterOpts(r.reg.ID, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("deregister %s from consul: %w", r.reg.ID, err)
	}
	r.log.Info("deregistered from consul")
	return nil
}

// InstanceID is the default instance id: name-host-port.
func InstanceID(name, addr string) string {
	return name + "-" + addr
}

// SplitAddr splits host:port for a registration.
func SplitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		return "", 0, fmt.Errorf("address %q is unspecified; set an address other instances can reach", addr)
	}
	return host, port, nil
}
