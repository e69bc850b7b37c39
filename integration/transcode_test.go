package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestUsersCRUD(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	r := do(t, e.c, "GET", e.url+"/v1/users/alice", "")
	if r.code != 200 {
		t.Fatalf("GET alice: %d %s", r.code, r.body)
	}
	u := jsonOf(t, r.body)
	// Canonical proto3 JSON: lowerCamelCase, 64-bit as strings, enums by name.
	if u["name"] != "users/alice" || u["displayName"] == nil || u["state"] != "STATE_ACTIVE" {
		t.Fatalf("alice: %v", u)
	}
	if _, ok := u["id"].(string); !ok {
		t.Fatalf("int64 id must be a JSON string: %v", u["id"])
	}
	if _, ok := u["createTime"].(string); !ok {
		t.Fatalf("createTime must be an RFC 3339 string: %v", u["createTime"])
	}

	r = do(t, e.c, "POST", e.url+"/v1/users", `{"displayName":"Carol","email":"carol@example.com","labels":{"team":"x"},"attributes":{"a":[1,true]},"nickname":"caz","phone":"+1"}`)
	if r.code != 200 {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	carol := jsonOf(t, r.body)
	name := carol["name"].(string)
	if !strings.HasPrefix(name, "users/") || carol["nickname"] != "caz" || carol["phone"] != "+1" {
		t.Fatalf("created: %v", carol)
	}

	// PATCH with body "user", the resource name from the path, the mask from the query.
	r = do(t, e.c, "PATCH", e.url+"/v1/"+name+"?updateMask=display_name", `{"displayName":"Caroline","email":"ignored@example.com"}`)
	if r.code != 200 {
		t.Fatalf("patch: %d %s", r.code, r.body)
	}
	if u := jsonOf(t, r.body); u["displayName"] != "Caroline" || u["email"] != "carol@example.com" {
		t.Fatalf("patched with mask display_name: %v", u)
	}

	r = do(t, e.c, "DELETE", e.url+"/v1/"+name, "")
	if r.code != 200 || strings.TrimSpace(r.body) != "{}" {
		t.Fatalf("delete: %d %q (Empty must render as {})", r.code, r.body)
	}
	wantStatus(t, do(t, e.c, "GET", e.url+"/v1/"+name, ""), 404, 5, "")
}

func TestQueryBinding(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Enums by name and by number, repeated, wrappers, Timestamp.
	r := do(t, e.c, "GET", e.url+"/v1/users?states=STATE_ACTIVE&states=2&verified=true&createdAfter=2000-01-01T00:00:00Z&pageSize=10", "")
	if r.code != 200 {
		t.Fatalf("list: %d %s", r.code, r.body)
	}
	if users, _ := jsonOf(t, r.body)["users"].([]any); len(users) == 0 {
		t.Fatalf("no users: %s", r.body)
	}
	// Nested messages, Duration, Int32Value.
	r = do(t, e.c, "GET", e.url+"/v1/orders?filter.status=ORDER_STATUS_OPEN&filter.minTotalCents=1&maxAge=315360000s&limit=5&filter.skus=sku-1&filter.skus=sku-2", "")
	if r.code != 200 {
		t.Fatalf("orders: %d %s", r.code, r.body)
	}
	// Bad values name the field.
	// ... as the client wrote it.
	wantStatus(t, do(t, e.c, "GET", e.url+"/v1/users?pageSize=ten", ""), 400, 3, `"pageSize"`)
	wantStatus(t, do(t, e.c, "GET", e.url+"/v1/users?page_size=ten", ""), 400, 3, `"page_size"`)
	wantStatus(t, do(t, e.c, "GET", e.url+"/v1/users?states=STATE_NOPE", ""), 400, 3, `"states"`)
	wantStatus(t, do(t, e.c, "GET", e.url+"/v1/orders?max_age=forever", ""), 400, 3, `"max_age"`)
	wantStatus(t, do(t, e.c, "GET", e.url+"/v1/debug/fail/abc", ""), 400, 3, `"code" (path)`)
}

// TestTranscodingCorrectness pins issue 12's transcoding fixes end to end,
// against the real example services.
func TestTranscodingCorrectness(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := do(t, e.c, "POST", e.url+"/v1/users", `{"displayName":"Dana","email":"dana@example.com"}`)
	if r.code != 200 {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	name := jsonOf(t, r.body)["name"].(string)

	// A PATCH without update_mask updates the fields the body names, and
	// only those: the service does a full replace on an empty mask, so
	// without the inferred mask the email would be wiped.
	r = do(t, e.c, "PATCH", e.url+"/v1/"+name, `{"displayName":"Dana D."}`)
	if u := jsonOf(t, r.body); r.code != 200 || u["displayName"] != "Dana D." || u["email"] != "dana@example.com" {
		t.Fatalf("PATCH without a mask: %d %s", r.code, r.body)
	}
	// A FieldMask in its JSON form binds the proto paths.
	r = do(t, e.c, "PATCH", e.url+"/v1/"+name+"?updateMask=displayName", `{"displayName":"Dana E.","email":"ignored@example.com"}`)
	if u := jsonOf(t, r.body); r.code != 200 || u["displayName"] != "Dana E." || u["email"] != "dana@example.com" {
		t.Fatalf("PATCH ?updateMask=displayName: %d %s", r.code, r.body)
	}
	wantStatus(t, do(t, e.c, "PATCH", e.url+"/v1/"+name+"?updateMask=display_Name", `{}`), 400, 3, `"display_Name" mixes snake_case and camelCase`)
	// A query parameter naming a field the query cannot set is a 400.
	wantStatus(t, do(t, e.c, "GET", e.url+"/v1/users?pageSize.x=1", ""), 400, 3, `query parameter "pageSize.x"`)
	// An encoded colon is data, not the verb's separator: this is not
	// POST /v1/orders/o-1001:cancel (nor a cancel of order "").
	r = do(t, e.c, "POST", e.url+"/v1/orders/o-1001%3Acancel", `{}`)
	if r.code == 200 {
		t.Fatalf("POST /v1/orders/o-1001%%3Acancel was served: %s", r.body)
	}
	// An upstream UNAUTHENTICATED is a 401 with a challenge (RFC 9110 §11.6.1).
	r = do(t, e.c, "GET", e.url+"/v1/debug/fail/16?message=who", "")
	wantStatus(t, r, 401, 16, "who")
	if got := r.header.Values("WWW-Authenticate"); len(got) != 1 || got[0] != `Bearer realm="portico"` {
		t.Fatalf("WWW-Authenticate = %q", got)
	}
	// Messages are not HTML-escaped.
	r = do(t, e.c, "GET", e.url+"/v1/debug/fail/3?message=a%3D%3Eb%3Cc%3E%26", "")
	if !strings.Contains(r.body, `"a=>b<c>&"`) {
		t.Fatalf("escaped message: %s", r.body)
	}
}

func TestOrdersBindings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := do(t, e.c, "POST", e.url+"/v1/orders", `{"userId":"alice","items":[{"sku":"sku-9","quantity":2,"unitPriceCents":"150"}],"tags":{"gift":1}}`)
	if r.code != 200 {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	o := jsonOf(t, r.body)
	id := o["orderId"].(string)
	if o["totalCents"] != "300" {
		t.Fatalf("total: %v", o)
	}
	// Both bindings of GetOrder.
	if r := do(t, e.c, "GET", e.url+"/v1/orders/"+id, ""); r.code != 200 {
		t.Fatalf("get: %d %s", r.code, r.body)
	}
	if r := do(t, e.c, "GET", e.url+"/v1/users/alice/orders/"+id, ""); r.code != 200 {
		t.Fatalf("additional binding: %d %s", r.code, r.body)
	}
	wantStatus(t, do(t, e.c, "GET", e.url+"/v1/users/bob/orders/"+id, ""), 404, 5, "")
	// response_body: the enum alone.
	if r := do(t, e.c, "GET", e.url+"/v1/orders/"+id+"/status", ""); r.code != 200 || strings.TrimSpace(r.body) != `"ORDER_STATUS_OPEN"` {
		t.Fatalf("status: %d %s", r.code, r.body)
	}
	// Custom verb.
	r = do(t, e.c, "POST", e.url+"/v1/orders/"+id+":cancel", `{"reason":"changed my mind"}`)
	if r.code != 200 || jsonOf(t, r.body)["status"] != "ORDER_STATUS_CANCELLED" {
		t.Fatalf("cancel: %d %s", r.code, r.body)
	}
	wantStatus(t, do(t, e.c, "POST", e.url+"/v1/orders/"+id+":cancel", `{}`), 400, 9, "")
	// Any (resolved against the reflected files), Value, ListValue.
	r = do(t, e.c, "POST", e.url+"/v1/orders/"+id+"/notes",
		`{"text":"n","payload":{"@type":"type.googleapis.com/portico.examples.orders.v1.LineItem","sku":"s","quantity":3},"meta":{"k":[1,"x",null]},"history":["a",2]}`)
	if r.code != 200 {
		t.Fatalf("note: %d %s", r.code, r.body)
	}
	n := jsonOf(t, r.body)
	if p := n["payload"].(map[string]any); p["sku"] != "s" || p["@type"] != "type.googleapis.com/portico.examples.orders.v1.LineItem" {
		t.Fatalf("Any payload round trip: %v", n)
	}
	wantStatus(t, do(t, e.c, "POST", e.url+"/v1/orders/"+id+"/notes", `{"payload":{"@type":"type.googleapis.com/no.Such"}}`), 400, 3, "no.Such")
	// Custom HTTP method.
	if r := do(t, e.c, "PURGE", e.url+"/v1/orders/"+id, ""); r.code != 200 {
		t.Fatalf("purge: %d %s", r.code, r.body)
	}
	wantStatus(t, do(t, e.c, "GET", e.url+"/v1/orders/"+id, ""), 404, 5, "")
}

func TestTemplates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	check := func(method, path, body, field, want string) {
		t.Helper()
		r := do(t, e.c, method, e.url+path, body)
		if r.code != 200 {
			t.Fatalf("%s %s: %d %s", method, path, r.code, r.body)
		}
		if got := jsonOf(t, r.body)[field]; got != want {
			t.Fatalf("%s %s: %s = %v, want %q", method, path, field, got, want)
		}
	}
	// {path=**}: multi-segment, %2F stays encoded, other escapes decode.
	check("GET", "/v1/assets/img/a%2Fb/c%20d.png", "", "path", "img/a%2Fb/c d.png")
	// {id}: single segment, everything decodes.
	check("GET", "/v1/regions/eu/products/p%2F1/stock", "", "id", "p/1")
	check("GET", "/v1/shelves/s1/books/b2", "", "path", "shelves/s1/books/b2")
	// A bare * matches any one segment without binding it.
	check("GET", "/v1/regions/eu-west/products/p-1/stock", "", "id", "p-1")
	// ** with a custom verb.
	check("POST", "/v1/assets/x/y:publish", "{}", "path", "assets/x/y")
	// The shelf template needs exactly two ids.
	wantStatus(t, do(t, e.c, "GET", e.url+"/v1/shelves/s1/books", ""), 404, 5, "no route")
}

func TestHTTPBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := do(t, e.c, "GET", e.url+"/v1/users/alice/avatar", "")
	if r.code != 200 || r.header.Get("Content-Type") != "image/png" || !strings.HasPrefix(r.body, "\x89PNG") {
		t.Fatalf("avatar: %d %q %q", r.code, r.header.Get("Content-Type"), r.body)
	}
	r = do(t, e.c, "PUT", e.url+"/v1/users/bob/avatar", "GIF89a-raw-bytes", "Content-Type", "image/gif")
	if r.code != 200 {
		t.Fatalf("set avatar: %d %s", r.code, r.body)
	}
	r = do(t, e.c, "GET", e.url+"/v1/users/bob/avatar", "")
	if r.header.Get("Content-Type") != "image/gif" || r.body != "GIF89a-raw-bytes" {
		t.Fatalf("avatar round trip: %q %q", r.header.Get("Content-Type"), r.body)
	}
	r = do(t, e.c, "POST", e.url+"/v1/products:import", "p-1,a\np-2,b\n\np-3,c\n", "Content-Type", "text/csv")
	if r.code != 200 {
		t.Fatalf("import: %d %s", r.code, r.body)
	}
	if m := jsonOf(t, r.body); m["imported"] != 3.0 || m["contentType"] != "text/csv" {
		t.Fatalf("import: %v", m)
	}
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	want := map[int]int{1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400,
		10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401, 20: 500}
	for code, httpCode := range want {
		r := do(t, e.c, "GET", fmt.Sprintf("%s/v1/debug/fail/%d?message=m%d", e.url, code, code), "")
		wantStatus(t, r, httpCode, float64(code), fmt.Sprintf("m%d", code))
	}
	// Details are resolved into JSON with their @type.
	st := wantStatus(t, do(t, e.c, "GET", e.url+"/v1/debug/fail/3?badField=email", ""), 400, 3, "")
	d := st["details"].([]any)
	if len(d) != 1 || d[0].(map[string]any)["@type"] != "type.googleapis.com/google.rpc.BadRequest" {
		t.Fatalf("details: %v", st)
	}
	if r := do(t, e.c, "GET", e.url+"/v1/debug/fail/0", ""); r.code != 200 || strings.TrimSpace(r.body) != "{}" {
		t.Fatalf("OK: %d %s", r.code, r.body)
	}
}

func TestRequestErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wantStatus(t, do(t, e.c, "GET", e.url+"/v2/nothing", ""), 404, 5, "no route for GET /v2/nothing")
	r := do(t, e.c, "DELETE", e.url+"/v1/users", "")
	wantStatus(t, r, 405, 12, "not allowed")
	if got := strings.Join(r.header.Values("Allow"), ","); got != "GET,HEAD,POST" {
		t.Fatalf("Allow = %q", got)
	}
	// HEAD on a GET route: the GET's status and headers, no body.
	get := do(t, e.c, "GET", e.url+"/v1/users", "")
	head := do(t, e.c, "HEAD", e.url+"/v1/users", "")
	if head.code != 200 || head.body != "" || head.header.Get("Content-Length") != get.header.Get("Content-Length") ||
		head.header.Get("Content-Type") != get.header.Get("Content-Type") {
		t.Fatalf("HEAD: %d %q %v; GET: %d %v", head.code, head.body, head.header, get.code, get.header)
	}
	wantStatus(t, do(t, e.c, "POST", e.url+"/v1/orders", `{"userId":`), 400, 3, "invalid JSON body")
	wantStatus(t, do(t, e.c, "POST", e.url+"/v1/orders", `{"userId":"a","bogus":1}`), 400, 3, `unknown field "bogus"`)
	wantStatus(t, do(t, e.c, "POST", e.url+"/v1/orders", `{"items":[{"quantity":"lots"}]}`), 400, 3, "quantity")
	wantStatus(t, do(t, e.c, "POST", e.url+"/v1/orders", `userId=a`, "Content-Type", "application/x-www-form-urlencoded"), 415, 3, "Content-Type")
	big := `{"userId":"` + strings.Repeat("x", 5<<20) + `"}`
	wantStatus(t, do(t, e.c, "POST", e.url+"/v1/orders", big), 413, 8, "exceeds the limit")
	// Invalid percent-encoding in the path: Go's server rejects the request
	// line with 400 before routing.
	if code := rawStatus(t, e.url, "GET /v1/products/p%zz HTTP/1.1\r\nHost: x\r\n\r\n"); code != 400 {
		t.Fatalf("bad escape: %d", code)
	}
	// Headers over the limit: Go's server answers 431 before routing.
	r = do(t, e.c, "GET", e.url+"/v1/users/alice", "", "X-Big", strings.Repeat("a", 70<<10))
	if r.code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("big header: %d", r.code)
	}
}

// rawStatus writes a raw HTTP/1.1 request and returns the status code.
func rawStatus(t *testing.T, base, req string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
