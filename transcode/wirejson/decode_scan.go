package wirejson

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// The JSON scanner follows protobuf-go's internal/encoding/json token rules
// exactly, quirks included: whitespace is space, tab, CR and LF; a number is
// RFC 8259's, except that an exponent marker followed by a delimiter ("1e}")
// ends a valid token (which only integer fields then accept); a literal or
// number must be followed by a delimiter; strings are valid UTF-8 with no
// control characters, and a \u escape of a surrogate must be followed by the
// escape of its pair.

var errUnexpectedEOF = errors.New("unexpected EOF")

// maxQuote caps the client-supplied text an error quotes.
const maxQuote = 64

// quote renders b for an error message, truncated.
func quote(b []byte) string {
	if len(b) > maxQuote {
		n := maxQuote
		for n > 0 && !utf8.RuneStart(b[n]) {
			n--
		}
		return strconv.Quote(string(b[:n])) + "…"
	}
	return strconv.Quote(string(b))
}

// clip renders a token of the input (a string token keeps its quotes) for an
// error message, truncated.
func clip(b []byte) string {
	if len(b) > maxQuote {
		n := maxQuote
		for n > 0 && !utf8.RuneStart(b[n]) {
			n--
		}
		return string(b[:n]) + "…"
	}
	return string(b)
}

// errf returns an error at offset pos of the input, with its line:col.
func (s *state) errf(pos int, format string, args ...any) error {
	if pos > len(s.in) {
		pos = len(s.in)
	}
	line, col := 1, 1
	for _, c := range s.in[:pos] {
		if c == '\n' {
			line, col = line+1, 1
		} else if utf8.RuneStart(c) {
			col++
		}
	}
	return fmt.Errorf("(line %d:%d): %s", line, col, fmt.Sprintf(format, args...))
}

// unexpected is the error for the token at s.pos.
func (s *state) unexpected() error {
	if s.pos >= len(s.in) {
		return errUnexpectedEOF
	}
	return s.errf(s.pos, "unexpected token %s", clip(s.tokenText(s.pos)))
}

// tokenText is the text of the token starting at pos, for errors.
func (s *state) tokenText(pos int) []byte {
	in := s.in[pos:]
	n := 0
	for n < len(in) && n < maxQuote+1 && isNotDelim(in[n]) {
		n++
	}
	if n == 0 && len(in) > 0 {
		if in[0] == '"' {
			if e := s.stringEnd(pos); e > pos {
				return s.in[pos:e]
			}
		}
		_, n = utf8.DecodeRune(in)
	}
	return in[:n]
}

// stringEnd finds the end of the string starting at pos (for errors only),
// or -1.
func (s *state) stringEnd(pos int) int {
	for i := pos + 1; i < len(s.in); i++ {
		switch s.in[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// ws skips whitespace.
func (s *state) ws() {
	for s.pos < len(s.in) {
		switch s.in[s.pos] {
		case ' ', '\n', '\r', '\t':
			s.pos++
		default:
			return
		}
	}
}

// isNotDelim reports whether c may not follow a literal or number.
func isNotDelim(c byte) bool {
	return c == '-' || c == '+' || c == '.' || c == '_' ||
		('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}

// literal reports whether lit (true, false, null) is at s.pos, followed by
// a delimiter.
func (s *state) literal(lit string) bool {
	in := s.in[s.pos:]
	if len(in) < len(lit) || string(in[:len(lit)]) != lit {
		return false
	}
	return len(in) == len(lit) || !isNotDelim(in[len(lit)])
}

// isNull reports whether null is at s.pos.
func (s *state) isNull() bool {
	return s.pos < len(s.in) && s.in[s.pos] == 'n' && s.literal("null")
}

// parseNumber returns the length of the JSON number at the start of in, as
// protobuf-go's tokenizer reads it.
func parseNumber(input []byte) (int, bool) {
	var n int
	s := input
	if len(s) == 0 {
		return 0, false
	}
	if s[0] == '-' {
		s = s[1:]
		n++
		if len(s) == 0 {
			return 0, false
		}
	}
	switch {
	case s[0] == '0':
		s = s[1:]
		n++
	case '1' <= s[0] && s[0] <= '9':
		s = s[1:]
		n++
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
			n++
		}
	default:
		return 0, false
	}
	if len(s) >= 2 && s[0] == '.' && '0' <= s[1] && s[1] <= '9' {
		s = s[2:]
		n += 2
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
			n++
		}
	}
	if len(s) >= 2 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		n++
		if s[0] == '+' || s[0] == '-' {
			s = s[1:]
			n++
			if len(s) == 0 {
				return 0, false
			}
		}
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
			n++
		}
	}
	if n < len(input) && isNotDelim(input[n]) {
		return 0, false
	}
	return n, true
}

// number scans the number at s.pos and returns its text.
func (s *state) number() ([]byte, error) {
	n, ok := parseNumber(s.in[s.pos:])
	if !ok {
		return nil, s.invalidValue()
	}
	b := s.in[s.pos : s.pos+n]
	s.pos += n
	return b, nil
}

func (s *state) invalidValue() error {
	if s.pos >= len(s.in) {
		return errUnexpectedEOF
	}
	return s.errf(s.pos, "invalid value %s", clip(s.tokenText(s.pos)))
}

// str scans the string at s.pos (which holds '"') and returns the bounds of
// its content; esc reports whether the content has escapes (it is then to
// be read with unescape). The content is validated: UTF-8, no control
// characters, valid escapes.
func (s *state) str() (start, end int, esc bool, err error) {
	in := s.in
	i := s.pos + 1
	start = i
	for {
		// Fast path: plain ASCII.
		for i < len(in) {
			c := in[i]
			if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
				break
			}
			i++
		}
		if i >= len(in) {
			return 0, 0, false, errUnexpectedEOF
		}
		switch c := in[i]; {
		case c == '"':
			s.pos = i + 1
			return start, i, esc, nil
		case c == '\\':
			esc = true
			n, err := s.escape(i)
			if err != nil {
				return 0, 0, false, err
			}
			i += n
		case c < 0x20:
			return 0, 0, false, s.errf(i, "invalid character %q in string", rune(c))
		default:
			r, n := utf8.DecodeRune(in[i:])
			if r == utf8.RuneError && n == 1 {
				return 0, 0, false, s.errf(i, "invalid UTF-8 in string")
			}
			i += n
		}
	}
}

// escape validates the escape sequence at in[i] ('\\') and returns its
// length.
func (s *state) escape(i int) (int, error) {
	in := s.in[i:]
	if len(in) < 2 {
		return 0, errUnexpectedEOF
	}
	switch in[1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2, nil
	case 'u':
		if len(in) < 6 {
			return 0, errUnexpectedEOF
		}
		r, ok := hex4(in[2:6])
		if !ok {
			return 0, s.errf(i, "invalid escape code %s in string", quote(in[:6]))
		}
		if r < 0xd800 || r >= 0xe000 {
			return 6, nil
		}
		in = in[6:]
		if len(in) < 6 {
			return 0, errUnexpectedEOF
		}
		r2, ok := hex4(in[2:6])
		if in[0] != '\\' || in[1] != 'u' || !ok || r >= 0xdc00 || r2 < 0xdc00 || r2 >= 0xe000 {
			return 0, s.errf(i+6, "invalid escape code %s in string", quote(in[:6]))
		}
		return 12, nil
	}
	return 0, s.errf(i, "invalid escape code %s in string", quote(in[:2]))
}

func hex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// unescape appends the decoded content of a validated string to dst.
func unescape(dst, b []byte) []byte {
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\\' {
			i++
		}
		dst = append(dst, b[:i]...)
		b = b[i:]
		if len(b) == 0 {
			break
		}
		switch c := b[1]; c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, _ := hex4(b[2:6])
			if r >= 0xd800 && r < 0xe000 {
				r2, _ := hex4(b[8:12])
				r = (r-0xd800)<<10 | (r2 - 0xdc00) + 0x10000
				b = b[6:]
			}
			dst = utf8.AppendRune(dst, r)
			b = b[6:]
			continue
		default:
			dst = append(dst, c)
		}
		b = b[2:]
	}
	return dst
}

// content returns the decoded content of a scanned string: the input itself
// when it has no escapes, else its unescaping in s.tmp.
func (s *state) content(start, end int, esc bool) []byte {
	if !esc {
		return s.in[start:end]
	}
	s.tmp = unescape(s.tmp[:0], s.in[start:end])
	return s.tmp
}

// name scans a member name and the colon after it, leaving s.pos at the
// value. It returns the name's bounds (see str) and its start.
func (s *state) name() (start, end int, esc bool, at int, err error) {
	at = s.pos
	if s.pos >= len(s.in) {
		return 0, 0, false, at, errUnexpectedEOF
	}
	if s.in[s.pos] != '"' {
		return 0, 0, false, at, s.unexpected()
	}
	if start, end, esc, err = s.str(); err != nil {
		return
	}
	s.ws()
	if s.pos >= len(s.in) {
		return 0, 0, false, at, errUnexpectedEOF
	}
	if s.in[s.pos] != ':' {
		return 0, 0, false, at, s.errf(s.pos, "unexpected character %s, missing \":\" after field name", quote(s.in[s.pos:s.pos+1]))
	}
	s.pos++
	s.ws()
	return
}

// next moves past the separator after a member or element: it reports
// whether another one follows (a comma) or the container ends (close).
func (s *state) next(close byte) (more bool, err error) {
	s.ws()
	if s.pos >= len(s.in) {
		return false, errUnexpectedEOF
	}
	switch s.in[s.pos] {
	case ',':
		s.pos++
		s.ws()
		if s.pos < len(s.in) && s.in[s.pos] == close {
			return false, s.unexpected()
		}
		return true, nil
	case close:
		s.pos++
		return false, nil
	}
	return false, s.unexpected()
}

// first moves past the opening of a container at s.pos (which holds open)
// and reports whether it has members or elements.
func (s *state) first(close byte) bool {
	s.pos++
	s.ws()
	if s.pos < len(s.in) && s.in[s.pos] == close {
		s.pos++
		return false
	}
	return true
}

// skip scans one JSON value, of any kind, at s.pos. Objects and arrays may
// nest limit deep (protojson's skipJSONValue rule); limit < 0: no limit.
func (s *state) skip(limit int) error {
	base := len(s.stack)
	defer func() { s.stack = s.stack[:base] }()
	for {
		// A value.
		if s.pos >= len(s.in) {
			return errUnexpectedEOF
		}
		switch c := s.in[s.pos]; c {
		case '{', '[':
			close := byte('}')
			if c == '[' {
				close = ']'
			}
			s.stack = append(s.stack, close)
			if limit >= 0 && len(s.stack)-base > limit {
				return errDepth
			}
			if s.first(close) {
				if c == '{' {
					if _, _, _, _, err := s.name(); err != nil {
						return err
					}
				}
				continue
			}
			s.stack = s.stack[:len(s.stack)-1]
		case '"':
			if _, _, _, err := s.str(); err != nil {
				return err
			}
		case 't', 'f', 'n':
			lit := "null"
			if c == 't' {
				lit = "true"
			} else if c == 'f' {
				lit = "false"
			}
			if !s.literal(lit) {
				return s.invalidValue()
			}
			s.pos += len(lit)
		default:
			if _, err := s.number(); err != nil {
				return err
			}
		}
		// After a value: close containers until one has more.
		for {
			if len(s.stack) == base {
				return nil
			}
			close := s.stack[len(s.stack)-1]
			more, err := s.next(close)
			if err != nil {
				return err
			}
			if more {
				if close == '}' {
					if _, _, _, _, err := s.name(); err != nil {
						return err
					}
				}
				break
			}
			s.stack = s.stack[:len(s.stack)-1]
		}
	}
}
