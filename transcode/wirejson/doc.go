// Package wirejson is Portico's fast codec between protobuf wire bytes and
// proto3 JSON, compiled once per message type and working without an
// intermediate message:
//
//   - wire → JSON, for responses: an [Encoder] renders the wire bytes of a
//     message exactly as protojson.MarshalOptions{EmitUnpopulated: true}
//     renders the same message (as a JSON value; the output is compact and
//     stable).
//   - JSON → wire, for requests: the decoder parses a JSON body straight into
//     wire bytes.
//
// protojson over dynamicpb stays the reference, and the fallback: the
// constructors return an error (wrapping [ErrUnsupported]) for what they
// decline, and the caller then uses protojson for that message type.
package wirejson
