package edge

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Who the client is. A peer listed in edge.trusted_proxies (a load balancer,
// a CDN) speaks for the client: its X-Forwarded-For names the address the
// request came from, and its X-Forwarded-Proto and X-Forwarded-Host are
// believed. Any other peer is the client itself, and whatever it wrote in
// those headers is replaced — otherwise a client could pick the address that
// rate limits and logs see by sending `X-Forwarded-For: 1.2.3.4`.

// proxies is the parsed edge.trusted_proxies.
type proxies struct{ nets []netip.Prefix }

// parseNets reads CIDRs, bare addresses and "private" (loopback and the
// private ranges).
func parseNets(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		switch {
		case strings.EqualFold(s, "private"):
			out = append(out, privateNets...)
		case strings.Contains(s, "/"):
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("%q: want a CIDR, an address or private", s)
			}
			out = append(out, p.Masked())
		default:
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%q: want a CIDR, an address or private", s)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return out, nil
}

func newProxies(list []string) proxies {
	nets, _ := parseNets(list) // Config.Validate reported errors
	return proxies{nets: nets}
}

func (p proxies) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, n := range p.nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// forwarded is what the edge knows of a request's origin.
type forwarded struct {
	peer   string // the TCP peer's address, no port
	client string // the client: the peer, or what trusted proxies say
	// chain is the X-Forwarded-For to send upstream: the trusted part of
	// the incoming one plus the peer.
	chain string
	// proto and host are trusted X-Forwarded-Proto/-Host values, if any.
	proto, host string
}

// resolve works out the client of r. With no trusted proxy configured (the
// default) it costs one SplitHostPort.
func (p proxies) resolve(r *http.Request) forwarded {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	f := forwarded{peer: host, client: host, chain: host}
	if len(p.nets) == 0 {
		return f
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !p.trusted(peer) {
		return f
	}
	xff := r.Header.Values("X-Forwarded-For")
	if len(xff) > 0 {
		// Walk from the right: every hop a trusted proxy added is skipped,
		// the first one that is not is the client; what lies left of it was
		// written by the client and is not believed.
		hops := strings.Split(strings.Join(xff, ","), ",")
		kept := len(hops)
		for i := len(hops) - 1; i >= 0; i-- {
			h := strings.TrimSpace(hops[i])
			a, err := netip.ParseAddr(h)
			if err != nil {
				break
			}
			f.client, kept = a.Unmap().String(), i
			if !p.trusted(a) {
				break
			}
		}
		if kept < len(hops) {
			parts := make([]string, 0, len(hops)-kept+1)
			for _, h := range hops[kept:] {
				parts = append(parts, strings.TrimSpace(h))
			}
			f.chain = strings.Join(append(parts, host), ", ")
		}
	}
	if v := r.Header.Get("X-Forwarded-Proto"); v == "http" || v == "https" {
		f.proto = v
	}
	if v := r.Header.Get("X-Forwarded-Host"); v != "" && printable(v) && len(v) <= 255 {
		f.host = v
	}
	return f
}
