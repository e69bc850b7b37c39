package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// IDP is an identity provider on loopback: it signs ES256 tokens with its
// current key and serves the public keys as a JWKS, counting fetches.
type IDP struct {
	URL     string
	Issuer  string
	Fetches atomic.Int64

	tb   testing.TB
	mu   sync.Mutex
	kid  string
	keys map[string]*ecdsa.PrivateKey
}

// NewIDP starts the JWKS endpoint; Cleanup stops it.
func NewIDP(tb testing.TB) *IDP {
	p := &IDP{tb: tb, Issuer: "https://idp.portico.test", keys: map[string]*ecdsa.PrivateKey{}}
	p.Rotate("k1")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.Fetches.Add(1)
		set := jwkset.NewMemoryStorage()
		p.mu.Lock()
		for kid, k := range p.keys {
			jwk, err := jwkset.NewJWKFromKey(&k.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.AlgES256}})
			if err == nil {
				_ = set.KeyWrite(r.Context(), jwk)
			}
		}
		p.mu.Unlock()
		raw, err := set.JSONPublic(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(raw)
	}))
	tb.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// Rotate adds a new signing key; tokens are signed with it from now on.
func (p *IDP) Rotate(kid string) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.tb.Fatal(err)
	}
	p.mu.Lock()
	p.keys[kid] = k
	p.kid = kid
	p.mu.Unlock()
}

// Token signs a token for sub, valid for an hour, with extra claims.
func (p *IDP) Token(sub string, claims map[string]any) string {
	p.tb.Helper()
	c := jwt.MapClaims{"iss": p.Issuer, "sub": sub, "aud": "portico", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	p.mu.Lock()
	kid, key := p.kid, p.keys[p.kid]
	p.mu.Unlock()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		p.tb.Fatal(err)
	}
	return s
}
