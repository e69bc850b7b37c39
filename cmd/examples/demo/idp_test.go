package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestDemoKeyIsCreatedOnceAndKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portico", "demo-idp-key.pem")
	k1, created, err := loadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first load: created %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, created, err := loadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("second load: created %v, %v", created, err)
	}
	if !k1.Equal(k2) {
		t.Fatal("the second run got another key: its tokens would not verify")
	}
	// A token signed in one run verifies against the key of the next.
	idp, err := newDemoIDP(t.TempDir(), k1)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := idp.token("alice", "paid", nil)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return &k2.PublicKey, nil }); err != nil {
		t.Fatal(err)
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || time.Until(exp.Time) < 29*24*time.Hour {
		t.Fatalf("token expires %v (%v), want about %v from now", exp, err, tokenLifetime)
	}
}

func TestDemoKeyFileDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo-idp-key.pem")
	if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "delete the file") {
		t.Fatalf("damaged key: %v, want an error saying to delete it", err)
	}
}
