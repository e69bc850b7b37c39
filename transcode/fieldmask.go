package transcode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// FieldMask paths as clients send them. proto3 JSON writes a FieldMask as
// one string of comma-separated lowerCamelCase paths ("int32Val,nested.child"),
// while the message holds snake_case field names ("int32_val"); clients of
// grpc-gateway send either. A path is bound in its proto form, and only if it
// is one protojson can write back: otherwise the mask would fail later, when
// the upstream (or Portico, rendering a response) encodes it.

// fieldMaskPath returns the proto form of one FieldMask path given in proto
// (snake_case) or JSON (lowerCamelCase) form.
func fieldMaskPath(p string) (string, error) {
	s := p
	if !strings.Contains(p, "_") {
		s = jsonSnakeCase(p)
	}
	if !protoreflect.FullName(s).IsValid() {
		return "", fmt.Errorf("%q is not a field path (dot-separated field names)", truncate(p, 64))
	}
	if jsonSnakeCase(jsonCamelCase(s)) != s {
		return "", fmt.Errorf("%q mixes snake_case and camelCase, so it has no JSON form", truncate(p, 64))
	}
	return s, nil
}

// jsonCamelCase and jsonSnakeCase are protobuf-go's conversions between a
// field path's proto and JSON forms (internal/strs), which protojson applies
// to FieldMask paths; TestFieldMaskPathMatchesProtojson holds them to it.
func jsonCamelCase(s string) string {
	b := make([]byte, 0, len(s))
	wasUnderscore := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '_' {
			if wasUnderscore && 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			b = append(b, c)
		}
		wasUnderscore = c == '_'
	}
	return string(b)
}

func jsonSnakeCase(s string) string {
	b := make([]byte, 0, len(s)+4)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			b = append(b, '_')
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return string(b)
}

// updateMaskField returns the request's `update_mask` field when the
// binding infers it: a PATCH whose body is one message field of a request
// that has a google.protobuf.FieldMask named update_mask (grpc-gateway's
// rule), unless transcode.infer_update_mask is off.
func updateMaskField(cfg Config, httpMethod string, in protoreflect.MessageDescriptor, body protoreflect.FieldDescriptor) protoreflect.FieldDescriptor {
	if !cfg.InferUpdateMask || httpMethod != "PATCH" || body == nil ||
		body.Kind() != protoreflect.MessageKind || body.IsList() || body.IsMap() || body.Message().FullName() == httpBodyName {
		return nil
	}
	fd := in.Fields().ByName("update_mask")
	if fd == nil || fd == body || fd.IsList() || fd.Kind() != protoreflect.MessageKind || fd.Message().FullName() != "google.protobuf.FieldMask" {
		return nil
	}
	return fd
}

// errMaskShape: the body is not the object the schema says; protojson has
// already accepted it, so this only guards the walk.
var errMaskShape = errors.New("body does not match the message")

// inferMaskPaths returns the sorted field paths (proto names, dotted) that
// the JSON object data sets in a message of type md, as grpc-gateway
// infers an update mask: every key present, descending into objects of
// singular message fields; a repeated, map or well-known-type field, or
// an empty object, ends its path. data has passed the body pre-scan and
// protojson, so it is well-formed and within the depth and element limits;
// the walk reads it once.
func inferMaskPaths(data []byte, md protoreflect.MessageDescriptor) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, nil // null: nothing set
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errMaskShape
	}
	var paths []string
	if err := maskObject(dec, md, "", &paths); err != nil {
		return nil, err
	}
	slices.Sort(paths)
	return paths, nil
}

// maskObject reads the members of an object of message md (its '{' is
// read) up to and including its '}', appending the paths they set.
func maskObject(dec *json.Decoder, md protoreflect.MessageDescriptor, prefix string, paths *[]string) error {
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		fields := md.Fields()
		fd := fields.ByJSONName(key)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(key))
		}
		if tok, err = dec.Token(); err != nil {
			return err
		}
		open, _ := tok.(json.Delim)
		if fd == nil { // an unknown field transcode.allow_unknown_fields dropped
			if err := skipRest(dec, open); err != nil {
				return err
			}
			continue
		}
		path := string(fd.Name())
		if prefix != "" {
			path = prefix + "." + path
		}
		if open == '{' && dec.More() && fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && !isWKT(fd.Message().FullName()) {
			if err := maskObject(dec, fd.Message(), path, paths); err != nil {
				return err
			}
			continue
		}
		*paths = append(*paths, path)
		if err := skipRest(dec, open); err != nil {
			return err
		}
	}
	_, err := dec.Token() // '}'
	return err
}

// skipRest consumes the rest of a value whose first token was open: nothing
// for a scalar, up to the matching close for an object or array.
func skipRest(dec *json.Decoder, open json.Delim) error {
	if open != '{' && open != '[' {
		return nil
	}
	for depth := 1; depth > 0; {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

// isWKT: google.protobuf messages, whose JSON form is not their fields.
func isWKT(name protoreflect.FullName) bool {
	return strings.HasPrefix(string(name), "google.protobuf.")
}
