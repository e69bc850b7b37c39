// Package edge is Portico's HTTP front: the server, the route table, the
// request pipeline and the control loop that keeps the table current.
//
// # Request path
//
// [Server] accepts HTTP/1.1 and HTTP/2 → [Handler.ServeHTTP] loads the
// current [RouteTable] (one atomic load) → Router.Match → the route's Codec
// decodes the request → the upstream call (unary or server-streaming) → the
// Codec encodes the response. Every error returns to ServeHTTP, which renders
// it once as google.rpc.Status JSON and logs it once.
//
// # Control path
//
// [Builder] reflects the upstreams (package mesh), compiles every service
// (package transcode) into a new RouteTable and swaps it in atomically. A
// service whose rules do not compile, or that conflicts with a route another
// service already holds, is left out with one log line naming the file,
// method and option; other services are unaffected. If reflection fails, the
// last good services of that upstream keep being served.
package edge
