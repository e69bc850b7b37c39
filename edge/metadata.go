package edge

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/policies"
)

const (
	metadataPrefix  = "Grpc-Metadata-"
	requestIDHeader = "X-Request-Id"
	maxRequestIDLen = 128
)

// hopByHop headers describe one connection and never cross the edge.
var hopByHop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// reservedKey reports metadata keys that gRPC itself owns or that must not
// be set by clients.
func reservedKey(k string) bool {
	return k == "" || k[0] == ':' || strings.HasPrefix(k, "grpc-") || k == "content-type" ||
		k == "te" || k == "host" || k == "connection" || k == "transfer-encoding" ||
		k == "upgrade" || k == "keep-alive" || k == "proxy-connection"
}

// metadataMapper turns request headers into outgoing metadata.
type metadataMapper struct {
	forward map[string]string // canonical header → metadata key
}

func newMetadataMapper(headers []string) *metadataMapper {
	m := &metadataMapper{forward: map[string]string{}}
	for _, h := range headers {
		m.forward[http.CanonicalHeaderKey(h)] = strings.ToLower(h)
	}
	return m
}

// untrustedKeys are the trace-context keys a client may not set through
// Grpc-Metadata-*: joining a trace (and carrying baggage into it) is for
// callers in edge.tracing.trust_incoming, through the tracer.
var untrustedKeys = map[string]bool{
	"traceparent": true, "tracestate": true, "baggage": true,
	"b3": true, "uber-trace-id": true, "x-cloud-trace-context": true,
}

// outgoing builds the metadata for one call. A client's header never makes
// a server error: a forwarded header whose value gRPC cannot carry
// (anything but printable ASCII) is left out; a Grpc-Metadata-* header
// gRPC cannot carry is the client's mistake, 400 naming it.
func (m *metadataMapper) outgoing(r *http.Request, reqID string, fwd *forwarded, secure bool) (metadata.MD, error) {
	md := make(metadata.MD, 8)
	var connHeaders []string
	for _, v := range r.Header.Values("Connection") {
		for f := range strings.SplitSeq(v, ",") {
			connHeaders = append(connHeaders, http.CanonicalHeaderKey(strings.TrimSpace(f)))
		}
	}
	for k, vs := range r.Header {
		if hopByHop[k] {
			continue
		}
		if len(connHeaders) > 0 && contains(connHeaders, k) {
			continue
		}
		if key, ok := m.forward[k]; ok {
			if !strings.HasPrefix(key, policies.IdentityPrefix) {
				for _, v := range vs {
					if printableValue(v) {
						md[key] = append(md[key], v)
					}
				}
			}
			continue
		}
		rest, ok := strings.CutPrefix(k, metadataPrefix)
		if !ok {
			continue
		}
		key := strings.ToLower(rest)
		// Identity keys are the edge's to set (the identity stage), never a
		// client's.
		if reservedKey(key) || key == "x-request-id" || strings.HasPrefix(key, "x-forwarded-") ||
			strings.HasPrefix(key, policies.IdentityPrefix) || untrustedKeys[key] || strings.HasPrefix(key, "x-b3-") {
			continue
		}
		if !validKey(key) {
			return nil, status.Error(codes.InvalidArgument,
				"header "+truncateHeader(k)+": a metadata key may hold only 0-9, a-z, '-', '_' and '.'")
		}
		if strings.HasSuffix(key, "-bin") {
			for _, v := range vs {
				b, err := decodeBinHeader(v)
				if err != nil {
					return nil, status.Error(codes.InvalidArgument, "header "+truncateHeader(k)+": binary metadata must be base64")
				}
				md[key] = append(md[key], string(b))
			}
			continue
		}
		for _, v := range vs {
			if !printableValue(v) {
				return nil, status.Error(codes.InvalidArgument,
					"header "+truncateHeader(k)+": a metadata value must be printable ASCII; send binary values base64-encoded in a -bin header")
			}
		}
		md[key] = append(md[key], vs...)
	}
	// The edge's own keys share one array: one allocation, not four.
	own := make([]string, 4)
	proto := "http"
	if secure {
		proto = "https"
	}
	if fwd.proto != "" {
		proto = fwd.proto
	}
	own[0], own[1], own[2] = fwd.chain, proto, reqID
	md["x-forwarded-for"] = own[0:1:1]
	md["x-forwarded-proto"] = own[1:2:2]
	md["x-request-id"] = own[2:3:3]
	if fwd.host != "" {
		own[3] = fwd.host
	} else if r.Host != "" && printableValue(r.Host) {
		own[3] = r.Host
	}
	if own[3] != "" {
		md["x-forwarded-host"] = own[3:4:4]
	}
	return md, nil
}

// printableValue is gRPC's rule for a non-binary metadata value.
func printableValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// validKey is gRPC's rule for a metadata key.
func validKey(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '.' && c != '-' && c != '_' {
			return false
		}
	}
	return k != ""
}

func truncateHeader(k string) string {
	if len(k) > 64 || !printableValue(k) {
		return strconv.Quote(k[:min(len(k), 64)])
	}
	return k
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func decodeBinHeader(v string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(v); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(v)
}

// writeMetadata copies upstream headers or trailers into HTTP headers,
// making h when there is something to copy and it is nil.
func writeMetadata(h http.Header, md metadata.MD) http.Header {
	for k, vs := range md {
		if reservedKey(k) {
			continue
		}
		if h == nil {
			h = make(http.Header, len(md))
		}
		name := metadataPrefix + k
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.StdEncoding.EncodeToString([]byte(v))
			}
			h.Add(name, v)
		}
	}
	return h
}

// requestID keeps a well-formed client request id or makes a new one.
func requestID(r *http.Request) string {
	if id := r.Header.Get(requestIDHeader); id != "" && len(id) <= maxRequestIDLen && printable(id) {
		return id
	}
	// The runtime's ChaCha8 generator: unpredictable, and no syscall.
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
