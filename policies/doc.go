// Package policies turns the portico.v1 options backend teams write in their
// .proto files, together with the operator's `policies` config, into one
// compiled Policy per route.
//
// # Where it sits
//
// The edge's control loop calls Compiler.Compile for every method when it
// builds a route table, so an invalid option (an unknown provider, a CEL
// error, a bad rate) rejects that service's routes with a precise error and
// the hot path only walks prepared structs. The data plane calls the stages
// of Policy in this order (edge.Handler, written once):
//
//  1. CORS         preflights are answered here and never reach a backend
//  2. body limit   Content-Length beyond the method's limit → 413 unread
//  3. authn        JWT (JWKS) or API key → Caller; 401 + WWW-Authenticate
//  4. scopes       403 before any work is spent
//  5. rate limit   keyed by ip, subject, api key, header or claim → 429
//  6. transcode    the request message is built (edge/transcode)
//  7. scrub        internal fields cleared
//  8. validate     buf.validate constraints → 400 with BadRequest details
//  9. allow_if     CEL over claims, headers and the request → 403
//  10. cache       GET only; identical misses coalesced into one call
//  11. upstream    timeout as gRPC deadline; retries within a budget
//
// Stages 1–5 need only headers, so a request they reject is never decoded.
package policies
