package native

import (
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/portico-dev/portico/mesh"
)

// noIdentity is an identity source that never loads: registration() needs
// none, and New must not reach Consul.
type noIdentity struct{}

func (noIdentity) Identity() *mesh.Identity { return nil }
func (noIdentity) Ready() <-chan struct{}   { return make(chan struct{}) }

// TestRegistrationAddresses pins where Consul is told to find an instance
// and its health port. In a container the listeners bind 0.0.0.0 and the
// instance advertises its DNS name (docker-compose.yml): the gRPC check must
// then go to that name, or the Consul agent in another container cannot
// reach it.
func TestRegistrationAddresses(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		advertise, bound, hlth string
		wantAddr               string
		wantPort               int
		wantCheck, wantID      string
	}{
		{"container: unspecified binds, advertised name", "users:9001", "[::]:9001", "[::]:9101", "users", 9001, "users:9101", "users-users:9001"},
		{"container: 0.0.0.0 health bind", "users:9001", "0.0.0.0:9001", "0.0.0.0:9101", "users", 9001, "users:9101", "users-users:9001"},
		{"loopback, nothing advertised", "", "127.0.0.1:9001", "127.0.0.1:40000", "127.0.0.1", 9001, "127.0.0.1:40000", "users-127.0.0.1:9001"},
		{"health bound to a specific IP is kept", "users:9001", "[::]:9001", "10.0.0.7:9101", "users", 9001, "10.0.0.7:9101", "users-users:9001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Config{Service: "users", Advertise: tc.advertise, Consul: &api.Config{Address: "127.0.0.1:1"}, Identity: noIdentity{}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			reg, err := s.registration(tc.bound, tc.hlth)
			if err != nil {
				t.Fatal(err)
			}
			if reg.Address != tc.wantAddr || reg.Port != tc.wantPort {
				t.Errorf("registered address %s:%d, want %s:%d", reg.Address, reg.Port, tc.wantAddr, tc.wantPort)
			}
			if reg.Check.GRPC != tc.wantCheck {
				t.Errorf("health check address %q, want %q", reg.Check.GRPC, tc.wantCheck)
			}
			if reg.ID != tc.wantID {
				t.Errorf("instance id %q, want %q", reg.ID, tc.wantID)
			}
		})
	}
}

// TestRegistrationRejectsUnspecifiedAdvertise: without -advertise, a
// 0.0.0.0 listener has no address other instances can use.
func TestRegistrationRejectsUnspecifiedAdvertise(t *testing.T) {
	s, err := New(Config{Service: "users", Consul: &api.Config{Address: "127.0.0.1:1"}, Identity: noIdentity{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.registration("0.0.0.0:9001", "0.0.0.0:9101"); err == nil {
		t.Fatal("registration of 0.0.0.0 without an advertise address: no error")
	}
}
