package transcode

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func testRouter(tb testing.TB, routes ...string) *Router[string] {
	tb.Helper()
	r := NewRouter[string]()
	for _, rt := range routes {
		m, tmpl, _ := strings.Cut(rt, " ")
		tm, err := ParseTemplate(tmpl)
		if err != nil {
			tb.Fatal(err)
		}
		if err := r.Add(m, tm, rt, func(s string) string { return s }); err != nil {
			tb.Fatal(err)
		}
	}
	return r
}

func TestRouterMatch(t *testing.T) {
	r := testRouter(t,
		"GET /v1/users/{id}",
		"GET /v1/{name=users/*}/avatar",
		"GET /v1/users:watch",
		"GET /v1/users",
		"POST /v1/users",
		"GET /v1/orders/{id}:cancel",
		"POST /v1/orders/{id}:cancel",
		"PURGE /v1/orders/{id}",
		"GET /v1/assets/{path=**}",
		"POST /v1/{path=assets/**}:publish",
		"GET /v1/{name=shelves/*/books/*}",
		"GET /v1/regions/*/x",
		"GET /v1/files/{f}",
		"GET /",
	)
	tests := []struct {
		method, path string
		want         string
		vars         []string
		err          string
	}{
		{"GET", "/v1/users/42", "GET /v1/users/{id}", []string{"42"}, ""},
		// Backtracking: the literal branch users/{id} fails at /avatar.
		{"GET", "/v1/users/42/avatar", "GET /v1/{name=users/*}/avatar", []string{"users/42"}, ""},
		{"GET", "/v1/users:watch", "GET /v1/users:watch", nil, ""},
		{"GET", "/v1/users", "GET /v1/users", nil, ""},
		{"POST", "/v1/users", "POST /v1/users", nil, ""},
		{"POST", "/v1/orders/o1:cancel", "POST /v1/orders/{id}:cancel", []string{"o1"}, ""},
		// A colon in the last segment that is not a verb of any route.
		{"GET", "/v1/users/a:b", "GET /v1/users/{id}", []string{"a:b"}, ""},
		{"PURGE", "/v1/orders/o1", "PURGE /v1/orders/{id}", []string{"o1"}, ""},
		{"GET", "/v1/assets/a/b/c", "GET /v1/assets/{path=**}", []string{"a/b/c"}, ""},
		{"GET", "/v1/assets", "GET /v1/assets/{path=**}", []string{""}, ""},
		{"GET", "/v1/assets/a%2Fb/c%20d", "GET /v1/assets/{path=**}", []string{"a%2Fb/c d"}, ""},
		{"GET", "/v1/assets/a%2fb", "GET /v1/assets/{path=**}", []string{"a%2Fb"}, ""},
		{"GET", "/v1/files/a%2Fb%20c", "GET /v1/files/{f}", []string{"a/b c"}, ""},
		{"POST", "/v1/assets/x/y:publish", "POST /v1/{path=assets/**}:publish", []string{"assets/x/y"}, ""},
		{"GET", "/v1/shelves/1/books/2", "GET /v1/{name=shelves/*/books/*}", []string{"shelves/1/books/2"}, ""},
		{"GET", "/v1/regions/eu/x", "GET /v1/regions/*/x", nil, ""},
		{"GET", "/", "GET /", nil, ""},
		{"GET", "/v1/users/", "", nil, "no route"},
		{"GET", "/v1/shelves/1/books", "", nil, "no route"},
		{"GET", "/v2", "", nil, "no route"},
		{"GET", "", "", nil, "no route"},
		{"GET", "v1/users", "", nil, "no route"},
		{"DELETE", "/v1/users", "", nil, "allowed: GET, POST"},
		{"PUT", "/v1/orders/o1:cancel", "", nil, "allowed: GET, POST"},
		{"GET", "/v1/files/%zz", "", nil, "bad percent-encoding"},
	}
	for _, tt := range tests {
		v, vars, allow, err := r.MatchErr(tt.method, tt.path, nil)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s %s: got %v %v, want error %q", tt.method, tt.path, v, err, tt.err)
			}
			var mna *MethodNotAllowedError
			if errors.As(err, &mna) && !reflect.DeepEqual(allow, mna.Allow) {
				t.Errorf("%s %s: allow %v vs %v", tt.method, tt.path, allow, mna.Allow)
			}
			continue
		}
		if err != nil || v != tt.want || (len(vars) > 0 || len(tt.vars) > 0) && !reflect.DeepEqual(vars, tt.vars) {
			t.Errorf("%s %s: got %q %q %v, want %q %q", tt.method, tt.path, v, vars, err, tt.want, tt.vars)
		}
	}
}

func TestRouterConflict(t *testing.T) {
	r := testRouter(t, "GET /v1/{id}")
	tm, _ := ParseTemplate("/v1/{name}")
	err := r.Add("GET", tm, "other", func(s string) string { return s })
	var ce *ConflictError
	if !errors.As(err, &ce) || err.Error() != "route conflict: GET /v1/* is claimed by GET /v1/{id} and other" {
		t.Fatalf("got %v", err)
	}
	if err := r.Add("POST", tm, "post", func(s string) string { return s }); err != nil {
		t.Fatalf("another method is no conflict: %v", err)
	}
}

// FuzzRouterMatch: arbitrary paths never panic, and a match fills one value
// per template variable.
func FuzzRouterMatch(f *testing.F) {
	routes := []string{"GET /v1/users/{id}", "GET /v1/{name=users/*}/avatar", "GET /v1/users:watch", "POST /v1/{p=a/**}:x", "GET /v1/assets/{path=**}", "GET /"}
	r := testRouter(f, routes...)
	for _, s := range []string{"/v1/users/1", "/v1/users/1/avatar", "/v1/a/b:x", "/v1/assets/%2F", "/", "//", "/v1/users:watch:", "/%"} {
		f.Add("GET", s)
	}
	f.Fuzz(func(t *testing.T, m, path string) {
		v, vars, _, err := r.MatchErr(m, path, nil)
		if err != nil {
			return
		}
		_, tmpl, _ := strings.Cut(v, " ")
		tm, _ := ParseTemplate(tmpl)
		if len(vars) != len(tm.Vars) {
			t.Fatalf("%s %q matched %q with %d vars", m, path, v, len(vars))
		}
	})
}

func BenchmarkRouterMatch(b *testing.B) {
	var routes []string
	for i := range 10 {
		routes = append(routes,
			fmt.Sprintf("GET /v1/res%d/{id}", i),
			fmt.Sprintf("POST /v1/res%d", i),
			fmt.Sprintf("GET /v1/{name=res%d/*/items/*}", i))
	}
	r := testRouter(b, routes...)
	vars := make([]string, 0, 4)
	b.ReportAllocs()
	for b.Loop() {
		_, vars, _, _ = r.MatchErr("GET", "/v1/res7/abc/items/def", vars[:0])
	}
}
