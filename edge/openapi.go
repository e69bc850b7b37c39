package edge

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-dev/portico/edge/compose"
	"github.com/portico-dev/portico/transcode/openapi"
)

// The paths of the route table's OpenAPI document (edge.openapi).
const (
	openAPIJSON = "/openapi.json"
	openAPIYAML = "/openapi.yaml"
)

// apiDoc is a route table's OpenAPI document, rendered once.
type apiDoc struct {
	once       sync.Once
	json, yaml []byte
	etag       string
	err        error
}

// OpenAPI renders the table's document (once per table) as JSON and YAML.
func (t *RouteTable) OpenAPI() (json, yaml []byte, err error) {
	d := t.openAPI()
	return d.json, d.yaml, d.err
}

func (t *RouteTable) openAPI() *apiDoc {
	d := &t.doc
	d.once.Do(func() {
		doc := openapi.Document(OpenAPIOperations(t))
		if d.json, d.err = doc.RenderJSON("  "); d.err != nil {
			return
		}
		if d.yaml, d.err = doc.Render(); d.err != nil {
			return
		}
		sum := sha256.Sum256(d.json)
		d.etag = `"` + hex.EncodeToString(sum[:16]) + `"`
	})
	return d
}

// OpenAPIOperations lists the table's routes as the document describes
// them, with the credentials each accepts, and the document's heading.
func OpenAPIOperations(t *RouteTable) ([]openapi.Operation, openapi.Info) {
	info := openapi.Info{Title: "Portico", Version: "1",
		Description: "The routes this Portico serves, made from its route table: REST over the gRPC services it finds."}
	schemes := map[string]bool{}
	var ops []openapi.Operation
	for _, r := range t.routes {
		op := openapi.Operation{Binding: r.Binding, Composed: composedCalls(r.Binding.Method.Desc)}
		if c := r.Chain.Credentials(); c != nil {
			if c.Bearer {
				op.Security = append(op.Security, "bearer")
				if !schemes["bearer"] {
					schemes["bearer"] = true
					info.Schemes = append(info.Schemes, openapi.Scheme{Name: "bearer", Type: "http", Description: "a JWT of a configured provider"})
				}
			}
			for _, h := range c.KeyHeaders {
				name := "apiKey-" + strings.ToLower(h)
				op.Security = append(op.Security, name)
				if !schemes[name] {
					schemes[name] = true
					info.Schemes = append(info.Schemes, openapi.Scheme{Name: name, Type: "apiKey", In: "header", Param: h, Description: "an API key"})
				}
			}
			op.AuthOptional = c.Optional
		}
		ops = append(ops, op)
	}
	return ops, info
}

// composedCalls are the calls of a composed method, as its document
// describes them; nil for a service's method.
func composedCalls(md protoreflect.MethodDescriptor) []openapi.ComposedCall {
	opt, err := compose.Option(md)
	if err != nil || opt == nil {
		return nil
	}
	var out []openapi.ComposedCall
	for _, c := range opt.GetCalls() {
		cc := openapi.ComposedCall{Name: c.GetName(), Method: c.GetMethod(), Target: jsonPath(md.Output(), c.GetTarget()), Optional: c.GetOptional()}
		if c.GetForEach() != nil {
			cc.Method += " (once per element of " + c.GetForEach().GetOver() + ")"
		}
		if cc.Optional {
			fb := c.GetFallback()
			var or []string
			if d := fb.GetLastGood(); d != nil {
				or = append(or, "its last good answer for the same request if at most "+d.AsDuration().String()+" old")
			}
			switch {
			case fb.GetLiteral() != "":
				or = append(or, "the value `"+fb.GetLiteral()+"`")
			case fb.GetEmpty():
				or = append(or, "an empty message")
			default:
				or = append(or, "unset")
			}
			cc.Fallback = strings.Join(or, ", else ")
		}
		out = append(out, cc)
	}
	return out
}

// jsonPath is a field path of md ("home.recent_orders") with its fields'
// JSON names, as clients read them ("home.recentOrders").
func jsonPath(md protoreflect.MessageDescriptor, path string) string {
	if path == "" {
		return ""
	}
	parts := strings.Split(path, ".")
	for i, p := range parts {
		if md == nil {
			break
		}
		fd := md.Fields().ByName(protoreflect.Name(p))
		if fd == nil {
			break
		}
		parts[i], md = fd.JSONName(), fd.Message()
	}
	return strings.Join(parts, ".")
}

// serveOpenAPI answers GET /openapi.json or /openapi.yaml, with an ETag
// (a client that has the document gets 304).
func serveOpenAPI(w http.ResponseWriter, r *http.Request, t *RouteTable) error {
	d := t.openAPI()
	if d.err != nil {
		return status.Error(codes.Internal, "the OpenAPI document could not be rendered: "+d.err.Error())
	}
	body, ctype := d.json, "application/json"
	if r.URL.Path == openAPIYAML {
		body, ctype = d.yaml, "application/yaml"
	}
	h := w.Header()
	h.Set("Etag", d.etag)
	h.Set("Cache-Control", "no-cache")
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, d.etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h.Set("Content-Type", ctype)
	_, _ = w.Write(body)
	return nil
}

//go:embed docs
var docsFS embed.FS

// asset is one file of the docs page.
type asset struct {
	body  []byte
	ctype string
}

// docsAssets are the docs page's files (edge.docs), by path; the page
// reads docs/app.js and openapi.json relative to /docs.
var docsAssets = func() map[string]asset {
	read := func(name string) []byte {
		b, _ := docsFS.ReadFile("docs/" + name) // embedded: always there
		return b
	}
	return map[string]asset{
		"/docs":         {read("index.html"), "text/html; charset=utf-8"},
		"/docs/app.js":  {read("app.js"), "text/javascript; charset=utf-8"},
		"/docs/app.css": {read("app.css"), "text/css; charset=utf-8"},
	}
}()

// serveDocs answers the docs page and its assets: same-origin only (the
// page reads /openapi.json and nothing else).
func serveDocs(w http.ResponseWriter, r *http.Request) error {
	a := docsAssets[r.URL.Path]
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	_, _ = w.Write(a.body)
	return nil
}
