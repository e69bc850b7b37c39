package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// defaultProbeTimeout bounds one probe; container health checks run every
// few seconds, so a hung endpoint must fail well before the next one.
const defaultProbeTimeout = 3 * time.Second

// cmdProbe is `portico probe [-timeout D] [-insecure] URL`, the health check
// of images that have no shell and no curl (docker-compose.yml):
//
//   - http:// or https://: a GET; healthy on any 2xx.
//   - grpc://host:port[/service]: a grpc.health.v1 Check over plaintext of
//     service ("" = the whole server); healthy on SERVING.
//
// It exits 0 when healthy, 1 when not (the reason on stderr), 2 on bad
// usage.
func cmdProbe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("portico probe", flag.ContinueOnError)
	timeout := fs.Duration("timeout", defaultProbeTimeout, "give up after this long")
	skipVerify := fs.Bool("insecure", false, "https: do not verify the server certificate (a local self-signed listener)")
	fs.Usage = usageFunc(fs, `usage: portico probe [-timeout 3s] [-insecure] http(s)://HOST:PORT/PATH | grpc://HOST:PORT[/SERVICE]

Exit 0 when the endpoint is healthy (http(s): any 2xx; grpc: a plaintext
grpc.health.v1 Check answers SERVING), 1 when not (the reason on stderr),
2 on bad usage.

flags:
`)
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	u, err := url.Parse(fs.Arg(0))
	if err != nil || u.Host == "" {
		fmt.Fprintf(stderr, "portico probe: %q is not a URL with a host\n", fs.Arg(0))
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var res string
	switch u.Scheme {
	case "http", "https":
		res, err = probeHTTP(ctx, u.String(), *skipVerify)
	case "grpc":
		res, err = probeGRPC(ctx, u.Host, strings.TrimPrefix(u.Path, "/"))
	default:
		fmt.Fprintf(stderr, "portico probe: scheme %q: want http, https or grpc\n", u.Scheme)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "portico probe: %s: %v\n", u.Redacted(), err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s\n", u.Redacted(), res)
	return 0
}

// probeHTTP GETs url; any 2xx is healthy.
func probeHTTP(ctx context.Context, url string, skipVerify bool) (string, error) {
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: skipVerify}} //nolint:gosec // opt-in, for local listeners
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", fmt.Errorf("HTTP %s", resp.Status)
	}
	return "HTTP " + resp.Status, nil
}

// probeGRPC asks addr's plaintext grpc.health.v1 service about service.
func probeGRPC(ctx context.Context, addr, service string) (string, error) {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return "", err
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return "", fmt.Errorf("health status %s", st)
	}
	return "SERVING", nil
}
