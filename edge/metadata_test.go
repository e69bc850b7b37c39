package edge

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestClientTimeout(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1S", time.Second, true}, {"100m", 100 * time.Millisecond, true}, {"2H", 2 * time.Hour, true},
		{"5u", 5 * time.Microsecond, true}, {"7n", 7, true}, {"3M", 3 * time.Minute, true},
		{"", 0, false}, {"S", 0, false}, {"10", 0, false}, {"1x", 0, false}, {"-1S", 0, false}, {"123456789S", 0, false},
	}
	for _, tt := range tests {
		got, ok := clientTimeout(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("clientTimeout(%q) = %v %v, want %v %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

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
	m := newMetadataMapper([]string{"Authorization", "x-tenant"})
	r := httptest.NewRequest("GET", "http://example.test/x", nil)
	r.RemoteAddr = "10.1.2.3:5555"
	r.Header.Set("Authorization", "Bearer t")
	r.Header.Set("X-Tenant", "acme")
	r.Header.Set("X-Forwarded-For", "1.1.1.1")
	r.Header.Set("Grpc-Metadata-Foo", "bar")
	r.Header.Set("Grpc-Metadata-Grpc-Status", "0")
	r.Header.Set("Grpc-Metadata-Content-Type", "x")
	r.Header.Set("Grpc-Metadata-X-Request-Id", "forged")
	r.Header.Set("Grpc-Metadata-Bad-Bin", "!!!")
	if _, err := m.outgoing(r, "id1"); err == nil || !strings.Contains(err.Error(), "base64") {
		t.Fatalf("bad -bin header: %v", err)
	}
	r.Header.Del("Grpc-Metadata-Bad-Bin")
	md, err := m.outgoing(r, "id1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"authorization": "Bearer t", "x-tenant": "acme", "foo": "bar",
		"x-forwarded-for": "1.1.1.1, 10.1.2.3", "x-forwarded-proto": "http", "x-forwarded-host": "example.test", "x-request-id": "id1"}
	for k, v := range want {
		if got := md.Get(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"grpc-status", "content-type"} {
		if len(md.Get(k)) != 0 {
			t.Errorf("reserved %s forwarded", k)
		}
	}
}
