package policies

import (
	"slices"
	"strings"
	"testing"

	accountsv1 "github.com/portico-dev/portico/protos/examples/accounts/v1"
)

// TestReconfigure: a new operator config swaps the providers for the next
// compile; store changes are reported as needing a restart; an invalid
// config, or providers that cannot start, change nothing.
func TestReconfigure(t *testing.T) {
	a, b := newIDP(t), newIDP(t)
	provider := func(name string, p *idp) JWTProvider {
		return JWTProvider{Name: name, Issuer: issuer, JWKSURL: p.srv.URL}
	}
	cfg := DefaultConfig()
	cfg.JWT = []JWTProvider{provider("a", a)}
	c, _ := compileAccounts(t, cfg)

	next := DefaultConfig()
	next.JWT = []JWTProvider{provider("b", b)}
	next.Redis.Address = "127.0.0.1:1"
	next.Cache.MaxBytes = cfg.Cache.MaxBytes * 2
	commit, _, ignored, err := c.Reconfigure(t.Context(), next)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if got := c.Authenticator().Providers(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("providers after reconfigure: %v", got)
	}
	if !slices.Equal(ignored, []string{"policies.redis", "policies.cache.max_bytes"}) {
		t.Fatalf("ignored: %v; want the store changes named", ignored)
	}
	if c.cfg.Redis.Address != "" || c.cfg.Cache.MaxBytes != cfg.Cache.MaxBytes {
		t.Fatal("store settings changed without a restart")
	}
	sd := accountsv1.File_examples_accounts_v1_accounts_proto.Services().Get(0)
	if _, err := c.CompileService(sd); err != nil {
		t.Fatalf("compile after reconfigure: %v", err)
	}

	bad := DefaultConfig()
	bad.JWT = []JWTProvider{{Name: "x", Issuer: issuer, JWKSURL: b.srv.URL, Algorithms: []string{"HS256"}}}
	if _, _, _, err := c.Reconfigure(t.Context(), bad); err == nil || !strings.Contains(err.Error(), "HS256") {
		t.Fatalf("invalid config: %v", err)
	}
	missing := DefaultConfig()
	missing.APIKeys = []APIKeySource{{Name: "partners", File: t.TempDir() + "/absent.yaml"}}
	if _, _, _, err := c.Reconfigure(t.Context(), missing); err == nil {
		t.Fatal("a key file that cannot be read was accepted")
	}
	down := DefaultConfig()
	down.JWT = []JWTProvider{{Name: "down", Issuer: issuer, JWKSURL: "http://127.0.0.1:1/jwks"}}
	if _, _, _, err := c.Reconfigure(t.Context(), down); err == nil || !strings.Contains(err.Error(), "no keys") {
		t.Fatalf("a provider whose JWKS cannot be fetched: %v", err)
	}
	if got := c.Authenticator().Providers(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("providers after rejected configs: %v", got)
	}
	// A rollback (the new table would drop a service) restores the config.
	_, rollback, _, err := c.Reconfigure(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	rollback()
	if got := c.Authenticator().Providers(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("providers after a rollback: %v", got)
	}
}
