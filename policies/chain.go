package policies

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/portico-dev/portico/transcode"
)

// IdentityPrefix starts every metadata key the edge sets about the caller;
// inbound headers and metadata with it are removed before the call.
const IdentityPrefix = "x-portico-"

// Preflight answers a CORS preflight for this route (method is the one the
// browser asked for). It reports false when the route has no CORS policy.
func (p *Policy) Preflight(w http.ResponseWriter, r *http.Request, method string) bool {
	if p == nil || p.cors == nil {
		return false
	}
	p.cors.preflight(w, r, method)
	return true
}

// Admit runs the stages that need only headers (CORS, body limit, authn,
// scopes, rate limits) and returns the caller; nil for anonymous calls.
func (p *Policy) Admit(ctx context.Context, w http.ResponseWriter, r *http.Request) (*Caller, error) {
	if p == nil {
		return nil, nil
	}
	if p.cors != nil {
		if o := r.Header.Get("Origin"); o != "" {
			p.cors.actual(w.Header(), o)
		}
	}
	if p.maxBody > 0 {
		if r.ContentLength > p.maxBody {
			return nil, transcode.NewError(http.StatusRequestEntityTooLarge, codes.ResourceExhausted,
				"request body exceeds this method's limit of "+strconv.FormatInt(p.maxBody, 10)+" bytes")
		}
		r.Body = http.MaxBytesReader(w, r.Body, p.maxBody)
	}
	if p.global != nil {
		if err := p.global.check(ctx, w.Header(), r, nil); err != nil {
			return nil, err
		}
	}
	var caller *Caller
	if p.authMode != authNone {
		c, err := p.authenticate(ctx, r)
		if err != nil {
			p.metrics.denied.WithLabelValues("unauthenticated").Inc()
			return nil, err
		}
		caller = c
		if err := p.checkScopes(caller); err != nil {
			p.metrics.denied.WithLabelValues("scope").Inc()
			return nil, err
		}
	}
	if p.rate != nil {
		if err := p.rate.check(ctx, w.Header(), r, caller); err != nil {
			return nil, err
		}
	}
	return caller, nil
}

func (p *Policy) authenticate(ctx context.Context, r *http.Request) (*Caller, error) {
	acc := p.accept
	if len(acc.jwt) == 0 && len(acc.apiKeys) == 0 {
		if p.authMode == authOptional {
			return nil, nil
		}
		return nil, credentialError("Bearer", "", "this method needs credentials, but no credential provider is configured at the edge")
	}
	c, err := acc.authenticate(ctx, r)
	if err != nil {
		return nil, err
	}
	if c == nil && p.authMode == authRequired {
		err := credentialError(acc.challenge, "", "this method needs credentials: "+acc.describe())
		if te, ok := err.(*transcode.Error); ok {
			te.Header["Www-Authenticate"] = acc.challenges()
		}
		return nil, err
	}
	return c, nil
}

// Challenges returns a WWW-Authenticate challenge for each scheme this
// method accepts (RFC 9110 §11.6.1: a 401 carries at least one): Bearer
// for JWT providers, ApiKey for API keys. It is nil for a method without an
// auth option, and for a nil policy. The edge adds them to a 401 that comes
// without a challenge: an upstream's UNAUTHENTICATED.
func (p *Policy) Challenges() []string {
	if p == nil || p.accept == nil || p.authMode == authNone {
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

func (p *Policy) checkScopes(c *Caller) error {
	if len(p.scopes) == 0 || (c == nil && p.authMode == authOptional) {
		return nil
	}
	have := c.scopes()
	for _, s := range p.scopes {
		if !slices.Contains(have, s) {
			return status.Error(codes.PermissionDenied, "permission denied: the credential lacks scope "+strconv.Quote(s))
		}
	}
	return nil
}

// Check runs the stages that need the request message: buf.validate rules,
// then allow_if. (Internal fields never get this far: see PublicView.)
func (p *Policy) Check(ctx context.Context, r *http.Request, c *Caller, req proto.Message) error {
	if p == nil {
		return nil
	}
	if err := validate(p.validator, req); err != nil {
		return err
	}
	if p.allowIf != nil {
		if err := p.allowIf.eval(ctx, c, r, req); err != nil {
			p.metrics.denied.WithLabelValues("allow_if").Inc()
			return err
		}
	}
	return nil
}

// StripIdentity removes every identity key a client sent.
func StripIdentity(md metadata.MD) {
	for k := range md {
		if strings.HasPrefix(k, IdentityPrefix) {
			delete(md, k)
		}
	}
}

// Identify adds the caller's identity to the outgoing metadata (after
// StripIdentity removed whatever the client sent).
func (p *Policy) Identify(md metadata.MD, c *Caller) {
	if p == nil || c.Anonymous() {
		return
	}
	md[IdentityPrefix+"subject"] = []string{c.Subject}
	md[IdentityPrefix+"provider"] = []string{c.Provider}
	for _, name := range p.forward {
		v, ok := c.Claims[name]
		if !ok {
			continue
		}
		md[IdentityPrefix+"claim-"+strings.ToLower(name)] = []string{claimString(v)}
	}
}

func claimString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case nil:
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// Timeout is the upstream deadline: the method's option, else def.
func (p *Policy) Timeout(def time.Duration) time.Duration {
	if p != nil && p.timeout > 0 {
		return p.timeout
	}
	return def
}

// Call runs an upstream call with the route's retries (and budget).
func (p *Policy) Call(ctx context.Context, call func(ctx context.Context) error) error {
	if p == nil {
		return call(ctx)
	}
	return p.retry.do(ctx, call)
}

// Cached reports whether responses of this route are cached.
func (p *Policy) Cached() bool { return p != nil && p.cache != nil }

// ServeCached answers from the cache, or through fetch (coalesced with every
// identical concurrent miss) and stores the result.
func (p *Policy) ServeCached(ctx context.Context, w http.ResponseWriter, r *http.Request, c *Caller, req proto.Message, fetch Fetch) error {
	return p.cache.serve(ctx, w, r, c, req, fetch)
}
