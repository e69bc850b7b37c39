package edge

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portico-dev/portico/policies/chain"
)

func TestRequestID(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Request-Id", "abc-1")
	if got := requestID(r); got != "abc-1" {
		t.Fatalf("kept id: %q", got)
	}
	for _, bad := range []string{"has space", strings.Repeat("a", 129), "tab\tid", "ünï"} {
		r.Header.Set("X-Request-Id", bad)
		if got := requestID(r); got == bad || len(got) != 32 {
			t.Fatalf("bad id %q kept or replaced badly: %q", bad, got)
		}
	}
}

func TestOutgoingMetadata(t *testing.T) {
	m := newMetadataMapper([]string{"Authorization", "x-tenant", "User-Agent", "Accept-Language"})
	untrusted := newProxies(nil)
	r := httptest.NewRequest("GET", "http://example.test/x", nil)
	r.RemoteAddr = "10.1.2.3:5555"
	r.Header.Set("Authorization", "Bearer t")
	r.Header.Set("X-Tenant", "acme")
	r.Header.Set("X-Forwarded-For", "1.1.1.1")
	r.Header.Set("X-Forwarded-Proto", "https")
	r.Header.Set("Grpc-Metadata-Foo", "bar")
	r.Header.Set("Grpc-Metadata-Grpc-Status", "0")
	r.Header.Set("Grpc-Metadata-Content-Type", "x")
	r.Header.Set("Grpc-Metadata-X-Request-Id", "forged")
	r.Header.Set("Grpc-Metadata-Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	r.Header.Set("Grpc-Metadata-Tracestate", "k=v")
	r.Header.Set("Grpc-Metadata-Baggage", "user=admin")
	r.Header.Set("User-Agent", "caf\xc3\xa9")
	r.Header.Set("Accept-Language", "fr")
	fwd := untrusted.resolve(r)
	r.Header.Set("Grpc-Metadata-Bad-Bin", "!!!")
	if _, err := m.outgoing(r, "id1", &fwd, false); err == nil || !strings.Contains(err.Error(), "base64") {
		t.Fatalf("bad -bin header: %v", err)
	}
	r.Header.Del("Grpc-Metadata-Bad-Bin")
	for hdr, want := range map[string]string{
		"Grpc-Metadata-Note": "printable ASCII", // value café
		"Grpc-Metadata-A!b":  "0-9, a-z",        // key gRPC cannot carry
		"Grpc-Metadata-Ctl":  "printable ASCII", // control character
	} {
		v := "caf\xc3\xa9"
		if hdr == "Grpc-Metadata-A!b" {
			v = "x"
		} else if hdr == "Grpc-Metadata-Ctl" {
			v = "a\x01b"
		}
		r.Header[hdr] = []string{v}
		_, err := m.outgoing(r, "id1", &fwd, false)
		st, code := chain.StatusOf(err)
		if err == nil || code != 400 || !strings.Contains(st.Message(), want) || !strings.Contains(st.Message(), hdr) {
			t.Errorf("%s: %v (HTTP %d), want 400 naming the header and %q", hdr, err, code, want)
		}
		delete(r.Header, hdr)
	}
	md, err := m.outgoing(r, "id1", &fwd, false)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"authorization": "Bearer t", "x-tenant": "acme", "foo": "bar", "accept-language": "fr",
		"x-forwarded-for": "10.1.2.3", "x-forwarded-proto": "http", "x-forwarded-host": "example.test", "x-request-id": "id1"}
	for k, v := range want {
		if got := md.Get(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"grpc-status", "content-type", "traceparent", "tracestate", "baggage", "user-agent"} {
		if len(md.Get(k)) != 0 {
			t.Errorf("%s forwarded: %q", k, md.Get(k))
		}
	}
	if err := metadataValid(md); err != nil {
		t.Fatal(err)
	}
}

// metadataValid applies grpc-go's rules for outgoing metadata.
func metadataValid(md map[string][]string) error {
	for k, vs := range md {
		if !validKey(k) {
			return fmt.Errorf("key %q", k)
		}
		for _, v := range vs {
			if !strings.HasSuffix(k, "-bin") && !printableValue(v) {
				return fmt.Errorf("value %q of %q", v, k)
			}
		}
	}
	return nil
}

func TestTrustedProxies(t *testing.T) {
	p := newProxies([]string{"10.0.0.0/8", "192.168.1.7"})
	tests := []struct {
		desc, peer, xff, proto string
		client, chain, fwProto string
	}{
		{desc: "untrusted peer: its header is ignored", peer: "203.0.113.9:1", xff: "1.1.1.1", proto: "https",
			client: "203.0.113.9", chain: "203.0.113.9"},
		{desc: "trusted balancer", peer: "10.0.0.2:1", xff: "198.51.100.4", proto: "https",
			client: "198.51.100.4", chain: "198.51.100.4, 10.0.0.2", fwProto: "https"},
		{desc: "client forges the left of the chain", peer: "10.0.0.2:1", xff: "6.6.6.6, 198.51.100.4, 10.0.0.9",
			client: "198.51.100.4", chain: "198.51.100.4, 10.0.0.9, 10.0.0.2"},
		{desc: "bare address entry", peer: "192.168.1.7:1", xff: "198.51.100.4",
			client: "198.51.100.4", chain: "198.51.100.4, 192.168.1.7"},
		{desc: "junk in the chain stops the walk", peer: "10.0.0.2:1", xff: "198.51.100.4, junk",
			client: "10.0.0.2", chain: "10.0.0.2"},
		{desc: "trusted peer, no header", peer: "10.0.0.2:1", client: "10.0.0.2", chain: "10.0.0.2"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.peer
			if tt.xff != "" {
				r.Header.Set("X-Forwarded-For", tt.xff)
			}
			if tt.proto != "" {
				r.Header.Set("X-Forwarded-Proto", tt.proto)
			}
			f := p.resolve(r)
			if f.client != tt.client || f.chain != tt.chain || f.proto != tt.fwProto {
				t.Fatalf("got client %q chain %q proto %q, want %q %q %q", f.client, f.chain, f.proto, tt.client, tt.chain, tt.fwProto)
			}
		})
	}
	if _, err := parseNets([]string{"not-a-net"}); err == nil {
		t.Fatal("bad entry accepted")
	}
}

func TestHasAddrPort(t *testing.T) {
	for s, want := range map[string]bool{
		`connection error: desc = "transport: Error while dialing: dial tcp 10.0.3.7:9002: connect: connection refused"`: true,
		"upstream [fd00::1]:443 refused": true,
		"order 12 of 2024:3 not found":   false,
		"version 1.2.3 is out":           false,
		"at 127.0.0.1:80":                true,
	} {
		if got := hasAddrPort(s); got != want {
			t.Errorf("hasAddrPort(%q) = %v, want %v", s, got, want)
		}
	}
}
