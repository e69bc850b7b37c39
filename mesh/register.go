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

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Registration interval: how often the registrar checks that the agent still
// knows the instance.
const registrarCheckEvery = 5 * time.Second

// StartRegistrar registers reg now (in the background if the agent does not
// answer) and keeps it registered until Deregister.
func StartRegistrar(client *api.Client, reg *api.AgentServiceRegistration, log *zap.Logger) *Registrar {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registrar{client: client, reg: reg, log: log.With(zap.String("service_id", reg.ID)), cancel: cancel}
	r.wg.Go(func() { r.loop(ctx) })
	return r
}

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

// selfRegistration is Portico's own instance in Consul
// (mesh.consul.register), registered once the edge listens and removed
// first when it stops: see Mesh.Register and Mesh.Leave.
type selfRegistration struct {
	mu sync.Mutex
	r  *Registrar // nil unless registered
}

// Register registers Portico in Consul and keeps it registered (again after
// an agent lost it) until Leave: public is the public listener's address,
// admin the admin listener's, whose /readyz is the instance's check.
// Without Consul, or with mesh.consul.register.enabled false, it does
// nothing. An error (an address other instances cannot reach) registers
// nothing.
func (m *Mesh) Register(public, admin string) error {
	if m.Consul == nil || !m.cfg.Consul.RegisterEnabled() {
		return nil
	}
	reg, err := registration(m.cfg, public, admin)
	if err != nil {
		return err
	}
	m.self.mu.Lock()
	defer m.self.mu.Unlock()
	if m.self.r != nil {
		return errors.New("mesh: Portico is already registered in consul")
	}
	m.self.r = StartRegistrar(m.Consul, reg, m.log)
	return nil
}

// Leave removes Portico's registration from Consul (waiting at most 5 s; a
// failure is logged) so that peers stop sending it traffic: the first step
// of a drain. It does nothing when Register did not register.
func (m *Mesh) Leave() {
	m.self.mu.Lock()
	r := m.self.r
	m.self.r = nil
	m.self.mu.Unlock()
	if r == nil {
		return
	}
	if err := r.Deregister(5 * time.Second); err != nil {
		m.log.Warn("leaving consul", zap.Error(err))
	}
}

// stop ends the registrar's loop if Leave did not, leaving the instance
// registered.
func (s *selfRegistration) stop() {
	s.mu.Lock()
	r := s.r
	s.r = nil
	s.mu.Unlock()
	if r != nil {
		r.Stop()
	}
}

// registration describes this Portico instance to Consul: the public
// address, and an HTTP check on the admin listener's /readyz.
func registration(mc Config, public, admin string) (*api.AgentServiceRegistration, error) {
	rc := mc.Consul.Register
	addr := public
	if rc.Address != "" {
		addr = rc.Address
	}
	host, port, err := SplitAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("mesh.consul.register.address: %w", err)
	}
	ah, ap, err := net.SplitHostPort(admin)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(ah); ah == "" || (ip != nil && ip.IsUnspecified()) {
		// The agent reaches the admin listener where it reaches the public
		// one (a container's name), or on loopback.
		ah = "127.0.0.1"
		if rc.Address != "" {
			ah = host
		}
	}
	id := rc.ID
	if id == "" {
		id = InstanceID(rc.Name, net.JoinHostPort(host, fmt.Sprint(port)))
	}
	reg := &api.AgentServiceRegistration{
		ID: id, Name: rc.Name, Address: host, Port: port, Tags: rc.Tags,
		Check: &api.AgentServiceCheck{
			CheckID:                        id + ":readyz",
			Name:                           "Portico readiness",
			HTTP:                           "http://" + net.JoinHostPort(ah, ap) + "/readyz",
			Interval:                       rc.CheckInterval.String(),
			Timeout:                        rc.CheckTimeout.String(),
			DeregisterCriticalServiceAfter: rc.DeregisterCriticalAfter.String(),
		},
	}
	if mc.TLSMode() == TLSModeConsul {
		reg.Connect = &api.AgentServiceConnect{Native: true}
	}
	return reg, nil
}
