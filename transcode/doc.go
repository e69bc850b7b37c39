// Package transcode turns REST/JSON calls into gRPC calls and back, driven by
// descriptors obtained at run time.
//
// # Where it sits
//
// On the control path, [Compiler.CompileService] reads the google.api.http
// options of a reflected service and compiles every binding into a [Binding]:
// the parsed path [Template], the field paths its variables, the body and the
// query bind to, and the message types it decodes into. Bindings go into a
// [Router], built once per route table and only read afterwards.
//
// On the data path, the edge matches a request with [Router.Match]; the
// route's chain then asks the binding's [Codec] to decode the HTTP request
// into a request message and to encode the upstream response (or a server
// stream of them) as JSON. No descriptor lookup, template parse or option
// read happens per request.
//
// Errors are gRPC statuses throughout, with the request path's one error
// type (policies/chain.Error) where the HTTP status or headers must say
// more than the code (413, 415, 408); the edge renders them in one place.
package transcode
