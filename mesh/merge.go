package mesh

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Merging a method only older instances serve into the newest descriptors
// (a deploy that drops one method and adds another): the method keeps
// being served, by the old instances, until the last of them leaves.

// mergeable says why md cannot join base's descriptors; "" when it can:
// its service is there, its request and response messages are there with
// the same shape, and none of its HTTP routes may clash with the base's.
func mergeable(base *Reflection, md protoreflect.MethodDescriptor, taken []protoreflect.MethodDescriptor) string {
	svc := baseService(base, md.Parent().FullName())
	if svc == nil {
		return "its service is not in the newest descriptors"
	}
	for _, m := range []protoreflect.MessageDescriptor{md.Input(), md.Output()} {
		mt, err := svc.Types.FindMessageByName(m.FullName())
		if err != nil {
			return "message " + string(m.FullName()) + " is not in the newest descriptors"
		}
		if messageShape(mt.Descriptor()) != messageShape(m) {
			return "message " + string(m.FullName()) + " differs in the newest descriptors"
		}
	}
	mine := routeShapes(md)
	others := slices.Clone(taken) // the methods merged before it, then the base's
	for _, b := range base.Services {
		mds := b.Desc.Methods()
		for i := range mds.Len() {
			others = append(others, mds.Get(i))
		}
	}
	for _, o := range others {
		for _, r := range routeShapes(o) {
			for _, m := range mine {
				if r == m || strings.Contains(r, "**") || strings.Contains(m, "**") {
					return "its route may clash with " + string(o.Name()) + "'s"
				}
			}
		}
	}
	return ""
}

func baseService(base *Reflection, name protoreflect.FullName) *Service {
	for _, s := range base.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// routeShapes lists the HTTP routes of md's google.api.http rule, as
// "VERB /path" with every variable a "*" (a variable with a pattern keeps
// it): two routes with the same shape clash. A route with "**" is taken
// to clash with any (see mergeable): merging is only worth it when safe.
func routeShapes(md protoreflect.MethodDescriptor) []string {
	rule := httpRuleOf(md)
	if rule == nil {
		return nil
	}
	var out []string
	var add func(r *annotations.HttpRule)
	add = func(r *annotations.HttpRule) {
		var verb, path string
		switch p := r.GetPattern().(type) {
		case *annotations.HttpRule_Get:
			verb, path = "GET", p.Get
		case *annotations.HttpRule_Put:
			verb, path = "PUT", p.Put
		case *annotations.HttpRule_Post:
			verb, path = "POST", p.Post
		case *annotations.HttpRule_Delete:
			verb, path = "DELETE", p.Delete
		case *annotations.HttpRule_Patch:
			verb, path = "PATCH", p.Patch
		case *annotations.HttpRule_Custom:
			verb, path = p.Custom.GetKind(), p.Custom.GetPath()
		}
		out = append(out, verb+" "+pathShape(path))
		for _, a := range r.GetAdditionalBindings() {
			add(a)
		}
	}
	add(rule)
	return out
}

// httpRuleOf reads md's google.api.http option, whatever types its options
// were decoded with (reflected ones hold it as a dynamic message): parsed
// again with the linked types.
func httpRuleOf(md protoreflect.MethodDescriptor) *annotations.HttpRule {
	opts := md.Options()
	if opts == nil {
		return nil
	}
	raw, err := proto.Marshal(opts)
	if err != nil {
		return nil
	}
	fresh := &descriptorpb.MethodOptions{}
	if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(raw, fresh); err != nil {
		return nil
	}
	rule, _ := proto.GetExtension(fresh, annotations.E_Http).(*annotations.HttpRule)
	return rule
}

// pathShape replaces each {var} of a template by "*" and each
// {var=pattern} by its pattern.
func pathShape(path string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(path, '{')
		if i < 0 {
			b.WriteString(path)
			return b.String()
		}
		j := strings.IndexByte(path[i:], '}')
		if j < 0 {
			b.WriteString(path)
			return b.String()
		}
		b.WriteString(path[:i])
		v := path[i+1 : i+j]
		if _, pattern, ok := strings.Cut(v, "="); ok {
			b.WriteString(pattern)
		} else {
			b.WriteByte('*')
		}
		path = path[i+j+1:]
	}
}

// mergeMethods returns base with adds appended to their services, in a
// registry of its own (its files rebuilt from base's, the services' files
// importing the adds' messages where needed).
func mergeMethods(base *Reflection, adds []protoreflect.MethodDescriptor) (*Reflection, error) {
	files := map[string]protoreflect.FileDescriptor{}
	for _, s := range base.Services {
		collectFiles(s.Desc.ParentFile(), files)
	}
	protos := make(map[string]*descriptorpb.FileDescriptorProto, len(files))
	for path, fd := range files {
		protos[path] = protodesc.ToFileDescriptorProto(fd)
	}
	h := sha256.New()
	h.Write([]byte(base.Hash))
	for _, md := range adds {
		svc := baseService(base, md.Parent().FullName())
		fdp := protos[svc.Desc.ParentFile().Path()]
		for _, sdp := range fdp.GetService() {
			if sdp.GetName() == string(svc.Desc.Name()) {
				sdp.Method = append(sdp.Method, protodesc.ToMethodDescriptorProto(md))
			}
		}
		for _, m := range []protoreflect.MessageDescriptor{md.Input(), md.Output()} {
			mt, _ := svc.Types.FindMessageByName(m.FullName())
			dep := mt.Descriptor().ParentFile().Path()
			if dep != fdp.GetName() && !slices.Contains(fdp.Dependency, dep) {
				fdp.Dependency = append(fdp.Dependency, dep)
			}
		}
		h.Write([]byte(fullMethod(md)))
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, path := range slices.Sorted(maps.Keys(protos)) {
		set.File = append(set.File, protos[path])
	}
	reg, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, fmt.Errorf("rebuilding the descriptors: %w", err)
	}
	return rebuiltReflection(base, reg, hex.EncodeToString(h.Sum(nil)))
}

// rebuiltReflection is base with its services taken from reg.
func rebuiltReflection(base *Reflection, reg *protoregistry.Files, hash string) (*Reflection, error) {
	types := dynamicpb.NewTypes(reg)
	out := &Reflection{Upstream: base.Upstream, Hash: hash}
	for _, s := range base.Services {
		d, err := reg.FindDescriptorByName(s.Name)
		if err != nil {
			return nil, err
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("%s is not a service", s.Name)
		}
		out.Services = append(out.Services, &Service{Name: s.Name, Desc: sd, Upstream: s.Upstream, Conn: s.Conn, Types: types})
	}
	return out, nil
}
