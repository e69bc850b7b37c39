package compose

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/reporter"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// maxFrontendFiles bounds what one protos directory may hold.
const maxFrontendFiles = 256

// Schema gathers the files of the services the edge serves into one
// registry for frontend protos to import: one descriptor per path (the
// first upstream's; protocompile refuses two for one path), built against
// the linked files where Portico links the same path (google/api,
// google/protobuf, portico/v1), so that their options and well-known types
// are the edge's own.
func Schema(services []protoreflect.ServiceDescriptor) (*protoregistry.Files, error) {
	reg := &protoregistry.Files{}
	var add func(fd protoreflect.FileDescriptor) error
	add = func(fd protoreflect.FileDescriptor) error {
		if _, err := protoregistry.GlobalFiles.FindFileByPath(fd.Path()); err == nil {
			return nil // linked: resolved from GlobalFiles
		}
		if _, err := reg.FindFileByPath(fd.Path()); err == nil {
			return nil
		}
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			if err := add(imports.Get(i).FileDescriptor); err != nil {
				return err
			}
		}
		built, err := protodesc.NewFile(protodesc.ToFileDescriptorProto(fd), resolverOf(reg))
		if err != nil {
			return fmt.Errorf("%s: %w", fd.Path(), err)
		}
		if err := reg.RegisterFile(built); err != nil {
			return fmt.Errorf("%s: %w", fd.Path(), err)
		}
		return nil
	}
	var errs []error
	for _, sd := range services {
		if err := add(sd.ParentFile()); err != nil {
			errs = append(errs, err)
		}
	}
	return reg, errors.Join(errs...)
}

// resolverOf resolves from reg, then from the linked files.
func resolverOf(reg *protoregistry.Files) protodesc.Resolver {
	return twoFiles{reg}
}

type twoFiles struct{ reg *protoregistry.Files }

func (t twoFiles) FindFileByPath(p string) (protoreflect.FileDescriptor, error) {
	if fd, err := protoregistry.GlobalFiles.FindFileByPath(p); err == nil {
		return fd, nil
	}
	return t.reg.FindFileByPath(p)
}

func (t twoFiles) FindDescriptorByName(n protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := protoregistry.GlobalFiles.FindDescriptorByName(n); err == nil {
		return d, nil
	}
	return t.reg.FindDescriptorByName(n)
}

// Load compiles every .proto file under dir (the frontend protos), each
// on its own so that a broken file leaves the others served, resolving
// imports from dir, then from schema (see Schema), then from the linked
// files. It returns the files that compiled and, for the others, every
// error with its file:line:col.
func Load(ctx context.Context, dir string, schema *protoregistry.Files) ([]protoreflect.FileDescriptor, []error) {
	paths, err := protoFiles(dir)
	if err != nil {
		return nil, []error{err}
	}
	found := func(fd protoreflect.FileDescriptor, err error) (protocompile.SearchResult, error) {
		if err != nil {
			return protocompile.SearchResult{}, err
		}
		return protocompile.SearchResult{Desc: fd}, nil
	}
	var out []protoreflect.FileDescriptor
	var errs []error
	for _, p := range paths {
		var fileErrs []error
		resolve := protocompile.CompositeResolver{
			&protocompile.SourceResolver{ImportPaths: []string{dir}},
			protocompile.ResolverFunc(func(p string) (protocompile.SearchResult, error) { return found(schema.FindFileByPath(p)) }),
			protocompile.ResolverFunc(func(p string) (protocompile.SearchResult, error) {
				return found(protoregistry.GlobalFiles.FindFileByPath(p))
			}),
		}
		c := protocompile.Compiler{
			Resolver: protocompile.WithStandardImports(protocompile.ResolverFunc(func(path string) (protocompile.SearchResult, error) {
				r, err := resolve.FindFileByPath(path)
				if err != nil && path != p {
					// An import: say where it was looked for (a service
					// that declares it may not have registered yet).
					return r, fmt.Errorf("import %q: no service the edge serves has this file (yet), and it is not among the frontend protos", path)
				}
				return r, err
			})),
			SourceInfoMode: protocompile.SourceInfoStandard | protocompile.SourceInfoExtraOptionLocations,
			Reporter: reporter.NewReporter(func(e reporter.ErrorWithPos) error {
				fileErrs = append(fileErrs, e)
				return nil
			}, nil),
		}
		files, err := c.Compile(ctx, p)
		switch {
		case len(fileErrs) > 0:
			errs = append(errs, fileErrs...)
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
		default:
			out = append(out, files[0])
		}
	}
	return out, errs
}

// protoFiles lists the .proto files under dir, relative to it.
func protoFiles(dir string) ([]string, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if skipHidden(p, dir, d) {
			return fs.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".proto") {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if paths = append(paths, filepath.ToSlash(rel)); len(paths) > maxFrontendFiles {
			return fmt.Errorf("more than %d .proto files", maxFrontendFiles)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("frontend protos in %s: %w", dir, err)
	}
	slices.Sort(paths)
	return paths, nil
}

// Fingerprint names the state of the .proto files under dir (paths,
// sizes, modification times): it changes when a file does.
func Fingerprint(dir string) string {
	var b strings.Builder
	n := 0
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && skipHidden(p, dir, d) {
			return fs.SkipDir
		}
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".proto") {
			return nil
		}
		if n++; n > maxFrontendFiles {
			return fs.SkipAll
		}
		if info, err := d.Info(); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", p, info.Size(), info.ModTime().UnixNano())
		}
		return nil
	})
	return b.String()
}

// skipHidden says whether p is a hidden directory below dir (a
// Kubernetes ConfigMap mount keeps its files twice, under ..data and a
// ..timestamp directory: only the visible links are read).
func skipHidden(p, dir string, d fs.DirEntry) bool {
	return d.IsDir() && p != dir && strings.HasPrefix(d.Name(), ".")
}
