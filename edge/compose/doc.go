// Package compose runs a composed route's call stage: one client request
// answered by several upstream calls.
//
// A [Plan] is compiled once, when the route table is built, from a
// frontend method's compose option (issue 15: the option schema and the
// loader of frontend protos come next); [Plan.Run] serves one request.
// Everything travels as protobuf wire bytes, as on a plain route:
//
//   - each call's requests are built from the composite request and the
//     answers of the calls it depends on ([Call.Build]: field mappings or
//     CEL, compiled by the loader);
//   - a call starts as soon as those answers are in, with the deadline
//     min(its own timeout, what is left of the composite's budget);
//   - each answer is written into one field of the composite response, by
//     framing it as that field (a message field given twice is merged on
//     the wire), so merging is typed and cannot collide;
//   - a required call that fails cancels the others and fails the request
//     with its status; an optional one degrades to its fallback (nothing,
//     a literal, or its last good answer within an age) and is reported in
//     [Result.Degraded].
//
// Run returns only after every call it started has returned.
package compose
