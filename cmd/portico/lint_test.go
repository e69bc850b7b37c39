package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/transcode"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestLintGolden")

func TestLint(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want []string // lines, in order
	}{
		{
			name: "the accounts example is clean",
			args: []string{"-I", "../../protos", "../../protos/examples/accounts/v1/accounts.proto"},
			want: []string{"lint: 1 file, 1 service, 6 routes, no problems"},
		},
		{
			name: "every problem with its position",
			args: []string{"-I", "testdata/lint", "testdata/lint/bad.proto"},
			code: 1,
			want: []string{
				"bad.proto:11:5: method lint.bad.v1.Broken.BadCEL: option (portico.v1.method).auth: allow_if: ERROR: <input>:1:8: undefined field 'nope'",
				"bad.proto:18:3: service lint.bad.v1.Limits: option (portico.v1.service).rate_limit: period: must be a positive duration",
				`bad.proto:28:5: method lint.bad.v1.Templates.Get: option google.api.http: path variable {missing}: lint.bad.v1.Req has no field "missing"`,
				"bad.proto:37:5: method lint.bad.v1.Conflict.Other: route conflict: GET /v1/conflict/* is claimed by lint.bad.v1.Conflict/Get (GET /v1/conflict/{id}) and lint.bad.v1.Conflict/Other (GET /v1/conflict/{id})",
				"lint: 1 file, 4 services, 4 routes, 4 problems",
			},
		},
		{
			name: "a misspelt option field",
			args: []string{"-I", "testdata/lint", "testdata/lint/typo.proto"},
			code: 1,
			want: []string{`typo.proto:11:43: method lint.typo.v1.Typo.Get: option (portico.v1.method): field tll not found`, "lint: 1 file, 0 services, 0 routes, 1 problem"},
		},
		{
			name: "providers are not checked without the config",
			args: []string{"-I", "testdata/lint", "testdata/lint/providers.proto"},
			want: []string{"lint: 1 file, 1 service, 1 route, no problems"},
		},
		{
			name: "providers checked against the config",
			args: []string{"-I", "testdata/lint", "--config", "testdata/lint/portico.yaml", "testdata/lint/providers.proto"},
			code: 1,
			want: []string{
				`providers.proto:9:3: service lint.providers.v1.Providers: option (portico.v1.service).auth: providers: "partners" is not a configured provider (configured: [corp])`,
				"lint: 1 file, 1 service, 1 route, 1 problem",
			},
		},
		{
			name: "a directory: every file, syntax errors included",
			args: []string{"-I", "testdata/lint", "testdata/lint"},
			code: 1,
			want: []string{"typo.proto:11:43:", "bad.proto:11:5:", "many.proto:15:5:", "lint: 4 files, 7 services, 9 routes, 15 problems"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(append([]string{"lint"}, tt.args...), &out, &errOut)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out.String(), errOut.String())
			}
			got := out.String()
			at := 0
			for _, w := range tt.want {
				i := strings.Index(got[at:], w)
				if i < 0 {
					t.Fatalf("output lacks (in order) %q:\n%s", w, got)
				}
				at += i + len(w)
			}
			if !strings.HasSuffix(got, tt.want[len(tt.want)-1]+"\n") {
				t.Fatalf("the summary is not the last line:\n%s", got)
			}
		})
	}
}

// TestLintGolden pins the whole output of a file with several problems in
// each of two services, some in the same method and the same option: one
// run reports every one of them.
func TestLintGolden(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"lint", "-I", "testdata/lint", "testdata/lint/many.proto"}, &out, &errOut)
	if code != 1 || errOut.Len() > 0 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, errOut.String())
	}
	golden := filepath.Join("testdata", "lint", "many.golden")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Fatalf("output differs from %s (go test -run TestLintGolden -update rewrites it):\n%s", golden, out.String())
	}
	if n := strings.Count(out.String(), "\nmany.proto:") + 1; n != 10 {
		t.Fatalf("%d problem lines, want 10", n)
	}
}

// TestLintDescriptorSet: a descriptor set (no source info) is checked the
// same way; positions fall back to the file name.
func TestLintDescriptorSet(t *testing.T) {
	l := &linter{out: &bytes.Buffer{}, seen: map[string]bool{}}
	files, err := l.load([]string{"testdata/lint/many.proto"}, []string{"testdata/lint"})
	if err != nil || len(files) != 1 {
		t.Fatal(files, err)
	}
	set := &descriptorpb.FileDescriptorSet{}
	withImports(files, func(fd protoreflect.FileDescriptor) {
		fdp := protodesc.ToFileDescriptorProto(fd)
		fdp.SourceCodeInfo = nil
		set.File = append(set.File, fdp)
	})
	raw, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "many.binpb")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"lint", path}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out.String(), errOut.String())
	}
	for _, w := range []string{
		"many.proto: method lint.many.v1.Orders.Update: option (portico.v1.method).retry.attempts: must be within 2..5, got 9",
		"many.proto: method lint.many.v1.Shops.Same: route conflict:",
		"routes, 10 problems",
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
}

func TestLintUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"testdata/lint/no-such.proto"}, {"-I"}} {
		var out, errOut bytes.Buffer
		if code := run(append([]string{"lint"}, args...), &out, &errOut); code != 2 || out.Len() > 0 || errOut.Len() == 0 {
			t.Errorf("lint %q: exit %d, stdout %q, stderr %q; want 2, nothing, the reason", args, code, out.String(), errOut.String())
		}
	}
}

// TestLintRoutesMatchEdge: on clean files the routes lint counts are the
// routes the edge builds from them.
func TestLintRoutesMatchEdge(t *testing.T) {
	l := &linter{out: &bytes.Buffer{}, seen: map[string]bool{}}
	files, err := l.load([]string{"../../protos/examples"}, []string{"../../protos"})
	if err != nil {
		t.Fatal(err)
	}
	l.check(files, app.DefaultConfig(), true)
	refl := &mesh.Reflection{Upstream: "test"}
	for _, f := range files {
		for i := 0; i < f.Services().Len(); i++ {
			sd := f.Services().Get(i)
			refl.Services = append(refl.Services, &mesh.Service{Name: sd.FullName(), Desc: sd, Upstream: "test"})
		}
	}
	table := edge.BuildTable([]*mesh.Reflection{refl}, transcode.NewCompiler(transcode.DefaultConfig()), nil, nil)
	if l.problems != 0 || len(table.Rejected) != 0 || l.routes == 0 || l.routes != len(table.Routes()) {
		t.Fatalf("lint: %d routes, %d problems; edge: %d routes, rejected %v", l.routes, l.problems, len(table.Routes()), table.Rejected)
	}
}

// TestLintCompositions: lint compiles frontend protos' compositions against
// the services linted with them, each problem at the position serve gives
// it; the demo's home screen has none.
func TestLintCompositions(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"lint", "-I", "../../protos", "-I", "../../integration/testdata/frontends",
		"../../integration/testdata/frontends", "../../protos/examples"}, &out, &errOut)
	if code != 1 || errOut.Len() > 0 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, errOut.String())
	}
	for _, want := range []string{
		`home/v1/broken.proto:14:25: method portico.frontend.broken.v1.Broken.NoSuchMethod: option (portico.v1.compose).calls[0].method: "portico.examples.users.v1.UserService/GetUsr": no service`,
		`home/v1/broken.proto:19:5: method portico.frontend.broken.v1.Broken.Cycle: option (portico.v1.compose).calls: the calls depend on each other in a cycle: a → b → a`,
		`home/v1/broken.proto:27:7: method portico.frontend.broken.v1.Broken.WrongType: option (portico.v1.compose).calls[0]: request[0]: request.n does not fit name`,
		`home/v1/broken.proto:34:81: method portico.frontend.broken.v1.Broken.Overlap: option (portico.v1.compose).calls[1].target: "user" overlaps`,
		`home/v1/broken.proto:41:39: method portico.frontend.broken.v1.Broken.BadExpr: option (portico.v1.compose).calls[0].request[0].expr: <input>:1:11: found no matching overload for '_+_' applied to '(int, string)'`,
		`home/v1/broken.proto:48:25: method portico.frontend.broken.v1.Broken.TwoWrites: option (portico.v1.compose).calls[1].method: "portico.examples.users.v1.UserService/DeleteUser" is not idempotent`,
		`, 6 problems`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
	out.Reset()
	code = run([]string{"lint", "-I", "../../protos", "-I", "../examples/demo/frontends", "../examples/demo/frontends", "../../protos/examples"}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "no problems") {
		t.Fatalf("the demo's frontend: exit %d\n%s%s", code, out.String(), errOut.String())
	}
}
