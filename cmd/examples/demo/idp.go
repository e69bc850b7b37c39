package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

const demoIssuer = "https://idp.demo.portico.local"

// tokenLifetime is how long a printed token is accepted: long enough that
// tokens exported in a shell keep working across demo runs for weeks.
const tokenLifetime = 30 * 24 * time.Hour

// demoKeyFile is where the demo keeps its signing key, under the user cache
// directory, so that a token one run prints keeps working in the next.
func demoKeyFile() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "portico", "demo-idp-key.pem"), nil
}

// loadOrCreateKey reads the ES256 key at path, or creates it (mode 0600)
// when there is none; created says which.
func loadOrCreateKey(path string) (key *ecdsa.PrivateKey, created bool, err error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, false, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, false, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, false, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return loadOrCreateKey(path) // another demo created it first
		}
		if err != nil {
			return nil, false, err
		}
		if err := errors.Join(pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}), f.Close()); err != nil {
			os.Remove(path)
			return nil, false, err
		}
		return key, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, false, fmt.Errorf("demo key %s: no PRIVATE KEY block (delete the file for a new key)", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, false, fmt.Errorf("demo key %s: %w (delete the file for a new key)", path, err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, false, fmt.Errorf("demo key %s: not a P-256 key (delete the file for a new key)", path)
	}
	return ec, false, nil
}

// demoIDP stands in for an identity provider: one ES256 key, its JWKS in a
// file Portico reads (policies.jwt[].jwks_file), and tokens signed with it.
type demoIDP struct {
	key  *ecdsa.PrivateKey
	jwks string
}

// newDemoIDP writes the JWKS of key into dir.
func newDemoIDP(dir string, key *ecdsa.PrivateKey) (*demoIDP, error) {
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

// token signs a token with the accounts scope, valid for tokenLifetime.
func (p *demoIDP) token(sub, plan string, roles []string) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": demoIssuer, "sub": sub, "scope": "accounts", "plan": plan, "roles": roles,
		"iat": time.Now().Unix(), "exp": time.Now().Add(tokenLifetime).Unix(),
	})
	t.Header["kid"] = "demo-1"
	return t.SignedString(p.key)
}

// tour signs the three tokens the printed tour uses.
func (p *demoIDP) tour() (tokens, error) {
	var t tokens
	var err error
	if t.Alice, err = p.token("alice", "paid", []string{}); err != nil {
		return t, err
	}
	if t.Bob, err = p.token("bob", "free", []string{}); err != nil {
		return t, err
	}
	t.Admin, err = p.token("root", "paid", []string{"admin"})
	return t, err
}
