package policies

import (
	"context"
	"net/http"
	"slices"
)

// identifiedKey holds, in a request's context, the caller Identify
// verified, so that the route's authn stage does not verify it again.
type identifiedKey struct{}

// Identify verifies the request's credential against every configured
// provider, before any route is chosen (a frontend chosen by the caller's
// claim or API key source): nil when it carries none, or one that does not
// verify, which the route's own authn stage then refuses with the reason.
// The request it returns carries the caller for that stage.
func (c *Compiler) Identify(r *http.Request) (*http.Request, *Caller) {
	if c == nil {
		return r, nil
	}
	c.mu.Lock()
	auth := c.auth
	c.mu.Unlock()
	acc := &accepted{byIssuer: map[string]*jwtVerifier{}, maxToken: c.cfg.MaxTokenBytes}
	for _, v := range auth.jwt {
		acc.jwt = append(acc.jwt, v)
		acc.byIssuer[v.cfg.Issuer] = v
	}
	for _, s := range auth.apiKeys {
		acc.apiKeys = append(acc.apiKeys, s)
		if !slices.Contains(acc.keyHeaders, s.cfg.Header) {
			acc.keyHeaders = append(acc.keyHeaders, s.cfg.Header)
		}
	}
	caller, err := acc.authenticate(r.Context(), r)
	if err != nil || caller == nil {
		return r, nil
	}
	return r.WithContext(context.WithValue(r.Context(), identifiedKey{}, caller)), caller
}

// identified is the caller Identify verified for r, if the route accepts
// its provider.
func (acc *accepted) identified(r *http.Request) *Caller {
	caller, _ := r.Context().Value(identifiedKey{}).(*Caller)
	if caller == nil {
		return nil
	}
	for _, v := range acc.jwt {
		if v.cfg.Name == caller.Provider && caller.APIKey == "" {
			return caller
		}
	}
	for _, s := range acc.apiKeys {
		if s.cfg.Name == caller.Provider && caller.APIKey != "" {
			return caller
		}
	}
	return nil
}
