package policies

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/api/visibility"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	porticov1 "github.com/portico-dev/portico/protos/portico/v1"
)

// PublicView returns sd as clients see it: every field marked
// `(portico.v1.field).internal` removed from every message type the service
// uses. Transcoding against this view makes internal fields unknown to the
// edge: a client that sends one gets the same 400 as for any unknown field
// (or has it dropped with transcode.allow_unknown_fields), a path or query
// binding cannot reach one, and the upstream's value arrives as an unknown
// field on the wire that is never rendered. Nothing is copied per request.
//
// A service whose types have no internal field is returned as is.
func PublicView(sd protoreflect.ServiceDescriptor) (protoreflect.ServiceDescriptor, error) {
	return View(sd, nil)
}

// Audience is the frontend a view is for (edge.frontends).
type Audience struct {
	// Frontend is its name.
	Frontend string
	// Include: it sees only what names it; else all but what is hidden
	// from it.
	Include bool
	// CORS, when set, is the CORS default of the frontend's routes whose
	// method declares none (instead of the operator's policies.cors).
	CORS *CORSConfig
	// Providers, when set, are the credential providers its routes accept
	// when their method names none (instead of every configured one).
	Providers []string
	// Tier, when set, is the rate-limit tier of its callers whose tier
	// claim picks none, in the methods that declare a tier of that name.
	Tier string
}

// SeesMethod says whether the audience is served md (a nil audience is
// served everything): its (portico.v1.method) frontends and hidden_from
// and google.api visibility labels, as View applies them to services.
// Composed methods are filtered with it.
func (a *Audience) SeesMethod(md protoreflect.MethodDescriptor) bool {
	return a.sees(methodLabels(md))
}

// labels are what a field or method says of who sees it.
type labels struct {
	frontends  []string // the include-mode frontends that see it
	hiddenFrom []string // the frontends that never do
	restricted []string // google.api visibility labels: only these do
}

// sees says whether the audience sees an element with these labels; a
// nil audience (no frontends configured) sees everything.
func (a *Audience) sees(l labels) bool {
	switch {
	case a == nil:
		return true
	case slices.Contains(l.hiddenFrom, a.Frontend):
		return false
	case l.restricted != nil && !slices.Contains(l.restricted, a.Frontend):
		return false
	case a.Include:
		return slices.Contains(l.frontends, a.Frontend) || slices.Contains(l.restricted, a.Frontend)
	}
	return true
}

// View returns sd as the audience sees it: the public view, without the
// fields and methods that are not the audience's (see
// (portico.v1.field).frontends and (portico.v1.method).frontends). Fields
// of google.* types (well-known types, google.api, google.rpc) are never
// removed. What the view does not have is unknown to the codecs: never
// rendered, refused in requests. The view is built when the table is; a
// service with nothing to remove is returned as is. A nil audience gives
// the public view.
func View(sd protoreflect.ServiceDescriptor, a *Audience) (protoreflect.ServiceDescriptor, error) {
	views, _, err := Views([]protoreflect.ServiceDescriptor{sd}, a)
	if err != nil {
		return nil, err
	}
	return views[0], nil
}

// Views is View for every service of one upstream at once, in one set of
// files, with the types of that set: what resolves the message types of
// google.protobuf.Any payloads, so that a message packed in an Any is
// rendered (and read) as the audience sees it too, never with its
// internal or hidden fields. With nothing to remove the services come
// back as they are and types is nil: the upstream's own types apply.
func Views(sds []protoreflect.ServiceDescriptor, a *Audience) (views []protoreflect.ServiceDescriptor, types *dynamicpb.Types, err error) {
	files := map[string]protoreflect.FileDescriptor{}
	var order []protoreflect.FileDescriptor
	var walk func(fd protoreflect.FileDescriptor)
	walk = func(fd protoreflect.FileDescriptor) {
		if _, ok := files[fd.Path()]; ok {
			return
		}
		files[fd.Path()] = fd
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			walk(imports.Get(i).FileDescriptor)
		}
		order = append(order, fd)
	}
	own := map[string][]protoreflect.ServiceDescriptor{} // file path → its services in sds, once each
	seen := map[protoreflect.FullName]bool{}
	for _, sd := range sds {
		walk(sd.ParentFile())
		if !seen[sd.FullName()] {
			seen[sd.FullName()] = true
			own[sd.ParentFile().Path()] = append(own[sd.ParentFile().Path()], sd)
		}
	}

	set := &descriptorpb.FileDescriptorSet{}
	hidden := 0
	for _, fd := range order {
		fdp := protodesc.ToFileDescriptorProto(fd)
		moved := renumbering{}
		if !strings.HasPrefix(string(fd.Package()), "google.") || a == nil {
			msgs := fd.Messages()
			for i := 0; i < msgs.Len(); i++ {
				hidden += strip(msgs.Get(i), fdp.MessageType[i], a, []int32{fileMessages, int32(i)}, moved)
			}
		}
		for _, sd := range own[fd.Path()] {
			if a == nil {
				break
			}
			sp := fdp.Service[sd.Index()]
			methods := sd.Methods()
			keep := sp.Method[:0]
			to := make([]int32, methods.Len())
			for i := 0; i < methods.Len(); i++ {
				to[i] = -1
				if a.sees(methodLabels(methods.Get(i))) {
					to[i] = int32(len(keep))
					keep = append(keep, sp.Method[i])
				} else {
					hidden++
				}
			}
			sp.Method = keep
			moved.set([]int32{fileServices, int32(sd.Index()), serviceMethods}, to)
		}
		moved.apply(fdp.SourceCodeInfo)
		set.File = append(set.File, fdp)
	}
	if hidden == 0 {
		return sds, nil, nil
	}
	reg, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, nil, fmt.Errorf("building the view without internal and hidden fields: %w", err)
	}
	for _, sd := range sds {
		d, err := reg.FindDescriptorByName(sd.FullName())
		if err != nil {
			return nil, nil, err
		}
		views = append(views, d.(protoreflect.ServiceDescriptor))
	}
	return views, dynamicpb.NewTypes(reg), nil
}

// strip removes from mp (the proto of md, at path in its file) and its
// nested messages the internal fields and those the audience does not
// see, returning how many it removed. A oneof left without fields goes
// too. What moved is recorded in moved, for the file's comments.
func strip(md protoreflect.MessageDescriptor, mp *descriptorpb.DescriptorProto, a *Audience, path []int32, moved renumbering) int {
	n := 0
	fields := md.Fields()
	keep := mp.Field[:0]
	to := make([]int32, fields.Len())
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		to[i] = -1
		if fp := fieldPolicy(fd); fp.GetInternal() || !a.sees(fieldLabels(fd, fp)) {
			n++
			continue
		}
		to[i] = int32(len(keep))
		keep = append(keep, mp.Field[i])
	}
	mp.Field = keep
	if n > 0 {
		moved.set(append(slices.Clip(path), messageFields), to)
	}
	if n > 0 && len(mp.OneofDecl) > 0 {
		// Renumber the oneofs that still have a field, in their declared
		// order (synthetic oneofs of proto3 optional fields come after the
		// others, as descriptors require).
		used := make([]bool, len(mp.OneofDecl))
		for _, f := range mp.Field {
			if f.OneofIndex != nil {
				used[f.GetOneofIndex()] = true
			}
		}
		oneofs := make([]int32, len(mp.OneofDecl)) // old index → new, -1: gone
		var decls []*descriptorpb.OneofDescriptorProto
		for i, d := range mp.OneofDecl {
			oneofs[i] = -1
			if used[i] {
				oneofs[i] = int32(len(decls))
				decls = append(decls, d)
			}
		}
		for _, f := range mp.Field {
			if f.OneofIndex != nil {
				idx := oneofs[f.GetOneofIndex()]
				f.OneofIndex = &idx
			}
		}
		moved.set(append(slices.Clip(path), messageOneofs), oneofs)
		mp.OneofDecl = decls
	}
	nested := md.Messages()
	for i := 0; i < nested.Len(); i++ {
		n += strip(nested.Get(i), mp.NestedType[i], a, append(slices.Clip(path), messageNested, int32(i)), moved)
	}
	return n
}

// Source paths of descriptor.proto: the field numbers of the lists a view
// takes elements out of.
const (
	fileMessages   = 4 // FileDescriptorProto.message_type
	fileServices   = 6 // FileDescriptorProto.service
	messageFields  = 2 // DescriptorProto.field
	messageNested  = 3 // DescriptorProto.nested_type
	messageOneofs  = 8 // DescriptorProto.oneof_decl
	serviceMethods = 2 // ServiceDescriptorProto.method
)

// renumbering is where the elements of the lists a view shortened went,
// by the list's source path (its original indexes): new index, or -1 for
// removed.
type renumbering map[string][]int32

func pathKey(p []int32) string {
	var b strings.Builder
	for _, n := range p {
		b.WriteString(strconv.Itoa(int(n)))
		b.WriteByte('.')
	}
	return b.String()
}

func (r renumbering) set(list []int32, to []int32) { r[pathKey(list)] = to }

// apply rewrites the file's source locations (comments, positions) to the
// shortened lists, dropping those of removed elements, so that each
// comment stays with its element.
func (r renumbering) apply(info *descriptorpb.SourceCodeInfo) {
	if len(r) == 0 || info == nil {
		return
	}
	keep := info.Location[:0]
	for _, loc := range info.Location {
		p := slices.Clone(loc.Path)
		removed := false
		// Each list step is (field number, index): look its list up by
		// the original path before it.
		for k := 0; k+1 < len(loc.Path); k += 2 {
			to, ok := r[pathKey(loc.Path[:k+1])]
			if !ok {
				continue
			}
			if i := loc.Path[k+1]; int(i) < len(to) {
				if to[i] < 0 {
					removed = true
					break
				}
				p[k+1] = to[i]
			}
		}
		if !removed {
			loc.Path = p
			keep = append(keep, loc)
		}
	}
	info.Location = keep
}

// fieldLabels are what a field says of who sees it: its
// (portico.v1.field) frontends and hidden_from, its
// google.api.field_visibility labels.
func fieldLabels(fd protoreflect.FieldDescriptor, fp *porticov1.FieldPolicy) labels {
	l := labels{frontends: lower(fp.GetFrontends()), hiddenFrom: lower(fp.GetHiddenFrom())}
	if r, _, _ := Extension[*visibility.VisibilityRule](fd.Options(), visibility.E_FieldVisibility); r != nil {
		l.restricted = restriction(r.GetRestriction())
	}
	return l
}

// methodLabels are what a method (or its service) says of who serves it:
// the portico.v1 policy's frontends and hidden_from, the google.api method
// or api visibility labels.
func methodLabels(md protoreflect.MethodDescriptor) labels {
	pol, _, _ := declared(md)
	l := labels{frontends: lower(pol.GetFrontends()), hiddenFrom: lower(pol.GetHiddenFrom())}
	if r, _, _ := Extension[*visibility.VisibilityRule](md.Options(), visibility.E_MethodVisibility); r != nil {
		l.restricted = restriction(r.GetRestriction())
	}
	if r, _, _ := Extension[*visibility.VisibilityRule](md.Parent().Options(), visibility.E_ApiVisibility); r != nil {
		l.restricted = append(l.restricted, restriction(r.GetRestriction())...)
	}
	return l
}

func restriction(s string) []string {
	out := []string{} // restricted, even to no one
	for l := range strings.SplitSeq(s, ",") {
		if l = strings.ToLower(strings.TrimSpace(l)); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func lower(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToLower(s)
	}
	return out
}
