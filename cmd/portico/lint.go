package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/reporter"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	// The imports backend teams' protos need, resolved from the binary.
	_ "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	_ "google.golang.org/genproto/googleapis/api/annotations"
	_ "google.golang.org/genproto/googleapis/api/httpbody"

	"github.com/portico-dev/portico/cmd/portico/app"
)

// cmdLint checks .proto files (or descriptor sets) offline the way the edge
// compiles reflected descriptors: HTTP rules, portico.v1 options, CEL rules,
// buf.validate rules and route conflicts. Every problem (all of them, in
// one run: see lint_check.go) is printed as file:line:column: message, then
// one summary line, "lint: 3 files, 5 services, 21 routes, no problems".
// The exit code is 1 when there is any problem, 2 on bad usage.
func cmdLint(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("portico lint", flag.ContinueOnError)
	fset.Usage = usageFunc(fset, `usage: portico lint [-I DIR]... [--config FILE] PATH...

PATH is a .proto file, a directory (every .proto below it), or a descriptor
set (.pb, .binpb, .desc, .protoset, as protoc --descriptor_set_out
--include_imports writes). google/api, portico/v1 and buf/validate imports
are built in. Without --config, provider names in auth.providers are not
checked against the operator's configuration.

Every problem is printed as file:line:column: message, then a summary line;
the exit code is 1 when there is any problem, 2 on bad usage.

flags:
`)
	var (
		imports    stringList
		configPath = fset.String("config", "", "Portico YAML config: check auth.providers and CORS defaults against it")
	)
	fset.Var(&imports, "I", "import path for .proto files; repeatable (default: the current directory)")
	if code, ok := parseFlags(fset, args, stdout, stderr); !ok {
		return code
	}
	if fset.NArg() == 0 {
		fmt.Fprintln(stderr, "portico lint: no PATH given")
		fset.Usage()
		return 2
	}
	cfg := app.DefaultConfig()
	if *configPath != "" {
		if err := app.LoadConfigFile(*configPath, &cfg); err != nil {
			fmt.Fprintln(stderr, "portico lint:", err)
			return 2
		}
		if err := cfg.Validate(); err != nil {
			fmt.Fprintln(stderr, "portico lint:", err)
			return 2
		}
	}
	if len(imports) == 0 {
		imports = stringList{"."}
	}
	l := &linter{out: stdout, seen: map[string]bool{}}
	files, err := l.load(fset.Args(), imports)
	if err != nil {
		fmt.Fprintln(stderr, "portico lint:", err)
		return 2
	}
	if len(files) > 0 {
		l.check(files, cfg, *configPath == "")
	}
	fmt.Fprintln(stdout, l.summary())
	if l.problems > 0 {
		return 1
	}
	return 0
}

// linter collects the problems of one run and what it looked at.
type linter struct {
	out      io.Writer
	seen     map[string]bool // lines printed: a service's problem is found once per method
	problems int
	// files examined, services and routes (HTTP bindings that compiled)
	// found in them.
	files, services, routes int
}

func (l *linter) report(pos, msg string) {
	line := pos + ": " + msg
	if l.seen[line] {
		return
	}
	l.seen[line] = true
	l.problems++
	fmt.Fprintln(l.out, line)
}

// summary is the last line of a run:
// "lint: 3 files, 5 services, 21 routes, 4 problems".
func (l *linter) summary() string {
	problems := "no problems"
	if l.problems > 0 {
		problems = count(l.problems, "problem")
	}
	return fmt.Sprintf("lint: %s, %s, %s, %s", count(l.files, "file"), count(l.services, "service"), count(l.routes, "route"), problems)
}

func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// position is file:line:column of d in its source (1-based), or the file.
func position(d protoreflect.Descriptor) string {
	fd := d.ParentFile()
	loc := fd.SourceLocations().ByDescriptor(d)
	if loc.StartLine == 0 && loc.StartColumn == 0 && loc.EndLine == 0 {
		return fd.Path()
	}
	return fmt.Sprintf("%s:%d:%d", fd.Path(), loc.StartLine+1, loc.StartColumn+1)
}

var descriptorSetExt = []string{".pb", ".binpb", ".desc", ".protoset"}

// load compiles the .proto paths and reads descriptor sets; syntax and link
// errors are reported (all of them) and their files left out.
func (l *linter) load(paths, imports []string) ([]protoreflect.FileDescriptor, error) {
	var protos []string
	var out []protoreflect.FileDescriptor
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		switch {
		case fi.IsDir():
			err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && strings.HasSuffix(path, ".proto") {
					protos = append(protos, path)
				}
				return err
			})
			if err != nil {
				return nil, err
			}
		case slices.Contains(descriptorSetExt, filepath.Ext(p)):
			fds, err := readDescriptorSet(p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			out = append(out, fds...)
			l.files += len(fds)
		default:
			protos = append(protos, p)
		}
	}
	l.files += len(protos)
	if len(protos) == 0 {
		return out, nil
	}
	names := make([]string, 0, len(protos))
	for _, p := range protos {
		names = append(names, relativeTo(p, imports))
	}
	builtin := protocompile.ResolverFunc(func(path string) (protocompile.SearchResult, error) {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(path)
		if err != nil {
			return protocompile.SearchResult{}, err
		}
		return protocompile.SearchResult{Desc: fd}, nil
	})
	c := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(protocompile.CompositeResolver{
			&protocompile.SourceResolver{ImportPaths: imports}, builtin,
		}),
		SourceInfoMode: protocompile.SourceInfoStandard | protocompile.SourceInfoExtraOptionLocations,
		Reporter: reporter.NewReporter(func(err reporter.ErrorWithPos) error {
			l.report(err.GetPosition().String(), err.Unwrap().Error())
			return nil // keep going: report every error
		}, nil),
	}
	res, err := c.Compile(context.Background(), names...)
	if err != nil && l.problems == 0 {
		return nil, err
	}
	for _, f := range res {
		if f != nil {
			out = append(out, f)
		}
	}
	return out, nil
}

// relativeTo names p as its import path sees it.
func relativeTo(p string, imports []string) string {
	abs, _ := filepath.Abs(p)
	for _, dir := range imports {
		d, _ := filepath.Abs(dir)
		if rel, err := filepath.Rel(d, abs); err == nil && !strings.HasPrefix(rel, "..") {
			return filepath.ToSlash(rel)
		}
	}
	return filepath.ToSlash(p)
}

func readDescriptorSet(path string) ([]protoreflect.FileDescriptor, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	set := &descriptorpb.FileDescriptorSet{}
	if err := proto.Unmarshal(raw, set); err != nil {
		return nil, fmt.Errorf("not a FileDescriptorSet: %w", err)
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, fmt.Errorf("descriptor set does not link (was it written with --include_imports?): %w", err)
	}
	var out []protoreflect.FileDescriptor
	for _, f := range set.GetFile() {
		fd, err := files.FindFileByPath(f.GetName())
		if err == nil {
			out = append(out, fd)
		}
	}
	return out, nil
}

var rejectedService = regexp.MustCompile(`^service (\S+) on `)

// reject reports a service the edge's table builder rejected although the
// per-method checks found nothing: a check lint does not make itself.
func (l *linter) reject(err error, reg *protoregistry.Files) {
	msg := err.Error()
	if m := rejectedService.FindStringSubmatch(msg); m != nil {
		if d, derr := reg.FindDescriptorByName(protoreflect.FullName(m[1])); derr == nil {
			_, rest, _ := strings.Cut(msg, "rejected: ")
			if rest == "" {
				rest = msg
			}
			l.report(position(d), fmt.Sprintf("service %s: %s", m[1], rest))
			return
		}
	}
	l.report("-", msg)
}
