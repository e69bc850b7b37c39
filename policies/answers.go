package policies

import (
	"bytes"
	"context"
	"time"
)

// AnswerStore keeps the answers of composed calls that fall back to their
// last good answer, in the cache store (memory, or Redis with
// policies.cache.store: redis, where every edge instance sees them).
type AnswerStore struct{ s *stores }

// Answers returns the compiler's answer store; nil for a nil compiler.
func (c *Compiler) Answers() *AnswerStore {
	if c == nil {
		return nil
	}
	return &AnswerStore{c.stores}
}

// Get returns the answer kept under key and when it was stored; a store
// that fails counts as a miss (the call's other fallbacks follow).
func (a *AnswerStore) Get(ctx context.Context, key string) ([]byte, time.Time, bool) {
	e, err := a.s.cache.get(ctx, "answer:"+key)
	if err != nil || e == nil {
		return nil, time.Time{}, false
	}
	return e.Body, e.Stored, true
}

// Put keeps answer under key for keep.
func (a *AnswerStore) Put(ctx context.Context, key string, answer []byte, keep time.Duration) {
	_ = a.s.cache.set(ctx, "answer:"+key, &Response{Body: bytes.Clone(answer), Stored: time.Now()}, keep)
}
