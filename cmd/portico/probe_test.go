package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// probe runs `portico probe args...` through run, as a container does.
func probe(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(append([]string{"probe"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestProbeHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.WriteHeader(http.StatusNoContent)
		case "/slow":
			<-r.Context().Done() // until the probe gives up
		default:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	for _, tc := range []struct {
		path     string
		wantCode int
		wantOut  string
	}{
		{"/readyz", 0, "204"},
		{"/unready", 1, "503"},
		{"/slow", 1, "deadline exceeded"},
	} {
		code, out, errOut := probe(t, "-timeout", "300ms", srv.URL+tc.path)
		if code != tc.wantCode || !strings.Contains(out+errOut, tc.wantOut) {
			t.Errorf("probe %s: exit %d, stdout %q, stderr %q; want exit %d mentioning %q", tc.path, code, out, errOut, tc.wantCode, tc.wantOut)
		}
	}
}

func TestProbeGRPC(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer() // "" is SERVING
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_NOT_SERVING)
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	defer func() { s.Stop(); <-served }()
	addr := lis.Addr().String()

	for _, tc := range []struct {
		url      string
		wantCode int
		wantOut  string
	}{
		{"grpc://" + addr, 0, "SERVING"},
		{"grpc://" + addr + "/orders", 1, "NOT_SERVING"},
		{"grpc://" + addr + "/nope", 1, "NotFound"},
	} {
		code, out, errOut := probe(t, "-timeout", "2s", tc.url)
		if code != tc.wantCode || !strings.Contains(out+errOut, tc.wantOut) {
			t.Errorf("probe %s: exit %d, stdout %q, stderr %q; want exit %d mentioning %q", tc.url, code, out, errOut, tc.wantCode, tc.wantOut)
		}
	}
}

func TestProbeUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	for _, u := range []string{"http://" + addr + "/readyz", "grpc://" + addr} {
		if code, _, errOut := probe(t, "-timeout", "2s", u); code != 1 || !strings.Contains(errOut, addr) {
			t.Errorf("probe %s: exit %d, stderr %q; want exit 1 naming the address", u, code, errOut)
		}
	}
}

func TestProbeUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"a", "b"},
		{"127.0.0.1:9901"},
		{"ftp://127.0.0.1:21/"},
		{"-timeout", "soon", "http://127.0.0.1:1/"},
	} {
		if code, _, _ := probe(t, args...); code != 2 {
			t.Errorf("probe %q: exit %d, want 2 (usage)", args, code)
		}
	}
}
