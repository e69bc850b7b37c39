package transcode

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	ordersv1 "github.com/portico-dev/portico/protos/examples/orders/v1"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
	usersv1 "github.com/portico-dev/portico/protos/examples/users/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// TestCompileGolden compiles the example services and compares a dump of
// every binding (method, template, shape, body, response_body, query keys)
// with testdata/examples.routes.golden. Run with -update after an intended
// change and review the diff.
func TestCompileGolden(t *testing.T) {
	var b strings.Builder
	c := NewCompiler(DefaultConfig())
	for _, fd := range []protoreflect.FileDescriptor{
		usersv1.File_examples_users_v1_users_proto,
		ordersv1.File_examples_orders_v1_orders_proto,
		productsv1.File_examples_products_v1_products_proto,
	} {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			methods, err := c.CompileService(sd, nil)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "service %s (%d exposed of %d)\n", sd.FullName(), len(methods), sd.Methods().Len())
			for _, m := range methods {
				for _, bd := range m.Bindings {
					fmt.Fprintf(&b, "  %-6s %-40s shape=%-34s %s body=%q response_body=%q stream=%v query=%d\n",
						bd.HTTPMethod, bd.Template.Raw, bd.Template.Shape(), m.FullMethod, bd.Body, bd.ResponseBody,
						m.ServerStreaming(), uniqueFields(bd.codec.query))
				}
			}
		}
	}
	path := filepath.Join("testdata", "examples.routes.golden")
	if *update {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if b.String() != string(want) {
		t.Fatalf("route dump differs from %s (run with -update and review):\n%s", path, b.String())
	}
}

func uniqueFields(idx map[string]*queryField) int {
	seen := map[*queryField]bool{}
	for _, f := range idx {
		seen[f] = true
	}
	return len(seen)
}
