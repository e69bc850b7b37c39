// Package policies turns the portico.v1 options backend teams write in their
// .proto files, together with the operator's `policies` config, into one
// compiled chain per route.
//
// # Where it sits
//
// The edge's table builder calls [Compiler.CompileService] for every
// service and [Compiler.Chain] for every HTTP binding when it builds a
// route table, so an invalid option (an unknown provider, a CEL error, a
// bad rate) rejects that service's routes with a precise error, and the hot
// path only walks prepared stages. The edge runs a route's [Chain] and
// knows none of its stages.
//
// # Where to start
//
// chain.go holds the stage order, written once, with a line on what each
// stage does; each stage lives beside the runtime it drives and the compile
// function that builds it (authn.go, authz.go, ratelimit.go, validate.go,
// identity.go, timeout.go, cache.go, retry.go, cors.go, limits.go). The
// vocabulary the stages share with edge and transcode (the call, the stage
// type, the one error type) is the leaf package policies/chain.
package policies
