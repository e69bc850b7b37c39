package compose

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/policies"
	porticov1 "github.com/portico-dev/portico/protos/portico/v1"
)

// Limits of one composition.
const (
	maxCalls           = 32
	maxFanOutCount     = 1000
	defaultConcurrency = 8
)

// Method is a composed method, compiled.
type Method struct {
	Desc protoreflect.MethodDescriptor
	Plan *Plan
	// Timeout is the composition's budget; 0: the operator's
	// edge.upstream_timeout.
	Timeout time.Duration
	// Partial is the response's repeated portico.v1.PartialResult field,
	// which gets an entry per degraded call; 0: none.
	Partial protowire.Number
}

// Backend is a method a call may name, and how to call it.
type Backend struct {
	Desc   protoreflect.MethodDescriptor
	Invoke Invoke
}

// Env is what compiling a composition needs from the edge.
type Env struct {
	// Backend finds the method "package.Service/Method" among the
	// services the edge serves.
	Backend func(method string) (Backend, bool)
	// LastGood stores the answers of calls with a last_good fallback.
	LastGood LastGood
}

var callName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// composeField is the option's extension number (for positions).
var composeField = int32(porticov1.E_Compose.TypeDescriptor().Number())

// Option returns md's (portico.v1.compose), if it has one.
func Option(md protoreflect.MethodDescriptor) (*porticov1.Compose, error) {
	c, _, err := policies.Extension[*porticov1.Compose](md.Options(), porticov1.E_Compose)
	return c, err
}

// Error is a composition that does not compile, with the position of
// what is wrong ("file:line:col").
type Error struct {
	Pos    string
	Method protoreflect.FullName
	Option string // the option field, e.g. "calls[1].request[0].from"
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: method %s: option (portico.v1.compose)%s: %v", e.Pos, e.Method, e.Option, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Compile compiles md's composition; md must have one (see Option).
func Compile(md protoreflect.MethodDescriptor, opt *porticov1.Compose, env Env) (*Method, error) {
	fail := func(path []int32, option string, err error) error {
		return &Error{Pos: position(md, path), Method: md.FullName(), Option: option, Err: err}
	}
	if md.IsStreamingClient() || md.IsStreamingServer() {
		return nil, fail(nil, "", errors.New("a composed method is unary"))
	}
	calls := opt.GetCalls()
	if len(calls) == 0 || len(calls) > maxCalls {
		return nil, fail(nil, ".calls", fmt.Errorf("%d calls; a composition has 1 to %d", len(calls), maxCalls))
	}
	out := &Method{Desc: md, Timeout: opt.GetTimeout().AsDuration(), Partial: partialField(md.Output())}
	if opt.GetTimeout() != nil && out.Timeout <= 0 {
		return nil, fail(nil, ".timeout", errors.New("must be positive"))
	}
	// Names, backends, and what each call reads from.
	index := map[string]int{}
	backends := make([]Backend, len(calls))
	for i, c := range calls {
		at := []int32{1, int32(i)}
		opt := fmt.Sprintf(".calls[%d]", i)
		if !callName.MatchString(c.GetName()) || c.GetName() == "request" {
			return nil, fail(append(at, 1), opt+".name", fmt.Errorf("%q: a name is lower case letters, digits and _, starting with a letter (and not \"request\")", c.GetName()))
		}
		if celReserved[c.GetName()] {
			return nil, fail(append(at, 1), opt+".name", fmt.Errorf("%q is a word CEL reserves; expressions could not read the call", c.GetName()))
		}
		if _, dup := index[c.GetName()]; dup {
			return nil, fail(append(at, 1), opt+".name", fmt.Errorf("%q names two calls", c.GetName()))
		}
		index[c.GetName()] = i
		b, ok := env.Backend(c.GetMethod())
		if !ok {
			return nil, fail(append(at, 2), opt+".method", fmt.Errorf("%q: no service the edge serves has this method (\"package.Service/Method\")", c.GetMethod()))
		}
		if b.Desc.IsStreamingClient() || b.Desc.IsStreamingServer() {
			return nil, fail(append(at, 2), opt+".method", fmt.Errorf("%q streams; a composition calls unary methods", c.GetMethod()))
		}
		backends[i] = b
	}
	// At most one call may change something: it is made once, never
	// retried and never fanned out.
	writer := -1
	for i, c := range calls {
		if policies.Idempotent(backends[i].Desc) {
			continue
		}
		at := []int32{1, int32(i), 2}
		switch {
		case c.GetForEach() != nil:
			return nil, fail(at, fmt.Sprintf(".calls[%d].method", i), fmt.Errorf("%q is not idempotent (no GET binding, no idempotency_level), so a for_each may not repeat it", c.GetMethod()))
		case writer >= 0:
			return nil, fail(at, fmt.Sprintf(".calls[%d].method", i), fmt.Errorf("%q is not idempotent (no GET binding, no idempotency_level), nor is call %s's %q: a composition makes at most one such call", c.GetMethod(), calls[writer].GetName(), calls[writer].GetMethod()))
		}
		writer = i
	}
	// Expressions are checked against every call's answer type; what each
	// reads orders the calls like the sources of mappings.
	all := []Source{{Name: "request", Type: md.Input(), Call: -1}}
	for i, c := range calls {
		all = append(all, Source{Name: c.GetName(), Type: backends[i].Desc.Output(), Call: i})
	}
	var xenv *ExprEnv
	exprs := map[[2]int]*Expr{}
	reads := make([][]string, len(calls))
	for i, c := range calls {
		reads[i] = append(reads[i], c.GetForEach().GetOver())
		for k, m := range c.GetRequest() {
			reads[i] = append(reads[i], m.GetFrom())
			if m.GetExpr() == "" {
				continue
			}
			if xenv == nil {
				var err error
				if xenv, err = NewExprEnv(all); err != nil {
					return nil, fail(nil, ".calls", fmt.Errorf("the expressions' environment: %w", err))
				}
			}
			e, err := xenv.Compile(m.GetExpr())
			if err != nil {
				return nil, fail([]int32{1, int32(i), 3, int32(k), 3}, fmt.Sprintf(".calls[%d].request[%d].expr", i, k), err)
			}
			exprs[[2]int{i, k}] = e
			reads[i] = append(reads[i], e.Reads()...)
		}
	}
	order, err := dependencyOrder(calls, index, reads)
	if err != nil {
		return nil, fail(nil, ".calls", err)
	}
	// Compile in dependency order; Plan.Calls follow it.
	sources := []Source{{Name: "request", Type: md.Input(), Call: -1}}
	var targets [][]protowire.Number
	fanOuts := map[string]bool{}
	plan := &Plan{}
	for _, i := range order {
		c, b := calls[i], backends[i]
		at := []int32{1, int32(i)}
		opt := fmt.Sprintf(".calls[%d]", i)
		maps := make([]Mapping, len(c.GetRequest()))
		for k, m := range c.GetRequest() {
			maps[k] = Mapping{Field: m.GetField(), From: m.GetFrom(), Expr: exprs[[2]int{i, k}]}
		}
		var each *ForEach
		if fe := c.GetForEach(); fe != nil {
			if fe.GetMaxCount() < 1 || fe.GetMaxCount() > maxFanOutCount {
				return nil, fail(append(at, 8), opt+".for_each.max_count", fmt.Errorf("%d; 1 to %d", fe.GetMaxCount(), maxFanOutCount))
			}
			each = &ForEach{Over: fe.GetOver(), Field: fe.GetField()}
		}
		for _, from := range reads[i] {
			name, _, _ := strings.Cut(from, ".")
			if fanOuts[name] {
				return nil, fail(append(at, 3), opt, fmt.Errorf("reads call %s, a for_each call, whose answers cannot feed other calls", name))
			}
		}
		build, after, err := CompileRequest(b.Desc.Input(), sources, maps, each, int(c.GetForEach().GetMaxCount()))
		if err != nil {
			return nil, fail(append(at, 3), opt, err)
		}
		pc := Call{Name: c.GetName(), Invoke: b.Invoke, Build: build, After: after, Optional: c.GetOptional(),
			Timeout: c.GetTimeout().AsDuration()}
		if c.GetTimeout() != nil && (pc.Timeout <= 0 || out.Timeout > 0 && pc.Timeout > out.Timeout) {
			return nil, fail(append(at, 6), opt+".timeout", fmt.Errorf("%s: must be positive and within the composition's timeout", pc.Timeout))
		}
		if each != nil {
			fanOuts[c.GetName()] = true
			pc.FanOut, pc.MaxFanOut, pc.Concurrency = true, int(c.GetForEach().GetMaxCount()), int(c.GetForEach().GetConcurrency())
			if pc.Concurrency == 0 {
				pc.Concurrency = defaultConcurrency
			}
		}
		var target protoreflect.FieldDescriptor
		if c.GetTarget() != "" {
			if pc.Target, target, err = resolve(md.Output(), c.GetTarget()); err != nil {
				return nil, fail(append(at, 4), opt+".target", fmt.Errorf("%q: %w", c.GetTarget(), err))
			}
			if err := fitsTarget(target, b.Desc.Output(), each != nil); err != nil {
				return nil, fail(append(at, 4), opt+".target", err)
			}
			for _, t := range targets {
				if isPrefix(t, pc.Target) || isPrefix(pc.Target, t) {
					return nil, fail(append(at, 4), opt+".target", fmt.Errorf("%q overlaps the target of another call", c.GetTarget()))
				}
			}
			targets = append(targets, pc.Target)
		}
		if fb := c.GetFallback(); fb != nil {
			if !c.GetOptional() {
				return nil, fail(append(at, 7), opt+".fallback", errors.New("only an optional call falls back"))
			}
			if fb.GetEmpty() {
				if target == nil || each != nil || fb.GetLiteral() != "" {
					return nil, fail(append(at, 7), opt+".fallback.empty", errors.New("needs a target that is not a for_each list, and no literal"))
				}
				pc.Fallback.Literal, pc.Fallback.Empty = []byte{}, true
			}
			if fb.GetLiteral() != "" {
				if target == nil || each != nil {
					return nil, fail(append(at, 7), opt+".fallback.literal", errors.New("needs a target that is not a for_each list"))
				}
				lit := dynamicpb.NewMessage(target.Message())
				if err := prototext.Unmarshal([]byte(fb.GetLiteral()), lit); err != nil {
					return nil, fail(append(at, 7), opt+".fallback.literal", fmt.Errorf("not a %s in text format: %w", target.Message().FullName(), err))
				}
				mo := proto.MarshalOptions{Deterministic: true}
				if pc.Fallback.Literal, err = mo.Marshal(lit); err != nil {
					return nil, fail(append(at, 7), opt+".fallback.literal", err)
				}
				if pc.Fallback.Literal == nil {
					pc.Fallback.Literal = []byte{}
				}
			}
			if fb.GetLastGood() != nil {
				if pc.Fallback.MaxAge = fb.GetLastGood().AsDuration(); pc.Fallback.MaxAge <= 0 {
					return nil, fail(append(at, 7), opt+".fallback.last_good", errors.New("must be positive"))
				}
				if env.LastGood == nil {
					return nil, fail(append(at, 7), opt+".fallback.last_good", errors.New("needs a store, and the edge has none"))
				}
				pc.Fallback.LastGood = env.LastGood
			}
		}
		plan.Calls = append(plan.Calls, pc)
		sources = append(sources, Source{Name: c.GetName(), Type: b.Desc.Output(), Call: len(plan.Calls) - 1})
	}
	if err := plan.Check(); err != nil {
		return nil, fail(nil, ".calls", err)
	}
	out.Plan = plan
	return out, nil
}

// dependencyOrder orders the calls so that each comes after the calls it
// reads ("<source>[.path]": its mappings, expressions and for_each); a
// cycle is an error naming it.
func dependencyOrder(calls []*porticov1.ComposeCall, index map[string]int, reads [][]string) ([]int, error) {
	deps := make([][]int, len(calls))
	for i := range calls {
		for _, r := range reads[i] {
			name, _, _ := strings.Cut(r, ".")
			if j, ok := index[name]; ok && !slices.Contains(deps[i], j) {
				deps[i] = append(deps[i], j)
			}
		}
	}
	const (
		unseen = iota
		visiting
		done
	)
	state := make([]int, len(calls))
	var order []int
	var stack []string
	var visit func(i int) error
	visit = func(i int) error {
		switch state[i] {
		case done:
			return nil
		case visiting:
			k := slices.Index(stack, calls[i].GetName())
			return fmt.Errorf("the calls depend on each other in a cycle: %s → %s", strings.Join(stack[k:], " → "), calls[i].GetName())
		}
		state[i] = visiting
		stack = append(stack, calls[i].GetName())
		for _, j := range deps[i] {
			if err := visit(j); err != nil {
				return err
			}
		}
		stack = stack[:len(stack)-1]
		state[i] = done
		order = append(order, i)
		return nil
	}
	for i := range calls {
		if err := visit(i); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// fitsTarget checks that a call's answer (of type answer) can be written
// to target: a message field of that type, repeated for a fan-out.
func fitsTarget(target protoreflect.FieldDescriptor, answer protoreflect.MessageDescriptor, fanOut bool) error {
	switch {
	case target.IsMap() || target.Message() == nil || target.Message().FullName() != answer.FullName():
		return fmt.Errorf("the answer is a %s, which does not fit %s", answer.FullName(), describe(target))
	case fanOut && !target.IsList():
		return fmt.Errorf("a for_each call's answers go into a repeated field, not %s", describe(target))
	}
	return nil
}

func isPrefix(p, of []protowire.Number) bool {
	return len(p) <= len(of) && slices.Equal(p, of[:len(p)])
}

// partialField finds the response's repeated PartialResult field.
func partialField(md protoreflect.MessageDescriptor) protowire.Number {
	want := (&porticov1.PartialResult{}).ProtoReflect().Descriptor().FullName()
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		if f := fields.Get(i); f.IsList() && f.Message() != nil && f.Message().FullName() == want {
			return f.Number()
		}
	}
	return 0
}

// position is "file:line:col" of the option field at path (below the
// compose option of md) when the source info has it, else of the nearest
// enclosing element that it has.
func position(md protoreflect.MethodDescriptor, path []int32) string {
	fd := md.ParentFile()
	locs := fd.SourceLocations()
	base := locs.ByDescriptor(md)
	full := append(append(slices.Clone(base.Path), 4, composeField), path...)
	for n := len(full); n >= len(base.Path); n-- {
		if l := locs.ByPath(full[:n]); l.StartLine != 0 || l.StartColumn != 0 || n == len(base.Path) {
			if l.StartLine == 0 && l.StartColumn == 0 && n == len(base.Path) && len(base.Path) == 0 {
				return fd.Path()
			}
			return fmt.Sprintf("%s:%d:%d", fd.Path(), l.StartLine+1, l.StartColumn+1)
		}
	}
	return fd.Path()
}
