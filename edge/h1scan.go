package edge

import "bytes"

// h1State is where h1Scanner stands in the request stream.
type h1State uint8

const (
	h1Start       h1State = iota // before a request line
	h1Method                     // request line: method
	h1Target                     // request line: target
	h1Version                    // request line: HTTP version
	h1LineStart                  // at the start of a header or trailer line
	h1Name                       // field name
	h1Value                      // field value, or a continuation line
	h1Body                       // Content-Length body
	h1ChunkSize                  // chunk-size line: size
	h1ChunkWS                    // chunk-size line: whitespace after the size
	h1ChunkExt                   // chunk-size line: extension
	h1ChunkLF                    // chunk-size line: CR seen
	h1ChunkData                  // chunk data
	h1ChunkDataCR                // CRLF after chunk data
	h1ChunkDataLF
	h1Off // lost, or not HTTP/1: flags nothing more
)

// fieldKind is the header field a line belongs to.
type fieldKind uint8

const (
	fieldNone  fieldKind = iota // no field yet in this section
	fieldOther                  // any field but the two below
	fieldCL
	fieldTE
)

var fieldNames = [...]string{fieldCL: "content-length", fieldTE: "transfer-encoding"}

// h1Scanner follows HTTP/1.1 requests byte by byte the way net/http's
// server reads them (request line, header fields until the empty line;
// then a chunked body when Transfer-Encoding is present in an HTTP/1.1
// request, else Content-Length bytes, else none), and records the flaws of
// each header block in out. At anything Go would refuse or read
// differently it turns itself off: Go answers that input itself, and a
// scanner out of step with Go must not flag legitimate requests.
type h1Scanner struct {
	out   *flawLog
	state h1State
	pos   uint64 // bytes fed so far
	cr    bool   // the last byte fed was CR
	eol   bool   // the last step consumed a line's LF
	eolCR bool   // ... and it followed a CR

	afterPOST bool   // the previous request was a POST: Go skips up to 4 CR or LF after it
	skipped   uint8  // CR or LF bytes skipped so far
	pending   flaw   // found before this block: in a trailer, or on an OPTIONS * request
	seen      uint64 // header blocks of requests that reach the handler
	h1Block

	remain       uint64 // body or chunk bytes left; the chunk size while its line is read
	chunkLen     int    // bytes of the chunk-size line so far
	chunkDigits  int
	excess       int64  // Go's chunk overhead account
	trailerStart uint64 // pos where the trailer began
	longest      uint64 // the largest header block ended since takeHeaderBytes
}

// h1Block is the state of one header block (or trailer), zeroed at each
// request line.
type h1Block struct {
	start      uint64 // pos of the request line's first byte
	method     [8]byte
	methodLen  int
	target     uint8 // 0 none yet, 1 exactly "*", 2 other
	version    [8]byte
	versionLen int
	http11     bool // HTTP/1.1 or later: Transfer-Encoding applies

	trailer   bool // the section is a chunked body's trailer
	field     fieldKind
	name      nameMatch
	val       valueMatch
	folded    bool      // the current line continues the previous field
	contPhase uint8     // contStep's progress on a continuation line
	cont      nameMatch // the continuation line's content as a field name
	clCount   int
	teCount   int
	cl        uint64
	chunked   bool
	bareLF    bool
	flaw      flaw
}

func (s *h1Scanner) feed(p []byte) {
	for len(p) > 0 && s.state != h1Off {
		k := s.step(p)
		if k > 0 {
			s.cr = p[k-1] == '\r'
			s.pos += uint64(k)
			p = p[k:]
		}
		if s.eol {
			s.eol = false
			s.endLine()
		}
	}
}

// step consumes a prefix of p in the current state (none when it only
// changes state); a line's LF is the last byte it consumes.
func (s *h1Scanner) step(p []byte) int {
	switch s.state {
	case h1Start:
		if b := p[0]; s.afterPOST && s.skipped < 4 && (b == '\r' || b == '\n') {
			s.skipped++
			return 1
		}
		s.h1Block = h1Block{start: s.pos}
		s.state = h1Method
		return 0
	case h1Method:
		span := upTo(p, ' ')
		if i := bytes.IndexByte(span, '\n'); i >= 0 {
			return s.lineEnd(p, i)
		}
		if s.methodLen < len(s.method) {
			copy(s.method[s.methodLen:], span)
		}
		s.methodLen += len(span)
		if len(span) < len(p) {
			s.state = h1Target
			return len(span) + 1
		}
	case h1Target:
		span := upTo(p, ' ')
		if i := bytes.IndexByte(span, '\n'); i >= 0 {
			return s.lineEnd(p, i)
		}
		if s.target == 0 && len(span) == 1 && span[0] == '*' {
			s.target = 1
		} else if len(span) > 0 {
			s.target = 2
		}
		if len(span) < len(p) {
			s.state = h1Version
			return len(span) + 1
		}
	case h1Version:
		for i, b := range p {
			switch b {
			case '\n':
				return s.lineEnd(p, i)
			case '\r': // part of CRLF; anywhere else Go refuses the line
			default:
				if s.versionLen < len(s.version) {
					s.version[s.versionLen] = b
				}
				s.versionLen++
			}
		}
	case h1LineStart:
		switch p[0] {
		case '\r':
			return 1
		case '\n':
			return s.lineEnd(p, 0)
		case ' ', '\t': // obs-fold: the line continues the previous field
			if s.field == fieldNone {
				return s.off()
			}
			s.fold()
			return 1
		}
		if !s.endField() {
			return 0
		}
		s.name = nameMatch{}
		if i := bytes.IndexByte(p, '\n'); i >= 0 { // the whole line is here
			line := p[:i]
			c := bytes.IndexByte(line, ':')
			if c < 0 {
				return s.off() // Go: missing colon
			}
			s.name.whole(line[:c])
			s.beginValue()
			if s.field != fieldOther {
				for _, b := range line[c+1:] {
					if b != '\r' {
						s.val.step(s.field, b)
					}
				}
			}
			return s.lineEnd(p, i)
		}
		s.state = h1Name
		return 0
	case h1Name:
		span := upTo(p, ':')
		if i := bytes.IndexByte(span, '\n'); i >= 0 {
			return s.lineEnd(p, i)
		}
		if s.name.n == 0 && s.name.kind == fieldNone && len(span) < len(p) {
			s.name.whole(span)
		} else {
			for _, b := range span {
				s.name.step(b)
			}
		}
		if len(span) < len(p) {
			s.beginValue()
			return len(span) + 1
		}
	case h1Value:
		if s.field == fieldOther && (!s.folded || s.contPhase == contDone) {
			if i := bytes.IndexByte(p, '\n'); i >= 0 {
				return s.lineEnd(p, i)
			}
			return len(p)
		}
		for i, b := range p {
			switch b {
			case '\n':
				return s.lineEnd(p, i)
			case '\r':
				continue
			}
			if s.field != fieldOther {
				s.val.step(s.field, b)
			}
			if s.folded {
				s.contStep(b)
			}
		}
	case h1Body:
		k := min(uint64(len(p)), s.remain)
		if s.remain -= k; s.remain == 0 {
			s.toStart()
		}
		return int(k)
	case h1ChunkSize:
		for i, b := range p {
			if d, ok := unhex(b); ok {
				if s.chunkDigits == 16 {
					return s.off()
				}
				s.remain = s.remain<<4 | uint64(d)
				s.chunkDigits++
				continue
			}
			if s.chunkDigits == 0 {
				return s.off()
			}
			switch b {
			case ';':
				s.state = h1ChunkExt
			case ' ', '\t':
				s.state = h1ChunkWS
			case '\r':
				s.state = h1ChunkLF
			default:
				return s.off()
			}
			return s.chunkBytes(i + 1)
		}
		return s.chunkBytes(len(p))
	case h1ChunkWS: // Go trims trailing whitespace, then cuts at ';'
		for i, b := range p {
			switch b {
			case ' ', '\t':
			case '\r':
				s.state = h1ChunkLF
				return s.chunkBytes(i + 1)
			default:
				return s.off()
			}
		}
		return s.chunkBytes(len(p))
	case h1ChunkExt:
		for i, b := range p {
			switch b {
			case '\r':
				s.state = h1ChunkLF
				return s.chunkBytes(i + 1)
			case '\n':
				return s.off()
			}
		}
		return s.chunkBytes(len(p))
	case h1ChunkLF:
		if p[0] != '\n' || s.chunkBytes(1) == 0 {
			return s.off()
		}
		// net/http/internal/chunked.go beginChunk: the line counts, the
		// data pays for 16 bytes plus twice its size.
		s.excess += int64(s.chunkLen) - 16 - 2*int64(s.remain)
		if s.excess = max(s.excess, 0); s.excess > maxChunkExcess {
			return s.off()
		}
		if s.remain > 0 {
			s.state = h1ChunkData
			return 1
		}
		s.trailer, s.trailerStart = true, s.pos+1
		s.field, s.bareLF, s.flaw = fieldNone, false, flawNone
		s.state = h1LineStart
		return 1
	case h1ChunkData:
		k := min(uint64(len(p)), s.remain)
		if s.remain -= k; s.remain == 0 {
			s.state = h1ChunkDataCR
		}
		return int(k)
	case h1ChunkDataCR:
		if p[0] != '\r' {
			return s.off()
		}
		s.state = h1ChunkDataLF
		return 1
	case h1ChunkDataLF:
		if p[0] != '\n' {
			return s.off()
		}
		s.chunkLine()
		return 1
	default:
		return s.off()
	}
	return len(p)
}

// takeHeaderBytes returns the size of the largest header block (request
// line and fields) seen since the last call: blocks that ended, and the one
// still open, so far. The answer does not depend on how reads split it.
func (s *h1Scanner) takeHeaderBytes() uint64 {
	n := s.longest
	s.longest = 0
	if s.state >= h1Method && s.state <= h1Value && !s.trailer {
		n = max(n, s.pos-s.start)
	}
	return n
}

func (s *h1Scanner) off() int {
	s.state = h1Off
	return 1
}

// lineEnd consumes p[:i+1], p[i] being LF, and notes whether CR came first.
func (s *h1Scanner) lineEnd(p []byte, i int) int {
	s.eol = true
	s.eolCR = (i > 0 && p[i-1] == '\r') || (i == 0 && s.cr)
	return i + 1
}

func (s *h1Scanner) toStart() {
	s.state = h1Start
	s.skipped = 0
}

func (s *h1Scanner) chunkLine() {
	s.state = h1ChunkSize
	s.remain, s.chunkLen, s.chunkDigits = 0, 0, 0
}

func (s *h1Scanner) chunkBytes(k int) int {
	if s.chunkLen += k; s.chunkLen > maxChunkLine {
		s.state = h1Off
		return 0
	}
	return k
}

func (s *h1Scanner) isMethod(m string) bool {
	return s.methodLen == len(m) && string(s.method[:len(m)]) == m
}

// endLine acts on the line just ended, by the state it ended in.
func (s *h1Scanner) endLine() {
	if !s.eolCR {
		s.bareLF = true
	}
	switch s.state {
	case h1Version:
		s.requestLine()
	case h1Value:
		s.state = h1LineStart
	case h1LineStart:
		s.endSection()
	default: // a request line without target or version, a field without colon
		s.state = h1Off
	}
}

// requestLine checks the version as net/http's ParseHTTPVersion and
// http1ServerSupportsRequest do.
func (s *h1Scanner) requestLine() {
	v := s.version
	if s.methodLen == 0 || s.target == 0 || s.versionLen != len(v) ||
		string(v[:5]) != "HTTP/" || v[6] != '.' || !isDigit(v[5]) || !isDigit(v[7]) {
		s.state = h1Off
		return
	}
	major, minor := v[5]-'0', v[7]-'0'
	if major != 1 && (major != 2 || minor != 0 || s.target != 1 || !s.isMethod("PRI")) {
		s.state = h1Off
		return
	}
	s.http11 = major > 1 || minor >= 1
	s.field = fieldNone
	s.state = h1LineStart
}

// fold starts a continuation line of the current field.
func (s *h1Scanner) fold() {
	switch s.field {
	case fieldTE:
		s.flaw.add(flawFoldedTE)
	case fieldCL:
		s.flaw.add(flawFoldedCL)
	}
	s.val.step(s.field, ' ') // Go joins the lines with a space
	s.folded = true
	s.contPhase, s.cont = contLead, nameMatch{}
	if s.trailer {
		s.contPhase = contDone
	}
	s.state = h1Value
}

// contStep's phases.
const (
	contLead  = iota // leading whitespace
	contName         // a field name, maybe
	contColon        // whitespace between a matched name and a colon
	contDone
)

// contStep looks for a Content-Length or Transfer-Encoding field folded
// into the previous one: a proxy that does not unfold obs-fold sees it.
func (s *h1Scanner) contStep(b byte) {
	ws := b == ' ' || b == '\t'
	switch s.contPhase {
	case contLead:
		if ws {
			return
		}
		s.contPhase = contName
		fallthrough
	case contName:
		if b != ':' && !ws {
			if s.cont.step(b); s.cont.kind == fieldOther {
				s.contPhase = contDone
			}
			return
		}
		if s.cont.result() == fieldOther {
			s.contPhase = contDone
			return
		}
		s.contPhase = contColon
		fallthrough
	case contColon:
		if ws {
			return
		}
		if b == ':' {
			if s.cont.kind == fieldTE {
				s.flaw.add(flawFoldedTE)
			} else {
				s.flaw.add(flawFoldedCL)
			}
		}
		s.contPhase = contDone
	}
}

func (s *h1Scanner) beginValue() {
	s.field = fieldOther
	if !s.trailer {
		switch k := s.name.result(); k {
		case fieldCL:
			s.clCount++
			s.field = k
		case fieldTE:
			s.teCount++
			s.field = k
		}
	}
	s.val = valueMatch{}
	s.folded = false
	s.state = h1Value
}

// endField takes the value of the field just ended; a Content-Length Go
// would refuse turns the scanner off.
func (s *h1Scanner) endField() bool {
	switch s.field {
	case fieldCL:
		n, ok := s.val.number()
		if !ok || (s.clCount > 1 && n != s.cl) {
			s.state = h1Off
			return false
		}
		s.cl = n
	case fieldTE:
		s.chunked = s.val.isChunked()
	}
	return true
}

// endSection ends a header block (recording its flaw and choosing the
// body's framing) or a trailer.
func (s *h1Scanner) endSection() {
	if !s.endField() {
		return
	}
	if s.trailer {
		s.trailer = false
		if s.pos-s.trailerStart > maxTrailerBytes {
			s.state = h1Off
			return
		}
		if s.bareLF { // the request behind it may be one a proxy never saw
			s.pending.add(flawBareLF)
		}
		s.toStart()
		return
	}
	s.longest = max(s.longest, s.pos-s.start)
	f := s.flaw
	if s.clCount > 0 && s.teCount > 0 {
		f.add(flawCLTE)
	}
	if s.teCount > 0 && !s.http11 {
		f.add(flawTE10)
	}
	if s.bareLF {
		f.add(flawBareLF)
	}
	f.add(s.pending)
	s.pending = flawNone
	if s.target == 1 && s.isMethod("OPTIONS") {
		// net/http answers OPTIONS * without the handler: the flaw goes
		// to the request behind it.
		s.pending = f
	} else if s.seen++; f != flawNone {
		s.out.add(s.seen, f)
	}
	s.afterPOST = s.isMethod("POST")
	switch {
	case s.teCount > 0 && s.http11:
		if s.teCount > 1 || !s.chunked { // net/http answers 501 and closes
			s.state = h1Off
			return
		}
		s.excess = 0
		s.chunkLine()
	case s.cl > 0:
		s.remain = s.cl
		s.state = h1Body
	default:
		s.toStart()
	}
}

// nameMatch compares a field name with Content-Length and
// Transfer-Encoding, ASCII case-insensitively, as it arrives.
type nameMatch struct {
	kind fieldKind // the candidate; fieldOther once none matches
	n    int       // bytes matched
}

func (m *nameMatch) step(b byte) {
	if m.kind == fieldOther {
		return
	}
	b = lowerByte(b)
	if m.n == 0 {
		switch b {
		case 'c':
			m.kind = fieldCL
		case 't':
			m.kind = fieldTE
		default:
			m.kind = fieldOther
			return
		}
	}
	if name := fieldNames[m.kind]; m.n >= len(name) || name[m.n] != b {
		m.kind = fieldOther
		return
	}
	m.n++
}

// whole matches a name that arrived in one piece.
func (m *nameMatch) whole(name []byte) {
	m.kind, m.n = fieldOther, 0
	for _, k := range [...]fieldKind{fieldCL, fieldTE} {
		if want := fieldNames[k]; len(name) == len(want) && equalFold(name, want) {
			m.kind, m.n = k, len(want)
		}
	}
}

func (m *nameMatch) result() fieldKind {
	if (m.kind == fieldCL || m.kind == fieldTE) && m.n == len(fieldNames[m.kind]) {
		return m.kind
	}
	return fieldOther
}

// valueMatch reads a Content-Length (digits, as strconv.ParseUint(v, 10,
// 63)) or checks a Transfer-Encoding for "chunked", around the whitespace
// Go trims.
type valueMatch struct {
	phase uint8 // 0 leading whitespace, 1 token, 2 trailing whitespace, 3 invalid
	n     int   // bytes of "chunked" matched
	num   uint64
}

func (v *valueMatch) step(kind fieldKind, b byte) {
	if b == ' ' || b == '\t' {
		if v.phase == 1 {
			v.phase = 2
		}
		return
	}
	if v.phase >= 2 {
		v.phase = 3
		return
	}
	v.phase = 1
	switch kind {
	case fieldCL:
		if d := uint64(b - '0'); b < '0' || b > '9' || v.num > (1<<63-1-d)/10 {
			v.phase = 3
		} else {
			v.num = v.num*10 + d
		}
	case fieldTE:
		if v.n < len("chunked") && "chunked"[v.n] == lowerByte(b) {
			v.n++
		} else {
			v.phase = 3
		}
	}
}

func (v *valueMatch) number() (uint64, bool) { return v.num, v.phase == 1 || v.phase == 2 }

func (v *valueMatch) isChunked() bool {
	return (v.phase == 1 || v.phase == 2) && v.n == len("chunked")
}

func lowerByte(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

// equalFold reports whether b is lower, ignoring ASCII case.
func equalFold(b []byte, lower string) bool {
	for i, c := range b {
		if lowerByte(c) != lower[i] {
			return false
		}
	}
	return true
}

// upTo is p up to the first c, or all of p.
func upTo(p []byte, c byte) []byte {
	if i := bytes.IndexByte(p, c); i >= 0 {
		return p[:i]
	}
	return p
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

func unhex(b byte) (byte, bool) {
	switch {
	case '0' <= b && b <= '9':
		return b - '0', true
	case 'a' <= b && b <= 'f':
		return b - 'a' + 10, true
	case 'A' <= b && b <= 'F':
		return b - 'A' + 10, true
	}
	return 0, false
}
