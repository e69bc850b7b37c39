package mesh

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestRegistration(t *testing.T) {
	for _, tc := range []struct {
		name           string
		address, id    string
		mode           string
		public, admin  string
		wantID, wantAt string
		wantCheck      string
		wantConnect    bool
		wantErr        string
	}{
		{name: "listener addresses", public: "10.0.0.5:8080", admin: "10.0.0.5:9090",
			wantID: "portico-10.0.0.5:8080", wantAt: "10.0.0.5:8080", wantCheck: "http://10.0.0.5:9090/readyz", wantConnect: true},
		{name: "admin on every interface is checked on loopback", public: "10.0.0.5:8080", admin: "[::]:9090", mode: TLSModePlaintext,
			wantID: "portico-10.0.0.5:8080", wantAt: "10.0.0.5:8080", wantCheck: "http://127.0.0.1:9090/readyz"},
		{name: "register.address names both", address: "portico.internal:443", id: "edge-1", public: "0.0.0.0:8080", admin: "0.0.0.0:9090",
			wantID: "edge-1", wantAt: "portico.internal:443", wantCheck: "http://portico.internal:9090/readyz", wantConnect: true},
		{name: "unspecified public address", public: "0.0.0.0:8080", admin: "127.0.0.1:9090", wantErr: "mesh.consul.register.address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Consul.Address = "127.0.0.1:8500"
			cfg.TLS.Mode = tc.mode
			cfg.Consul.Register.Address, cfg.Consul.Register.ID = tc.address, tc.id
			reg, err := registration(cfg, tc.public, tc.admin)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want an error naming %s, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if reg.ID != tc.wantID || reg.Name != "portico" || reg.Check.HTTP != tc.wantCheck || reg.Check.CheckID != tc.wantID+":readyz" ||
				(reg.Connect != nil) != tc.wantConnect {
				t.Fatalf("registration %+v, check %+v, connect %v", reg, reg.Check, reg.Connect)
			}
			if got := net.JoinHostPort(reg.Address, strconv.Itoa(reg.Port)); got != tc.wantAt {
				t.Fatalf("registered at %s, want %s", got, tc.wantAt)
			}
		})
	}
}
