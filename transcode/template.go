package transcode

import (
	"strings"
)

// SegmentKind says what one template segment matches.
type SegmentKind uint8

const (
	// SegLiteral matches one segment equal to Literal (after decoding).
	SegLiteral SegmentKind = iota
	// SegWildcard ("*") matches exactly one segment.
	SegWildcard
	// SegDoubleWildcard ("**") matches zero or more segments; it is last.
	SegDoubleWildcard
)

// Segment is one path segment of a template.
type Segment struct {
	Kind    SegmentKind
	Literal string // decoded, for SegLiteral
}

// Variable binds the segments [Start, End) to a field path.
type Variable struct {
	FieldPath  []string
	Start, End int
}

// Template is a parsed google.api.http path template.
type Template struct {
	Raw      string
	Segments []Segment
	Verb     string // without ':'; "" if none
	Vars     []Variable
}

// Shape is the template with variable names erased, used to detect two
// rules claiming the same route: "/v1/{id}" and "/v1/*" have one shape.
func (t *Template) Shape() string {
	var b strings.Builder
	for _, s := range t.Segments {
		b.WriteByte('/')
		switch s.Kind {
		case SegLiteral:
			b.WriteString(s.Literal)
		case SegWildcard:
			b.WriteByte('*')
		case SegDoubleWildcard:
			b.WriteString("**")
		}
	}
	if t.Verb != "" {
		b.WriteByte(':')
		b.WriteString(t.Verb)
	}
	return b.String()
}

// MultiSegment reports whether variable i may hold more than one segment,
// which decides how its value is percent-decoded.
func (t *Template) MultiSegment(i int) bool {
	v := t.Vars[i]
	if v.End-v.Start != 1 {
		return true
	}
	return t.Segments[v.Start].Kind == SegDoubleWildcard
}
