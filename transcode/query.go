package transcode

import (
	"fmt"
	"net/url"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Query parameters bind to request fields as http.proto and grpc-gateway
// bind them:
//
//	page_size=5 or pageSize=5   a scalar, enum, bytes (base64) or scalar WKT
//	tags=a&tags=b               a repeated scalar: one value per parameter
//	nested.child.level=3        a field of a singular message, by dotted path
//	labels[k]=v                 an entry of a map with scalar values
//	meta={"a":1}                a google.protobuf.Struct, Value or ListValue, as JSON
//	mask=a,nested.b             a FieldMask, in proto or JSON (lowerCamel) form
//	mask.paths=a&mask.paths=b   the same mask, by its own field
//
// A parameter that names a field it cannot set is a 400 naming the
// parameter: a message as a whole, a repeated message or a map of messages
// (http.proto: not mappable to the query), a map without [key], a path that
// goes through a scalar or a list. A parameter whose name matches no field is
// ignored, as grpc-gateway ignores it (cache busters, tracking parameters),
// and so is one naming a field bound by the path template or the body.

// maxQueryDepth bounds how deep nested query keys (`a.b.c`) are indexed.
const maxQueryDepth = 8

// queryField is one query key compiled to the field path it sets.
type queryField struct {
	path []protoreflect.FieldDescriptor
	name string // the canonical dotted proto name
	// mapKey: the leaf is a map and the parameter named an entry,
	// labels[k]; the key is the text inside the brackets.
	mapKey bool
}

// buildQueryIndex indexes every field reachable from md that a plain
// parameter sets (singular message fields are descended into) under both
// its proto-name and JSON-name dotted keys, leaving out paths that are bound
// elsewhere (by the path template or the body) and everything below them.
// Everything else (map entries, keys through recursive messages or into a
// well-known type's own fields, and every key that is an error) is resolved
// per request by resolveQueryKey.
func buildQueryIndex(md protoreflect.MessageDescriptor, bound map[string]bool) map[string]*queryField {
	idx := map[string]*queryField{}
	var walk func(md protoreflect.MessageDescriptor, prefix []protoreflect.FieldDescriptor, seen map[protoreflect.FullName]bool)
	walk = func(md protoreflect.MessageDescriptor, prefix []protoreflect.FieldDescriptor, seen map[protoreflect.FullName]bool) {
		if len(prefix) >= maxQueryDepth || seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		defer delete(seen, md.FullName())
		fields := md.Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			path := append(append([]protoreflect.FieldDescriptor(nil), prefix...), fd)
			protoName, jsonName := dotted(path)
			if bound[protoName] || fd.IsMap() {
				continue
			}
			if fd.Kind() == protoreflect.MessageKind && !isQueryLeaf(fd.Message().FullName()) {
				if !fd.IsList() {
					walk(fd.Message(), path, seen)
				}
				continue
			}
			if fd.IsList() && fd.Kind() == protoreflect.MessageKind && isJSONWKT(fd.Message().FullName()) {
				continue // a repeated Struct: a list of messages
			}
			qf := &queryField{path: path, name: protoName}
			idx[protoName] = qf
			idx[jsonName] = qf
		}
	}
	walk(md, nil, map[protoreflect.FullName]bool{})
	return idx
}

func dotted(path []protoreflect.FieldDescriptor) (protoName, jsonName string) {
	var p, j strings.Builder
	for i, fd := range path {
		if i > 0 {
			p.WriteByte('.')
			j.WriteByte('.')
		}
		p.WriteString(string(fd.Name()))
		j.WriteString(fd.JSONName())
	}
	return p.String(), j.String()
}

// boundPath returns the dotted proto name of a field path.
func boundPath(path []protoreflect.FieldDescriptor) string {
	p, _ := dotted(path)
	return p
}

// isJSONWKT: the well-known types whose query value is JSON text.
func isJSONWKT(name protoreflect.FullName) bool {
	switch name {
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue":
		return true
	}
	return false
}

// isQueryLeaf: message types a single parameter sets as a whole.
func isQueryLeaf(name protoreflect.FullName) bool { return isScalarWKT(name) || isJSONWKT(name) }

func (c *bindingCodec) decodeQuery(raw string, msg protoreflect.Message) error {
	n := 0
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		if n++; n > c.cfg.MaxQueryParams {
			return invalidArgf("too many query parameters (limit %d)", c.cfg.MaxQueryParams)
		}
		k, v, _ := strings.Cut(kv, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			return invalidArgf("query parameter %q is not valid percent-encoding", truncate(k, 64))
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			return invalidArgf("value of query parameter %q is not valid percent-encoding", truncate(key, 64))
		}
		qf, mapKey := c.query[key], ""
		if qf == nil {
			if qf, mapKey, err = c.resolveQueryKey(key); err != nil {
				return err
			}
			if qf == nil {
				continue // names no field (or a field bound elsewhere)
			}
		}
		if err := c.setQuery(msg, qf, mapKey, key, val); err != nil {
			return err
		}
	}
	return nil
}

// resolveQueryKey resolves a key the index does not hold: nil (ignore it)
// when it names no field or a field bound elsewhere, an error naming the
// parameter when it names a field the query cannot set, else the field
// path (and for labels[k] the map key). Such keys cost a descriptor walk
// per use; the common ones are indexed.
func (c *bindingCodec) resolveQueryKey(key string) (qf *queryField, mapKey string, err error) {
	fieldPart := key
	hasKey := false
	if i := strings.IndexByte(key, '['); i >= 0 {
		if !strings.HasSuffix(key, "]") || i == 0 {
			fieldPart = key[:i]
		} else {
			fieldPart, mapKey, hasKey = key[:i], key[i+1:len(key)-1], true
		}
	}
	md := c.in.Descriptor()
	var path []protoreflect.FieldDescriptor
	var via protoreflect.FieldDescriptor // the field the previous element named
	n := 0
	for name := range strings.SplitSeq(fieldPart, ".") {
		if n++; n > maxQueryDepth*2 {
			return nil, "", invalidArgf("query parameter %q nests deeper than %d fields", truncate(key, 64), maxQueryDepth*2)
		}
		if md == nil {
			return nil, "", invalidArgf("query parameter %q: field %q is %s and has no field %q",
				truncate(key, 64), boundPath(path), describeKind(via), truncate(name, 64))
		}
		fields := md.Fields()
		fd := fields.ByName(protoreflect.Name(name))
		if fd == nil {
			fd = fields.ByJSONName(name)
		}
		if fd == nil {
			return nil, "", nil // names no field: ignored
		}
		path = append(path, fd)
		if c.boundAt(boundPath(path)) {
			return nil, "", nil // the path template or the body sets it
		}
		via, md = fd, nil
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
			md = fd.Message()
		}
	}
	if len(path) == 0 {
		return nil, "", nil
	}
	leaf := path[len(path)-1]
	q := &queryField{path: path, name: boundPath(path)}
	k := truncate(key, 64)
	switch {
	case leaf.IsMap():
		if !hasKey {
			return nil, "", invalidArgf("query parameter %q: field %q is a map; set an entry as %s[key]=value", k, q.name, truncate(fieldPart, 64))
		}
		if vd := leaf.MapValue(); vd.Kind() == protoreflect.MessageKind && !isScalarWKT(vd.Message().FullName()) {
			return nil, "", invalidArgf("query parameter %q: field %q is a map of messages, which the query cannot set (http.proto); send it in a body", k, q.name)
		}
		q.mapKey = true
		return q, mapKey, nil
	case hasKey || strings.IndexByte(key, '[') >= 0:
		return nil, "", invalidArgf("query parameter %q: field %q is not a map, so it takes no [key]", k, q.name)
	case leaf.IsList() && leaf.Kind() == protoreflect.MessageKind && !isScalarWKT(leaf.Message().FullName()):
		return nil, "", invalidArgf("query parameter %q: field %q is a repeated message, which the query cannot set (http.proto); send it in a body", k, q.name)
	case leaf.Kind() == protoreflect.MessageKind && !isQueryLeaf(leaf.Message().FullName()):
		return nil, "", invalidArgf("query parameter %q: field %q is a message; set its fields, as %s.<field>=value", k, q.name, truncate(fieldPart, 64))
	}
	// What remains are keys through recursive messages, or into a
	// well-known type's own fields (mask.paths=a, ts.seconds=5, wi.value=3).
	return q, "", nil
}

// boundAt reports whether the dotted proto path is bound by the path
// template or the body, or lies below such a path.
func (c *bindingCodec) boundAt(name string) bool {
	for b := range c.bound {
		if name == b || strings.HasPrefix(name, b+".") {
			return true
		}
	}
	return false
}

// describeKind names what a field holds, for "has no field" errors.
func describeKind(fd protoreflect.FieldDescriptor) string {
	switch {
	case fd.IsMap():
		return "a map"
	case fd.IsList():
		return "a repeated field"
	case fd.Kind() == protoreflect.MessageKind:
		return "a " + string(fd.Message().FullName())
	}
	return "a " + fd.Kind().String()
}

// setQuery sets one parameter's value. key is the parameter as the client
// wrote it, which every error names.
func (c *bindingCodec) setQuery(msg protoreflect.Message, qf *queryField, mapKey, key, val string) error {
	k := truncate(key, 64)
	for _, fd := range qf.path[:len(qf.path)-1] {
		if od := fd.ContainingOneof(); od != nil {
			if set := msg.WhichOneof(od); set != nil && set != fd {
				return invalidArgf("query parameter %q conflicts with %q: both are in oneof %q", k, set.Name(), od.Name())
			}
		}
		msg = msg.Mutable(fd).Message()
	}
	leaf := qf.path[len(qf.path)-1]
	if qf.mapKey {
		mk, err := parseValue(leaf.MapKey(), mapKey)
		if err != nil {
			return invalidArgf("invalid key %q for query parameter %q: %v", truncate(mapKey, 64), k, err)
		}
		mv, err := parseValue(leaf.MapValue(), val)
		if err != nil {
			return invalidArgf("invalid value %q for query parameter %q: %v", truncate(val, 64), k, err)
		}
		m := msg.Mutable(leaf).Map()
		if m.Has(mk.MapKey()) {
			return invalidArgf("query parameter %q is given more than once", k)
		}
		m.Set(mk.MapKey(), mv)
		return nil
	}
	if leaf.Kind() == protoreflect.MessageKind && isJSONWKT(leaf.Message().FullName()) {
		v, err := c.parseJSONWKT(leaf.Message(), val)
		if err != nil {
			return invalidArgf("invalid value %q for query parameter %q: %v", truncate(val, 64), k, err)
		}
		if msg.Has(leaf) && leaf.ContainingOneof() == nil {
			return invalidArgf("query parameter %q is given more than once", k)
		}
		return setChecked(msg, leaf, v, k)
	}
	if leaf.Name() == "paths" && leaf.ContainingMessage().FullName() == "google.protobuf.FieldMask" {
		p, err := fieldMaskPath(val)
		if err != nil {
			return invalidArgf("invalid value %q for query parameter %q: %v", truncate(val, 64), k, err)
		}
		val = p
	}
	return setPath(msg, qf.path[len(qf.path)-1:], val, key, "query")
}

// setChecked sets a singular leaf, refusing a second member of a oneof.
func setChecked(msg protoreflect.Message, leaf protoreflect.FieldDescriptor, v protoreflect.Value, key string) error {
	if od := leaf.ContainingOneof(); od != nil {
		if set := msg.WhichOneof(od); set != nil && set != leaf {
			return invalidArgf("query parameter %q conflicts with %q: both are in oneof %q", key, set.Name(), od.Name())
		}
	}
	msg.Set(leaf, v)
	return nil
}

// parseJSONWKT parses a Struct, Value or ListValue from its JSON text,
// under the body's depth and element limits.
func (c *bindingCodec) parseJSONWKT(md protoreflect.MessageDescriptor, s string) (protoreflect.Value, error) {
	data := []byte(s)
	if err := scanBody(data, md, nil, c.cfg.MaxJSONDepth, c.cfg.MaxRepeatedElements); err != nil {
		return protoreflect.Value{}, err
	}
	v := dynamicpb.NewMessage(md)
	if err := c.unmarshal.Unmarshal(data, v); err != nil {
		return protoreflect.Value{}, fmt.Errorf("expected JSON for %s: %s", md.Name(), truncate(protoErrText(err), maxErrorDetail))
	}
	return protoreflect.ValueOfMessage(v), nil
}
