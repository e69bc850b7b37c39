package mesh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// roundRobin spreads calls over every address a target resolves to; grpc-go's
// default pick_first would pin one.
const roundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// Upstreams owns one client connection per configured upstream.
type Upstreams struct {
	cfg   Config
	log   *zap.Logger
	order []string
	conns map[string]*grpc.ClientConn
}

// NewUpstreams creates (but does not connect) a client per upstream.
func NewUpstreams(cfg Config, log *zap.Logger, opts ...grpc.DialOption) (*Upstreams, error) {
	u := &Upstreams{cfg: cfg, log: log, conns: map[string]*grpc.ClientConn{}}
	for _, up := range cfg.Upstreams {
		creds, err := transportCredentials(up)
		if err != nil {
			_ = u.Close()
			return nil, err
		}
		if up.Plaintext {
			log.Warn("plaintext upstream: calls are neither encrypted nor authenticated", zap.String("upstream", up.Address))
		}
		cc, err := grpc.NewClient(up.Address, append([]grpc.DialOption{
			grpc.WithTransportCredentials(creds),
			grpc.WithDefaultServiceConfig(roundRobin),
			grpc.WithDefaultCallOptions(
				grpc.MaxCallRecvMsgSize(cfg.MaxRecvMessageBytes),
				grpc.MaxCallSendMsgSize(cfg.MaxSendMessageBytes),
				grpc.ForceCodecV2(bindingCodec{}),
			),
		}, opts...)...)
		if err != nil {
			_ = u.Close()
			return nil, fmt.Errorf("upstream %s: %w", up.Address, err)
		}
		u.order = append(u.order, up.Address)
		u.conns[up.Address] = cc
	}
	return u, nil
}

func transportCredentials(up Upstream) (credentials.TransportCredentials, error) {
	if up.Plaintext {
		return &explainPlaintext{insecure.NewCredentials(), staticPeer(up.Address), fixStaticPlaintext}, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: up.ServerName}
	if up.CAFile != "" {
		pem, err := os.ReadFile(up.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: ca_file: %w", up.Address, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream %s: ca_file %s holds no PEM certificate", up.Address, up.CAFile)
		}
		tc.RootCAs = pool
	}
	return &explainTLS{credentials.NewTLS(tc), staticPeer(up.Address), fixStaticTLS}, nil
}

// Targets implements Discovery: the upstreams in configuration order.
func (u *Upstreams) Targets() []string { return u.order }

// Reflect implements Discovery: it reflects every upstream concurrently,
// each bounded by ReflectTimeout, whatever force says (a static upstream
// announces nothing).
func (u *Upstreams) Reflect(ctx context.Context, _ bool) []Result {
	out := make([]Result, len(u.order))
	var wg sync.WaitGroup
	for i, addr := range u.order {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, u.cfg.ReflectTimeout)
			defer cancel()
			refl, err := reflectUpstream(ctx, addr, u.conns[addr])
			out[i] = Result{Target: addr, Reflection: refl, Err: err}
		})
	}
	wg.Wait()
	return out
}

// Changed implements Discovery: static upstreams never announce changes.
func (u *Upstreams) Changed() <-chan struct{} { return nil }

// Close closes every connection.
func (u *Upstreams) Close() error {
	var errs []error
	for _, cc := range u.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}
