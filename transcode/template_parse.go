package transcode

import (
	"fmt"
	"net/url"
	"strings"
)

// TemplateError is a syntax error in a path template, with the 1-based
// column where it was found.
type TemplateError struct {
	Template string
	Column   int
	Msg      string
}

func (e *TemplateError) Error() string {
	return fmt.Sprintf("template %q: column %d: %s", e.Template, e.Column, e.Msg)
}

// ParseTemplate parses a template per the grammar of google/api/http.proto:
//
//	Template = "/" Segments [ Verb ] ;
//	Segments = Segment { "/" Segment } ;
//	Segment  = "*" | "**" | LITERAL | Variable ;
//	Variable = "{" FieldPath [ "=" Segments ] "}" ;
//	FieldPath = IDENT { "." IDENT } ;
//	Verb     = ":" LITERAL ;
//
// "**" must be the last segment; "/" alone is the root.
func ParseTemplate(s string) (*Template, error) {
	p := &tmplParser{src: s, t: &Template{Raw: s}}
	if err := p.parse(); err != nil {
		return nil, err
	}
	return p.t, nil
}

type tmplParser struct {
	src    string
	pos    int
	t      *Template
	segPos []int
}

func (p *tmplParser) errAt(pos int, format string, args ...any) error {
	return &TemplateError{Template: p.src, Column: pos + 1, Msg: fmt.Sprintf(format, args...)}
}

func (p *tmplParser) peek() byte {
	if p.pos < len(p.src) {
		return p.src[p.pos]
	}
	return 0
}

func (p *tmplParser) parse() error {
	if p.peek() != '/' {
		return p.errAt(0, `must start with "/"`)
	}
	p.pos++
	if p.pos == len(p.src) {
		return nil // the root
	}
	if err := p.segments(false); err != nil {
		return err
	}
	if p.peek() == ':' {
		start := p.pos
		p.pos++
		lit, err := p.literal(true)
		if err != nil {
			return err
		}
		if lit == "" {
			return p.errAt(start, "empty verb")
		}
		p.t.Verb = lit
	}
	if p.pos != len(p.src) {
		return p.errAt(p.pos, "unexpected %q", p.src[p.pos])
	}
	for i, s := range p.t.Segments {
		if s.Kind == SegDoubleWildcard && i != len(p.t.Segments)-1 {
			return p.errAt(p.segPos[i], `"**" must be the last segment`)
		}
	}
	return nil
}

// segPos remembers where each segment started, for errors found later.
func (p *tmplParser) addSeg(s Segment, pos int) {
	p.t.Segments = append(p.t.Segments, s)
	p.segPos = append(p.segPos, pos)
}

func (p *tmplParser) segments(inVar bool) error {
	for {
		if err := p.segment(inVar); err != nil {
			return err
		}
		if p.peek() != '/' {
			return nil
		}
		p.pos++
	}
}

func (p *tmplParser) segment(inVar bool) error {
	start := p.pos
	switch c := p.peek(); {
	case c == '*':
		p.pos++
		if p.peek() == '*' {
			p.pos++
			p.addSeg(Segment{Kind: SegDoubleWildcard}, start)
		} else {
			p.addSeg(Segment{Kind: SegWildcard}, start)
		}
		if c := p.peek(); c != 0 && c != '/' && c != ':' && c != '}' {
			return p.errAt(p.pos, "unexpected %q after wildcard", c)
		}
		return nil
	case c == '{':
		if inVar {
			return p.errAt(start, "nested variable")
		}
		return p.variable()
	case c == '/' || c == 0:
		return p.errAt(start, "empty segment")
	case c == '}':
		return p.errAt(start, `unexpected "}"`)
	default:
		lit, err := p.literal(false)
		if err != nil {
			return err
		}
		if lit == "" {
			return p.errAt(start, "unexpected %q", p.src[start])
		}
		p.addSeg(Segment{Kind: SegLiteral, Literal: lit}, start)
		return nil
	}
}

// literal reads up to the next delimiter and percent-decodes it.
func (p *tmplParser) literal(verb bool) (string, error) {
	start := p.pos
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		if c == '/' || c == '{' || c == '}' || c == '*' || c == '=' || (c == ':' && !verb) {
			break
		}
		if c <= ' ' || c >= 0x7f || c == '?' || c == '#' {
			return "", p.errAt(p.pos, "invalid character %q", c)
		}
		p.pos++
	}
	raw := p.src[start:p.pos]
	lit, err := url.PathUnescape(raw)
	if err != nil {
		return "", p.errAt(start, "invalid percent-encoding in %q", raw)
	}
	return lit, nil
}

func (p *tmplParser) variable() error {
	open := p.pos
	p.pos++ // {
	fstart := p.pos
	for p.pos < len(p.src) && p.src[p.pos] != '=' && p.src[p.pos] != '}' {
		if p.src[p.pos] == '{' {
			return p.errAt(p.pos, "nested variable")
		}
		p.pos++
	}
	if p.pos == len(p.src) {
		return p.errAt(open, "unterminated variable")
	}
	fp := p.src[fstart:p.pos]
	path := strings.Split(fp, ".")
	for _, id := range path {
		if !isIdent(id) {
			return p.errAt(fstart, "invalid field path %q", fp)
		}
	}
	for _, v := range p.t.Vars {
		if strings.Join(v.FieldPath, ".") == fp {
			return p.errAt(fstart, "duplicate variable %q", fp)
		}
	}
	v := Variable{FieldPath: path, Start: len(p.t.Segments)}
	if p.peek() == '=' {
		p.pos++
		if p.pos == len(p.src) || p.peek() == '}' {
			return p.errAt(p.pos, "empty variable pattern")
		}
		if err := p.segments(true); err != nil {
			return err
		}
	} else {
		p.addSeg(Segment{Kind: SegWildcard}, open)
	}
	if p.peek() != '}' {
		if p.pos == len(p.src) {
			return p.errAt(open, "unterminated variable")
		}
		return p.errAt(p.pos, "unexpected %q in variable", p.src[p.pos])
	}
	p.pos++
	v.End = len(p.t.Segments)
	p.t.Vars = append(p.t.Vars, v)
	return nil
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}
