// Command protosrc writes the .proto source of files linked into this binary
// (from their registered descriptors) under a directory, so protoc can import
// protos that are shipped only as generated Go, such as buf/validate.
//
//	go run ./protos/internal/protosrc DIR buf/validate/validate.proto
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/jhump/protoreflect/v2/protoprint"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: protosrc DIR FILE.proto...")
		os.Exit(2)
	}
	for _, name := range os.Args[2:] {
		if err := write(os.Args[1], name); err != nil {
			fmt.Fprintln(os.Stderr, "protosrc:", err)
			os.Exit(1)
		}
	}
}

func write(dir, name string) error {
	fd, err := protoregistry.GlobalFiles.FindFileByPath(name)
	if err != nil {
		return err
	}
	out := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	return (&protoprint.Printer{}).PrintProtoFile(fd, f)
}
