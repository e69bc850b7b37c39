package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/edge/compose"
	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/policies"
	porticov1 "github.com/portico-dev/portico/protos/portico/v1"
	"github.com/portico-dev/portico/transcode"
)

// The edge rejects a whole service at its first problem, which is right
// for serving and wrong for a linter: a run would show one problem per
// service. So lint compiles one method at a time, with the edge's own
// compilers, in a view of the service that holds only that method; when a
// binding or an option fails, it is reported, taken out of the view, and
// the method compiled again, until it compiles. Route conflicts are then
// checked across every binding that compiled. Last, the edge's table
// builder runs over the files as they are, so that lint never passes what
// serve would reject.

// maxAttempts bounds the compilations of one method (each one takes out a
// failed binding or option).
const maxAttempts = 64

// check compiles every method of every service in files.
func (l *linter) check(files []protoreflect.FileDescriptor, cfg app.Config, anyProvider bool) {
	reg := &protoregistry.Files{} // the files as loaded: positions
	for _, f := range files {
		_ = reg.RegisterFile(f)
	}
	v := newViews(files)
	pc := policies.NewCompiler(cfg.Policies, nil, nil, zap.NewNop())
	pc.AnyProvider = anyProvider
	tc := transcode.NewCompiler(cfg.Transcode)
	types := dynamicpb.NewTypes(v.deps)
	refl := &mesh.Reflection{Upstream: "lint"}
	bad := map[protoreflect.FullName]bool{} // services with a problem
	claimed := map[string]*transcode.Binding{}
	for _, f := range files {
		svcs := f.Services()
		for i := 0; i < svcs.Len(); i++ {
			sd := svcs.Get(i)
			l.services++
			refl.Services = append(refl.Services, &mesh.Service{Name: sd.FullName(), Desc: sd, Upstream: "lint", Types: types})
			before := l.problems
			mds := sd.Methods()
			for j := 0; j < mds.Len(); j++ {
				md := mds.Get(j)
				for _, b := range l.checkMethod(v, md, tc, pc, types) {
					l.routes++
					key := b.HTTPMethod + " " + b.Template.Shape()
					if prev := claimed[key]; prev != nil {
						l.report(optionPosition(md, httpRuleField), fmt.Sprintf("method %s: route conflict: %s %s is claimed by %s and %s",
							md.FullName(), b.HTTPMethod, b.Template.Shape(), prev, b))
						continue
					}
					claimed[key] = b
				}
			}
			if l.problems > before {
				bad[sd.FullName()] = true
			}
		}
	}
	t := edge.BuildTable([]*mesh.Reflection{refl}, tc, pc, nil)
	for _, err := range t.Rejected {
		if m := rejectedService.FindStringSubmatch(err.Error()); m != nil && bad[protoreflect.FullName(m[1])] {
			continue // reported above, precisely
		}
		l.reject(err, reg)
	}
	l.checkCompositions(files, pc)
}

// checkCompositions compiles every composed method (a frontend proto's,
// with a (portico.v1.compose) option) as the edge does, against the
// methods of the other services among the files linted: each problem with
// its position.
func (l *linter) checkCompositions(files []protoreflect.FileDescriptor, pc *policies.Compiler) {
	methods := map[string]protoreflect.MethodDescriptor{}
	type composed struct {
		md  protoreflect.MethodDescriptor
		opt *porticov1.Compose
	}
	var todo []composed
	for _, f := range files {
		for i := 0; i < f.Services().Len(); i++ {
			sd := f.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				opt, err := compose.Option(md)
				switch {
				case err != nil:
					l.report(position(md), fmt.Sprintf("method %s: option (portico.v1.compose): %v", md.FullName(), err))
				case opt != nil:
					todo = append(todo, composed{md, opt})
				default:
					methods[string(sd.FullName())+"/"+string(md.Name())] = md
				}
			}
		}
	}
	env := compose.Env{LastGood: pc.Answers(), Backend: func(m string) (compose.Backend, bool) {
		md, ok := methods[m]
		// Lint calls nothing: the plan is compiled, not run.
		return compose.Backend{Desc: md, Invoke: func(context.Context, []byte) ([]byte, error) { return nil, nil }}, ok
	}}
	for _, c := range todo {
		if _, err := compose.Compile(c.md, c.opt, env); err != nil {
			var ce *compose.Error
			if errors.As(err, &ce) {
				l.report(ce.Pos, fmt.Sprintf("method %s: option (portico.v1.compose)%s: %v", ce.Method, ce.Option, ce.Err))
			} else {
				l.report(position(c.md), err.Error())
			}
		}
	}
}

// methodView is what lint changes in one method's view: the options of
// the method and of its service, re-read with the generated types.
type methodView struct {
	md      protoreflect.MethodDescriptor
	svcOpts *descriptorpb.ServiceOptions
	mOpts   *descriptorpb.MethodOptions
	// placeholders are the bindings (0: the rule, i+1: additional_bindings[i])
	// replaced after they failed; their routes are not real.
	placeholders map[int]bool
}

// checkMethod reports every problem of md and returns its bindings that
// compiled.
func (l *linter) checkMethod(v *views, md protoreflect.MethodDescriptor, tc *transcode.Compiler, pc *policies.Compiler, types *dynamicpb.Types) []*transcode.Binding {
	mv := &methodView{
		md:           md,
		svcOpts:      typed(md.Parent().Options(), &descriptorpb.ServiceOptions{}),
		mOpts:        typed(md.Options(), &descriptorpb.MethodOptions{}),
		placeholders: map[int]bool{},
	}
	var bindings []*transcode.Binding
	for range maxAttempts {
		sd, err := v.public(mv)
		if err != nil {
			l.report(position(md.Parent()), fmt.Sprintf("service %s: %v", md.Parent().FullName(), err))
			return nil
		}
		methods, err := tc.CompileService(sd, types)
		if err == nil {
			if len(methods) > 0 {
				for _, b := range methods[0].Bindings {
					if !mv.placeholders[b.Index] {
						bindings = append(bindings, b)
					}
				}
			}
			break
		}
		ce, ok := errors.AsType[*transcode.CompileError](err)
		if !ok {
			l.report(position(md), fmt.Sprintf("method %s: %v", md.FullName(), err))
			break
		}
		l.report(optionPosition(md, httpRuleField), fmt.Sprintf("method %s: option %s: %v", md.FullName(), ce.Option, ce.Err))
		if !mv.replaceBinding(ce.Option) {
			break
		}
	}
	for range maxAttempts {
		sd, err := v.public(mv)
		if err != nil {
			break // reported above
		}
		if _, err = pc.CompileService(sd); err == nil {
			break
		}
		oe, ok := errors.AsType[*policies.OptionError](err)
		if !ok {
			l.report(position(md), fmt.Sprintf("method %s: %v", md.FullName(), err))
			break
		}
		d := original(oe.Desc, md)
		kind := "method"
		if _, ok := d.(protoreflect.ServiceDescriptor); ok {
			kind = "service"
		}
		l.report(optionPosition(d, porticoField), fmt.Sprintf("%s %s: option %s: %v", kind, d.FullName(), oe.Option, oe.Err))
		if !mv.dropPolicy(oe) {
			break
		}
	}
	return bindings
}

// original is the loaded descriptor (its position is known) that d of a
// view of md stands for: md or its service.
func original(d protoreflect.Descriptor, md protoreflect.MethodDescriptor) protoreflect.Descriptor {
	if d.FullName() == md.Parent().FullName() {
		return md.Parent()
	}
	return md
}

// placeholderRule compiles to a route nobody sees; it stands in for a
// binding that failed, so that the indices of the others do not change.
func placeholderRule() *annotations.HttpRule {
	return &annotations.HttpRule{Pattern: &annotations.HttpRule_Custom{Custom: &annotations.CustomHttpPattern{Kind: "LINT", Path: "/portico-lint"}}}
}

// replaceBinding swaps the binding named by opt ("google.api.http" or
// "google.api.http.additional_bindings[N]") for a placeholder; false when
// that made no progress.
func (mv *methodView) replaceBinding(opt string) bool {
	idx := 0
	if rest, ok := strings.CutPrefix(opt, "google.api.http.additional_bindings["); ok {
		n, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
		if err != nil {
			return false
		}
		idx = n + 1
	} else if opt != "google.api.http" {
		return false
	}
	if mv.placeholders[idx] {
		return false
	}
	mv.placeholders[idx] = true
	rule, _ := proto.GetExtension(mv.mOpts, annotations.E_Http).(*annotations.HttpRule)
	if rule == nil {
		rule = &annotations.HttpRule{}
	}
	rule = proto.CloneOf(rule)
	if idx == 0 {
		extra := rule.GetAdditionalBindings()
		rule = placeholderRule()
		rule.AdditionalBindings = extra
	} else if idx-1 < len(rule.GetAdditionalBindings()) {
		rule.AdditionalBindings[idx-1] = placeholderRule()
	} else {
		return false
	}
	proto.SetExtension(mv.mOpts, annotations.E_Http, rule)
	return true
}

// dropPolicy takes the portico.v1 option field that failed out of the
// view: "(portico.v1.method).cache.ttl" drops the method's cache,
// "(portico.v1.service)" the whole service option. false when that made
// no progress ((buf.validate), or a field not set there).
func (mv *methodView) dropPolicy(oe *policies.OptionError) bool {
	var opts proto.Message = mv.mOpts
	xt := porticov1.E_Method
	if _, ok := oe.Desc.(protoreflect.ServiceDescriptor); ok {
		opts, xt = mv.svcOpts, porticov1.E_Service
	}
	field, ok := strings.CutPrefix(oe.Option, "("+string(xt.TypeDescriptor().FullName())+")")
	if !ok || !proto.HasExtension(opts, xt) {
		return false
	}
	field = strings.TrimPrefix(field, ".")
	if field == "" {
		proto.ClearExtension(opts, xt)
		return true
	}
	pol, _ := proto.GetExtension(opts, xt).(*porticov1.Policy)
	top, _, _ := strings.Cut(field, ".")
	fd := pol.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(top))
	if fd == nil || !pol.ProtoReflect().Has(fd) {
		return false
	}
	pol = proto.CloneOf(pol)
	pol.ProtoReflect().Clear(fd)
	proto.SetExtension(opts, xt, pol)
	return true
}

// typed re-reads options with the generated types of google.api.http and
// portico.v1 registered, whatever the descriptor's source decoded them as
// (known, dynamic or unknown fields), into a fresh message.
func typed[T proto.Message](opts proto.Message, into T) T {
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(opts)
	if err == nil {
		_ = proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}.Unmarshal(raw, into)
	}
	return into
}

// views builds one-method views of services from the loaded files.
type views struct {
	deps   *protoregistry.Files // every loaded file and its imports
	protos map[string]*descriptorpb.FileDescriptorProto
}

func newViews(files []protoreflect.FileDescriptor) *views {
	v := &views{deps: &protoregistry.Files{}, protos: map[string]*descriptorpb.FileDescriptorProto{}}
	withImports(files, func(fd protoreflect.FileDescriptor) { _ = v.deps.RegisterFile(fd) })
	return v
}

// withImports calls fn once for every file of files and everything they
// import, each file after its imports.
func withImports(files []protoreflect.FileDescriptor, fn func(protoreflect.FileDescriptor)) {
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		fn(fd)
	}
	for _, f := range files {
		add(f)
	}
}

// public is the view of mv's service that holds only mv's method, with
// mv's options, as clients see it (policies.PublicView), as the edge
// compiles it.
func (v *views) public(mv *methodView) (protoreflect.ServiceDescriptor, error) {
	sd := mv.md.Parent().(protoreflect.ServiceDescriptor)
	fd := sd.ParentFile()
	base, ok := v.protos[fd.Path()]
	if !ok {
		base = protodesc.ToFileDescriptorProto(fd)
		base.SourceCodeInfo = nil // positions come from the loaded files
		v.protos[fd.Path()] = base
	}
	fdp := proto.CloneOf(base)
	sp := fdp.GetService()[sd.Index()]
	mp := sp.GetMethod()[mv.md.Index()]
	mp.Options = proto.CloneOf(mv.mOpts)
	sp.Method = []*descriptorpb.MethodDescriptorProto{mp}
	sp.Options = proto.CloneOf(mv.svcOpts)
	view, err := protodesc.NewFile(fdp, v.deps)
	if err != nil {
		return nil, fmt.Errorf("lint could not isolate method %s (please report this): %w", mv.md.Name(), err)
	}
	return policies.PublicView(view.Services().Get(sd.Index()))
}

// Source paths of the option statements positions point at.
var (
	httpRuleField = annotations.E_Http.TypeDescriptor().Number()
	porticoField  = porticov1.E_Method.TypeDescriptor().Number() // the same number on services
)

// optionPosition points at d's option statement with extension number
// field when the source info has it, else at d.
func optionPosition(d protoreflect.Descriptor, field protoreflect.FieldNumber) string {
	fd := d.ParentFile()
	loc := fd.SourceLocations().ByDescriptor(d)
	optsField := int32(4) // MethodDescriptorProto.options
	if _, ok := d.(protoreflect.ServiceDescriptor); ok {
		optsField = 3 // ServiceDescriptorProto.options
	}
	path := append(slices.Clone(loc.Path), optsField, int32(field))
	if ol := fd.SourceLocations().ByPath(path); ol.StartLine != 0 || ol.StartColumn != 0 {
		return fmt.Sprintf("%s:%d:%d", fd.Path(), ol.StartLine+1, ol.StartColumn+1)
	}
	return position(d)
}
