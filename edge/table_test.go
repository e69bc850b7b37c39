package edge

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-dev/portico/mesh"
	"github.com/portico-dev/portico/mesh/meshtest"
	"github.com/portico-dev/portico/transcode"
)

const tableProto = `
syntax = "proto3";
package t.v1;
import "google/api/annotations.proto";
message M { string id = 1; string name = 2; }
service A {
  rpc Get(M) returns (M) { option (google.api.http) = { get: "/v1/things/{id}" }; }
  rpc List(M) returns (M) { option (google.api.http) = { get: "/v1/things" }; }
}
// B claims A's GET /v1/things/{id} under another variable name.
service B {
  rpc Fetch(M) returns (M) { option (google.api.http) = { get: "/v1/things/{name}" }; }
  rpc Other(M) returns (M) { option (google.api.http) = { get: "/v1/others" }; }
}
// C's rule is broken.
service C {
  rpc Bad(M) returns (M) { option (google.api.http) = { get: "/v1/{missing}" }; }
}
// D conflicts with itself.
service D {
  rpc One(M) returns (M) { option (google.api.http) = { post: "/v1/d" body: "*" }; }
  rpc Two(M) returns (M) { option (google.api.http) = { post: "/v1/d" body: "*" }; }
}
service E {
  rpc Fine(M) returns (M) { option (google.api.http) = { get: "/v1/e/{id}" }; }
}
`

func reflection(t *testing.T) *mesh.Reflection {
	t.Helper()
	files := []protoreflect.FileDescriptor{meshtest.CompileProto(t, tableProto)}
	r := &mesh.Reflection{Upstream: "u1"}
	services := files[0].Services()
	for i := range services.Len() {
		sd := services.Get(i)
		r.Services = append(r.Services, &mesh.Service{Name: sd.FullName(), Desc: sd, Upstream: "u1"})
	}
	return r
}

func TestBuildTableIsolatesBadServices(t *testing.T) {
	tbl := BuildTable([]*mesh.Reflection{reflection(t)}, transcode.NewCompiler(transcode.DefaultConfig()), nil, nil)
	var methods []string
	for _, r := range tbl.Routes() {
		methods = append(methods, r.FullMethod)
	}
	got := strings.Join(methods, " ")
	if got != "/t.v1.E/Fine /t.v1.A/List /t.v1.A/Get" {
		t.Fatalf("routes: %s", got)
	}
	wantErrs := []string{
		"service t.v1.B on u1 rejected: route conflict: GET /v1/things/* is claimed by t.v1.A/Get (GET /v1/things/{id}) and t.v1.B/Fetch (GET /v1/things/{name})",
		"service t.v1.C on u1 rejected: test.proto: method t.v1.C.Bad: option google.api.http: path variable {missing}: t.v1.M has no field \"missing\"",
		"service t.v1.D on u1 rejected: route conflict: POST /v1/d is claimed by t.v1.D/One (POST /v1/d) and t.v1.D/Two (POST /v1/d)",
	}
	if len(tbl.Rejected) != len(wantErrs) {
		t.Fatalf("rejected: %v", tbl.Rejected)
	}
	for i, w := range wantErrs {
		if tbl.Rejected[i].Error() != w {
			t.Errorf("rejected[%d]:\n got %s\nwant %s", i, tbl.Rejected[i], w)
		}
	}
	// B's other, non-conflicting route is not served either: a service is
	// in or out as a whole.
	if _, _, err := tbl.Match("GET", "/v1/others", nil); err == nil {
		t.Fatal("/v1/others of rejected service B is routed")
	}
}

func TestBuildTableFirstUpstreamWins(t *testing.T) {
	r1, r2 := reflection(t), reflection(t)
	r2.Upstream = "u2"
	for _, s := range r2.Services {
		s.Upstream = "u2"
	}
	tbl := BuildTable([]*mesh.Reflection{r1, r2}, transcode.NewCompiler(transcode.DefaultConfig()), nil, nil)
	for _, r := range tbl.Routes() {
		if r.Upstream != "u1" {
			t.Fatalf("%s served by %s", r.FullMethod, r.Upstream)
		}
	}
	if !strings.Contains(tbl.Rejected[len(tbl.Rejected)-1].Error(), "already served by upstream u1") {
		t.Fatalf("duplicate service not reported: %v", tbl.Rejected)
	}
}
