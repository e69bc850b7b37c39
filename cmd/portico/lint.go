package main

import (
	"context"
	"errors"
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
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	// The imports backend teams' protos need, resolved from the binary.
	_ "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	_ "google.golang.org/genproto/googleapis/api/annotations"
	_ "google.golang.org/genproto/googleapis/api/httpbody"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/policies"
	porticov1 "github.com/portico-dev/portico/protos/portico/v1"
	"github.com/portico-dev/portico/transcode"
)

// cmdLint checks .proto files (or descriptor sets) offline the way the edge
// compiles reflected descriptors: HTTP rules, portico.v1 options, CEL rules,
// buf.validate rules and route conflicts. Every problem is printed as
// file:line:column: message; the exit code is 1 when there is any.
func cmdLint(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("portico lint", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {
		fmt.Fprint(stderr, `usage: portico lint [-I DIR]... [--config FILE] PATH...

PATH is a .proto file, a directory (every .proto below it), or a descriptor
set (.pb, .binpb, .desc, .protoset, as protoc --descriptor_set_out
--include_imports writes). google/api, portico/v1 and buf/validate imports
are built in. Without --config, provider names in auth.providers are not
checked against the operator's configuration.

`)
		fset.PrintDefaults()
	}
	var (
		imports    stringList
		configPath = fset.String("config", "", "Portico YAML config: check auth.providers and CORS defaults against it")
	)
	fset.Var(&imports, "I", "import path for .proto files; repeatable (default: the current directory)")
	if err := fset.Parse(args); err != nil {
		return 2
	}
	if fset.NArg() == 0 {
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
	l := &linter{out: stdout}
	files, err := l.load(fset.Args(), imports)
	if err != nil {
		fmt.Fprintln(stderr, "portico lint:", err)
		return 2
	}
	if len(files) > 0 {
		l.check(files, cfg, *configPath == "")
	}
	if l.problems > 0 {
		fmt.Fprintf(stdout, "%d problem(s)\n", l.problems)
		return 1
	}
	return 0
}

type linter struct {
	out      io.Writer
	problems int
}

func (l *linter) report(pos, msg string) {
	l.problems++
	fmt.Fprintf(l.out, "%s: %s\n", pos, msg)
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

// optionPosition points at d's portico.v1 option statement when the source
// info has it, else at d.
func optionPosition(d protoreflect.Descriptor) string {
	fd := d.ParentFile()
	loc := fd.SourceLocations().ByDescriptor(d)
	optsField := int32(4) // MethodDescriptorProto.options
	if _, ok := d.(protoreflect.ServiceDescriptor); ok {
		optsField = 3 // ServiceDescriptorProto.options
	}
	path := append(slices.Clone(loc.Path), optsField, int32(porticov1.E_Method.TypeDescriptor().Number()))
	if ol := fd.SourceLocations().ByPath(path); ol.StartLine != 0 || ol.StartColumn != 0 {
		return fmt.Sprintf("%s:%d:%d", fd.Path(), ol.StartLine+1, ol.StartColumn+1)
	}
	return position(d)
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
		default:
			protos = append(protos, p)
		}
	}
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
		SourceInfoMode: protocompile.SourceInfoStandard,
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

// check compiles every service as the edge would.
func (l *linter) check(files []protoreflect.FileDescriptor, cfg app.Config, anyProvider bool) {
	reg := &protoregistry.Files{}
	for _, f := range files {
		_ = reg.RegisterFile(f)
	}
	pc := policies.NewCompiler(cfg.Policies, nil, nil, zap.NewNop())
	pc.AnyProvider = anyProvider
	tc := transcode.NewCompiler(cfg.Transcode)
	types := dynamicpb.NewTypes(reg)
	refl := &mesh.Reflection{Upstream: "lint"}
	byName := map[string]protoreflect.ServiceDescriptor{}
	for _, f := range files {
		svcs := f.Services()
		for i := 0; i < svcs.Len(); i++ {
			sd := svcs.Get(i)
			byName[string(sd.FullName())] = sd
			refl.Services = append(refl.Services, &mesh.Service{Name: sd.FullName(), Desc: sd, Upstream: "lint", Types: types})
		}
	}
	t := edge.BuildTable([]*mesh.Reflection{refl}, tc, pc)
	for _, err := range t.Rejected {
		l.reject(err, byName, reg)
	}
}

// reject reports one rejected service at the most precise position known.
func (l *linter) reject(err error, byName map[string]protoreflect.ServiceDescriptor, reg *protoregistry.Files) {
	if oe, ok := errors.AsType[*policies.OptionError](err); ok {
		l.report(optionPosition(oe.Desc), "option "+oe.Option+": "+oe.Err.Error())
		return
	}
	if ce, ok := errors.AsType[*transcode.CompileError](err); ok {
		if d, derr := reg.FindDescriptorByName(protoreflect.FullName(strings.TrimPrefix(strings.ReplaceAll(ce.Method, "/", "."), "."))); derr == nil {
			l.report(position(d), "option "+ce.Option+": "+ce.Err.Error())
			return
		}
	}
	msg := err.Error()
	if m := rejectedService.FindStringSubmatch(msg); m != nil {
		if sd, ok := byName[m[1]]; ok {
			_, rest, _ := strings.Cut(msg, "rejected: ")
			if rest == "" {
				rest = msg
			}
			l.report(position(sd), rest)
			return
		}
	}
	l.report("-", msg)
}
