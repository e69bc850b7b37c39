package policies

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"cel.dev/cel-go/cel"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-dev/portico/policies/chain"
)

// celCostLimit bounds one allow_if evaluation (a rule iterating over a huge
// repeated field fails closed instead of burning CPU).
const celCostLimit = 1_000_000

// allowIf is a compiled CEL rule.
type allowIf struct {
	src string
	prg cel.Program
}

// compileAllowIf compiles expr for requests of type in. Errors carry CEL's
// own position text ("<input>:1:9: undeclared reference ...").
func compileAllowIf(expr string, in protoreflect.MessageDescriptor) (*allowIf, error) {
	env, err := cel.NewEnv(
		cel.TypeDescs(in.ParentFile()),
		cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("subject", cel.StringType),
		cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("request", cel.ObjectType(string(in.FullName()))),
	)
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("%s", strings.TrimSpace(iss.Err().Error()))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) && !ast.OutputType().IsExactType(cel.DynType) {
		return nil, fmt.Errorf("allow_if must be a bool expression, it is %s", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(celCostLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, err
	}
	return &allowIf{src: expr, prg: prg}, nil
}

// scopesStage checks the scopes the method requires: 403 before any work
// is spent. An anonymous caller of a public method has none to check.
func (p *Policy) scopesStage() chain.Stage {
	if len(p.scopes) == 0 {
		return nil
	}
	scopes, optional := p.scopes, p.authMode == authOptional
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		if c.Caller != nil || !optional {
			have := callerScopes(c.Caller)
			for _, s := range scopes {
				if !slices.Contains(have, s) {
					p.metrics.denied.WithLabelValues("scope").Inc()
					return status.Error(codes.PermissionDenied, "permission denied: the credential lacks scope "+strconv.Quote(s))
				}
			}
		}
		return next(ctx, c)
	}
}

// allowIfStage runs the method's CEL access rule over the caller, the
// headers and the request message: 403 unless it says true.
func (p *Policy) allowIfStage() chain.Stage {
	rule := p.allowIf
	if rule == nil {
		return nil
	}
	return func(ctx context.Context, c *chain.Call, next chain.Next) error {
		req, err := c.Req.Message()
		if err != nil {
			return status.Error(codes.InvalidArgument, "the request does not decode: "+err.Error())
		}
		if err := rule.eval(ctx, c.Caller, c.R, req); err != nil {
			p.metrics.denied.WithLabelValues("allow_if").Inc()
			return err
		}
		return next(ctx, c)
	}
}

// eval runs the rule; anything but true is a 403.
func (a *allowIf) eval(ctx context.Context, c *Caller, r *http.Request, req proto.Message) error {
	claims := map[string]any{}
	subject := ""
	if c != nil {
		claims, subject = c.Claims, c.Subject
	}
	headers := make(map[string]string, len(r.Header))
	for k, vs := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	out, _, err := a.prg.ContextEval(ctx, map[string]any{
		"claims": claims, "subject": subject, "headers": headers, "request": req,
	})
	if err != nil {
		return status.Error(codes.PermissionDenied, "permission denied: the access rule could not be evaluated ("+err.Error()+")")
	}
	if b, ok := out.Value().(bool); !ok || !b {
		return status.Error(codes.PermissionDenied, "permission denied by the method's access rule")
	}
	return nil
}
