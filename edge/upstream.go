package edge

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	rpccode "google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/edge/compose"
	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/policies/chain"
	"github.com/portico-dev/portico/transcode"
)

// Calls makes the last stage of every route's chain: the upstream call
// through mesh (unary, or a server stream written as it arrives), timed
// for the metrics, its failures told to clients without the edge's
// internals. The zero value calls without metrics, for tools that build a
// table but serve nothing.
type Calls struct {
	tel               *Telemetry
	drain             *Drain
	upstreamTimeout   time.Duration
	maxStreamDuration time.Duration
	streamIdle        time.Duration
}

// CallLimits bound the upstream calls.
type CallLimits struct {
	// Timeout is the deadline of a unary call whose method declares none
	// (edge.upstream_timeout).
	Timeout time.Duration
	// MaxStreamDuration ends a server stream (edge.max_stream_duration).
	MaxStreamDuration time.Duration
	// StreamIdle ends a server stream whose upstream sends nothing for
	// that long (transcode.stream_idle_timeout).
	StreamIdle time.Duration
}

// NewCalls returns the upstream calls of the routes the table builder
// compiles: tel times them, drain ends server streams when Portico stops.
func NewCalls(tel *Telemetry, drain *Drain, limits CallLimits) *Calls {
	return &Calls{
		tel: tel, drain: drain, upstreamTimeout: limits.Timeout,
		maxStreamDuration: limits.MaxStreamDuration, streamIdle: limits.StreamIdle,
	}
}

func (cs *Calls) observe(method string, code codes.Code, d time.Duration) {
	if cs.tel != nil {
		cs.tel.observeUpstream(method, code, d)
	}
}

// call returns the route's last stage.
func (cs *Calls) call(route *Route) chain.Next {
	if route.streamDesc != nil {
		return func(ctx context.Context, c *chain.Call) error { return cs.stream(ctx, route, c) }
	}
	return func(ctx context.Context, c *chain.Call) error { return cs.unary(ctx, route, c) }
}

// unaryOut receives what a unary call returns besides its answer; pooled
// with its call options, which point into it.
type unaryOut struct {
	header, trailer metadata.MD
	peer            peer.Peer
	// opts[4] is the route's fallback option, set per call.
	opts [5]grpc.CallOption
}

var unaryOuts = sync.Pool{New: func() any {
	o := new(unaryOut)
	o.opts = [5]grpc.CallOption{callWire, grpc.Header(&o.header), grpc.Trailer(&o.trailer), grpc.Peer(&o.peer), noFallback}
	return o
}}

// noFallback fills the fallback slot of a route that may not repeat calls.
var noFallback grpc.CallOption = grpc.EmptyCallOption{}

// unary makes one upstream call (one attempt: the retry stage repeats it)
// and records the answer, its metadata and the instance that gave it.
func (cs *Calls) unary(ctx context.Context, route *Route, c *chain.Call) error {
	resp := route.Codec.NewResponse()
	out := unaryOuts.Get().(*unaryOut)
	out.opts[4] = noFallback
	if route.fallback != nil {
		out.opts[4] = route.fallback
	}
	start := time.Now()
	if mesh.RoutesByCaller(route.Conn) {
		ctx = mesh.WithCaller(ctx, (*trafficCaller)(c))
	}
	err := route.Conn.Invoke(metadata.NewOutgoingContext(ctx, c.MD), route.FullMethod, c.Req, resp, out.opts[:]...)
	cs.observe(route.FullMethod, status.Code(err), time.Since(start))
	if out.peer.Addr != nil {
		c.Upstream = addrNames.name(out.peer.Addr)
	}
	c.Header = writeMetadata(writeMetadata(nil, out.header), out.trailer)
	out.header, out.trailer, out.peer = nil, nil, peer.Peer{}
	unaryOuts.Put(out)
	if err != nil {
		return upstreamError(ctx, err)
	}
	c.Resp = resp
	return nil
}

// addrNames keeps the host:port text of the upstream addresses answers
// came from, so that naming the instance in the log costs no allocation.
// The set is the instances', bounded; it is emptied should it ever reach
// maxAddrNames.
var addrNames addrNameCache

const maxAddrNames = 4096

type addrNameCache struct {
	mu    sync.RWMutex
	names map[netip.AddrPort]string
}

func (a *addrNameCache) name(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	ap := tcp.AddrPort()
	a.mu.RLock()
	s, ok := a.names[ap]
	a.mu.RUnlock()
	if ok {
		return s
	}
	s = tcp.String()
	a.mu.Lock()
	if a.names == nil || len(a.names) >= maxAddrNames {
		a.names = make(map[netip.AddrPort]string)
	}
	a.names[ap] = s
	a.mu.Unlock()
	return s
}

// compose returns a composed route's last stage: the plan's calls, with
// the request's metadata (identity, trace, forwarded headers), their
// answers written into the composite response. Degraded optional calls
// are named in the Portico-Partial header and, where the response
// declares a portico.v1.PartialResult list, in the body; the answer is
// then marked partial, so that no cache keeps it as complete.
func (cs *Calls) compose(m *compose.Method, codec transcode.Codec) chain.Next {
	return func(ctx context.Context, c *chain.Call) error {
		req, err := c.Req.Wire()
		if err != nil {
			return status.Error(codes.Internal, "composed request: "+err.Error())
		}
		// Last good answers are the route's and the caller's own.
		scope := string(m.Desc.FullName())
		if c.Caller != nil {
			scope += "\x00" + c.Caller.Provider + "\x00" + c.Caller.Subject
		}
		ctx = mesh.WithCaller(ctx, (*trafficCaller)(c))
		res, err := m.Plan.Run(metadata.NewOutgoingContext(ctx, c.MD), req, scope)
		if err != nil {
			return err
		}
		wire := res.Wire
		if len(res.Degraded) > 0 {
			names := make([]string, len(res.Degraded))
			for i, d := range res.Degraded {
				names[i] = d.Call
				if m.Partial != 0 {
					wire = appendPartial(wire, m.Partial, d)
				}
			}
			if c.Header == nil {
				c.Header = http.Header{}
			}
			c.Header[PartialHeader] = []string{strings.Join(names, ", ")}
			c.Partial = true
		}
		c.Resp = codec.NewResponse()
		c.Resp.SetWire(wire)
		return nil
	}
}

// PartialHeader names the degraded calls of a composed answer.
const PartialHeader = "Portico-Partial"

// appendPartial appends one portico.v1.PartialResult to the list field num.
func appendPartial(b []byte, num protowire.Number, d compose.Degraded) []byte {
	var e []byte
	for i, s := range []string{d.Call, rpccode.Code(d.Code).String(), d.Message, d.Fallback} {
		e = protowire.AppendTag(e, protowire.Number(i+1), protowire.BytesType)
		e = protowire.AppendString(e, s)
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, e)
}

// invoker is how a composition calls method on conn: each attempt timed
// for the metrics, repeated by retry (nil: one attempt), its failure told
// as on a plain route.
func (cs *Calls) invoker(conn grpc.ClientConnInterface, md protoreflect.MethodDescriptor, retry func(context.Context, func(context.Context) error) error) compose.Invoke {
	method := "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
	inType, outType := dynamicpb.NewMessageType(md.Input()), dynamicpb.NewMessageType(md.Output())
	once := func(ctx context.Context, req []byte) ([]byte, error) {
		in, out := chain.WirePayload(inType, req), chain.EmptyPayload(outType)
		start := time.Now()
		err := conn.Invoke(ctx, method, in, out, callWire)
		cs.observe(method, status.Code(err), time.Since(start))
		if err != nil {
			return nil, err
		}
		w, err := out.Wire()
		w = bytes.Clone(w)
		out.Release()
		return w, err
	}
	if retry == nil {
		return func(ctx context.Context, req []byte) ([]byte, error) {
			w, err := once(ctx, req)
			if err != nil {
				return nil, upstreamError(ctx, err)
			}
			return w, nil
		}
	}
	return func(ctx context.Context, req []byte) ([]byte, error) {
		var w []byte
		err := retry(ctx, func(ctx context.Context) error {
			var err error
			w, err = once(ctx, req)
			return err
		})
		if err != nil {
			return nil, upstreamError(ctx, err)
		}
		return w, nil
	}
}

var (
	errStreamIdle    = status.Error(codes.DeadlineExceeded, "stream ended: upstream sent nothing for transcode.stream_idle_timeout")
	errStreamTooLong = status.Error(codes.DeadlineExceeded, "stream ended: edge.max_stream_duration reached")
	errDraining      = status.Error(codes.Unavailable, "stream ended: this Portico instance is shutting down; reconnect to continue")
)

// cutShort is a failure after the response started: there is nothing left
// to render, only its status to log and count.
type cutShort struct{ st *status.Status }

func (e *cutShort) Error() string              { return e.st.Message() }
func (e *cutShort) Unwrap() error              { return chain.ErrResponseStarted }
func (e *cutShort) GRPCStatus() *status.Status { return e.st }

// stream relays a server stream as it arrives, within
// edge.max_stream_duration, ending it when the upstream is quiet for
// transcode.stream_idle_timeout or Portico drains.
func (cs *Calls) stream(ctx context.Context, route *Route, c *chain.Call) (err error) {
	if mesh.RoutesByCaller(route.Conn) {
		ctx = mesh.WithCaller(ctx, (*trafficCaller)(c))
	}
	ctx = metadata.NewOutgoingContext(ctx, c.MD)
	ctx, cancelMax := context.WithTimeoutCause(ctx, cs.maxStreamDuration, errStreamTooLong)
	defer cancelMax()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The idle timer ends the call when the upstream goes quiet; a drain
	// ends it with a final UNAVAILABLE message the client can act on.
	idle := time.AfterFunc(cs.streamIdle, func() { cancel(errStreamIdle) })
	defer idle.Stop()
	if cs.drain != nil {
		stopDrain := context.AfterFunc(cs.drain.Context(), func() { cancel(errDraining) })
		defer stopDrain()
	}
	start := time.Now()
	// code is how the upstream call ended, for the metrics and the access
	// log (a stream that started answers 200 whatever happens next).
	code := codes.OK
	defer func() { cs.observe(route.FullMethod, code, time.Since(start)) }()
	fail := func(e error) error {
		e = upstreamError(ctx, e)
		code = status.Code(e)
		return e
	}
	st, err := route.Conn.NewStream(ctx, route.streamDesc, route.FullMethod, callWire)
	if err != nil {
		return fail(err)
	}
	defer func() {
		if p, ok := peer.FromContext(st.Context()); ok && p.Addr != nil {
			c.Upstream = p.Addr.String()
		}
	}()
	if err := st.SendMsg(c.Req); err != nil {
		return fail(st.RecvMsg(route.Codec.NewResponse()))
	}
	if err := st.CloseSend(); err != nil {
		return fail(err)
	}
	w := c.W
	sw := route.Codec.NewStreamWriter(w, c.R)
	started := false
	for {
		msg := route.Codec.NewResponse()
		err := st.RecvMsg(msg)
		idle.Reset(cs.streamIdle)
		if !started {
			if hdr, herr := st.Header(); herr == nil {
				writeMetadata(w.Header(), hdr)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if !started {
					sw.Start()
				}
				writeTrailers(w, st.Trailer())
				c.Streamed = true
				return nil
			}
			err = fail(err)
			if !started {
				return err
			}
			sw.SendError(err)
			return &cutShort{status.Convert(err)}
		}
		started = true
		c.Streamed = true
		err = sw.Send(msg)
		msg.Release()
		if err != nil {
			// The client went away, or stopped reading for edge.write_timeout:
			// returning cancels the upstream call.
			code = codes.Canceled
			return &cutShort{status.New(codes.Canceled, "client went away or stopped reading mid-stream")}
		}
		if c.R.Method == http.MethodHead {
			// The status and headers are known: HEAD wants nothing more.
			return nil
		}
	}
}

// upstreamError keeps the upstream's status, naming deadline and
// cancellation by the edge's own context. Errors grpc-go made on this side
// of the connection (no instance, dial and TLS failures, resets, messages
// over the size limit) carry addresses and Go error chains: they keep their
// code with a plain sentence, the detail going to the log.
func upstreamError(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause == errStreamIdle || cause == errStreamTooLong || cause == errDraining {
		return cause
	}
	if st, ok := status.FromError(err); ok {
		if st.Code() == codes.DeadlineExceeded && ctx.Err() != nil {
			return status.Error(codes.DeadlineExceeded, "upstream call exceeded its deadline")
		}
		if msg, internal := transportMessage(st); internal {
			return &internalError{st: status.New(st.Code(), msg), detail: st.Message()}
		}
		return err
	}
	return chain.FromContextError(err)
}

// transportMessage recognises a status made by the gRPC client rather than
// returned by the service, and gives the sentence clients get instead.
func transportMessage(st *status.Status) (string, bool) {
	msg := st.Message()
	if !looksInternal(msg) {
		return "", false
	}
	switch st.Code() {
	case codes.Unavailable:
		return "the upstream service is unavailable; retry later", true
	case codes.ResourceExhausted:
		return "the upstream message is larger than the edge accepts", true
	case codes.DeadlineExceeded:
		return "upstream call exceeded its deadline", true
	case codes.Canceled:
		return "the upstream call was cancelled", true
	case codes.Unauthenticated, codes.PermissionDenied:
		return "the edge could not authenticate to the upstream service", true
	default:
		return "the upstream call failed", true
	}
}

// internalMarkers are phrases of grpc-go's and Go's own errors; a service's
// message containing one (or an IP address with a port) is not shown
// either: an edge never tells clients about its network.
var internalMarkers = []string{
	"transport:", "transport is closing", "connection error", "dial tcp", "dial unix", "connect:",
	"grpc:", "subconn", "name resolver", "resolver error", "produced zero addresses", "connection refused",
	"connection reset", "broken pipe", "i/o timeout", "eof", "rst_stream", "goaway", "tls:", "x509:",
	"handshake", "no such host", "read tcp", "write tcp", "desc =",
	"no ready instance of", "no passing instance of", // mesh's picker: names services and subsets
}

func looksInternal(msg string) bool {
	lower := strings.ToLower(msg)
	for _, m := range internalMarkers {
		if strings.Contains(lower, m) {
			return true
		}
	}
	return hasAddrPort(msg)
}

// hasAddrPort finds an IPv4 address with a port ("10.1.2.3:9000") or a
// bracketed IPv6 one.
func hasAddrPort(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '[' {
			if j := strings.Index(s[i:], "]:"); j > 1 {
				if _, err := netip.ParseAddr(s[i+1 : i+j]); err == nil {
					return true
				}
			}
			continue
		}
		if s[i] < '0' || s[i] > '9' || (i > 0 && (s[i-1] == '.' || (s[i-1] >= '0' && s[i-1] <= '9'))) {
			continue
		}
		j := i
		for j < len(s) && (s[j] == '.' || (s[j] >= '0' && s[j] <= '9')) {
			j++
		}
		if j < len(s) && s[j] == ':' && j+1 < len(s) && s[j+1] >= '0' && s[j+1] <= '9' {
			if _, err := netip.ParseAddr(s[i:j]); err == nil {
				return true
			}
		}
		i = j
	}
	return false
}

// writeTrailers sends upstream trailers as HTTP trailers.
func writeTrailers(w http.ResponseWriter, md metadata.MD) {
	tr := writeMetadata(nil, md)
	for k, vs := range tr {
		for _, v := range vs {
			w.Header().Add(http.TrailerPrefix+k, v)
		}
	}
}
