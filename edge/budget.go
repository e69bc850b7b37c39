package edge

import (
	"io"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/policies/chain"
)

// bodyBudget bounds the request-body bytes that all requests together hold
// in memory (edge.max_inflight_body_bytes). Bytes are charged as they are
// read, never as a Content-Length declares them, and given back when the
// request ends; a read that would go past the budget fails the request with
// 503 and Retry-After, so a burst of large uploads slows clients down
// instead of growing the process.
type bodyBudget struct {
	limit int64
	used  atomic.Int64
}

// budgetChunk is the most one Read asks for: the budget is charged before
// the bytes land, one chunk at a time.
const budgetChunk = 32 << 10

var errBodyBudget = chain.NewError(status.New(codes.Unavailable,
	"too many request bodies are being received at once (edge.max_inflight_body_bytes); retry shortly")).
	WithHeader("Retry-After", "1")

// budgetedBody is a request body that charges the budget as it is read.
type budgetedBody struct {
	rc      io.ReadCloser
	budget  *bodyBudget
	charged int64
	eof     bool // read to the end
}

func (b *budgetedBody) Read(p []byte) (int, error) {
	if len(p) > budgetChunk {
		p = p[:budgetChunk]
	}
	want := int64(len(p))
	if b.budget.used.Add(want) > b.budget.limit {
		b.budget.used.Add(-want)
		return 0, errBodyBudget
	}
	n, err := b.rc.Read(p)
	b.budget.used.Add(int64(n) - want)
	b.charged += int64(n)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *budgetedBody) Close() error { return b.rc.Close() }

// release gives the bytes read back to the budget once the request ended.
func (b *budgetedBody) release() {
	if b.budget != nil && b.charged > 0 {
		b.budget.used.Add(-b.charged)
	}
	*b = budgetedBody{}
}
