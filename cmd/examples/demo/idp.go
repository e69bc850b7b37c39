package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

const demoIssuer = "https://idp.demo.portico.local"

// demoIDP stands in for an identity provider: one ES256 key, its JWKS in a
// file Portico reads (policies.jwt[].jwks_file), and tokens signed with it.
type demoIDP struct {
	key  *ecdsa.PrivateKey
	jwks string
}

func newDemoIDP(dir string) (*demoIDP, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	jwk, err := jwkset.NewJWKFromKey(&key.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "demo-1", ALG: jwkset.AlgES256}})
	if err != nil {
		return nil, err
	}
	set := jwkset.NewMemoryStorage()
	if err := set.KeyWrite(context.Background(), jwk); err != nil {
		return nil, err
	}
	raw, err := set.JSONPublic(context.Background())
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return nil, err
	}
	return &demoIDP{key: key, jwks: path}, nil
}

// token signs a 12-hour token with the accounts scope.
func (p *demoIDP) token(sub, plan string, roles []string) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": demoIssuer, "sub": sub, "scope": "accounts", "plan": plan, "roles": roles,
		"iat": time.Now().Unix(), "exp": time.Now().Add(12 * time.Hour).Unix(),
	})
	t.Header["kid"] = "demo-1"
	return t.SignedString(p.key)
}

func printPolicyTour(base, alice, bob, admin string) {
	fmt.Printf(`
Policies declared in protos/examples/accounts/v1/accounts.proto:

  ALICE=%[2]s
  BOB=%[3]s
  ADMIN=%[4]s
  curl -si %[1]s/v1/whoami                                             # 401 + WWW-Authenticate
  curl -s -H "Authorization: Bearer $ALICE" %[1]s/v1/whoami            # identity metadata the service got
  curl -s -H "Authorization: Bearer $ALICE" -H 'Grpc-Metadata-X-Portico-Subject: root' %[1]s/v1/whoami   # forged: stripped
  curl -si -H "Authorization: Bearer $ALICE" %[1]s/v1/accounts/alice   # Portico-Cache: MISS, then HIT
  curl -s -H "Authorization: Bearer $ALICE" %[1]s/v1/accounts/bob      # 403 (allow_if)
  curl -s -H "Authorization: Bearer $ADMIN" %[1]s/v1/accounts/bob      # admins may
  curl -s -X POST %[1]s/v1/accounts -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' -d '{"id":"9","email":"x","age":3}'   # 400, every violation
  for i in $(seq 62); do curl -s -o /dev/null -w '%%{http_code} ' -H "Authorization: Bearer $BOB" %[1]s/v1/quota; done; echo   # free tier: 60/min, then 429
  curl -si %[1]s/v1/plans                                              # public, cached for everyone
Lint a proto offline:               go run ./cmd/portico lint -I protos protos/examples/accounts/v1/accounts.proto
`, base, alice, bob, admin)
}
