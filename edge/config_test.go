package edge

import (
	"strings"
	"testing"

	"github.com/portico-dev/portico/policies"
)

// TestFrontendsConfig: edge.frontends is checked when the config loads,
// each mistake named with its place.
func TestFrontendsConfig(t *testing.T) {
	ok := []FrontendConfig{{Name: "web"}, {Name: "partner", Mode: "include", Hosts: []string{"partner.example.com", "*.partners.example.com"},
		Claim: "client_type=partner", CORS: &policies.CORSConfig{AllowOrigins: []string{"https://portal.example.com"}}}}
	for _, tc := range []struct {
		frontends []FrontendConfig
		def, want string
	}{
		{ok, "web", ""},
		{[]FrontendConfig{{Name: "Web"}}, "", `edge.frontends[0].name "Web"`},
		{[]FrontendConfig{{Name: "web"}, {Name: "web"}}, "", `edge.frontends[1].name "web": named twice`},
		{[]FrontendConfig{{Name: "web", Mode: "only"}}, "", `edge.frontends[0].mode "only": include or exclude`},
		{[]FrontendConfig{{Name: "web", Hosts: []string{"Shop.example.com"}}}, "", `is not a lower-case host name`},
		{[]FrontendConfig{{Name: "web", Hosts: []string{"shop.example.com:8080"}}}, "", `without a port`},
		{[]FrontendConfig{{Name: "a", Hosts: []string{"x.test"}}, {Name: "b", Hosts: []string{"x.test"}}}, "", `"x.test" is a's already`},
		{[]FrontendConfig{{Name: "web", Claim: "client_type"}}, "", `edge.frontends[0].claim "client_type": name=value`},
		{[]FrontendConfig{{Name: "web", CORS: &policies.CORSConfig{AllowOrigins: []string{"portal.example.com/x"}}}}, "", `edge.frontends[0].cors: origin`},
		{[]FrontendConfig{{Name: "web", Listen: "127.0.0.1:8443"}, {Name: "partner", Listen: "127.0.0.1:0"}, {Name: "mobile", Listen: "127.0.0.1:0"}}, "", ""},
		{[]FrontendConfig{{Name: "web", Listen: "8443"}}, "", `edge.frontends[0].listen "8443": host:port`},
		{[]FrontendConfig{{Name: "web", Listen: DefaultListen}}, "", `edge.frontends[0].listen "` + DefaultListen + `": already edge.listen`},
		{[]FrontendConfig{{Name: "a", Listen: ":9000"}, {Name: "b", Listen: ":9000"}}, "", `edge.frontends[1].listen ":9000": already frontend a's`},
		{ok, "mobile", `edge.default_frontend "mobile": no frontend has that name`},
	} {
		cfg := DefaultConfig()
		cfg.Frontends, cfg.DefaultFrontend = tc.frontends, tc.def
		err := cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v default %q: %v, want %q", tc.frontends, tc.def, err, tc.want)
		}
	}
}
