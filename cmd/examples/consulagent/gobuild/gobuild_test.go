package gobuild

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLine(t *testing.T) {
	for _, tc := range []struct {
		resolving   bool
		done, total int
		elapsed     time.Duration
		want        string
	}{
		{true, 0, 0, 3 * time.Second, "building Consul: finding its packages, 3s"},
		{true, 12, 0, 70 * time.Second, "building Consul: finding its packages (12 modules downloaded), 1m10s"},
		{false, 0, 1040, 4*time.Second + 600*time.Millisecond, "building Consul: 1040 packages to compile, 5s"},
		{false, 0, 1, 0, "building Consul: 1 package to compile, 0s"},
		{false, 312, 1040, 130 * time.Second, "building Consul: 312/1040 packages, 2m10s"},
		{false, 1040, 1040, time.Hour + 5*time.Second, "building Consul: 1040/1040 packages, linking, 1h0m5s"},
	} {
		if got := Line("Consul", tc.resolving, tc.done, tc.total, tc.elapsed); got != tc.want {
			t.Errorf("Line(%v, %d, %d, %v) = %q, want %q", tc.resolving, tc.done, tc.total, tc.elapsed, got, tc.want)
		}
	}
}

func TestStaleSet(t *testing.T) {
	got := staleSet("a\tstale dependency: b\nunsafe\t\nb\tbuild ID mismatch\nexample.com/cmd\t" + cachedCommand + "\n\n")
	want := map[string]bool{"a": true, "b": true}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("staleSet = %v, want %v (unsafe and a cached command have nothing to compile)", got, want)
	}
}

// syncBuffer is a progress writer the reporting goroutine and the test
// share.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeGo writes a go command that lists two stale packages (and unsafe, and
// a cached command), then "compiles" them; with FAIL set the build fails.
func fakeGo(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "go")
	script := `#!/bin/sh
case "$1" in
list)
  echo "go: downloading example.com/m v1.0.0" >&2
  printf 'example.com/a\tstale\nunsafe\t\nexample.com/b\tstale\nexample.com/cmd\tnot installed but available in build cache\n' ;;
build)
  for p in example.com/a example.com/b; do echo "$p" >&2; sleep 0.1; done
  if [ -n "$FAIL" ]; then echo "# example.com/cmd" >&2; echo "main.go:3:1: syntax error" >&2; exit 1; fi ;;
esac
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBuildReportsProgress(t *testing.T) {
	var out syncBuffer
	err := Build(t.Context(), Options{Label: "thing", Packages: []string{"./cmd"}, Progress: &out, Every: 20 * time.Millisecond, Go: fakeGo(t)})
	if err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"building thing: 2 packages to compile, ",
		"/2 packages, ", // a count while it compiles
		"built thing in ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("progress lacks %q:\n%s", want, got)
		}
	}
}

func TestBuildFailureCarriesTheOutput(t *testing.T) {
	var out syncBuffer
	err := Build(t.Context(), Options{Label: "thing", Packages: []string{"./cmd"}, Env: []string{"FAIL=1"}, Progress: &out, Every: time.Hour, Go: fakeGo(t)})
	if err == nil || !strings.Contains(err.Error(), "main.go:3:1: syntax error") || strings.Contains(err.Error(), "example.com/a\n") {
		t.Fatalf("error %v: want go build's output without the package lines", err)
	}
	if strings.Contains(out.String(), "built") {
		t.Fatalf("a failed build reported success:\n%s", out.String())
	}
}
