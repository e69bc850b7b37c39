package transcode

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// ErrNoRoute: no template matches the path.
var ErrNoRoute = errors.New("no route")

// ErrBadPathEncoding: the path has invalid percent-encoding.
var ErrBadPathEncoding = errors.New("bad percent-encoding in path")

// ErrDotSegment: a path segment is "." or ".." (raw or percent-encoded).
// Servers and proxies resolve them differently, so a path holding one could
// name another resource behind the edge than the route it matched: refused.
var ErrDotSegment = errors.New("path segments . and .. are not allowed")

// MethodNotAllowedError: the path matches, but only for other methods.
type MethodNotAllowedError struct{ Allow []string }

func (e *MethodNotAllowedError) Error() string {
	return "method not allowed; allowed: " + strings.Join(e.Allow, ", ")
}

// ConflictError: two rules claim the same method and template shape.
type ConflictError struct {
	HTTPMethod, Shape string
	Existing, New     string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("route conflict: %s %s is claimed by %s and %s", e.HTTPMethod, e.Shape, e.Existing, e.New)
}

// Router maps (HTTP method, path) to values. It is built once and then only
// read, from any number of goroutines.
//
// At each segment a literal beats "*", which beats "**"; a branch that
// fails further down is backtracked. A trailing slash is a segment of its
// own, so "/v1/users/" does not match "/v1/users".
type Router[T any] struct {
	root rtNode[T]
}

type rtEntry[T any] struct {
	v    T
	tmpl *Template
}

// rtLeaves holds the routes ending at a node: verb → method → entry.
type rtLeaves[T any] map[string]map[string]*rtEntry[T]

type rtNode[T any] struct {
	lit    map[string]*rtNode[T]
	wild   *rtNode[T]
	leaves rtLeaves[T] // templates ending here
	deep   rtLeaves[T] // templates whose "**" starts here
}

// NewRouter returns an empty router.
func NewRouter[T any]() *Router[T] { return &Router[T]{} }

// Add registers v for method m and template t. describe names values in
// conflict errors.
func (r *Router[T]) Add(m string, t *Template, v T, describe func(T) string) error {
	n := &r.root
	var set *rtLeaves[T]
	for i, s := range t.Segments {
		switch s.Kind {
		case SegLiteral:
			if n.lit == nil {
				n.lit = map[string]*rtNode[T]{}
			}
			c := n.lit[s.Literal]
			if c == nil {
				c = &rtNode[T]{}
				n.lit[s.Literal] = c
			}
			n = c
		case SegWildcard:
			if n.wild == nil {
				n.wild = &rtNode[T]{}
			}
			n = n.wild
		case SegDoubleWildcard:
			if i != len(t.Segments)-1 {
				return fmt.Errorf("template %q: \"**\" must be the last segment", t.Raw)
			}
			set = &n.deep
		}
	}
	if set == nil {
		set = &n.leaves
	}
	if *set == nil {
		*set = rtLeaves[T]{}
	}
	byMethod := (*set)[t.Verb]
	if byMethod == nil {
		byMethod = map[string]*rtEntry[T]{}
		(*set)[t.Verb] = byMethod
	}
	if prev := byMethod[m]; prev != nil {
		return &ConflictError{HTTPMethod: m, Shape: t.Shape(), Existing: describe(prev.v), New: describe(v)}
	}
	byMethod[m] = &rtEntry[T]{v: v, tmpl: t}
	return nil
}

// Match is MatchErr reporting failure as ok=false.
func (r *Router[T]) Match(m, path string, vars []string) (v T, outVars []string, allow []string, ok bool) {
	v, outVars, err := r.matchErr(m, path, vars)
	var mna *MethodNotAllowedError
	if errors.As(err, &mna) {
		allow = mna.Allow
	}
	return v, outVars, allow, err == nil
}

// MatchErr finds the value for method m and the escaped request path. On
// success vars holds one decoded value per template variable. Errors are
// ErrNoRoute, ErrBadPathEncoding (wrapped) or *MethodNotAllowedError.
func (r *Router[T]) MatchErr(m, path string, vars []string) (v T, outVars []string, allow []string, err error) {
	v, outVars, err = r.matchErr(m, path, vars)
	var mna *MethodNotAllowedError
	if errors.As(err, &mna) {
		allow = mna.Allow
	}
	return v, outVars, allow, err
}

func (r *Router[T]) matchErr(m, path string, vars []string) (v T, outVars []string, err error) {
	if path == "" || path[0] != '/' {
		return v, vars, ErrNoRoute
	}
	raw := rtSplit(path[1:])
	dec := make([]string, len(raw))
	for i, s := range raw {
		if strings.IndexByte(s, '%') < 0 {
			dec[i] = s
		} else {
			d, derr := url.PathUnescape(s)
			if derr != nil {
				return v, vars, fmt.Errorf("%w: segment %q", ErrBadPathEncoding, truncate(s, 64))
			}
			dec[i] = d
		}
		if d := dec[i]; d == "." || d == ".." || strings.HasPrefix(d, "..:") || strings.HasPrefix(d, ".:") {
			return v, vars, fmt.Errorf("%w: segment %d is %q", ErrDotSegment, i+1, truncate(s, 64))
		}
	}
	var candidates [2]rtTry
	tries := candidates[:0]
	if n := len(raw); n > 0 {
		// The verb follows the last literal ':' of the raw path (http.proto:
		// `Verb = ":" LITERAL`); an encoded %3A is data, never a separator,
		// so "b1%3Apublish" is one value, not "b1" plus a verb.
		rawLast := raw[n-1]
		if j := strings.LastIndexByte(rawLast, ':'); j >= 0 {
			tries = append(tries, rtTry{verb: unescapeSegment(rawLast[j+1:]), lastDec: unescapeSegment(rawLast[:j]), lastRaw: rawLast[:j]})
		}
	}
	tries = append(tries, rtTry{noSplit: true})

	var allowSet map[string]*rtEntry[T]
	for _, tr := range tries {
		d, rw := dec, raw
		if !tr.noSplit {
			if tr.verb == "" {
				continue
			}
			d = slices.Clone(dec)
			rw = slices.Clone(raw)
			d[len(d)-1], rw[len(rw)-1] = tr.lastDec, tr.lastRaw
		}
		if e := rtWalk(&r.root, d, 0, tr.verb, m); e != nil {
			return e.v, extractVars(e.tmpl, d, rw, vars), nil
		}
		if allowSet == nil {
			allowSet = rtWalkAny(&r.root, d, 0, tr.verb)
		}
	}
	if allowSet != nil {
		allow := make([]string, 0, len(allowSet))
		for k := range allowSet {
			allow = append(allow, k)
		}
		slices.Sort(allow)
		return v, vars, &MethodNotAllowedError{Allow: allow}
	}
	return v, vars, ErrNoRoute
}

// unescapeSegment decodes part of a segment that was validated whole.
func unescapeSegment(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	d, err := url.PathUnescape(s)
	if err != nil { // a split cannot break an escape: ':' is not a hex digit
		return s
	}
	return d
}

type rtTry struct {
	verb, lastDec, lastRaw string
	noSplit                bool
}

func rtSplit(p string) []string {
	n := strings.Count(p, "/") + 1
	out := make([]string, 0, n)
	for {
		i := strings.IndexByte(p, '/')
		if i < 0 {
			return append(out, p)
		}
		out = append(out, p[:i])
		p = p[i+1:]
	}
}

// rtWalk finds the best entry for method m, backtracking.
func rtWalk[T any](n *rtNode[T], segs []string, i int, verb, m string) *rtEntry[T] {
	if i == len(segs) || (i == 0 && len(segs) == 1 && segs[0] == "") {
		if e := n.leaves[verb][m]; e != nil {
			return e
		}
		return n.deep[verb][m]
	}
	if c := n.lit[segs[i]]; c != nil {
		if e := rtWalk(c, segs, i+1, verb, m); e != nil {
			return e
		}
	}
	if n.wild != nil && segs[i] != "" {
		if e := rtWalk(n.wild, segs, i+1, verb, m); e != nil {
			return e
		}
	}
	return n.deep[verb][m]
}

// rtWalkAny finds any matching route set regardless of method (for 405).
func rtWalkAny[T any](n *rtNode[T], segs []string, i int, verb string) map[string]*rtEntry[T] {
	if i == len(segs) || (i == 0 && len(segs) == 1 && segs[0] == "") {
		if s := n.leaves[verb]; len(s) > 0 {
			return s
		}
		return n.deep[verb]
	}
	if c := n.lit[segs[i]]; c != nil {
		if s := rtWalkAny(c, segs, i+1, verb); s != nil {
			return s
		}
	}
	if n.wild != nil && segs[i] != "" {
		if s := rtWalkAny(n.wild, segs, i+1, verb); s != nil {
			return s
		}
	}
	if s := n.deep[verb]; len(s) > 0 {
		return s
	}
	return nil
}

// extractVars computes each variable's value: single-segment variables
// fully decoded, multi-segment ones decoded except %2F (http.proto).
func extractVars(t *Template, dec, raw, vars []string) []string {
	if len(dec) == 1 && dec[0] == "" {
		dec, raw = nil, nil
	}
	vars = vars[:0]
	for i, v := range t.Vars {
		end := v.End
		if end == len(t.Segments) && len(t.Segments) > 0 && t.Segments[len(t.Segments)-1].Kind == SegDoubleWildcard {
			end = len(dec)
		}
		if !t.MultiSegment(i) {
			vars = append(vars, dec[v.Start])
			continue
		}
		vars = append(vars, decodeKeepSlash(strings.Join(raw[v.Start:end], "/")))
	}
	return vars
}

// decodeKeepSlash percent-decodes s but leaves %2F (normalised to upper
// case) encoded. s was already validated by the per-segment decode.
func decodeKeepSlash(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			h := s[i+1 : i+3]
			if h == "2F" || h == "2f" {
				b.WriteString("%2F")
				i += 2
				continue
			}
			if d, err := url.PathUnescape(s[i : i+3]); err == nil {
				b.WriteString(d)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
