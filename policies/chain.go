package policies

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/portico-dev/portico/policies/chain"
)

// Codec is what the chain needs from a binding's codec (transcode.Codec
// has it): the request built from the HTTP request, the answer rendered.
type Codec interface {
	DecodeRequest(r *http.Request, vars []string) (*chain.Payload, error)
	EncodeResponse(dst []byte, resp *chain.Payload) (body []byte, contentType string, err error)
}

// Target is what a route's chain decodes with and ends in.
type Target struct {
	// Codec decodes the request and renders the answer.
	Codec Codec
	// Call is the last step: the upstream call. It sets the call's Resp,
	// Header and Upstream, or, for a server stream, writes the answer
	// itself and sets Streamed.
	Call chain.Next
	// Timeout is the upstream deadline when the method declares none
	// (edge.upstream_timeout).
	Timeout time.Duration
	// Budget, when set, is the deadline whatever the method declares: a
	// composed method's (portico.v1.compose).timeout.
	Budget time.Duration
	// Stream marks a server-streaming method: it is not cached, retried or
	// given a deadline here (the edge bounds streams by duration and idle
	// time instead).
	Stream bool
	// Composed marks a composed route: its call stage makes several calls,
	// so the chain does not repeat it (a retry would repeat every call).
	Composed bool
	// Frontend is the frontend whose table the route is in ("" without
	// frontends): its cached answers are its own, rendered for its view.
	Frontend string
	// CORS, when set, is the frontend's CORS default: it replaces the
	// operator's for a method that declares no cors of its own.
	CORS *CORSConfig
	// Providers, when set, are the credential providers the frontend's
	// routes accept when their method names none.
	Providers []string
	// Tier, when set, is the frontend's rate-limit tier: the limit of the
	// method's tier of that name applies to callers whose tier claim picks
	// none.
	Tier string
}

// For returns t for a route of aud's table: its frontend, and the
// frontend's defaults. A nil audience leaves t as it is.
func (t Target) For(aud *Audience) Target {
	if aud != nil {
		t.Frontend, t.CORS, t.Providers, t.Tier = aud.Frontend, aud.CORS, aud.Providers, aud.Tier
	}
	return t
}

// Chain is one route's compiled request path. Serve runs it; Preflight and
// Challenges answer for the route outside of a call.
type Chain struct {
	serve      chain.Next
	cors       *corsPolicy
	challenges []string
	creds      *Credentials
	// retryBudget: see RetryBudget.
	retryBudget func() bool
}

// Chain compiles the route of one HTTP binding of mp into its chain, once,
// when the route table is built. A nil Compiler or MethodPolicy compiles a
// chain without policies (decode, deadline, call, write).
func (c *Compiler) Chain(mp *MethodPolicy, httpMethod, template string, t Target) *Chain {
	p := c.bind(mp, httpMethod, template, t)
	// The order is written here once. Stages that need only headers come
	// first, so a request they refuse is never decoded (nor its body read);
	// the stages that need the request message follow the decoder; the
	// cache sits outside the deadline and the retries, so that a hit costs
	// no upstream call and a lookup is not bound by the call's deadline.
	stages := []chain.Stage{
		respond(t.Codec),       // the one writer: every successful unary answer leaves here
		p.corsStage(),          // CORS headers on a cross-origin answer (preflights: Chain.Preflight)
		p.bodyLimitStage(),     // a declared body past the method's limit: 413 before reading it
		p.global.stage(),       // the operator's global limit per client IP: 429
		p.authnStage(),         // JWT (JWKS) or API key → the caller; 401 + WWW-Authenticate
		p.scopesStage(),        // the method's scopes: 403 before any work is spent
		p.rate.stage(),         // the method's limit by ip, subject, key, header or claim: 429
		decode(t.Codec),        // the request message from path, query and body
		p.validateStage(),      // buf.validate rules: 400 with BadRequest details
		p.allowIfStage(),       // the CEL access rule over claims, headers and request: 403
		p.identifyStage(),      // the caller's identity into the upstream metadata
		p.timeoutStage(t),      // the upstream deadline: the method's, shortened by Grpc-Timeout
		p.cache.stage(t.Codec), // GET: a fresh answer from the store, misses coalesced
		deadlineStage(t),       // that deadline over the upstream call and all its retries
		p.retry.stage(),        // methods safe to repeat: again on UNAVAILABLE and listed codes
	}
	ch := &Chain{serve: chain.Build(stages, t.Call), cors: p.cors, challenges: p.challenges(), creds: p.credentials()}
	if p.retry != nil {
		ch.retryBudget = p.retry.budget.withdraw
	}
	return ch
}

// RetryBudget takes one retry from the budget of a route whose calls may
// be repeated (it has a retry stage), and reports whether there was one;
// nil for a route whose calls are never repeated. Mesh spends it on a
// call a canary subset failed, tried again on the stable subset.
func (c *Chain) RetryBudget() func() bool {
	if c == nil {
		return nil
	}
	return c.retryBudget
}

// Credentials is what a route accepts from its callers, for documents
// that describe it (OpenAPI security schemes).
type Credentials struct {
	// Bearer: JWTs in Authorization: Bearer.
	Bearer bool
	// KeyHeaders are the headers API keys are read from.
	KeyHeaders []string
	// Optional: a caller may present none (a public method).
	Optional bool
}

// Credentials says what the route accepts; nil: it looks at none.
func (ch *Chain) Credentials() *Credentials { return ch.creds }

func (p *Policy) credentials() *Credentials {
	if p.accept == nil || p.authMode == authNone {
		return nil
	}
	return &Credentials{Bearer: len(p.accept.jwt) > 0, KeyHeaders: p.accept.keyHeaders, Optional: p.authMode == authOptional}
}

// Serve runs the chain for one call.
func (ch *Chain) Serve(ctx context.Context, c *chain.Call) error { return ch.serve(ctx, c) }

// Preflight answers a CORS preflight for this route (method is the one the
// browser asked for): 204 with the grants, or a 403 error naming what is
// not allowed. It reports false when the route has no CORS policy.
func (ch *Chain) Preflight(w http.ResponseWriter, r *http.Request, method string) (bool, error) {
	if ch == nil || ch.cors == nil {
		return false, nil
	}
	return true, ch.cors.preflight(w, r, method)
}

// Challenges returns a WWW-Authenticate challenge for each scheme this
// route accepts (RFC 9110 §11.6.1: a 401 carries at least one): Bearer for
// JWT providers, ApiKey for API keys. It is nil for a method without an
// auth option. The edge adds them to a 401 that comes without a challenge:
// an upstream's UNAUTHENTICATED.
func (ch *Chain) Challenges() []string {
	if ch == nil {
		return nil
	}
	return ch.challenges
}

// outPool recycles response buffers; buffers over 1 MiB are not kept.
var outPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// respond is the writer: once the rest of the chain has an answer (the
// cache's, or the upstream's, rendered here), it writes it.
func respond(codec Codec) chain.Stage {
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		if err := next(ctx, c); err != nil || c.Streamed {
			return err
		}
		if c.Out != nil {
			return chain.WriteResponse(c.W, c.Out)
		}
		bp := outPool.Get().(*[]byte)
		body, ct, err := codec.EncodeResponse((*bp)[:0], c.Resp)
		c.Resp.Release()
		if err != nil {
			outPool.Put(bp)
			return err
		}
		err = chain.WriteResponse(c.W, &chain.Response{Body: body, ContentType: ct, Header: c.Header})
		if cap(body) <= 1<<20 {
			*bp = body[:0]
			outPool.Put(bp)
		}
		return err
	}
}

// decode builds the upstream request, and refuses a call the edge found
// invalid.
func decode(codec Codec) chain.Stage {
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		req, err := codec.DecodeRequest(c.R, c.Vars)
		if err != nil {
			return err
		}
		if c.Invalid != nil {
			return c.Invalid
		}
		c.Req = req
		return next(ctx, c)
	}
}
