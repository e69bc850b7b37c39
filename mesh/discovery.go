package mesh

import "context"

// Discovery is a source of upstreams for the edge's route table: the static
// list (Upstreams) or Consul (Catalog).
type Discovery interface {
	// Targets lists the current upstream names in a stable order. A name
	// that leaves the list takes its routes with it. (The Consul catalog
	// keeps a service that disappeared from Consul listed for
	// mesh.consul.service_grace first.)
	Targets() []string
	// Reflect reflects the targets that need it (all of them with force)
	// and returns one Result per target it tried.
	Reflect(ctx context.Context, force bool) []Result
	// Changed signals that Reflect has new work (nil: never).
	Changed() <-chan struct{}
}

// Result is the outcome of reflecting one target.
type Result struct {
	Target     string
	Reflection *Reflection
	Err        error
}
