package compose

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoregistry"
)

// TestLoadMissingImport: a frontend proto importing a file no service has
// (yet: its service may not have registered) says so, not which path of
// the protos directory it tried.
func TestLoadMissingImport(t *testing.T) {
	dir := t.TempDir()
	src := "syntax = \"proto3\";\npackage f.v1;\nimport \"examples/accounts/v1/accounts.proto\";\n"
	if err := os.WriteFile(filepath.Join(dir, "f.proto"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	files, errs := Load(t.Context(), dir, new(protoregistry.Files))
	if len(files) != 0 || len(errs) != 1 {
		t.Fatalf("files %d, errors %v", len(files), errs)
	}
	msg := errs[0].Error()
	if !strings.Contains(msg, `import "examples/accounts/v1/accounts.proto": no service the edge serves has this file (yet)`) || strings.Contains(msg, dir) {
		t.Fatalf("error %q", msg)
	}
}
