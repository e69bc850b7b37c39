// Package chain is the vocabulary of Portico's request path, shared by the
// packages that meet on it: edge runs a route's chain, policies compiles
// it, transcode decodes and renders for it.
//
//   - [Call] is one request on its way through a route's chain; [Stage] is
//     one step of the chain (it gets the call and [Next]); [Build] links an
//     ordered list of stages into one [Next], once per route.
//   - [Error] is the one error type of the request path: a gRPC status,
//     plus an HTTP status and headers only where the code mapping cannot
//     say it (405 + Allow, 408, 413, 415, 431, WWW-Authenticate,
//     Retry-After). Everything else is a plain gRPC status error.
//   - [WriteError] renders any error as google.rpc.Status JSON and
//     [WriteResponse] writes every successful unary answer: one writer each.
//
// The package imports no other Portico package.
package chain
