package policies

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// MaxJWKSBytes bounds a fetched JWKS document.
const MaxJWKSBytes = 1 << 20

// jwtVerifier verifies tokens of one provider against its current JWKS.
type jwtVerifier struct {
	cfg    JWTProvider
	parser *jwt.Parser
	keys   atomic.Pointer[jwkset.MemoryJWKSet]
	fetch  func(ctx context.Context) ([]byte, error)
	// unknownKID limits fetches caused by tokens with an unknown key id;
	// concurrent ones share one fetch.
	unknownKID *rate.Limiter
	flight     singleflight.Group
	mu         sync.Mutex
	inflight   chan struct{} // closed when the current unknown-kid fetch ends
	verified   tokenCache
	log        *zap.Logger
	fetches    atomic.Int64
}

func newJWTVerifier(cfg JWTProvider, client *http.Client, log *zap.Logger) *jwtVerifier {
	cfg = cfg.withDefaults()
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(cfg.Algorithms),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithLeeway(cfg.ClockSkew),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	}
	if len(cfg.Audiences) > 0 {
		opts = append(opts, jwt.WithAudience(cfg.Audiences...))
	}
	v := &jwtVerifier{
		cfg:        cfg,
		parser:     jwt.NewParser(opts...),
		unknownKID: rate.NewLimiter(rate.Every(cfg.UnknownKIDRefresh), 1),
		log:        log.With(zap.String("jwt_provider", cfg.Name)),
	}
	if cfg.JWKSFile != "" {
		v.fetch = func(context.Context) ([]byte, error) {
			f, err := os.Open(cfg.JWKSFile)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			return io.ReadAll(io.LimitReader(f, MaxJWKSBytes))
		}
	} else {
		v.fetch = func(ctx context.Context) ([]byte, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.JWKSURL, nil)
			if err != nil {
				return nil, err
			}
			req.Header.Set("Accept", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("GET %s: %s", cfg.JWKSURL, resp.Status)
			}
			body, err := io.ReadAll(io.LimitReader(resp.Body, MaxJWKSBytes+1))
			if err == nil && len(body) > MaxJWKSBytes {
				err = fmt.Errorf("GET %s: JWKS larger than %d bytes", cfg.JWKSURL, MaxJWKSBytes)
			}
			return body, err
		}
	}
	return v
}

// refresh fetches and swaps the key set; concurrent calls share one fetch.
// A fetch that fails or yields no usable key keeps the current set.
func (v *jwtVerifier) refresh(ctx context.Context) error {
	_, err, _ := v.flight.Do("jwks", func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		v.fetches.Add(1)
		raw, err := v.fetch(ctx)
		if err != nil {
			return nil, err
		}
		set, err := parseJWKS(ctx, raw)
		if err != nil {
			return nil, err
		}
		v.keys.Store(set)
		v.verified.clear() // a key that left the set must not live on in it
		return nil, nil
	})
	return err
}

func parseJWKS(ctx context.Context, raw []byte) (*jwkset.MemoryJWKSet, error) {
	var m jwkset.JWKSMarshal
	if err := jsonUnmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("JWKS is not valid JSON: %w", err)
	}
	set := jwkset.NewMemoryStorage()
	n := 0
	for _, k := range m.Keys {
		jwk, err := jwkset.NewJWKFromMarshal(k, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			continue // an unusable key (an unknown type) does not spoil the set
		}
		if err := set.KeyWrite(ctx, jwk); err == nil {
			n++
		}
	}
	if n == 0 && len(m.Keys) > 0 {
		return nil, errors.New("JWKS holds no usable key")
	}
	return set, nil
}

// run refreshes the key set every RefreshInterval until ctx ends.
func (v *jwtVerifier) run(ctx context.Context) {
	t := time.NewTicker(v.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := v.refresh(ctx); err != nil && ctx.Err() == nil {
				v.log.Warn("JWKS refresh failed; keeping the current keys", zap.Error(err))
			}
		}
	}
}

// keyfunc picks the verification key for a token: by kid, refetching the
// JWKS (rate-limited, shared) when the kid is unknown, so a key rotation at
// the identity provider is picked up by the first token that uses it.
func (v *jwtVerifier) keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		alg, _ := t.Header["alg"].(string)
		kid, hasKID := t.Header["kid"].(string)
		set := v.keys.Load()
		if set == nil {
			if err := v.refresh(ctx); err != nil {
				return nil, fmt.Errorf("no JWKS yet: %w", err)
			}
			set = v.keys.Load()
		}
		if !hasKID {
			all, err := set.KeyReadAll(ctx)
			if err != nil {
				return nil, err
			}
			ks := jwt.VerificationKeySet{}
			for _, k := range all {
				if a := k.Marshal().ALG.String(); a == "" || a == alg {
					ks.Keys = append(ks.Keys, publicKey(k))
				}
			}
			return ks, nil
		}
		k, err := set.KeyRead(ctx, kid)
		if errors.Is(err, jwkset.ErrKeyNotFound) {
			// Read again even when no fetch was allowed: another caller's
			// fetch may have brought the key since this one looked.
			v.refreshUnknown(ctx, kid)
			k, err = v.keys.Load().KeyRead(ctx, kid)
		}
		if err != nil {
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		if a := k.Marshal().ALG.String(); a != "" && a != alg {
			return nil, fmt.Errorf("key %q is for %s, the token says %s", kid, a, alg)
		}
		return publicKey(k), nil
	}
}

// refreshUnknown refetches the JWKS for a token with an unknown key id:
// callers arriving while such a fetch runs wait for it; a new fetch starts
// only when the limiter allows one.
func (v *jwtVerifier) refreshUnknown(ctx context.Context, kid string) {
	v.mu.Lock()
	if ch := v.inflight; ch != nil {
		v.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		return
	}
	if !v.unknownKID.Allow() {
		v.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	v.inflight = ch
	v.mu.Unlock()
	if err := v.refresh(ctx); err != nil {
		v.log.Warn("JWKS refetch for an unknown key id failed", zap.String("kid", kid), zap.Error(err))
	}
	v.mu.Lock()
	v.inflight = nil
	v.mu.Unlock()
	close(ch)
}

func publicKey(k jwkset.JWK) any {
	key := k.Key()
	if pk, ok := key.(interface{ Public() any }); ok {
		// A private key in a JWKS: verify with its public half only.
		return pk.Public()
	}
	return key
}

// verify checks a compact JWS and returns its claims. Verified tokens are
// remembered (until they expire, at most tokenCacheTTL, and never across a
// key-set change), so a client's repeated calls cost a map lookup instead
// of a signature check.
func (v *jwtVerifier) verify(ctx context.Context, token string) (jwt.MapClaims, error) {
	now := time.Now()
	if c, ok := v.verified.get(token, now); ok {
		return c, nil
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, claims, v.keyfunc(ctx)); err != nil {
		return nil, err
	}
	until := now.Add(tokenCacheTTL)
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil && exp.Add(v.cfg.ClockSkew).Before(until) {
		until = exp.Add(v.cfg.ClockSkew)
	}
	v.verified.put(token, claims, until)
	return claims, nil
}

// Verified-token cache bounds.
const (
	tokenCacheTTL  = time.Minute
	tokenCacheSize = 10_000
)

// tokenCache maps a verified token to its claims until a deadline. When it
// is full it starts over: simple, bounded, and a miss only costs a verify.
type tokenCache struct {
	mu sync.Mutex
	m  map[string]cachedToken
}

type cachedToken struct {
	claims jwt.MapClaims
	until  time.Time
}

func (c *tokenCache) get(token string, now time.Time) (jwt.MapClaims, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[token]
	if !ok || !now.Before(e.until) {
		return nil, false
	}
	return e.claims, true
}

func (c *tokenCache) put(token string, claims jwt.MapClaims, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= tokenCacheSize {
		c.m = make(map[string]cachedToken, 256)
	}
	c.m[token] = cachedToken{claims: claims, until: until}
}

func (c *tokenCache) clear() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}

func (accept *accepted) authenticateJWT(ctx context.Context, token string) (*Caller, error) {
	if len(token) > accept.maxToken {
		return nil, credentialError("Bearer", "invalid_token", "token is longer than "+itoa(accept.maxToken)+" bytes")
	}
	v := accept.jwt[0]
	if len(accept.jwt) > 1 {
		// Pick the provider by the (unverified) issuer; its parser then
		// verifies everything, the issuer included.
		var claims jwt.RegisteredClaims
		if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil {
			return nil, credentialError("Bearer", "invalid_token", "token is malformed")
		}
		var ok bool
		if v, ok = accept.byIssuer[claims.Issuer]; !ok {
			return nil, credentialError("Bearer", "invalid_token", "token issuer is not accepted here")
		}
	}
	claims, err := v.verify(ctx, token)
	if err != nil {
		return nil, credentialError("Bearer", "invalid_token", "token is not valid: "+jwtReason(err))
	}
	sub, _ := claims[v.cfg.SubjectClaim].(string)
	return &Caller{Subject: sub, Provider: v.cfg.Name, Claims: claims}, nil
}

// jwtReason names why a token failed without echoing attacker input.
func jwtReason(err error) string {
	switch {
	case strings.Contains(err.Error(), "signing method"):
		return "signing algorithm not allowed"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "a required claim is missing"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "no key verifies it"
	}
	return "rejected"
}
