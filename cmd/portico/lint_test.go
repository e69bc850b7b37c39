package main

import (
	"bytes"
	"strings"
	"testing"
)

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
		},
		{
			name: "every problem with its position",
			args: []string{"-I", "testdata/lint", "testdata/lint/bad.proto"},
			code: 1,
			want: []string{
				"bad.proto:11:5: option (portico.v1.method).auth: allow_if: ERROR: <input>:1:8: undefined field 'nope'",
				"bad.proto:18:3: option (portico.v1.service).rate_limit: period: must be a positive duration",
				`bad.proto:27:3: option google.api.http: path variable {missing}: lint.bad.v1.Req has no field "missing"`,
				"bad.proto:32:1: route conflict: GET /v1/conflict/* is claimed by lint.bad.v1.Conflict/Get (GET /v1/conflict/{id}) and lint.bad.v1.Conflict/Other (GET /v1/conflict/{id})",
				"4 problem(s)",
			},
		},
		{
			name: "a misspelt option field",
			args: []string{"-I", "testdata/lint", "testdata/lint/typo.proto"},
			code: 1,
			want: []string{`typo.proto:11:43: method lint.typo.v1.Typo.Get: option (portico.v1.method): field tll not found`, "1 problem(s)"},
		},
		{
			name: "providers are not checked without the config",
			args: []string{"-I", "testdata/lint", "testdata/lint/providers.proto"},
		},
		{
			name: "providers checked against the config",
			args: []string{"-I", "testdata/lint", "--config", "testdata/lint/portico.yaml", "testdata/lint/providers.proto"},
			code: 1,
			want: []string{`providers.proto:9:3: option (portico.v1.service).auth: providers: "partners" is not a configured provider (configured: [corp])`},
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
		})
	}
}
