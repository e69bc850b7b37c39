package policies

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/policies/chain"
	porticov1 "github.com/portico-dev/portico/protos/portico/v1"
)

// corsPolicy is a route's compiled CORS answer.
type corsPolicy struct {
	anyOrigin   bool
	origins     map[string]bool
	headers     string // Access-Control-Allow-Headers
	expose      string
	credentials bool
	maxAge      string
}

func validateCORS(origins []string, credentials bool) error {
	if len(origins) == 0 {
		return errors.New("allow_origins is empty")
	}
	for _, o := range origins {
		if o == "*" {
			if credentials {
				return errors.New(`allow_credentials cannot go with origin "*"`)
			}
			continue
		}
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return errors.New("origin " + strconv.Quote(o) + ` must be "*" or scheme://host[:port] without a path`)
		}
	}
	return nil
}

// Validate checks the origins and credentials of a CORS default.
func (c *CORSConfig) Validate() error {
	if c == nil {
		return nil
	}
	return validateCORS(c.AllowOrigins, c.AllowCredentials)
}

func compileCORS(c *porticov1.Cors, def *CORSConfig) (*corsPolicy, error) {
	var (
		origins, headers, expose []string
		creds                    bool
		maxAge                   time.Duration
	)
	switch {
	case c != nil && c.GetDisabled():
		return nil, nil
	case c != nil:
		origins, headers, expose, creds = c.GetAllowOrigins(), c.GetAllowHeaders(), c.GetExposeHeaders(), c.GetAllowCredentials()
		if c.GetMaxAge() != nil {
			maxAge = c.GetMaxAge().AsDuration()
		}
	case def != nil:
		origins, headers, expose, creds, maxAge = def.AllowOrigins, def.AllowHeaders, def.ExposeHeaders, def.AllowCredentials, def.MaxAge
	default:
		return nil, nil
	}
	if err := validateCORS(origins, creds); err != nil {
		return nil, err
	}
	if maxAge <= 0 {
		maxAge = DefaultCORSMaxAge
	}
	p := &corsPolicy{origins: map[string]bool{}, credentials: creds, maxAge: strconv.Itoa(int(maxAge / time.Second))}
	for _, o := range origins {
		if o == "*" {
			p.anyOrigin = true
		}
		p.origins[o] = true
	}
	canon := make([]string, 0, len(headers))
	for _, h := range headers {
		canon = append(canon, http.CanonicalHeaderKey(h))
	}
	slices.Sort(canon)
	p.headers = strings.Join(canon, ", ")
	p.expose = strings.Join(expose, ", ")
	return p, nil
}

// allowed reports whether origin may call, and the value to send back.
func (p *corsPolicy) allowed(origin string) (string, bool) {
	if p == nil || origin == "" {
		return "", false
	}
	if p.origins[origin] {
		return origin, true
	}
	if p.anyOrigin {
		return "*", true
	}
	return "", false
}

// corsStage decorates a cross-origin answer (error or not) with the grants.
func (p *Policy) corsStage() chain.Stage {
	cors := p.cors
	if cors == nil {
		return nil
	}
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		if o := c.R.Header.Get("Origin"); o != "" {
			cors.actual(c.W.Header(), o)
		}
		return next(ctx, c)
	}
}

// actual decorates a cross-origin response.
func (p *corsPolicy) actual(h http.Header, origin string) {
	allow, ok := p.allowed(origin)
	h.Add("Vary", "Origin")
	if !ok {
		return
	}
	h.Set("Access-Control-Allow-Origin", allow)
	if p.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if p.expose != "" {
		h.Set("Access-Control-Expose-Headers", p.expose)
	}
}

// preflight answers an OPTIONS preflight: 204 with the grants, or a 403
// error for an origin or header that is not allowed (no grants sent).
func (p *corsPolicy) preflight(w http.ResponseWriter, r *http.Request, method string) error {
	h := w.Header()
	h.Add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
	allow, ok := p.allowed(r.Header.Get("Origin"))
	if !ok {
		return status.Error(codes.PermissionDenied, "CORS: origin "+strconv.Quote(truncate(r.Header.Get("Origin"), 256))+" may not call this method")
	}
	for _, want := range strings.Split(r.Header.Get("Access-Control-Request-Headers"), ",") {
		want = strings.TrimSpace(want)
		if want != "" && !safelisted(want) && !containsFold(p.headers, want) {
			return status.Error(codes.PermissionDenied, "CORS: request header "+strconv.Quote(truncate(want, 256))+" is not allowed on this method")
		}
	}
	h.Set("Access-Control-Allow-Origin", allow)
	h.Set("Access-Control-Allow-Methods", method)
	if p.headers != "" {
		h.Set("Access-Control-Allow-Headers", p.headers)
	}
	if p.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	h.Set("Access-Control-Max-Age", p.maxAge)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// truncate cuts client input quoted in an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func safelisted(h string) bool {
	switch strings.ToLower(h) {
	case "accept", "accept-language", "content-language", "content-type":
		return true
	}
	return false
}

func containsFold(list, h string) bool {
	for v := range strings.SplitSeq(list, ",") {
		if strings.EqualFold(strings.TrimSpace(v), h) {
			return true
		}
	}
	return false
}
