package transcode

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

func isScalarWKT(name protoreflect.FullName) bool {
	switch name {
	case "google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask",
		"google.protobuf.DoubleValue", "google.protobuf.FloatValue",
		"google.protobuf.Int64Value", "google.protobuf.UInt64Value",
		"google.protobuf.Int32Value", "google.protobuf.UInt32Value",
		"google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue":
		return true
	}
	return false
}

// setPath sets the field at path inside msg from its textual form s. For a
// repeated leaf, s is appended. where says where the value came from
// ("path", "query") for the error message.
func setPath(msg protoreflect.Message, path []protoreflect.FieldDescriptor, s, name, where string) error {
	for _, fd := range path[:len(path)-1] {
		msg = msg.Mutable(fd).Message()
	}
	leaf := path[len(path)-1]
	v, err := parseValue(leaf, s)
	if err != nil {
		return badValue(s, name, where, err)
	}
	if leaf.IsList() {
		msg.Mutable(leaf).List().Append(v)
		return nil
	}
	if where == "query" && msg.Has(leaf) && leaf.ContainingOneof() == nil {
		return invalidArgf("field %q (query) is given more than once", name)
	}
	if od := leaf.ContainingOneof(); od != nil {
		if set := msg.WhichOneof(od); set != nil && set != leaf {
			return invalidArgf("field %q (%s) conflicts with %q: both are in oneof %q", name, where, set.Name(), od.Name())
		}
	}
	msg.Set(leaf, v)
	return nil
}

// badValue is the 400 for a path or query value that does not parse.
func badValue(s, name, where string, err error) error {
	return invalidArgf("invalid value %q for field %q (%s): %v", truncate(s, 64), name, where, err)
}

// parseValue parses s as a value of fd's kind (the element kind for lists).
func parseValue(fd protoreflect.FieldDescriptor, s string) (protoreflect.Value, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if !utf8.ValidString(s) {
			return protoreflect.Value{}, fmt.Errorf("not valid UTF-8")
		}
		return protoreflect.ValueOfString(s), nil
	case protoreflect.BoolKind:
		switch s {
		case "true", "True", "TRUE", "1":
			return protoreflect.ValueOfBool(true), nil
		case "false", "False", "FALSE", "0":
			return protoreflect.ValueOfBool(false), nil
		}
		return protoreflect.Value{}, fmt.Errorf("expected a boolean")
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("expected an int32")
		}
		return protoreflect.ValueOfInt32(int32(n)), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("expected an int64")
		}
		return protoreflect.ValueOfInt64(n), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("expected a uint32")
		}
		return protoreflect.ValueOfUint32(uint32(n)), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("expected a uint64")
		}
		return protoreflect.ValueOfUint64(n), nil
	case protoreflect.FloatKind:
		n, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("expected a float")
		}
		return protoreflect.ValueOfFloat32(float32(n)), nil
	case protoreflect.DoubleKind:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("expected a double")
		}
		return protoreflect.ValueOfFloat64(n), nil
	case protoreflect.BytesKind:
		b, err := decodeBase64(s)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("expected base64")
		}
		return protoreflect.ValueOfBytes(b), nil
	case protoreflect.EnumKind:
		ed := fd.Enum()
		if ev := ed.Values().ByName(protoreflect.Name(s)); ev != nil {
			return protoreflect.ValueOfEnum(ev.Number()), nil
		}
		n, err := strconv.ParseInt(s, 10, 32)
		if err == nil && ed.Values().ByNumber(protoreflect.EnumNumber(n)) != nil {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n)), nil
		}
		return protoreflect.Value{}, fmt.Errorf("not a value of enum %s", ed.FullName())
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return parseWKT(fd.Message(), s)
	}
	return protoreflect.Value{}, fmt.Errorf("unsupported field kind %s", fd.Kind())
}

// parseWKT parses the textual form of a Timestamp, Duration, FieldMask or
// wrapper, as in their JSON mapping (a FieldMask is comma-separated paths).
func parseWKT(md protoreflect.MessageDescriptor, s string) (protoreflect.Value, error) {
	m := dynamicpb.NewMessage(md)
	switch md.FullName() {
	case "google.protobuf.FieldMask":
		if !utf8.ValidString(s) {
			return protoreflect.Value{}, fmt.Errorf("not valid UTF-8")
		}
		paths := m.Mutable(md.Fields().ByName("paths")).List()
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				pp, err := fieldMaskPath(p)
				if err != nil {
					return protoreflect.Value{}, err
				}
				paths.Append(protoreflect.ValueOfString(pp))
			}
		}
		return protoreflect.ValueOfMessage(m), nil
	case "google.protobuf.Timestamp", "google.protobuf.Duration":
		quoted := strconv.AppendQuote(nil, s)
		if !utf8.ValidString(s) || strings.ContainsAny(s, "\\\"") {
			return protoreflect.Value{}, fmt.Errorf("expected a %s", md.Name())
		}
		if err := protojson.Unmarshal(quoted, m); err != nil {
			if md.Name() == "Timestamp" {
				return protoreflect.Value{}, fmt.Errorf("expected an RFC 3339 timestamp")
			}
			return protoreflect.Value{}, fmt.Errorf(`expected a duration such as "1.5s"`)
		}
		return protoreflect.ValueOfMessage(m), nil
	}
	if isScalarWKT(md.FullName()) { // wrappers: field 1 "value"
		vfd := md.Fields().ByNumber(1)
		v, err := parseValue(vfd, s)
		if err != nil {
			return protoreflect.Value{}, err
		}
		m.Set(vfd, v)
		return protoreflect.ValueOfMessage(m), nil
	}
	return protoreflect.Value{}, fmt.Errorf("message %s cannot be set from text", md.FullName())
}

func decodeBase64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("invalid base64")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
