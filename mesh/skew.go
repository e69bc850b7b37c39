package mesh

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Version skew: during a rolling deploy a service's instances serve
// different descriptors. The catalog reflects one instance per distinct
// descriptor hash (a group), serves the union of what the groups offer,
// and routes each method only to the instances whose descriptors have it
// with the same signature as the route table (descGroup bits in routing).

// descGroup is what the instances announcing one descriptor hash serve.
type descGroup struct {
	hash string // "" for instances that announce none (reflected as one)
	bit  uint64
	// seq orders groups by age: the lowest Consul CreateIndex of its
	// instances (when the version first registered), the same in every
	// edge and across restarts. Higher is newer.
	seq  uint64
	refl *Reflection
	mds  map[string]protoreflect.MethodDescriptor // by full method
}

// reflectService reflects the descriptor groups of svc that are new (all
// of them with force), drops the groups no instance serves any more, and
// returns the union as svc's reflection.
func (c *Catalog) reflectService(ctx context.Context, svc *catalogService, force bool) Result {
	target := "consul:" + svc.name
	svc.mu.Lock()
	version := svc.version
	present := map[string]bool{}
	since := map[string]uint64{} // each hash's lowest CreateIndex
	for _, e := range svc.serving {
		h := e.Service.Meta[MetaDescriptors]
		if !present[h] || e.Service.CreateIndex < since[h] {
			since[h] = e.Service.CreateIndex
		}
		present[h] = true
	}
	var todo []string
	for h := range present {
		// Instances that announce no hash are one group, reflected again
		// whenever the instances change.
		if force || svc.forced || svc.groups[h] == nil || h == "" {
			todo = append(todo, h)
		}
	}
	svc.mu.Unlock()
	slices.Sort(todo)

	type got struct {
		refl *Reflection
		err  error
	}
	res := make([]got, len(todo))
	var wg sync.WaitGroup
	for i, h := range todo {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, c.cfg.ReflectTimeout)
			defer cancel()
			refl, err := reflectUpstream(withPick(ctx, &pickSel{hash: h, pinned: true}), target, svc.conn)
			res[i] = got{refl, err}
		})
	}
	wg.Wait()

	svc.mu.Lock()
	defer svc.mu.Unlock()
	var errs []error
	for i, h := range todo {
		if res[i].err != nil {
			errs = append(errs, res[i].err)
			continue
		}
		g := svc.groups[h]
		if g == nil || g.refl.Hash != res[i].refl.Hash {
			bit := svc.freeGroupBit()
			if g != nil {
				bit = g.bit
			}
			g = &descGroup{hash: h, bit: bit}
			svc.groups[h] = g
		}
		g.refl, g.mds = res[i].refl, methodsOf(res[i].refl)
	}
	for h, g := range svc.groups {
		// When the version first registered: an old instance registering
		// again later does not make its version newer.
		if s, ok := since[h]; ok && (g.seq == 0 || s < g.seq) {
			g.seq = s
		}
	}
	for h := range svc.groups {
		if !present[h] {
			delete(svc.groups, h)
		}
	}
	groups := make([]*descGroup, 0, len(svc.groups))
	for _, g := range svc.groups {
		if g.bit != 0 {
			groups = append(groups, g)
		}
	}
	if len(groups) == 0 {
		svc.forced = true
		err := errors.Join(errs...)
		if err == nil {
			err = fmt.Errorf("reflection on %s: no instance answered", target)
		}
		return Result{Target: target, Err: err}
	}
	union, methods, notes := unionOf(groups, svc.router)
	for m, g := range svc.methods {
		if _, ok := methods[m]; !ok && g != 0 {
			// Served until now, by no one from now: refused at once (never
			// sent to any instance) until the table without its route is
			// in, and forgotten at the next pass.
			methods[m] = 0
		}
	}
	if len(notes) > 0 && !slices.Equal(notes, svc.unionNotes) {
		c.log.Warn("instances of one service serve different descriptors", zap.String("service", svc.name), zap.Strings("not routed", notes))
	}
	if len(groups) > 1 {
		c.log.Info("instances of one service serve different descriptors: routing each method to the ones that have it",
			zap.String("service", svc.name), zap.Int("descriptor_sets", len(groups)), zap.String("newest", shortHash(groups[0].hash)))
	}
	svc.unionNotes = notes
	svc.methods = methods
	svc.rebuildRoutingLocked()
	if len(errs) > 0 {
		svc.forced = true // try the failed groups again at the next pass
		c.log.Warn("reflection failed for some instances; their descriptors are not routed yet", zap.String("service", svc.name), zap.Error(errors.Join(errs...)))
	} else {
		svc.reflected, svc.forced = version, false
	}
	return Result{Target: target, Reflection: union}
}

// freeGroupBit returns the lowest group bit no group holds; 0 when all
// maxGroups are taken (that group's instances get no reflected method).
func (svc *catalogService) freeGroupBit() uint64 {
	var used uint64
	for _, g := range svc.groups {
		used |= g.bit
	}
	free := ^used & (1<<maxGroups - 1)
	if free == 0 {
		return 0
	}
	return 1 << bits.TrailingZeros64(free)
}

// unionOf returns what the groups serve together, as the route table sees
// it, with the groups serving each method. The base is the group whose
// methods include every other group's (the new version during a deploy
// that adds methods, the old one during one that removes some), or else
// the newest, into whose descriptors the methods only older groups serve
// are merged (merge.go) when their messages are there unchanged and their
// routes are free. A method left out (or served with other messages than
// the base's) is listed in notes. conn carries the union's calls.
func unionOf(groups []*descGroup, conn *trafficConn) (*Reflection, map[string]uint64, []string) {
	slices.SortFunc(groups, func(a, b *descGroup) int {
		if a.seq != b.seq {
			if a.seq > b.seq {
				return -1
			}
			return 1
		}
		return strings.Compare(a.hash, b.hash)
	})
	base := groups[0]
	for _, g := range groups {
		if covers(g, groups) {
			base = g
			break
		}
	}
	union := maps.Clone(base.mds)
	var notes []string
	var adds []protoreflect.MethodDescriptor
	for _, g := range groups {
		for _, m := range slices.Sorted(maps.Keys(g.mds)) {
			md := g.mds[m]
			switch {
			case union[m] == nil:
				if why := mergeable(base.refl, md, adds); why != "" {
					notes = append(notes, m+" (only instances with descriptors "+shortHash(g.hash)+" serve it; "+why+")")
					continue
				}
				adds = append(adds, md)
				union[m] = md
			case !wireCompatible(union[m], md):
				notes = append(notes, m+" on instances with descriptors "+shortHash(g.hash)+" (its messages do not read the newest ones' bytes)")
			}
		}
	}
	refl := base.refl
	if len(adds) > 0 {
		merged, err := mergeMethods(base.refl, adds)
		if err != nil {
			for _, md := range adds {
				m := fullMethod(md)
				delete(union, m)
				notes = append(notes, m+" (not merged into the newest descriptors: "+err.Error()+")")
			}
		} else {
			refl = merged
		}
	}
	methods := make(map[string]uint64, len(union))
	for m, md := range union {
		for _, g := range groups {
			if gmd := g.mds[m]; gmd != nil && wireCompatible(md, gmd) {
				methods[m] |= g.bit
			}
		}
	}
	slices.Sort(notes)
	notes = slices.Compact(notes)
	out := &Reflection{Upstream: refl.Upstream, Hash: refl.Hash}
	for _, s := range refl.Services {
		cp := *s
		cp.Conn = conn
		out.Services = append(out.Services, &cp)
	}
	return out, methods, notes
}

func fullMethod(md protoreflect.MethodDescriptor) string {
	return "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
}

// covers reports whether g has every method of every group.
func covers(g *descGroup, groups []*descGroup) bool {
	for _, o := range groups {
		for m := range o.mds {
			if _, ok := g.mds[m]; !ok {
				return false
			}
		}
	}
	return true
}

func shortHash(h string) string {
	if h == "" {
		return "(unannounced)"
	}
	return h[:min(len(h), 12)]
}

// methodsOf returns every method of refl, by full method name
// ("/pkg.Service/Method").
func methodsOf(refl *Reflection) map[string]protoreflect.MethodDescriptor {
	out := map[string]protoreflect.MethodDescriptor{}
	for _, s := range refl.Services {
		mds := s.Desc.Methods()
		for i := range mds.Len() {
			out[fullMethod(mds.Get(i))] = mds.Get(i)
		}
	}
	return out
}

// wireCompatible reports whether calls made with a's messages can go to
// an instance serving b: the same streaming, and request and response
// messages that read each other's bytes. Every field number both declare
// has the same kind and cardinality (messages compared alike, recursively);
// fields one side lacks are unknown fields to it, as in any compatible
// proto change (a field added, an enum value added, a field renamed).
func wireCompatible(a, b protoreflect.MethodDescriptor) bool {
	if a.IsStreamingClient() != b.IsStreamingClient() || a.IsStreamingServer() != b.IsStreamingServer() {
		return false
	}
	seen := map[[2]protoreflect.FullName]bool{}
	return messagesCompatible(a.Input(), b.Input(), seen) && messagesCompatible(a.Output(), b.Output(), seen)
}

func messagesCompatible(a, b protoreflect.MessageDescriptor, seen map[[2]protoreflect.FullName]bool) bool {
	key := [2]protoreflect.FullName{a.FullName(), b.FullName()}
	if seen[key] {
		return true
	}
	seen[key] = true
	fa, fb := a.Fields(), b.Fields()
	for i := range fa.Len() {
		f := fa.Get(i)
		g := fb.ByNumber(f.Number())
		if g == nil {
			continue
		}
		if f.Kind() != g.Kind() || f.Cardinality() != g.Cardinality() || f.IsMap() != g.IsMap() {
			return false
		}
		if f.Message() != nil && !messagesCompatible(f.Message(), g.Message(), seen) {
			return false
		}
	}
	return true
}

// messageShape fingerprints a message's full shape (every field's number,
// name, kind, cardinality and type, recursively; enums with their values).
func messageShape(m protoreflect.MessageDescriptor) string {
	var b strings.Builder
	writeMessageShape(&b, m, map[protoreflect.FullName]bool{})
	return b.String()
}

func writeMessageShape(b *strings.Builder, m protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) {
	b.WriteString("{" + string(m.FullName()))
	if seen[m.FullName()] {
		b.WriteString("}")
		return
	}
	seen[m.FullName()] = true
	fs := m.Fields()
	for i := range fs.Len() {
		f := fs.Get(i)
		fmt.Fprintf(b, ";%d %s %s %s", f.Number(), f.Name(), f.Kind(), f.Cardinality())
		if o := f.ContainingOneof(); o != nil {
			b.WriteString(" oneof " + string(o.Name()))
		}
		switch {
		case f.IsMap():
			writeMessageShape(b, f.Message(), seen)
		case f.Message() != nil:
			writeMessageShape(b, f.Message(), seen)
		case f.Enum() != nil:
			ev := f.Enum().Values()
			b.WriteString("<" + string(f.Enum().FullName()))
			for j := range ev.Len() {
				fmt.Fprintf(b, ",%s=%d", ev.Get(j).Name(), ev.Get(j).Number())
			}
			b.WriteString(">")
		}
	}
	b.WriteString("}")
}
