package policies

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/portico-dev/portico/policies/chain"
)

// IdentityPrefix starts every metadata key the edge sets about the caller;
// the edge drops inbound headers and metadata with it before the call.
const IdentityPrefix = "x-portico-"

// identifyStage adds the verified caller's identity to the upstream
// metadata: subject, provider, and the claims the method forwards.
func (p *Policy) identifyStage() chain.Stage {
	if p.authMode == authNone {
		return nil
	}
	forward := p.forward
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		if caller := c.Caller; !caller.Anonymous() {
			c.MD[IdentityPrefix+"subject"] = []string{caller.Subject}
			c.MD[IdentityPrefix+"provider"] = []string{caller.Provider}
			for _, name := range forward {
				if v, ok := caller.Claims[name]; ok {
					c.MD[IdentityPrefix+"claim-"+strings.ToLower(name)] = []string{claimString(v)}
				}
			}
		}
		return next(ctx, c)
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
