package policies

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"
)

// Defaults of the policies section.
const (
	// DefaultClockSkew is the leeway on exp, nbf and iat.
	DefaultClockSkew = 30 * time.Second
	// DefaultJWKSRefresh is how often JWKS are fetched in the background.
	DefaultJWKSRefresh = 10 * time.Minute
	// DefaultUnknownKIDRefresh is the least time between two fetches caused by
	// tokens with an unknown key id.
	DefaultUnknownKIDRefresh = 5 * time.Second
	// DefaultMaxTokenBytes bounds a bearer token or API key (401 beyond).
	DefaultMaxTokenBytes = 8 << 10
	// DefaultAPIKeyHeader carries API keys.
	DefaultAPIKeyHeader = "X-API-Key"
	// DefaultStoreTimeout bounds one call to Redis.
	DefaultStoreTimeout = 50 * time.Millisecond
	// DefaultCacheMaxBytes is the memory budget of the response cache.
	DefaultCacheMaxBytes = 64 << 20
	// DefaultCacheMaxEntryBytes is the largest response that is cached.
	DefaultCacheMaxEntryBytes = 1 << 20
	// DefaultRetryAttempts is the attempts (first one included) of methods
	// safe to repeat whose options set no retry.attempts.
	DefaultRetryAttempts = 3
	// DefaultRetryBudgetRatio: retries may add at most this share of load.
	DefaultRetryBudgetRatio = 0.2
	// DefaultRetryBudgetMin is the retries per second always allowed, so a
	// quiet route still retries.
	DefaultRetryBudgetMin = 10
	// DefaultCORSMaxAge is how long browsers may cache a preflight.
	DefaultCORSMaxAge = 10 * time.Minute
)

// Config is the `policies` section of the operator's YAML: what is the
// operator's to decide. Backend teams' per-method choices are proto options.
type Config struct {
	// JWT lists the JWT providers methods may accept.
	JWT []JWTProvider `yaml:"jwt"`
	// APIKeys lists API key sources.
	APIKeys []APIKeySource `yaml:"api_keys"`
	// MaxTokenBytes bounds a bearer token or API key.
	MaxTokenBytes int `yaml:"max_token_bytes"`
	// Redis is the shared store of rate limits and, optionally, the cache.
	Redis RedisConfig `yaml:"redis"`
	// RateLimit holds the store and the global limit.
	RateLimit RateLimitConfig `yaml:"rate_limit"`
	// Cache holds the response cache's store and budget.
	Cache CacheConfig `yaml:"cache"`
	// Retry holds the default attempts and the retry budget.
	Retry RetryConfig `yaml:"retry"`
	// CORS is the default for services and methods that declare none.
	CORS *CORSConfig `yaml:"cors"`
}

// JWTProvider is one token issuer.
type JWTProvider struct {
	// Name is what methods list in auth.providers.
	Name string `yaml:"name"`
	// Issuer must equal the token's iss exactly.
	Issuer string `yaml:"issuer"`
	// Audiences: the token's aud must contain at least one. Empty: any.
	Audiences []string `yaml:"audiences"`
	// JWKSURL is fetched in the background (http or https).
	JWKSURL string `yaml:"jwks_url"`
	// JWKSFile is read instead of a URL (re-read every RefreshInterval).
	JWKSFile string `yaml:"jwks_file"`
	// Algorithms accepted; default RS256 and ES256. "none" and HS* are
	// refused: symmetric secrets do not belong in a JWKS.
	Algorithms []string `yaml:"algorithms"`
	// ClockSkew is the leeway on exp, nbf and iat.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// RefreshInterval is how often the JWKS is fetched in the background.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// UnknownKIDRefresh is the least time between fetches caused by unknown
	// key ids (a key rotation at the identity provider).
	UnknownKIDRefresh time.Duration `yaml:"unknown_kid_refresh"`
	// SubjectClaim names the caller's subject; default "sub".
	SubjectClaim string `yaml:"subject_claim"`
}

// APIKeySource is one set of API keys, stored as SHA-256 hashes.
type APIKeySource struct {
	// Name is what methods list in auth.providers.
	Name string `yaml:"name"`
	// Header carries the key; default X-API-Key.
	Header string `yaml:"header"`
	// File is a YAML list of {name, sha256, scopes}; re-read when it changes.
	File string `yaml:"file"`
	// ConsulPrefix reads keys from Consul KV under this prefix (one JSON
	// object {name, sha256, scopes} per key), watched with blocking queries.
	ConsulPrefix string `yaml:"consul_prefix"`
}

// RedisConfig is the shared store.
type RedisConfig struct {
	// Address host:port; empty: no Redis.
	Address  string `yaml:"address"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	DB       int    `yaml:"db"`
	// Timeout bounds each store call; on timeout the store's failure mode
	// applies (never a 500, never a hang).
	Timeout time.Duration `yaml:"timeout"`
}

// RateLimitConfig selects the limiter store.
type RateLimitConfig struct {
	// Store: memory (default; per edge instance) or redis (shared).
	Store string `yaml:"store"`
	// OnStoreError: allow (fail open, default) or deny (fail closed, 503).
	OnStoreError string `yaml:"on_store_error"`
	// Global, if set, applies to every route besides its own limit.
	Global *GlobalLimit `yaml:"global"`
}

// GlobalLimit is the operator's limit on every route, per client IP.
type GlobalLimit struct {
	Requests int           `yaml:"requests"`
	Period   time.Duration `yaml:"period"`
	Burst    int           `yaml:"burst"`
}

// CacheConfig is the response cache's store.
type CacheConfig struct {
	// Store: memory (default) or redis.
	Store string `yaml:"store"`
	// MaxBytes is the memory store's budget (least recently used out).
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxEntryBytes is the largest cached response.
	MaxEntryBytes int `yaml:"max_entry_bytes"`
}

// RetryConfig holds the retry defaults and the budget.
type RetryConfig struct {
	// Attempts, first included, for safe methods without retry.attempts;
	// 1 turns default retries off.
	Attempts int `yaml:"attempts"`
	// BudgetRatio caps retries at this share of calls (per route, over 10 s).
	BudgetRatio float64 `yaml:"budget_ratio"`
	// BudgetMinPerSecond retries are always allowed.
	BudgetMinPerSecond int `yaml:"budget_min_per_second"`
}

// CORSConfig is the operator's default CORS policy.
type CORSConfig struct {
	AllowOrigins     []string      `yaml:"allow_origins"`
	AllowHeaders     []string      `yaml:"allow_headers"`
	ExposeHeaders    []string      `yaml:"expose_headers"`
	AllowCredentials bool          `yaml:"allow_credentials"`
	MaxAge           time.Duration `yaml:"max_age"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		MaxTokenBytes: DefaultMaxTokenBytes,
		Redis:         RedisConfig{Timeout: DefaultStoreTimeout},
		RateLimit:     RateLimitConfig{Store: "memory", OnStoreError: "allow"},
		Cache:         CacheConfig{Store: "memory", MaxBytes: DefaultCacheMaxBytes, MaxEntryBytes: DefaultCacheMaxEntryBytes},
		Retry:         RetryConfig{Attempts: DefaultRetryAttempts, BudgetRatio: DefaultRetryBudgetRatio, BudgetMinPerSecond: DefaultRetryBudgetMin},
	}
}

// jwtDefaults fills a provider's unset fields.
func (p JWTProvider) withDefaults() JWTProvider {
	if len(p.Algorithms) == 0 {
		p.Algorithms = []string{"RS256", "ES256"}
	}
	if p.ClockSkew == 0 {
		p.ClockSkew = DefaultClockSkew
	}
	if p.RefreshInterval == 0 {
		p.RefreshInterval = DefaultJWKSRefresh
	}
	if p.UnknownKIDRefresh == 0 {
		p.UnknownKIDRefresh = DefaultUnknownKIDRefresh
	}
	if p.SubjectClaim == "" {
		p.SubjectClaim = "sub"
	}
	return p
}

var allowedAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Validate reports every invalid value.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("policies."+format, args...)) }
	names := map[string]bool{}
	for i, p := range c.JWT {
		p = p.withDefaults()
		switch {
		case p.Name == "":
			bad("jwt[%d].name is required", i)
		case names[p.Name]:
			bad("jwt[%d].name %q is used twice", i, p.Name)
		}
		names[p.Name] = true
		if p.Issuer == "" {
			bad("jwt[%d] (%s): issuer is required", i, p.Name)
		}
		if (p.JWKSURL == "") == (p.JWKSFile == "") {
			bad("jwt[%d] (%s): set exactly one of jwks_url and jwks_file", i, p.Name)
		}
		if p.JWKSURL != "" {
			if u, err := url.Parse(p.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				bad("jwt[%d] (%s): jwks_url %q must be an http(s) URL", i, p.Name, p.JWKSURL)
			}
		}
		for _, a := range p.Algorithms {
			if !slices.Contains(allowedAlgs, a) {
				bad("jwt[%d] (%s): algorithm %q is not allowed (allowed: %v)", i, p.Name, a, allowedAlgs)
			}
		}
		if p.ClockSkew < 0 || p.ClockSkew > 5*time.Minute {
			bad("jwt[%d] (%s): clock_skew must be within 0..5m, got %s", i, p.Name, p.ClockSkew)
		}
		if p.RefreshInterval < time.Second || p.UnknownKIDRefresh < 0 {
			bad("jwt[%d] (%s): refresh_interval must be >= 1s and unknown_kid_refresh >= 0", i, p.Name)
		}
	}
	for i, k := range c.APIKeys {
		switch {
		case k.Name == "":
			bad("api_keys[%d].name is required", i)
		case names[k.Name]:
			bad("api_keys[%d].name %q is used twice (names are shared with jwt)", i, k.Name)
		}
		names[k.Name] = true
		if (k.File == "") == (k.ConsulPrefix == "") {
			bad("api_keys[%d] (%s): set exactly one of file and consul_prefix", i, k.Name)
		}
	}
	if c.MaxTokenBytes < 512 {
		bad("max_token_bytes must be >= 512, got %d", c.MaxTokenBytes)
	}
	if c.Redis.Address != "" {
		if _, _, err := net.SplitHostPort(c.Redis.Address); err != nil {
			bad("redis.address %q: want host:port", c.Redis.Address)
		}
	}
	if c.Redis.Timeout <= 0 || c.Redis.Timeout > 5*time.Second {
		bad("redis.timeout must be within (0, 5s], got %s", c.Redis.Timeout)
	}
	for what, store := range map[string]string{"rate_limit.store": c.RateLimit.Store, "cache.store": c.Cache.Store} {
		switch store {
		case "memory":
		case "redis":
			if c.Redis.Address == "" {
				bad("%s is redis but redis.address is empty", what)
			}
		default:
			bad("%s must be memory or redis, got %q", what, store)
		}
	}
	if c.RateLimit.OnStoreError != "allow" && c.RateLimit.OnStoreError != "deny" {
		bad("rate_limit.on_store_error must be allow or deny, got %q", c.RateLimit.OnStoreError)
	}
	if g := c.RateLimit.Global; g != nil && (g.Requests <= 0 || g.Period <= 0 || g.Burst < 0) {
		bad("rate_limit.global needs requests > 0, period > 0 and burst >= 0")
	} else if g != nil {
		if err := checkRate(g.Requests, g.Period); err != nil {
			bad("rate_limit.global: %v", err)
		}
	}
	if c.Cache.MaxBytes < 0 || c.Cache.MaxEntryBytes <= 0 {
		bad("cache.max_bytes must be >= 0 and cache.max_entry_bytes > 0")
	}
	if c.Retry.Attempts < 1 || c.Retry.Attempts > 5 {
		bad("retry.attempts must be within 1..5, got %d", c.Retry.Attempts)
	}
	if c.Retry.BudgetRatio < 0 || c.Retry.BudgetRatio > 1 || c.Retry.BudgetMinPerSecond < 0 {
		bad("retry.budget_ratio must be within 0..1 and retry.budget_min_per_second >= 0")
	}
	if c.CORS != nil {
		if err := validateCORS(c.CORS.AllowOrigins, c.CORS.AllowCredentials); err != nil {
			bad("cors: %v", err)
		}
	}
	return errors.Join(errs...)
}
