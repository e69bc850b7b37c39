package edge

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/portico-dev/portico/policies"
	"github.com/portico-dev/portico/transcode"
)

const (
	metadataPrefix   = "Grpc-Metadata-"
	requestIDHeader  = "X-Request-Id"
	maxRequestIDLen  = 128
	grpcTimeoutInput = "Grpc-Timeout"
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

// outgoing builds the metadata for one call.
func (m *metadataMapper) outgoing(r *http.Request, reqID string) (metadata.MD, error) {
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
				md[key] = append(md[key], vs...)
			}
			continue
		}
		rest, ok := strings.CutPrefix(k, metadataPrefix)
		if !ok {
			continue
		}
		key := strings.ToLower(rest)
		// Identity keys are the edge's to set (policies.Identify), never a
		// client's.
		if reservedKey(key) || key == "x-request-id" || strings.HasPrefix(key, "x-forwarded-") || strings.HasPrefix(key, policies.IdentityPrefix) {
			continue
		}
		if strings.HasSuffix(key, "-bin") {
			for _, v := range vs {
				b, err := decodeBinHeader(v)
				if err != nil {
					return nil, transcode.NewError(http.StatusBadRequest, codes.InvalidArgument, "header "+k+": binary metadata must be base64")
				}
				md[key] = append(md[key], string(b))
			}
			continue
		}
		md[key] = append(md[key], vs...)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := r.Header.Get("X-Forwarded-For"); prior != "" {
			md["x-forwarded-for"] = []string{prior + ", " + host}
		} else {
			md["x-forwarded-for"] = []string{host}
		}
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	md["x-forwarded-proto"] = []string{proto}
	if r.Host != "" {
		md["x-forwarded-host"] = []string{r.Host}
	}
	md["x-request-id"] = []string{reqID}
	return md, nil
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

// writeMetadata copies upstream headers or trailers into HTTP headers.
func writeMetadata(h http.Header, md metadata.MD) {
	for k, vs := range md {
		if reservedKey(k) {
			continue
		}
		name := metadataPrefix + k
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.StdEncoding.EncodeToString([]byte(v))
			}
			h.Add(name, v)
		}
	}
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

// clientTimeout parses a Grpc-Timeout header ("100m", "5S"): the client
// may shorten the configured deadline.
func clientTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}
