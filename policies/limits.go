package policies

import (
	"context"
	"net/http"
	"strconv"

	"google.golang.org/grpc/codes"

	"github.com/portico-dev/portico/policies/chain"
)

// bodyLimitStage enforces the method's max_body_bytes: a declared length
// past it is refused before a byte is read (413), and the body reader stops
// there for bodies of unknown length.
func (p *Policy) bodyLimitStage() chain.Stage {
	limit := p.maxBody
	if limit <= 0 {
		return nil
	}
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		if c.R.ContentLength > limit {
			return chain.HTTPError(http.StatusRequestEntityTooLarge, codes.ResourceExhausted,
				"request body exceeds this method's limit of "+strconv.FormatInt(limit, 10)+" bytes")
		}
		c.R.Body = http.MaxBytesReader(c.W, c.R.Body, limit)
		return next(ctx, c)
	}
}
