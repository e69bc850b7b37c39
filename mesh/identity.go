package mesh

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Identity is one immutable snapshot of a workload's mTLS material: its own
// certificate chain and the roots it trusts. Sources replace it whole on
// rotation; connections already open keep the snapshot they shook hands with.
type Identity struct {
	// Cert is the leaf, then any intermediates, with Leaf parsed.
	Cert *tls.Certificate
	// Roots verifies peers: every root the source trusts, active or not.
	Roots *x509.CertPool
	// TrustDomains a peer's SPIFFE ID must belong to (lower case).
	TrustDomains []string
	// ID is this workload's own SPIFFE ID (its certificate's URI SAN).
	ID string

	rootCount int
}

// NotAfter is when the leaf expires.
func (id *Identity) NotAfter() time.Time { return id.Cert.Leaf.NotAfter }

// IdentitySource yields the current identity. Implementations: the Consul
// Connect CA (ConsulIdentity) and files on disk (FileIdentity); a SPIFFE
// Workload API source would fit the same interface.
type IdentitySource interface {
	// Identity returns the current snapshot, or nil before the first one.
	Identity() *Identity
	// Ready is closed once the first snapshot is available.
	Ready() <-chan struct{}
}

// SPIFFEID is a Consul-style service identity:
// spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>.
type SPIFFEID struct {
	TrustDomain, Namespace, Datacenter, Service string
}

// String renders the URI form.
func (s SPIFFEID) String() string {
	return "spiffe://" + s.TrustDomain + "/ns/" + s.Namespace + "/dc/" + s.Datacenter + "/svc/" + s.Service
}

// ServiceID is the identity Consul issues to a service.
func ServiceID(trustDomain, namespace, datacenter, service string) SPIFFEID {
	if namespace == "" {
		namespace = "default"
	}
	return SPIFFEID{TrustDomain: strings.ToLower(trustDomain), Namespace: namespace, Datacenter: datacenter, Service: service}
}

// ParseSPIFFEID parses a service identity URI.
func ParseSPIFFEID(u *url.URL) (SPIFFEID, error) {
	if u == nil || u.Scheme != "spiffe" || u.Host == "" {
		return SPIFFEID{}, fmt.Errorf("%q is not a spiffe:// URI", u)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 6 || parts[0] != "ns" || parts[2] != "dc" || parts[4] != "svc" || parts[1] == "" || parts[3] == "" || parts[5] == "" {
		return SPIFFEID{}, fmt.Errorf("%q is not a service identity (want spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<service>)", u)
	}
	return SPIFFEID{TrustDomain: strings.ToLower(u.Host), Namespace: parts[1], Datacenter: parts[3], Service: parts[5]}, nil
}

// PeerIdentity verifies a peer's chain against id's roots and returns its
// SPIFFE ID, which must belong to one of id's trust domains. It checks
// nothing about which service the peer is; callers compare the result.
func PeerIdentity(chain []*x509.Certificate, id *Identity) (SPIFFEID, error) {
	if id == nil {
		return SPIFFEID{}, errors.New("no local identity yet")
	}
	if len(chain) == 0 {
		return SPIFFEID{}, errors.New("peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         id.Roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return SPIFFEID{}, fmt.Errorf("peer certificate: %w", err)
	}
	if len(chain[0].URIs) != 1 {
		return SPIFFEID{}, fmt.Errorf("peer certificate has %d URI SANs, want exactly one SPIFFE ID", len(chain[0].URIs))
	}
	sid, err := ParseSPIFFEID(chain[0].URIs[0])
	if err != nil {
		return SPIFFEID{}, fmt.Errorf("peer certificate: %w", err)
	}
	if !slices.Contains(id.TrustDomains, sid.TrustDomain) {
		return SPIFFEID{}, fmt.Errorf("peer %s is outside the trusted trust domains %v", sid, id.TrustDomains)
	}
	return sid, nil
}

// newIdentity assembles a snapshot from PEM material.
func newIdentity(certPEM, keyPEM []byte, rootPEMs [][]byte, trustDomains []string) (*Identity, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate and key: %w", err)
	}
	// X509KeyPair fills Leaf since Go 1.23.
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	n := 0
	for _, r := range rootPEMs {
		for rest := r; ; {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if b.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("root certificate: %w", err)
			}
			pool.AddCert(c)
			n++
		}
	}
	if n == 0 {
		return nil, errors.New("no root certificates")
	}
	id := &Identity{Cert: &cert, Roots: pool, rootCount: n}
	for _, td := range trustDomains {
		id.TrustDomains = append(id.TrustDomains, strings.ToLower(td))
	}
	if len(cert.Leaf.URIs) == 1 {
		id.ID = cert.Leaf.URIs[0].String()
	}
	return id, nil
}
