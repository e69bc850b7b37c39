package edge

import "time"

// HTTP/2 frame header fields (RFC 9113 §4.1, §6.2, §6.10).
const (
	h2FrameHeaderLen = 9
	h2Headers        = 0x1
	h2PushPromise    = 0x5
	h2Continuation   = 0x9
	h2RSTStream      = 0x3
	h2EndHeaders     = 0x4
)

// h2Scanner walks HTTP/2 frame headers and skips payloads; open says a
// header block has begun and its last frame is not fully read yet (a
// HEADERS frame still arriving counts, so does one without END_HEADERS
// waiting for its CONTINUATION).
type h2Scanner struct {
	hdr  [h2FrameHeaderLen]byte
	n    int    // frame header bytes collected
	skip uint32 // payload bytes left in the current frame
	ends bool   // the current frame ends its header block
	open bool
	// resets is a token bucket of the client's RST_STREAM frames; flood is
	// set once it runs dry.
	resets    float64
	resetLast time.Time
	flood     bool
}

// Rapid reset (CVE-2023-44487): a client that opens streams and cancels
// them at once makes the server start a handler per stream while never
// counting against the concurrent-stream limit. net/http bounds the
// handlers it queues, but a fast enough handler keeps the queue short and
// the connection open indefinitely. A client may cancel h2ResetBurst
// streams at once and h2ResetRate per second after that (a browser
// navigating away cancels a handful); past it the connection is closed.
const (
	h2ResetBurst = 200
	h2ResetRate  = 100
)

func (s *h2Scanner) reset(now time.Time) {
	if s.resetLast.IsZero() {
		s.resets = h2ResetBurst
	} else {
		s.resets = min(h2ResetBurst, s.resets+now.Sub(s.resetLast).Seconds()*h2ResetRate)
	}
	s.resetLast = now
	if s.resets--; s.resets < 0 {
		s.flood = true
	}
}

func (s *h2Scanner) feed(p []byte) {
	for len(p) > 0 {
		if s.n < h2FrameHeaderLen {
			k := copy(s.hdr[s.n:], p)
			s.n += k
			p = p[k:]
			if s.n < h2FrameHeaderLen {
				return
			}
			s.skip = uint32(s.hdr[0])<<16 | uint32(s.hdr[1])<<8 | uint32(s.hdr[2])
			switch typ, end := s.hdr[3], s.hdr[4]&h2EndHeaders != 0; typ {
			case h2Headers, h2PushPromise:
				s.open, s.ends = true, end
			case h2Continuation:
				s.ends = end
			case h2RSTStream:
				s.ends = false
				s.reset(time.Now())
			default:
				s.ends = false
			}
		} else {
			k := uint32(min(len(p), int(s.skip)))
			s.skip -= k
			p = p[k:]
		}
		if s.skip == 0 {
			s.n = 0
			if s.ends {
				s.open, s.ends = false, false
			}
		}
	}
}
