package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
)

// identityKey carries the SPIFFE ID an address must present, from the
// resolver to the handshake (resolver.Address.Attributes is what grpc-go hands
// to transport credentials).
type identityKey struct{}

// WithExpectedIdentity returns addr annotated with the identity the peer at
// that address must prove. An empty TrustDomain stands for the local
// identity's own trust domain at handshake time.
func WithExpectedIdentity(addr resolver.Address, id SPIFFEID) resolver.Address {
	addr.Attributes = addr.Attributes.WithValue(identityKey{}, id)
	return addr
}

// ClientCredentials are mTLS transport credentials for calls into the mesh:
// they present src's current certificate and accept a server only if its
// chain verifies against src's current roots and its URI SAN is exactly the
// SPIFFE ID the resolver attached to the address (WithExpectedIdentity). An
// address without one is refused.
func ClientCredentials(src IdentitySource) credentials.TransportCredentials {
	return &clientCreds{src: src}
}

type clientCreds struct{ src IdentitySource }

// ErrWrongIdentity marks a handshake refused because the server proved a
// different identity than the one expected.
var ErrWrongIdentity = errors.New("upstream identity mismatch")

func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	var want SPIFFEID
	if info := credentials.ClientHandshakeInfoFromContext(ctx); info.Attributes != nil {
		want, _ = info.Attributes.Value(identityKey{}).(SPIFFEID)
	}
	if want.Service == "" {
		return nil, nil, fmt.Errorf("mtls to %s: no expected identity for this address; refusing to connect", raw.RemoteAddr())
	}
	local := c.src.Identity()
	if local == nil {
		return nil, nil, fmt.Errorf("mtls to %s: local identity not loaded yet", raw.RemoteAddr())
	}
	if want.TrustDomain == "" {
		want.TrustDomain = local.TrustDomains[0]
	}
	expected := want.String()
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain and identity are checked in VerifyConnection against the
		// roots current at this handshake; host names mean nothing here.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.src.Identity().Cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := PeerIdentity(cs.PeerCertificates, c.src.Identity())
			if err != nil {
				return fmt.Errorf("mtls to %s: %w", raw.RemoteAddr(), err)
			}
			if got.String() != expected {
				return fmt.Errorf("mtls to %s: %w: presented %s, expected %s", raw.RemoteAddr(), ErrWrongIdentity, got, expected)
			}
			return nil
		},
	}
	return credentials.NewTLS(cfg).ClientHandshake(ctx, authority, raw)
}

func (c *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("mesh client credentials cannot accept connections")
}

func (c *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (c *clientCreds) Clone() credentials.TransportCredentials { return &clientCreds{src: c.src} }

// OverrideServerName is deprecated in grpc-go but still part of the
// TransportCredentials interface.
func (c *clientCreds) OverrideServerName(string) error { return nil }

// ServerTLSConfig is the TLS configuration of a mesh-native server: it
// presents src's current certificate and requires a client certificate that
// verifies against src's current roots and carries a SPIFFE ID of a trusted
// trust domain. Which callers may call is decided per call (intentions).
func ServerTLSConfig(src IdentitySource) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			id := src.Identity()
			if id == nil {
				return nil, errors.New("identity not loaded yet")
			}
			return id.Cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := PeerIdentity(cs.PeerCertificates, src.Identity())
			return err
		},
	}
}

// PeerSPIFFEID returns the verified SPIFFE ID of the caller of a call served
// with ServerTLSConfig.
func PeerSPIFFEID(info credentials.AuthInfo) (SPIFFEID, string, error) {
	ti, ok := info.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return SPIFFEID{}, "", errors.New("caller did not present a certificate")
	}
	leaf := ti.State.PeerCertificates[0]
	if len(leaf.URIs) != 1 {
		return SPIFFEID{}, "", errors.New("caller certificate has no single URI SAN")
	}
	id, err := ParseSPIFFEID(leaf.URIs[0])
	return id, serialHex(leaf.SerialNumber.Bytes()), err
}

// serialHex renders a serial the way Consul does: hex pairs joined by ':'.
func serialHex(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, len(b)*3)
	for i, x := range b {
		if i > 0 {
			out = append(out, ':')
		}
		out = append(out, digits[x>>4], digits[x&0xf])
	}
	return string(out)
}
