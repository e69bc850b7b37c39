package mesh

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// A TLS client that meets a plaintext server fails with "tls: first record
// does not look like a TLS handshake", and a plaintext client that meets a
// TLS server with "error reading server preface: EOF". Neither says which
// server it was or which setting fixes it; the credentials below say both.
// The words reach logs, `portico routes` and startup errors through the
// connection error grpc-go reports; the edge never shows them to clients.

// peerNamer names the other end of a connection: the service or upstream
// and, when it adds something, the instance address.
type peerNamer func(authority string, raw net.Conn) string

// staticPeer names a static upstream, and the address it resolved to when
// that is not the configured one.
func staticPeer(address string) peerNamer {
	return func(_ string, raw net.Conn) string {
		if ra := raw.RemoteAddr(); ra != nil && ra.String() != address {
			return fmt.Sprintf("upstream %s (instance %s)", address, ra)
		}
		return "upstream " + address
	}
}

// consulPeer names a Consul service (the authority of its connections is
// the service name) and the instance.
func consulPeer(authority string, raw net.Conn) string {
	return fmt.Sprintf("consul service %s: instance %s", authority, raw.RemoteAddr())
}

// Settings named in the errors.
const (
	fixStaticTLS       = "to call it without TLS set plaintext: true on it in mesh.upstreams (--plaintext-upstream)"
	fixConsulTLS       = "to call Consul services without TLS set mesh.tls.mode: plaintext (--plaintext-upstream)"
	fixStaticPlaintext = "calls to it are plaintext (plaintext: true in mesh.upstreams, or --plaintext-upstream)"
	fixConsulPlaintext = "calls to it are plaintext (mesh.tls.mode: plaintext, or --plaintext-upstream)"
)

// notTLS rewrites the error of a failed TLS client handshake with raw when
// the server answered with something that is not TLS; other errors are
// returned as they are.
func notTLS(err error, who string, fix string) error {
	var rh tls.RecordHeaderError
	if !errors.As(err, &rh) {
		return err
	}
	return fmt.Errorf("%s does not speak TLS (%s); %s", who, describeFirstBytes(rh.RecordHeader[:]), fix)
}

// describeFirstBytes says what a server that is not TLS sent first.
func describeFirstBytes(b []byte) string {
	switch {
	case len(b) >= 5 && b[0] == 0 && b[3] == 0x4 && b[4]&^0x1 == 0:
		// A frame header: 24-bit length, type 4 (SETTINGS), flags 0 or ACK.
		return "it answered with a plaintext HTTP/2 SETTINGS frame, as a gRPC server without TLS does"
	case bytes.HasPrefix(b, []byte("HTTP/")):
		return "it answered in plaintext HTTP/1"
	default:
		return fmt.Sprintf("its first bytes %q are not a TLS record", b)
	}
}

// explainTLS wraps TLS transport credentials so that a handshake with a
// server that does not speak TLS fails in words.
type explainTLS struct {
	credentials.TransportCredentials
	name peerNamer
	fix  string
}

func (c *explainTLS) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, notTLS(err, c.name(authority, raw), c.fix)
	}
	return conn, info, nil
}

func (c *explainTLS) Clone() credentials.TransportCredentials {
	return &explainTLS{TransportCredentials: c.TransportCredentials.Clone(), name: c.name, fix: c.fix}
}

// explainPlaintext wraps insecure credentials so that a server that wants
// TLS (it closes the connection without a word, or answers with a TLS
// record) fails in words rather than "error reading server preface: EOF".
type explainPlaintext struct {
	credentials.TransportCredentials
	name peerNamer
	fix  string
}

func (c *explainPlaintext) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	return &firstReadConn{Conn: conn, who: func() string { return c.name(authority, raw) }, fix: c.fix}, info, nil
}

func (c *explainPlaintext) Clone() credentials.TransportCredentials {
	return &explainPlaintext{TransportCredentials: c.TransportCredentials.Clone(), name: c.name, fix: c.fix}
}

// firstReadConn looks at the first bytes a plaintext connection receives:
// nothing at all (EOF or a reset) or a TLS record means the server wants
// TLS. After the first byte it only passes reads through.
type firstReadConn struct {
	net.Conn
	who func() string
	fix string

	done bool // set by the first successful read; reads are not concurrent
}

func (c *firstReadConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.done {
		return n, err
	}
	if n == 0 && err != nil && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		return 0, fmt.Errorf("%s closed the connection before speaking HTTP/2; does it require TLS? %s", c.who(), capitalize(c.fix))
	}
	if n > 0 {
		c.done = true
		// 0x15 is a TLS alert, 0x16 a handshake; then major version 3.
		if n >= 2 && (p[0] == 0x15 || p[0] == 0x16) && p[1] == 0x03 {
			return 0, fmt.Errorf("%s answered with a TLS record: it requires TLS, but %s", c.who(), c.fix)
		}
	}
	return n, err
}

// explained returns the words of a connection error written by the
// credentials above without grpc-go's wrapping (`rpc error: code =
// Unavailable desc = connection error: desc = "transport: authentication
// handshake failed: …"`), or nil when err is not one.
func explained(err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return nil
	}
	// The balancer may prefix the subconnection's own error.
	desc, ok := strings.CutPrefix(strings.TrimPrefix(st.Message(), "last connection error: "), "connection error: desc = ")
	if !ok {
		return nil
	}
	if d, err := strconv.Unquote(desc); err == nil {
		desc = d
	}
	for _, p := range []string{"transport: authentication handshake failed: ", "error reading server preface: "} {
		if rest, ok := strings.CutPrefix(desc, p); ok && (strings.HasPrefix(rest, "upstream ") || strings.HasPrefix(rest, "consul service ")) {
			return errors.New(rest)
		}
	}
	return nil
}

func capitalize(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}
