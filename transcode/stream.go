package transcode

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/portico-dev/portico/policies/chain"
)

// Server-streaming responses.
//
// NDJSON (the default, application/x-ndjson): one JSON object per line,
// {"result": <message>} for each message and {"error": <google.rpc.Status>}
// as the last line when the stream fails after it started — the same
// envelopes grpc-gateway writes, under an honest content type.
//
// SSE (Accept: text/event-stream): one `data:` event per message and a final
// `event: error` whose data is the google.rpc.Status.
//
// A stream of google.api.HttpBody writes the raw bytes of each message, with
// the first message's content type.

func (c *bindingCodec) NewStreamWriter(w http.ResponseWriter, r *http.Request) StreamWriter {
	return &streamWriter{
		c:   c,
		w:   w,
		rc:  http.NewResponseController(w),
		sse: strings.Contains(r.Header.Get("Accept"), "text/event-stream"),
	}
}

type streamWriter struct {
	c       *bindingCodec
	w       http.ResponseWriter
	rc      *http.ResponseController
	sse     bool
	started bool
	buf     []byte
}

func (s *streamWriter) start(ct string) {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	switch {
	case ct != "":
		h.Set("Content-Type", ct)
	case s.sse:
		h.Set("Content-Type", "text/event-stream")
	default:
		h.Set("Content-Type", "application/x-ndjson")
	}
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("X-Content-Type-Options", "nosniff")
	s.w.WriteHeader(http.StatusOK)
	_ = s.rc.Flush()
}

func (s *streamWriter) Start() { s.start("") }

func (s *streamWriter) Send(msg *chain.Payload) error {
	if s.c.httpBodyResp {
		out, ct, err := s.c.encode(s.buf[:0], msg)
		if err != nil {
			return err
		}
		s.buf = out
		s.start(ct)
		return s.write(out)
	}
	s.start("")
	b := s.buf[:0]
	if s.sse {
		b = append(b, "data: "...)
	} else {
		b = append(b, `{"result":`...)
	}
	b, _, err := s.c.encode(b, msg)
	if err != nil {
		return err
	}
	if s.sse {
		b = append(b, "\n\n"...)
	} else {
		b = append(b, "}\n"...)
	}
	s.buf = b
	return s.write(b)
}

func (s *streamWriter) write(b []byte) error {
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *streamWriter) SendError(err error) {
	s.start("")
	st, _ := chain.StatusOf(err)
	// Trailers carry the status for every format; for raw HttpBody streams
	// they are the only signal, as raw bytes have no envelope.
	h := s.w.Header()
	h.Set(http.TrailerPrefix+"Grpc-Status", strconv.Itoa(int(st.Code())))
	h.Set(http.TrailerPrefix+"Grpc-Message", url.PathEscape(st.Message()))
	if s.c.httpBodyResp {
		return
	}
	body := chain.MarshalStatus(st, s.c.types)
	b := s.buf[:0]
	if s.sse {
		b = append(b, "event: error\ndata: "...)
		b = append(b, body...)
		b = append(b, "\n\n"...)
	} else {
		b = append(b, `{"error":`...)
		b = append(b, body...)
		b = append(b, "}\n"...)
	}
	s.buf = b
	_ = s.write(b)
}
