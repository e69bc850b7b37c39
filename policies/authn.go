package policies

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"google.golang.org/grpc/codes"

	"github.com/portico-dev/portico/transcode"
)

// Caller is who made a request, as the authentication stage found it.
type Caller struct {
	// Subject is the token's subject claim or the API key's name; "" for
	// anonymous callers.
	Subject string
	// Provider is the name of the provider that authenticated the caller.
	Provider string
	// Claims are the verified token claims; an API key gets {"sub", "scope"}.
	Claims map[string]any
	// APIKey is the name of the API key used, if any.
	APIKey string
}

// Anonymous reports a caller that presented no credentials.
func (c *Caller) Anonymous() bool { return c == nil || c.Provider == "" }

func (c *Caller) scopes() []string {
	if c == nil {
		return nil
	}
	switch v := c.Claims["scope"].(type) {
	case string:
		return strings.Fields(v)
	case []any:
		return anyStrings(v)
	}
	if v, ok := c.Claims["scp"].([]any); ok {
		return anyStrings(v)
	}
	return nil
}

func anyStrings(v []any) []string {
	out := make([]string, 0, len(v))
	for _, s := range v {
		if s, ok := s.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

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

// apiKey is one stored key.
type apiKey struct {
	Name   string   `yaml:"name" json:"name"`
	SHA256 string   `yaml:"sha256" json:"sha256"`
	Scopes []string `yaml:"scopes" json:"scopes"`
}

// apiKeySet holds one source's keys by hash.
type apiKeySet struct {
	cfg  APIKeySource
	keys atomic.Pointer[map[[32]byte]apiKey]
}

func (s *apiKeySet) store(list []apiKey) error {
	m := make(map[[32]byte]apiKey, len(list))
	for i, k := range list {
		raw, err := hex.DecodeString(k.SHA256)
		if err != nil || len(raw) != 32 || k.Name == "" {
			return fmt.Errorf("key %d (%q): want a name and sha256 as 64 hex digits", i, k.Name)
		}
		m[[32]byte(raw)] = k
	}
	s.keys.Store(&m)
	return nil
}

func (s *apiKeySet) lookup(key string) (apiKey, bool) {
	m := s.keys.Load()
	if m == nil {
		return apiKey{}, false
	}
	k, ok := (*m)[sha256.Sum256([]byte(key))]
	return k, ok
}

// HashAPIKey returns the hex SHA-256 an API key is stored as.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// Authenticator holds every configured provider and their background work.
type Authenticator struct {
	jwt     []*jwtVerifier
	apiKeys []*apiKeySet
	consul  ConsulKV
	log     *zap.Logger

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    sync.WaitGroup
	started bool
}

// NewAuthenticator prepares the providers of cfg; Start fetches and watches.
func NewAuthenticator(cfg Config, kv ConsulKV, log *zap.Logger) *Authenticator {
	a := &Authenticator{consul: kv, log: log}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, p := range cfg.JWT {
		v := newJWTVerifier(p, client, log)
		a.jwt = append(a.jwt, v)
	}
	for _, s := range cfg.APIKeys {
		if s.Header == "" {
			s.Header = DefaultAPIKeyHeader
		}
		s.Header = http.CanonicalHeaderKey(s.Header)
		a.apiKeys = append(a.apiKeys, &apiKeySet{cfg: s})
	}
	return a
}

// Providers lists the configured provider names.
func (a *Authenticator) Providers() []string {
	var out []string
	for _, v := range a.jwt {
		out = append(out, v.cfg.Name)
	}
	for _, s := range a.apiKeys {
		out = append(out, s.cfg.Name)
	}
	return out
}

// Start fetches every JWKS and API key set once (failures are logged and
// retried in the background: a provider that is down at start only fails
// its own calls) and starts the refresh loops.
func (a *Authenticator) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return nil
	}
	a.started = true
	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	for _, v := range a.jwt {
		if err := v.refresh(ctx); err != nil {
			v.log.Warn("JWKS fetch failed at start; calls with this provider's tokens fail until it succeeds", zap.Error(err))
		}
		a.done.Go(func() { v.run(runCtx) })
	}
	for _, s := range a.apiKeys {
		if s.cfg.File != "" {
			if err := loadKeyFile(s); err != nil {
				cancel()
				return fmt.Errorf("api key source %s: %w", s.cfg.Name, err)
			}
			a.done.Go(func() { a.watchKeyFile(runCtx, s) })
			continue
		}
		if a.consul == nil {
			cancel()
			return fmt.Errorf("api key source %s: consul_prefix needs mesh.consul.address", s.cfg.Name)
		}
		a.done.Go(func() { a.watchConsulKeys(runCtx, s) })
	}
	return nil
}

// Stop ends the background work and waits for it.
func (a *Authenticator) Stop() {
	a.mu.Lock()
	cancel := a.cancel
	a.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	a.done.Wait()
}

// credentialError is a 401 with a WWW-Authenticate challenge.
func credentialError(scheme, errCode, msg string) error {
	e := transcode.NewError(http.StatusUnauthorized, codes.Unauthenticated, msg)
	challenge := scheme + ` realm="portico"`
	if errCode != "" {
		challenge += `, error="` + errCode + `", error_description="` + strings.ReplaceAll(msg, `"`, `'`) + `"`
	}
	e.Header = http.Header{"Www-Authenticate": {challenge}}
	return e
}

// authenticate finds the caller among the accepted providers. A request
// without credentials gets a nil Caller (the auth stage decides whether
// that is allowed).
func (accept *accepted) authenticate(ctx context.Context, r *http.Request) (*Caller, error) {
	if authz := r.Header.Get("Authorization"); authz != "" && len(accept.jwt) > 0 {
		scheme, token, _ := strings.Cut(authz, " ")
		if strings.EqualFold(scheme, "Bearer") {
			return accept.authenticateJWT(ctx, strings.TrimSpace(token))
		}
	}
	for _, h := range accept.keyHeaders {
		key := r.Header.Get(h)
		if key == "" {
			continue
		}
		if len(key) > accept.maxToken {
			return nil, credentialError("ApiKey", "invalid_token", "API key is longer than "+itoa(accept.maxToken)+" bytes")
		}
		for _, s := range accept.apiKeys {
			if s.cfg.Header != h {
				continue
			}
			if k, ok := s.lookup(key); ok {
				claims := map[string]any{"sub": k.Name, "scope": strings.Join(k.Scopes, " ")}
				return &Caller{Subject: k.Name, Provider: s.cfg.Name, Claims: claims, APIKey: k.Name}, nil
			}
		}
		return nil, credentialError("ApiKey", "invalid_token", "API key in "+h+" is not valid")
	}
	return nil, nil
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
