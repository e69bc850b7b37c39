package edge

import (
	"net/netip"

	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/policies/chain"
)

// trafficCaller is a call as mesh's traffic router sees it (mesh.Caller):
// who made it, from where, with which headers. A conversion of the call,
// so handing it to mesh costs nothing but the context value.
type trafficCaller chain.Call

func (t *trafficCaller) Subject() string {
	if t.Caller == nil {
		return ""
	}
	return t.Caller.Subject
}

func (t *trafficCaller) APIKey() string {
	if t.Caller == nil {
		return ""
	}
	return t.Caller.APIKey
}

func (t *trafficCaller) RequestHeader(name string) (string, bool) {
	if t.R == nil {
		return "", false
	}
	v := t.R.Header[name] // mesh asks with canonical names
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

func (t *trafficCaller) Claim(name string) any {
	if t.Caller == nil {
		return nil
	}
	return t.Caller.Claims[name]
}

func (t *trafficCaller) HasScope(scope string) bool { return policies.HasScope(t.Caller, scope) }

// Peer is the client the edge resolved (edge.trusted_proxies applied:
// the handler rewrote RemoteAddr).
func (t *trafficCaller) Peer() netip.Addr {
	if t.R == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(t.R.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
