package policies

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/policies/chain"
	accountsv1 "github.com/portico-dev/portico/protos/examples/accounts/v1"
)

// idp is an identity provider on loopback: it signs tokens and serves its
// JWKS, counting fetches; rotate swaps in a new key.
type idp struct {
	t       testing.TB
	srv     *httptest.Server
	mu      sync.Mutex
	keys    map[string]any // kid → private key served (public half)
	fetches atomic.Int64
}

func newIDP(t testing.TB) *idp {
	p := &idp{t: t, keys: map[string]any{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		defer p.mu.Unlock()
		set := jwkset.NewMemoryStorage()
		for kid, k := range p.keys {
			var pub any
			switch k := k.(type) {
			case *rsa.PrivateKey:
				pub = &k.PublicKey
			case *ecdsa.PrivateKey:
				pub = &k.PublicKey
			}
			jwk, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid}})
			if err != nil {
				t.Error(err)
				return
			}
			_ = set.KeyWrite(r.Context(), jwk)
		}
		raw, err := set.JSONPublic(r.Context())
		if err != nil {
			t.Error(err)
		}
		_, _ = w.Write(raw)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) add(kid string, key any) {
	p.mu.Lock()
	p.keys[kid] = key
	p.mu.Unlock()
}

func sign(t testing.TB, m jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rsaKey(t testing.TB) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// compileAccounts compiles the accounts example service with cfg.
func compileAccounts(t testing.TB, cfg Config) (*Compiler, map[string]*MethodPolicy) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c := NewCompiler(cfg, nil, nil, zaptest.NewLogger(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	sd := accountsv1.File_examples_accounts_v1_accounts_proto.Services().Get(0)
	pols, err := c.CompileService(sd)
	if err != nil {
		t.Fatal(err)
	}
	return c, pols
}

const issuer = "https://idp.example.test"

const whoAmI = "/portico.examples.accounts.v1.AccountService/WhoAmI"

func TestJWTAttacks(t *testing.T) {
	p := newIDP(t)
	good, other := rsaKey(t), rsaKey(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.add("k1", good)
	p.add("e1", ec)
	cfg := DefaultConfig()
	cfg.JWT = []JWTProvider{{Name: "corp", Issuer: issuer, Audiences: []string{"portico", "api"}, JWKSURL: p.srv.URL, UnknownKIDRefresh: time.Hour}}
	c, pols := compileAccounts(t, cfg)
	pol := testChain(c, pols[whoAmI], accountsv1.File_examples_accounts_v1_accounts_proto.Services().Get(0).Methods().ByName("WhoAmI"), http.MethodGet)

	now := time.Now()
	claims := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		m := jwt.MapClaims{"iss": issuer, "sub": "alice", "aud": []string{"api"}, "exp": now.Add(time.Hour).Unix(),
			"iat": now.Unix(), "scope": "accounts read"}
		if mut != nil {
			mut(m)
		}
		return m
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&good.PublicKey))})
	valid := sign(t, jwt.SigningMethodRS256, "k1", good, claims(nil))
	parts := strings.Split(valid, ".")
	payload, _ := json.Marshal(claims(func(m jwt.MapClaims) { m["sub"] = "admin" }))
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
	noneTok := must(jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType))

	tests := []struct {
		name    string
		token   string
		wantErr string // "" = accepted
	}{
		{"valid RS256", valid, ""},
		{"valid ES256", sign(t, jwt.SigningMethodES256, "e1", ec, claims(nil)), ""},
		{"expired within clock skew", sign(t, jwt.SigningMethodRS256, "k1", good, claims(func(m jwt.MapClaims) { m["exp"] = now.Add(-10 * time.Second).Unix() })), ""},
		{"alg none", noneTok, "signing algorithm not allowed"},
		{"HS256 signed with the RSA public key", sign(t, jwt.SigningMethodHS256, "k1", pubPEM, claims(nil)), "signing algorithm not allowed"},
		{"HS256 without kid", sign(t, jwt.SigningMethodHS256, "", pubPEM, claims(nil)), "signing algorithm not allowed"},
		{"expired", sign(t, jwt.SigningMethodRS256, "k1", good, claims(func(m jwt.MapClaims) { m["exp"] = now.Add(-time.Hour).Unix() })), "expired"},
		{"no exp", sign(t, jwt.SigningMethodRS256, "k1", good, claims(func(m jwt.MapClaims) { delete(m, "exp") })), "required claim"},
		{"not yet valid", sign(t, jwt.SigningMethodRS256, "k1", good, claims(func(m jwt.MapClaims) { m["nbf"] = now.Add(time.Hour).Unix() })), "not valid yet"},
		{"issued in the future", sign(t, jwt.SigningMethodRS256, "k1", good, claims(func(m jwt.MapClaims) { m["iat"] = now.Add(time.Hour).Unix() })), "not valid yet"},
		{"wrong issuer", sign(t, jwt.SigningMethodRS256, "k1", good, claims(func(m jwt.MapClaims) { m["iss"] = issuer + "/evil" })), "wrong issuer"},
		{"issuer prefix", sign(t, jwt.SigningMethodRS256, "k1", good, claims(func(m jwt.MapClaims) { m["iss"] = "https://idp.example" })), "wrong issuer"},
		{"wrong audience", sign(t, jwt.SigningMethodRS256, "k1", good, claims(func(m jwt.MapClaims) { m["aud"] = "someone-else" })), "wrong audience"},
		{"no audience", sign(t, jwt.SigningMethodRS256, "k1", good, claims(func(m jwt.MapClaims) { delete(m, "aud") })), "required claim"},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, "nope", other, claims(nil)), "no key verifies it"},
		{"known kid, other key", sign(t, jwt.SigningMethodRS256, "k1", other, claims(nil)), "bad signature"},
		{"ES256 token against the RSA key", sign(t, jwt.SigningMethodES256, "k1", ec, claims(nil)), "bad signature"},
		{"tampered payload", tampered, "bad signature"},
		{"oversized", "a" + strings.Repeat(".aaaa", DefaultMaxTokenBytes/5+1), "longer than"},
		{"garbage", "not-a-jwt", "malformed"},
		{"empty", "", "needs credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v1/whoami", nil)
			if tt.token != "" {
				r.Header.Set("Authorization", "Bearer "+tt.token)
			}
			w := httptest.NewRecorder()
			caller, err := admit(pol, w, r)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("rejected a good token: %v", err)
				}
				if caller.Subject != "alice" || caller.Provider != "corp" {
					t.Fatalf("caller = %+v", caller)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want an error with %q", tt.wantErr)
			}
			te, ok := errors.AsType[*chain.Error](err)
			if !ok || te.HTTPCode() != http.StatusUnauthorized || status.Code(err) != codes.Unauthenticated {
				t.Fatalf("error = %v; want a 401 UNAUTHENTICATED", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %q; want it to contain %q", err, tt.wantErr)
			}
			if !strings.HasPrefix(te.Header().Get("Www-Authenticate"), "Bearer realm=") {
				t.Fatalf("WWW-Authenticate = %q", te.Header().Get("Www-Authenticate"))
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A key rotation at the identity provider: the first token signed with the
// new key triggers one refetch and is accepted; a flood of unknown key ids
// costs at most one fetch per unknown_kid_refresh.
func TestJWKSRotationAndUnknownKIDFlood(t *testing.T) {
	p := newIDP(t)
	old := rsaKey(t)
	p.add("2026-01", old)
	cfg := DefaultConfig()
	cfg.JWT = []JWTProvider{{Name: "corp", Issuer: issuer, JWKSURL: p.srv.URL, UnknownKIDRefresh: 2 * time.Second}}
	c, pols := compileAccounts(t, cfg)
	pol := testChain(c, pols[whoAmI], accountsv1.File_examples_accounts_v1_accounts_proto.Services().Get(0).Methods().ByName("WhoAmI"), http.MethodGet)
	call := func(tok string) error {
		r := httptest.NewRequest(http.MethodGet, "/v1/whoami", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		_, err := admit(pol, httptest.NewRecorder(), r)
		return err
	}
	claims := jwt.MapClaims{"iss": issuer, "sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "scope": "accounts"}
	if err := call(sign(t, jwt.SigningMethodRS256, "2026-01", old, claims)); err != nil {
		t.Fatal(err)
	}
	start := p.fetches.Load()

	// Rotation: the IdP publishes a new key and signs with it at once.
	fresh := rsaKey(t)
	p.add("2026-02", fresh)
	tok := sign(t, jwt.SigningMethodRS256, "2026-02", fresh, claims)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 50 {
		wg.Go(func() {
			if err := call(tok); err != nil {
				failed.Add(1)
				t.Log(err)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of 50 tokens with the new key were rejected right after the rotation", failed.Load())
	}
	if got := p.fetches.Load() - start; got != 1 {
		t.Fatalf("rotation cost %d JWKS fetches; want 1 shared by all", got)
	}

	// Flood of unknown key ids: rejected, and the IdP is not hammered.
	start = p.fetches.Load()
	for i := range 200 {
		if err := call(sign(t, jwt.SigningMethodRS256, "bogus-"+itoa(i), fresh, claims)); err == nil {
			t.Fatal("token with an unknown kid accepted")
		}
	}
	if got := p.fetches.Load() - start; got > 1 {
		t.Fatalf("200 unknown key ids caused %d JWKS fetches; want at most 1 within unknown_kid_refresh", got)
	}
}
