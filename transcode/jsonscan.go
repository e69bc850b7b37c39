package transcode

import (
	"bytes"
	"strconv"
	"strings"
	"unsafe"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// The body pre-scan runs before protojson sees a request body. protojson
// over dynamic messages costs about half a microsecond per repeated element
// (2 MB of `1,1,1,…` is a second of CPU), so a client could buy seconds of
// edge CPU with a few megabytes. The scan walks the JSON once at several
// hundred MB/s, following the request message's schema, and refuses the body
// before any message is built when it has more repeated elements than
// transcode.max_repeated_elements or nests deeper than transcode.max_json_depth.
// It checks nothing else: syntax errors are left to protojson, which names
// them precisely; on input it cannot follow it simply stops counting.
//
// What counts as an element: each value of a JSON array, and each member of
// an object that is not a message of the schema (a map field, a
// google.protobuf.Struct, an Any, content of unknown fields). Members of
// message objects are fields, bounded by the schema.

// scanFrame is one open object or array.
type scanFrame struct {
	array bool
	// msg is the message an object decodes into (nil: a map, Struct, Any or
	// unknown content, whose members count as elements).
	msg protoreflect.MessageDescriptor
	// elem is what the values of this array or map object decode into.
	elem protoreflect.FieldDescriptor
	// keyStart, keyEnd locate the member key (objects) or the element
	// index (arrays) that holds the value being scanned, for the error.
	keyStart, keyEnd int
	index            int
}

// bodyLimitError names where a body crossed a limit.
type bodyLimitError struct {
	path  string
	limit int
	depth bool
}

func (e *bodyLimitError) Error() string {
	if e.depth {
		return "JSON body nests deeper than the limit of " + strconv.Itoa(e.limit) + " (transcode.max_json_depth) at " + e.path
	}
	return "too many repeated elements in the JSON body: field " + e.path + " goes past the limit of " +
		strconv.Itoa(e.limit) + " elements per request (transcode.max_repeated_elements)"
}

// scanBody checks data (the JSON for root; for a repeated or map body field,
// field is set) against the depth and element limits.
func scanBody(data []byte, root protoreflect.MessageDescriptor, field protoreflect.FieldDescriptor, maxDepth, maxElems int) error {
	if belowLimits(data, maxDepth, maxElems) {
		return nil
	}
	return walkBody(data, root, field, maxDepth, maxElems)
}

// belowLimits reports whether data has too few brackets, commas and colons
// to cross either limit, whatever they mean: a container opens at each '{'
// or '[', and the walk counts an element only at a '[', a ',' or a ':'.
// Counting single bytes is vectorised, several times cheaper than the
// walk, and clears every body of ordinary size.
func belowLimits(data []byte, maxDepth, maxElems int) bool {
	opens := bytes.Count(data, []byte{'{'}) + bytes.Count(data, []byte{'['})
	return opens <= maxDepth && opens+bytes.Count(data, []byte{','})+bytes.Count(data, []byte{':'}) <= maxElems
}

// walkBody follows data with the schema, counting depth and elements.
func walkBody(data []byte, root protoreflect.MessageDescriptor, field protoreflect.FieldDescriptor, maxDepth, maxElems int) error {
	s := bodyScanner{data: data, maxDepth: maxDepth, maxElems: maxElems, stack: make([]scanFrame, 0, 16)}
	return s.run(root, field)
}

type bodyScanner struct {
	data     []byte
	maxDepth int
	maxElems int
	elems    int
	stack    []scanFrame
}

// value kinds the scanner expects next
type expect struct {
	msg   protoreflect.MessageDescriptor // an object of this message
	field protoreflect.FieldDescriptor   // a value of this field (list/map: the container)
	inner bool                           // field is a list/map, and this is one element
}

func (s *bodyScanner) run(root protoreflect.MessageDescriptor, field protoreflect.FieldDescriptor) error {
	d := s.data
	next := expect{msg: root}
	if field != nil {
		next = expect{field: field}
	}
	for i := 0; i < len(d); {
		c := d[i]
		switch c {
		case ' ', '\t', '\n', '\r', ',', ':':
			i++
		case '{', '[':
			if len(s.stack) >= s.maxDepth {
				return &bodyLimitError{path: s.path(), limit: s.maxDepth, depth: true}
			}
			f := scanFrame{array: c == '['}
			f.msg, f.elem = s.container(next, f.array)
			s.stack = append(s.stack, f)
			i++
			if f.array {
				// The first element is counted where it starts.
				j := skipSpace(d, i)
				if j < len(d) && d[j] != ']' {
					if err := s.count(); err != nil {
						return err
					}
				}
				next = s.elemExpect()
			}
		case '}', ']':
			if len(s.stack) == 0 {
				return nil
			}
			s.stack = s.stack[:len(s.stack)-1]
			i++
			next = s.afterValue()
		case '"':
			end := skipString(d, i)
			if end < 0 {
				return nil
			}
			top := s.top()
			if top != nil && !top.array && s.isKey(end) {
				top.keyStart, top.keyEnd = i+1, end-1
				if top.msg == nil {
					if err := s.count(); err != nil {
						return err
					}
					next = expect{field: top.elem, inner: top.elem != nil}
				} else {
					next = s.memberExpect(top.msg, d[i+1:end-1])
				}
			} else {
				next = s.afterValue()
			}
			i = end
		default:
			// A number, true, false or null: skip to the next delimiter.
			j := i + 1
			for j < len(d) && !isDelim(d[j]) {
				j++
			}
			i = j
			next = s.afterValue()
		}
		// A comma inside an array starts the next element.
		if i < len(d) && d[i] == ',' {
			if top := s.top(); top != nil && top.array {
				top.index++
				j := skipSpace(d, i+1)
				if j < len(d) && d[j] != ']' {
					if err := s.count(); err != nil {
						return err
					}
				}
				next = s.elemExpect()
			}
		}
	}
	return nil
}

func (s *bodyScanner) top() *scanFrame {
	if len(s.stack) == 0 {
		return nil
	}
	return &s.stack[len(s.stack)-1]
}

func (s *bodyScanner) count() error {
	if s.elems++; s.elems > s.maxElems {
		return &bodyLimitError{path: s.path(), limit: s.maxElems}
	}
	return nil
}

// isKey reports whether the string ending at end is followed by a colon.
func (s *bodyScanner) isKey(end int) bool {
	j := skipSpace(s.data, end)
	return j < len(s.data) && s.data[j] == ':'
}

// container decides what an opening brace or bracket decodes into.
func (s *bodyScanner) container(e expect, array bool) (protoreflect.MessageDescriptor, protoreflect.FieldDescriptor) {
	fd := e.field
	if fd == nil {
		if array || e.msg == nil || isDynamicJSON(e.msg) {
			return nil, nil
		}
		return e.msg, nil
	}
	switch {
	case !e.inner && (fd.IsList() || fd.IsMap()):
		// The container of a repeated or map field: its values are elements.
		return nil, fd
	case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
		md := fd.Message()
		if fd.IsMap() {
			md = fd.MapValue().Message()
		}
		if md == nil || array || isDynamicJSON(md) {
			return nil, nil
		}
		return md, nil
	}
	return nil, nil
}

// elemExpect is what the next element of the top array decodes into.
func (s *bodyScanner) elemExpect() expect {
	top := s.top()
	if top == nil || top.elem == nil {
		return expect{}
	}
	return expect{field: top.elem, inner: true}
}

// afterValue resets the expectation once a value is complete.
func (s *bodyScanner) afterValue() expect {
	top := s.top()
	if top != nil && top.array {
		return s.elemExpect()
	}
	return expect{}
}

// memberExpect resolves a member key of message md (JSON or proto name).
func (s *bodyScanner) memberExpect(md protoreflect.MessageDescriptor, rawKey []byte) expect {
	// The lookups below keep nothing: a view of the bytes saves an
	// allocation per member.
	key := ""
	if len(rawKey) > 0 {
		key = unsafe.String(&rawKey[0], len(rawKey))
	}
	if bytes.IndexByte(rawKey, '\\') >= 0 {
		if k, err := strconv.Unquote(`"` + key + `"`); err == nil {
			key = k
		}
	}
	fields := md.Fields()
	fd := fields.ByJSONName(key)
	if fd == nil {
		fd = fields.ByTextName(key)
	}
	if fd == nil {
		return expect{} // unknown: its content counts
	}
	if fd.IsMap() {
		return expect{field: fd}
	}
	if fd.IsList() {
		return expect{field: fd}
	}
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		return expect{msg: fd.Message()}
	}
	return expect{field: fd}
}

// path renders where the scan is, as JSON keys and indexes ("items[3].tags").
func (s *bodyScanner) path() string {
	var b strings.Builder
	for i := range s.stack {
		f := &s.stack[i]
		if f.array {
			if i == 0 {
				b.WriteString("(body)")
			}
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(f.index))
			b.WriteByte(']')
			continue
		}
		if f.keyEnd > f.keyStart {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(truncate(string(s.data[f.keyStart:f.keyEnd]), 64))
		}
	}
	if b.Len() == 0 {
		return "(body)"
	}
	return truncate(b.String(), 256)
}

// isDynamicJSON reports the well-known types whose JSON is free-form.
func isDynamicJSON(md protoreflect.MessageDescriptor) bool {
	switch md.FullName() {
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any":
		return true
	}
	return false
}

func isDelim(c byte) bool {
	switch c {
	case ',', ']', '}', ' ', '\t', '\n', '\r', ':', '"', '{', '[':
		return true
	}
	return false
}

func skipSpace(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at d[i] == '"',
// or -1 when it does not end.
func skipString(d []byte, i int) int {
	i++
	for {
		j := bytes.IndexByte(d[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		// Count the backslashes before the quote: an odd number escapes it.
		n := 0
		for k := i - 1; k >= 0 && d[k] == '\\'; k-- {
			n++
		}
		i++
		if n%2 == 0 {
			return i
		}
	}
}
