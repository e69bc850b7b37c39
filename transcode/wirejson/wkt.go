package wirejson

import "google.golang.org/protobuf/reflect/protoreflect"

// wktKind names the well-known types with a JSON mapping of their own.
type wktKind uint8

const (
	wktNone wktKind = iota
	wktAny
	wktTimestamp
	wktDuration
	wktWrapper
	wktStruct
	wktListValue
	wktValue
	wktFieldMask
	wktEmpty
)

// wktOf classifies md: the encoder and the decoder both switch on it.
func wktOf(md protoreflect.MessageDescriptor) wktKind {
	if md.FullName().Parent() != "google.protobuf" {
		return wktNone
	}
	switch md.Name() {
	case "Any":
		return wktAny
	case "Timestamp":
		return wktTimestamp
	case "Duration":
		return wktDuration
	case "BoolValue", "Int32Value", "Int64Value", "UInt32Value", "UInt64Value",
		"FloatValue", "DoubleValue", "StringValue", "BytesValue":
		return wktWrapper
	case "Struct":
		return wktStruct
	case "ListValue":
		return wktListValue
	case "Value":
		return wktValue
	case "FieldMask":
		return wktFieldMask
	case "Empty":
		return wktEmpty
	}
	return wktNone
}
