package policies

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-dev/portico/policies/chain"
	porticov1 "github.com/portico-dev/portico/protos/portico/v1"
)

// Caller is who made a request, as the authentication stage found it.
type Caller = chain.Caller

// callerScopes are the scopes a caller's claims grant ("scope" as a string
// or list, or "scp").
func callerScopes(c *Caller) []string {
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

// HasScope reports whether the caller's verified claims grant scope.
func HasScope(c *Caller, scope string) bool { return slices.Contains(callerScopes(c), scope) }

func anyStrings(v []any) []string {
	out := make([]string, 0, len(v))
	for _, s := range v {
		if s, ok := s.(string); ok {
			out = append(out, s)
		}
	}
	return out
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
	challenge := scheme + ` realm="portico"`
	if errCode != "" {
		challenge += `, error="` + errCode + `", error_description="` + strings.ReplaceAll(msg, `"`, `'`) + `"`
	}
	return chain.NewError(status.New(codes.Unauthenticated, msg)).WithHeader("Www-Authenticate", challenge)
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

// authnStage verifies the caller's credential with the providers the
// method accepts and sets the call's Caller: 401 with a WWW-Authenticate
// challenge for a bad credential, or a missing one where it is required.
func (p *Policy) authnStage() chain.Stage {
	if p.authMode == authNone {
		return nil
	}
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		caller, err := p.authenticate(ctx, c)
		if err != nil {
			p.metrics.denied.WithLabelValues("unauthenticated").Inc()
			return err
		}
		c.Caller = caller
		return next(ctx, c)
	}
}

func (p *Policy) authenticate(ctx context.Context, c *chain.Call) (*Caller, error) {
	acc := p.accept
	if len(acc.jwt) == 0 && len(acc.apiKeys) == 0 {
		if p.authMode == authOptional {
			return nil, nil
		}
		return nil, credentialError("Bearer", "", "this method needs credentials, but no credential provider is configured at the edge")
	}
	caller := acc.identified(c.R)
	var err error
	if caller == nil {
		if caller, err = acc.authenticate(ctx, c.R); err != nil {
			return nil, err
		}
	}
	if caller == nil && p.authMode == authRequired {
		return nil, chain.NewError(status.New(codes.Unauthenticated, "this method needs credentials: "+acc.describe())).
			WithHeader("Www-Authenticate", acc.challenges()...)
	}
	return caller, nil
}

// challenges lists the route's WWW-Authenticate challenges (Chain.Challenges).
func (p *Policy) challenges() []string {
	if p.accept == nil || p.authMode == authNone {
		return nil
	}
	return p.accept.challenges()
}

func (acc *accepted) challenges() []string {
	var out []string
	if len(acc.jwt) > 0 {
		out = append(out, `Bearer realm="portico"`)
	}
	if len(acc.apiKeys) > 0 {
		out = append(out, `ApiKey realm="portico"`)
	}
	if len(out) == 0 {
		out = append(out, `Bearer realm="portico"`)
	}
	return out
}

func (acc *accepted) describe() string {
	var parts []string
	if len(acc.jwt) > 0 {
		parts = append(parts, "a bearer token")
	}
	for _, h := range acc.keyHeaders {
		parts = append(parts, "an API key in "+h)
	}
	return strings.Join(parts, " or ")
}

// accepting is the set of the named providers (all of them for none).
func (c *Compiler) accepting(names []string) *accepted {
	acc := &accepted{byIssuer: map[string]*jwtVerifier{}, maxToken: c.cfg.MaxTokenBytes}
	take := func(n string) bool { return len(names) == 0 || slices.Contains(names, n) }
	for _, v := range c.auth.jwt {
		if take(v.cfg.Name) {
			acc.jwt = append(acc.jwt, v)
			acc.byIssuer[v.cfg.Issuer] = v
		}
	}
	for _, s := range c.auth.apiKeys {
		if take(s.cfg.Name) {
			acc.apiKeys = append(acc.apiKeys, s)
			if !slices.Contains(acc.keyHeaders, s.cfg.Header) {
				acc.keyHeaders = append(acc.keyHeaders, s.cfg.Header)
			}
		}
	}
	return acc
}

func (c *Compiler) compileAuth(p *Policy, a *porticov1.Auth, md protoreflect.MethodDescriptor) error {
	p.authMode = authRequired
	if a.GetPublic() {
		p.authMode = authOptional
	}
	names := a.GetProviders()
	for _, n := range names {
		if !c.AnyProvider && !slices.Contains(c.auth.Providers(), n) {
			return fmt.Errorf("providers: %q is not a configured provider (configured: %v)", n, c.auth.Providers())
		}
	}
	p.accept = c.accepting(names)
	p.providersOwn = len(names) > 0
	p.scopes = a.GetScopes()
	for _, cl := range a.GetForwardClaims() {
		if cl == "" || strings.ContainsFunc(cl, func(r rune) bool {
			return !(r == '_' || r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
		}) {
			return fmt.Errorf("forward_claims: %q is not a valid claim name for metadata", cl)
		}
		p.forward = append(p.forward, cl)
	}
	if expr := a.GetAllowIf(); expr != "" {
		ai, err := compileAllowIf(expr, md.Input())
		if err != nil {
			return fmt.Errorf("allow_if: %w", err)
		}
		p.allowIf = ai
	}
	return nil
}
