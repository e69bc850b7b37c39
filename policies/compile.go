package policies

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"buf.build/go/protovalidate"
	"go.uber.org/zap"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	porticov1 "github.com/portico-dev/portico/protos/portico/v1"
)

// Compiler turns options into policies. It owns what outlives a route-table
// swap: the providers, the stores, the retry budgets and the cache's
// in-flight calls.
type Compiler struct {
	// AnyProvider accepts provider names that the configuration does not
	// define (for `portico lint` without the operator's config).
	AnyProvider bool

	kv      ConsulKV
	metrics *Metrics
	log     *zap.Logger
	stores  *stores

	mu      sync.Mutex // guards what a reconfigure swaps
	cfg     Config
	auth    *Authenticator
	budgets *retryBudgets
}

// NewCompiler prepares the stores named by cfg; nothing connects until used.
// kv may be nil (no Consul API key sources).
func NewCompiler(cfg Config, kv ConsulKV, metrics *Metrics, log *zap.Logger) *Compiler {
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	return &Compiler{
		cfg: cfg, kv: kv, metrics: metrics, log: log,
		auth:    NewAuthenticator(cfg, kv, log),
		stores:  newStores(cfg, log),
		budgets: newRetryBudgets(cfg.Retry),
	}
}

// Start fetches the credential providers' keys and starts their refresh.
func (c *Compiler) Start(ctx context.Context) error { return c.auth.Start(ctx) }

// Stop ends background work and closes the Redis client.
func (c *Compiler) Stop() error {
	c.auth.Stop()
	return c.stores.close()
}

// Reconfigure applies a new operator config to what the next compile
// produces: credential providers (started before they are used: a JWT
// provider whose keys cannot be fetched fails the reconfigure), CORS
// defaults, retry settings, the global rate limit, the store failure mode
// and token limits. The stores themselves (Redis address, rate-limit and
// cache store, cache size) are kept: changing them needs a restart, and each
// such change is returned in ignored. Call it with the route-table builder
// held (edge.Builder.Reconfigure); then either commit, once the new table
// serves (it stops the old providers), or rollback, which restores the
// previous config and stops the new providers.
func (c *Compiler) Reconfigure(ctx context.Context, cfg Config) (commit, rollback func(), ignored []string, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, nil, err
	}
	keep := func(name string, changed bool) {
		if changed {
			ignored = append(ignored, "policies."+name)
		}
	}
	keep("redis", cfg.Redis != c.cfg.Redis)
	keep("rate_limit.store", cfg.RateLimit.Store != c.cfg.RateLimit.Store)
	keep("cache.store", cfg.Cache.Store != c.cfg.Cache.Store)
	keep("cache.max_bytes", cfg.Cache.MaxBytes != c.cfg.Cache.MaxBytes)
	cfg.Redis, cfg.RateLimit.Store = c.cfg.Redis, c.cfg.RateLimit.Store
	cfg.Cache.Store, cfg.Cache.MaxBytes = c.cfg.Cache.Store, c.cfg.Cache.MaxBytes

	auth := NewAuthenticator(cfg, c.kv, c.log)
	if err := auth.Start(ctx); err != nil {
		auth.Stop()
		return nil, nil, nil, err
	}
	for _, v := range auth.jwt {
		if v.keys.Load() == nil {
			auth.Stop()
			return nil, nil, nil, fmt.Errorf("jwt provider %s: no keys could be fetched from its JWKS", v.cfg.Name)
		}
	}
	oldCfg, oldAuth := c.cfg, c.auth
	c.mu.Lock()
	oldBudgets := c.budgets
	c.cfg, c.auth = cfg, auth
	c.budgets = newRetryBudgets(cfg.Retry) // new retry settings, fresh budgets
	c.mu.Unlock()
	rollback = func() {
		c.mu.Lock()
		c.cfg, c.auth, c.budgets = oldCfg, oldAuth, oldBudgets
		c.mu.Unlock()
		auth.Stop()
	}
	return oldAuth.Stop, rollback, ignored, nil
}

// Authenticator exposes the providers (for tests and tooling).
func (c *Compiler) Authenticator() *Authenticator { return c.auth }

// MethodPolicy is everything compiled for one method; Chain specialises it
// for one HTTP binding.
type MethodPolicy struct {
	Policy
	cacheOpt  *porticov1.Cache
	retryOpt  *porticov1.Retry
	corsOwn   bool // the method (or its service) declares its cors
	safe      bool // idempotent by declaration
	streaming bool
}

// Policy is what one route's options compiled to; Chain turns it into the
// route's stages.
type Policy struct {
	method       string
	authMode     authMode
	accept       *accepted
	scopes       []string
	allowIf      *allowIf
	forward      []string
	global, rate *rateLimit
	cache        *cachePolicy
	timeout      time.Duration
	retry        *retryPolicy
	cors         *corsPolicy
	providersOwn bool // the auth option names its providers
	maxBody      int64
	validator    protovalidate.Validator
	metrics      *Metrics
}

type authMode uint8

const (
	authNone     authMode = iota // no auth option: credentials are not looked at
	authOptional                 // public: anonymous allowed, credentials verified
	authRequired
)

// accepted are the providers a method accepts.
type accepted struct {
	jwt        []*jwtVerifier
	byIssuer   map[string]*jwtVerifier
	apiKeys    []*apiKeySet
	keyHeaders []string
	maxToken   int
}

// CompileService compiles every method of sd, keyed by full method name
// ("/pkg.Service/Method"). The first invalid option fails the whole service
// with an *OptionError.
func (c *Compiler) CompileService(sd protoreflect.ServiceDescriptor) (map[string]*MethodPolicy, error) {
	methods := sd.Methods()
	// A validator (its CEL environment holds every linked file's types,
	// about a megabyte of heap) only for a service whose inputs reach
	// buf.validate rules.
	var ins []protoreflect.MessageDescriptor
	for i := 0; i < methods.Len(); i++ {
		if in := methods.Get(i).Input(); hasRules(in, map[protoreflect.FullName]bool{}) {
			ins = append(ins, in)
		}
	}
	var validator protovalidate.Validator
	if len(ins) > 0 {
		var err error
		validator, err = protovalidate.New(protovalidate.WithMessageDescriptors(ins...), protovalidate.WithDisableLazy())
		if err != nil {
			return nil, &OptionError{Desc: sd, Option: "(buf.validate)", Err: err}
		}
	}
	out := make(map[string]*MethodPolicy, methods.Len())
	for i := 0; i < methods.Len(); i++ {
		md := methods.Get(i)
		mp, err := c.compileMethod(md, validator)
		if err != nil {
			return nil, err
		}
		out["/"+string(sd.FullName())+"/"+string(md.Name())] = mp
	}
	return out, nil
}

// CompileMethod compiles one method alone (a composed method of a
// frontend proto), with a validator of its own if its input reaches
// buf.validate rules.
func (c *Compiler) CompileMethod(md protoreflect.MethodDescriptor) (*MethodPolicy, error) {
	var validator protovalidate.Validator
	if hasRules(md.Input(), map[protoreflect.FullName]bool{}) {
		var err error
		validator, err = protovalidate.New(protovalidate.WithMessageDescriptors(md.Input()), protovalidate.WithDisableLazy())
		if err != nil {
			return nil, &OptionError{Desc: md, Option: "(buf.validate)", Err: err}
		}
	}
	return c.compileMethod(md, validator)
}

func (c *Compiler) compileMethod(md protoreflect.MethodDescriptor, validator protovalidate.Validator) (*MethodPolicy, error) {
	pol, from, err := declared(md)
	if err != nil {
		return nil, err
	}
	fail := func(field string, err error) error {
		d := from[protoreflect.Name(strings.SplitN(field, ".", 2)[0])]
		opt := "(portico.v1.method)"
		if d == nil {
			d = md
		} else if _, ok := d.(protoreflect.ServiceDescriptor); ok {
			opt = "(portico.v1.service)"
		}
		return &OptionError{Desc: d, Option: opt + "." + field, Err: err}
	}
	full := "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
	if !hasRules(md.Input(), map[protoreflect.FullName]bool{}) {
		validator = nil // nothing to check: no validate stage
	}
	mp := &MethodPolicy{
		Policy:    Policy{method: full, metrics: c.metrics, validator: validator},
		cacheOpt:  pol.GetCache(),
		corsOwn:   pol.GetCors() != nil,
		retryOpt:  pol.GetRetry(),
		streaming: md.IsStreamingServer() || md.IsStreamingClient(),
	}
	lvl := idempotencyLevel(md)
	mp.safe = pol.GetIdempotent() || lvl == descriptorpb.MethodOptions_IDEMPOTENT || lvl == descriptorpb.MethodOptions_NO_SIDE_EFFECTS
	p := &mp.Policy
	if a := pol.GetAuth(); a != nil {
		if err := c.compileAuth(p, a, md); err != nil {
			return nil, fail("auth", err)
		}
	}
	if g := c.cfg.RateLimit.Global; g != nil {
		p.global = c.newRateLimit("global:", limit{name: "global", rate: g.Requests, period: g.Period, burst: orInt(g.Burst, g.Requests)},
			func(r *http.Request, _ *Caller) string { return clientIP(r) })
	}
	if rl := pol.GetRateLimit(); rl != nil {
		lim, err := c.compileRateLimit(full, rl)
		if err != nil {
			return nil, fail("rate_limit", err)
		}
		p.rate = lim
	}
	if t := pol.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() <= 0 {
			return nil, fail("timeout", errors.New("must be a positive duration"))
		}
		p.timeout = t.AsDuration()
	}
	if ca := pol.GetCache(); ca != nil {
		if ca.GetTtl().AsDuration() <= 0 {
			return nil, fail("cache.ttl", errors.New("must be a positive duration"))
		}
		if ca.GetStaleWhileRevalidate().AsDuration() < 0 {
			return nil, fail("cache.stale_while_revalidate", errors.New("must not be negative"))
		}
		if mp.streaming {
			return nil, fail("cache", errors.New("streaming methods are not cached"))
		}
	}
	if rt := pol.GetRetry(); rt != nil && !rt.GetDisabled() {
		if n := rt.GetAttempts(); n != 0 && (n < 2 || n > 5) {
			return nil, fail("retry.attempts", fmt.Errorf("must be within 2..5, got %d", n))
		}
		if _, err := retryCodes(rt.GetCodes()); err != nil {
			return nil, fail("retry.codes", err)
		}
	}
	cors, err := compileCORS(pol.GetCors(), c.cfg.CORS)
	if err != nil {
		return nil, fail("cors", err)
	}
	p.cors = cors
	if pol.GetMaxBodyBytes() < 0 {
		return nil, fail("max_body_bytes", errors.New("must not be negative"))
	}
	p.maxBody = pol.GetMaxBodyBytes()
	return mp, nil
}

func orInt(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// bind specialises the method policy for one HTTP binding: the cache and
// retries depend on whether the binding is a GET. Without a compiler or a
// method policy it is the empty policy.
func (c *Compiler) bind(mp *MethodPolicy, httpMethod, template string, t Target) *Policy {
	if c == nil || mp == nil {
		return &Policy{}
	}
	p := mp.Policy
	get := httpMethod == http.MethodGet || httpMethod == http.MethodHead
	if ca := mp.cacheOpt; ca != nil && httpMethod == http.MethodGet && !mp.streaming && !t.Stream {
		timeout := p.timeout
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		p.cache = &cachePolicy{
			route: httpMethod + " " + template + " " + p.method + frontendKey(t.Frontend),
			ttl:   ca.GetTtl().AsDuration(), swr: ca.GetStaleWhileRevalidate().AsDuration(),
			vary: canonical(ca.GetVaryHeaders()), public: ca.GetPublic(), allowNoCache: ca.GetAllowClientNoCache(),
			maxEntry: c.cfg.Cache.MaxEntryBytes, timeout: timeout, store: c.stores.cache, flight: &c.stores.flight,
			metrics: c.metrics, errLog: c.stores.errLog, log: c.log, bg: &c.stores.bg,
		}
	}
	if (get || mp.safe) && !t.Stream && !t.Composed {
		p.retry = c.retry(mp)
	}
	if t.Providers != nil && p.accept != nil && !p.providersOwn {
		// The frontend's providers, for a method that names none (read
		// as compileAuth reads them: tables are built one at a time).
		p.accept = c.accepting(t.Providers)
	}
	p.rate = p.rate.forTier(t.Tier)
	if t.CORS != nil && !mp.corsOwn {
		// Validated with the config (edge.frontends[].cors).
		p.cors, _ = compileCORS(nil, t.CORS)
	}
	return &p
}

// retry is the method's retry policy; nil: one attempt.
func (c *Compiler) retry(mp *MethodPolicy) *retryPolicy {
	rt := mp.retryOpt
	if rt.GetDisabled() || mp.streaming {
		return nil
	}
	attempts := int(rt.GetAttempts())
	if attempts == 0 {
		attempts = c.cfg.Retry.Attempts
	}
	if attempts <= 1 {
		return nil
	}
	cs, _ := retryCodes(rt.GetCodes())
	return &retryPolicy{
		attempts: attempts, codes: cs,
		initial: durOr(rt.GetInitialBackoff().AsDuration(), 10*time.Millisecond),
		maxWait: durOr(rt.GetMaxBackoff().AsDuration(), 250*time.Millisecond),
		budget:  c.retryBudget(mp.method), metrics: c.metrics,
	}
}

// CallRetry is how a composition repeats a failed call of the method mp
// was compiled for: the method's retry option (attempts, codes, backoff)
// within the method's retry budget, the one its own routes draw on. Call
// it only for an idempotent method (see Idempotent). Nil: one attempt
// (no compiler, retries disabled, or one attempt configured).
func (c *Compiler) CallRetry(mp *MethodPolicy) func(ctx context.Context, call func(context.Context) error) error {
	if c == nil || mp == nil {
		return nil
	}
	if p := c.retry(mp); p != nil {
		return p.do
	}
	return nil
}

func durOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func canonical(hs []string) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = http.CanonicalHeaderKey(h)
	}
	return out
}

// Guard is what a method's policy demands of its callers, for the
// compositions that call it: the edge does not run a called method's
// chain, so a composed method must demand at least as much.
type Guard struct {
	// Auth: a verified caller is required.
	Auth bool
	// Scopes the caller must hold.
	Scopes []string
	// AllowIf is the method's CEL access rule, "" if none: it reads the
	// method's own request, which a composition does not have.
	AllowIf string
}

// Guard returns what mp demands of its callers; a nil policy demands
// nothing.
func (mp *MethodPolicy) Guard() Guard {
	if mp == nil {
		return Guard{}
	}
	g := Guard{Auth: mp.authMode == authRequired, Scopes: mp.scopes}
	if mp.allowIf != nil {
		g.AllowIf = mp.allowIf.src
	}
	return g
}

// Covers reports why g does not demand at least what of demands, or "".
func (g Guard) Covers(of Guard) string {
	switch {
	case of.AllowIf != "":
		return "it has an allow_if rule, which only its own route can evaluate"
	case of.Auth && !g.Auth:
		return "it requires an authenticated caller and the composed method does not"
	}
	for _, s := range of.Scopes {
		if !slices.Contains(g.Scopes, s) {
			return "it requires the scope " + s + " and the composed method does not"
		}
	}
	return ""
}

// frontendKey keeps each frontend's cached answers apart: one rendered
// for a view with more fields must never answer another.
func frontendKey(frontend string) string {
	if frontend == "" {
		return ""
	}
	return " frontend=" + frontend
}
