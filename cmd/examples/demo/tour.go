package main

import (
	"fmt"
	"os"
	"text/template"
)

// tokens are the demo IdP's tokens the tour uses.
type tokens struct{ Alice, Bob, Admin string }

// tour is what the printed curl lines need.
type tour struct {
	Base, Admin, Consul string // http://host:port, http://host:port, host:port
	KeyFile             string
	KeyCreated          bool
	Lifetime            string // of a token: "30 days"
	Tokens              tokens
	HavePortico         bool // bin/portico exists (make portico)
}

func printTour(t tour) {
	if err := tourText.Execute(os.Stdout, t); err != nil {
		fmt.Fprintln(os.Stderr, "demo: tour:", err)
	}
}

// tourText is the tour: every line was run against the demo, and its
// comment says what it shows.
var tourText = template.Must(template.New("tour").Parse(`
Portico is serving on {{.Base}}. Try (each comment says what you should see):

  curl -s {{.Base}}/v1/users/alice                                  # 200, {"name":"users/alice","displayName":"Alice",…}
  curl -s '{{.Base}}/v1/users?states=STATE_ACTIVE&pageSize=5'       # 200, {"users":[alice],"nextPageToken":""}
  curl -s -X POST {{.Base}}/v1/users -H 'Content-Type: application/json' -d '{"displayName":"Carol","email":"carol@example.com"}'   # 200, {"name":"users/u3",…}
  curl -s -X PATCH '{{.Base}}/v1/users/alice?updateMask=display_name' -H 'Content-Type: application/json' -d '{"displayName":"Alice A."}'   # 200, "displayName":"Alice A."
  curl -s {{.Base}}/v1/users/alice/orders/o-1001                    # 200, {"orderId":"o-1001",…,"status":"ORDER_STATUS_OPEN",…}
  curl -s -X POST {{.Base}}/v1/orders/o-1001:cancel -H 'Content-Type: application/json' -d '{"reason":"demo"}'   # 200, "status":"ORDER_STATUS_CANCELLED","cancelReason":"demo"
  curl -s {{.Base}}/v1/orders/o-1001/status                         # 200, "ORDER_STATUS_CANCELLED" (response_body: one field)
  curl -sN '{{.Base}}/v1/orders:stream?count=5&intervalMs=300'      # 200, 5 lines {"result":{"orderId":"s-1",…}}, 300 ms apart
  curl -sN -H 'Accept: text/event-stream' '{{.Base}}/v1/users:watch?count=3&intervalMs=500'   # server-sent events: data: {"kind":"existing",…} per user, then 3 ticks
  for i in $(seq 20); do curl -s -o /dev/null -D - {{.Base}}/v1/products/p-1 | grep -i served-version; done | sort | uniq -c   # about 18 × 1, 2 × 2 (a 90/10 split from Consul's service-splitter; anonymous callers are split per request)
  curl -s '{{.Admin}}/traffic?service=products&method=/portico.examples.products.v1.ProductService/GetProduct&subject=alice'   # where alice's calls go, and why: "chain": "configured", the 90/10 weights, her bucket (a caller with a subject always gets the same), the chosen subset, its instance
  curl -s '{{.Base}}/v1/assets/img/logo%2Fv2.png'                   # 200, {"path":"img/logo%2Fv2.png","size":"17"} (an encoded / stays in the {path=**} value)
  curl -s -o /dev/null -D - {{.Base}}/v1/users/alice/avatar         # 200 with Content-Type: image/png (google.api.HttpBody)
  curl -si {{.Base}}/v1/debug/fail/5?message=gone                   # 404, {"code":5,"message":"gone","details":[]} (NOT_FOUND)
  curl -si -X POST {{.Base}}/v1/users -H 'Content-Type: application/json' -d '{"bogus":1}'   # 400, {"code":3,"message":"invalid JSON body: … unknown field \"bogus\"",…}

Composition: one GET, four services in parallel (the home screen of frontends/home/v1/home.proto):
  curl -s '{{.Base}}/api/home/alice?productIds=p-1&productIds=p-2'   # 200, {"profile":{"name":"users/alice",…},"recentOrders":{"orders":[…]},"recommended":[p-1, p-2],"partial":[],"plans":{…}}
  curl -si -H 'Grpc-Metadata-X-Demo-Slow: orders' '{{.Base}}/api/home/alice?productIds=p-1'   # 200 after 300 ms, Portico-Partial: orders, "recentOrders":{"orders":[]}, "partial":[{"call":"orders","code":"DEADLINE_EXCEEDED",…,"fallback":"empty"}]
  curl -si -H 'Grpc-Metadata-X-Demo-Slow: accounts' '{{.Base}}/api/home/alice'   # 200 after 500 ms, Portico-Partial: plans, the literal fallback {"plans":[{"name":"free"}]}
  curl -si {{.Base}}/api/home/zed                                   # 404, "call profile: user \"users/zed\" not found"

Frontends: the same services, another client's view (the partner sees only what products.proto tags for it):
  curl -s -H 'Host: partner.localhost' {{.Base}}/v1/products/p-1     # {"id":"p-1","name":"Example product 1","priceCents":"1037","currency":"EUR"}
  curl -s -H 'Host: partner.localhost' {{.Base}}/v1/users/alice      # 404: users is not offered to partners

The API, described:  curl -s {{.Base}}/openapi.json | head -c 300   # the OpenAPI 3.1 document of every route above; open {{.Base}}/docs in a browser for its page

Readiness:         curl -s {{.Admin}}/readyz                                   # {"status":"ready","checks":[routes, identity, consul]}
Metrics:           curl -s {{.Admin}}/metrics | grep '^portico_upstream_instances'   # healthy instances per service: products 2, the others 1
                   curl -s {{.Admin}}/metrics | grep '^portico_traffic_requests_total{service="products"'   # products calls by subset: v1 about 9 in 10, v2 the rest
Consul (HTTP API): curl -s 'http://{{.Consul}}/v1/health/service/products?passing' | grep -o '"ID":"products-[0-9]*"'   # "ID":"products-1", "ID":"products-2"
Deny Portico → orders, then allow again (Consul answers true to each change):
  curl -s -X PUT 'http://{{.Consul}}/v1/connect/intentions/exact?source=portico&destination=orders' -d '{"Action":"deny"}'
  sleep 1; curl -si {{.Base}}/v1/orders/o-1001/status              # 403, "Consul intentions deny portico → orders: …" (decisions are cached up to 1 s)
  curl -s -X DELETE 'http://{{.Consul}}/v1/connect/intentions/exact?source=portico&destination=orders'   # then 200 again within a second
The route table:   bin/portico routes --consul {{.Consul}}             # one line per route: METHOD TEMPLATE GRPC-METHOD BODY RESPONSE-BODY{{if not .HavePortico}}  (make portico builds bin/portico){{end}}

Policies declared in protos/examples/accounts/v1/accounts.proto. {{if .KeyCreated}}A new demo signing key is{{else}}The demo signing key is{{end}} kept
in {{.KeyFile}}, so these tokens keep working in later runs for {{.Lifetime}} (delete the file for a new key):

  ALICE={{.Tokens.Alice}}
  BOB={{.Tokens.Bob}}
  ADMIN={{.Tokens.Admin}}
  curl -si {{.Base}}/v1/whoami                                      # 401, WWW-Authenticate: Bearer realm="portico"
  curl -s -H "Authorization: Bearer $ALICE" {{.Base}}/v1/whoami     # 200, the identity metadata the service got: x-portico-subject alice, x-portico-claim-plan paid
  curl -s -H "Authorization: Bearer $ALICE" -H 'Grpc-Metadata-X-Portico-Subject: root' {{.Base}}/v1/whoami   # the same: the forged header is stripped
  curl -si -H "Authorization: Bearer $ALICE" {{.Base}}/v1/accounts/alice   # 200, Portico-Cache: MISS, then HIT when run again (30 s per caller)
  curl -s -H "Authorization: Bearer $ALICE" {{.Base}}/v1/accounts/bob      # 403, "permission denied by the method's access rule" (allow_if)
  curl -s -H "Authorization: Bearer $ADMIN" {{.Base}}/v1/accounts/bob      # 200, {"id":"bob",…}: admins may
  curl -s -X POST {{.Base}}/v1/accounts -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' -d '{"id":"9","email":"x","age":3}'   # 400, every violation: id, email, displayName, age, plan
  for i in $(seq 62); do curl -s -o /dev/null -w '%{http_code} ' -H "Authorization: Bearer $BOB" {{.Base}}/v1/quota; done; echo   # free tier, 60 a minute: 60 × 200, then 429 (one more call each second)
  curl -si {{.Base}}/v1/plans                                       # public: Portico-Cache: MISS, then HIT for everyone (60 s)
Lint a proto offline: bin/portico lint -I protos protos/examples/accounts/v1/accounts.proto
`))
