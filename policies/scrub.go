package policies

import (
	"google.golang.org/protobuf/reflect/protoreflect"
)

// scrubPlan clears the internal fields of one message type and of every
// message reachable from it. Plans are built once per type; a recursive type
// points at its own plan.
type scrubPlan struct {
	clear  []protoreflect.FieldDescriptor
	nested []protoreflect.FieldDescriptor // message fields (singular, list, map values) to walk
	plans  []*scrubPlan                   // plan of each nested field's type
}

// planScrub returns the plan for md, or nil when no internal field is
// reachable from it.
func planScrub(md protoreflect.MessageDescriptor) *scrubPlan {
	memo := map[protoreflect.FullName]*scrubPlan{}
	reach := map[protoreflect.FullName]bool{}
	p := buildScrub(md, memo, reach, map[protoreflect.FullName]bool{})
	if p == nil || !reach[md.FullName()] {
		return nil
	}
	return p
}

// buildScrub fills memo; reach records whether an internal field is
// reachable from a type (computed conservatively through cycles).
func buildScrub(md protoreflect.MessageDescriptor, memo map[protoreflect.FullName]*scrubPlan, reach, busy map[protoreflect.FullName]bool) *scrubPlan {
	if p, ok := memo[md.FullName()]; ok {
		return p
	}
	p := &scrubPlan{}
	memo[md.FullName()] = p
	busy[md.FullName()] = true
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fp := fieldPolicy(fd); fp.GetInternal() {
			p.clear = append(p.clear, fd)
			reach[md.FullName()] = true
			continue
		}
		sub := fd.Message()
		if fd.IsMap() {
			sub = fd.MapValue().Message()
		}
		if sub == nil {
			continue
		}
		sp := buildScrub(sub, memo, reach, busy)
		if reach[sub.FullName()] || busy[sub.FullName()] {
			p.nested = append(p.nested, fd)
			p.plans = append(p.plans, sp)
			if reach[sub.FullName()] {
				reach[md.FullName()] = true
			}
		}
	}
	busy[md.FullName()] = false
	return p
}

// apply clears the internal fields of m in place.
func (p *scrubPlan) apply(m protoreflect.Message) {
	if p == nil || !m.IsValid() {
		return
	}
	for _, fd := range p.clear {
		m.Clear(fd)
	}
	for i, fd := range p.nested {
		if !m.Has(fd) {
			continue
		}
		sp := p.plans[i]
		switch {
		case fd.IsMap():
			m.Get(fd).Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool {
				sp.apply(v.Message())
				return true
			})
		case fd.IsList():
			l := m.Get(fd).List()
			for j := 0; j < l.Len(); j++ {
				sp.apply(l.Get(j).Message())
			}
		default:
			sp.apply(m.Get(fd).Message())
		}
	}
}
