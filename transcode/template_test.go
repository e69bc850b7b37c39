package transcode

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseTemplate(t *testing.T) {
	lit := func(s string) Segment { return Segment{Kind: SegLiteral, Literal: s} }
	star := Segment{Kind: SegWildcard}
	deep := Segment{Kind: SegDoubleWildcard}
	tests := []struct {
		in    string
		segs  []Segment
		verb  string
		vars  []Variable
		shape string
	}{
		{"/", nil, "", nil, ""},
		{"/v1/users", []Segment{lit("v1"), lit("users")}, "", nil, "/v1/users"},
		{"/v1/*/x", []Segment{lit("v1"), star, lit("x")}, "", nil, "/v1/*/x"},
		{"/v1/**", []Segment{lit("v1"), deep}, "", nil, "/v1/**"},
		{"/v1/{id}", []Segment{lit("v1"), star}, "", []Variable{{FieldPath: []string{"id"}, Start: 1, End: 2}}, "/v1/*"},
		{"/v1/{a.b.c}", []Segment{lit("v1"), star}, "", []Variable{{FieldPath: []string{"a", "b", "c"}, Start: 1, End: 2}}, "/v1/*"},
		{"/v1/{name=shelves/*/books/*}", []Segment{lit("v1"), lit("shelves"), star, lit("books"), star}, "",
			[]Variable{{FieldPath: []string{"name"}, Start: 1, End: 5}}, "/v1/shelves/*/books/*"},
		{"/v1/{name=**}", []Segment{lit("v1"), deep}, "", []Variable{{FieldPath: []string{"name"}, Start: 1, End: 2}}, "/v1/**"},
		{"/v1/{name=messages/*}:publish", []Segment{lit("v1"), lit("messages"), star}, "publish",
			[]Variable{{FieldPath: []string{"name"}, Start: 1, End: 3}}, "/v1/messages/*:publish"},
		{"/v1/users:watch", []Segment{lit("v1"), lit("users")}, "watch", nil, "/v1/users:watch"},
		{"/v1/{a}/{b}", []Segment{lit("v1"), star, star}, "", []Variable{{FieldPath: []string{"a"}, Start: 1, End: 2}, {FieldPath: []string{"b"}, Start: 2, End: 3}}, "/v1/*/*"},
		{"/v1/a%20b", []Segment{lit("v1"), lit("a b")}, "", nil, "/v1/a b"},
	}
	for _, tt := range tests {
		got, err := ParseTemplate(tt.in)
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got.Segments, tt.segs) || got.Verb != tt.verb || !reflect.DeepEqual(got.Vars, tt.vars) || got.Shape() != tt.shape {
			t.Errorf("%s:\n got %+v %q %+v %q\nwant %+v %q %+v %q", tt.in, got.Segments, got.Verb, got.Vars, got.Shape(), tt.segs, tt.verb, tt.vars, tt.shape)
		}
	}
}

func TestParseTemplateErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `template "": column 1: must start with "/"`},
		{"v1/x", `template "v1/x": column 1: must start with "/"`},
		{"/v1//x", `template "/v1//x": column 5: empty segment`},
		{"/v1/", `template "/v1/": column 5: empty segment`},
		{"/v1/**/x", `template "/v1/**/x": column 5: "**" must be the last segment`},
		{"/v1/{name=**}/x", `template "/v1/{name=**}/x": column 11: "**" must be the last segment`},
		{"/v1/{id", `template "/v1/{id": column 5: unterminated variable`},
		{"/v1/{a={b}}", `template "/v1/{a={b}}": column 8: nested variable`},
		{"/v1/{1a}", `template "/v1/{1a}": column 6: invalid field path "1a"`},
		{"/v1/{a..b}", `template "/v1/{a..b}": column 6: invalid field path "a..b"`},
		{"/v1/{a}/{a}", `template "/v1/{a}/{a}": column 10: duplicate variable "a"`},
		{"/v1/}", `template "/v1/}": column 5: unexpected "}"`},
		{"/v1/x:", `template "/v1/x:": column 6: empty verb`},
		{"/v1/x y", `template "/v1/x y": column 6: invalid character ' '`},
		{"/v1/*x", `template "/v1/*x": column 6: unexpected 'x' after wildcard`},
		{"/v1/{a=}", `template "/v1/{a=}": column 8: empty variable pattern`},
		{"/v1/%zz", `template "/v1/%zz": column 5: invalid percent-encoding in "%zz"`},
		{"/v1/x?y", `template "/v1/x?y": column 6: invalid character '?'`},
	}
	for _, tt := range tests {
		_, err := ParseTemplate(tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParseTemplate(%q):\n got %v\nwant %s", tt.in, err, tt.want)
		}
	}
}

// FuzzParseTemplate: parsing never panics, and what parses is consistent.
func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{"/v1/{name=shelves/*/books/**}:get", "/", "/a/*/b/**", "/{a.b}", "/v1/x:y:z", "/{a={b}}", "/%2F"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParseTemplate(s)
		if err != nil {
			if _, ok := err.(*TemplateError); !ok {
				t.Fatalf("%q: error of type %T", s, err)
			}
			return
		}
		// The shape is the template without its variables: when no literal
		// needs percent-encoding, it parses back to the same segments and verb.
		if len(tm.Segments) > 0 && plainLiterals(tm) {
			back, err := ParseTemplate(tm.Shape())
			if err != nil {
				t.Fatalf("%q: shape %q does not parse: %v", s, tm.Shape(), err)
			}
			if !reflect.DeepEqual(back.Segments, tm.Segments) || back.Verb != tm.Verb || len(back.Vars) != 0 {
				t.Fatalf("%q: shape %q parses to %+v %q, want %+v %q", s, tm.Shape(), back.Segments, back.Verb, tm.Segments, tm.Verb)
			}
		}
		for i, v := range tm.Vars {
			if v.Start < 0 || v.End > len(tm.Segments) || v.Start >= v.End {
				t.Fatalf("%q: var %d range [%d,%d) of %d segments", s, i, v.Start, v.End, len(tm.Segments))
			}
			_ = tm.MultiSegment(i)
		}
		for i, sg := range tm.Segments {
			if sg.Kind == SegDoubleWildcard && i != len(tm.Segments)-1 {
				t.Fatalf("%q: ** at %d", s, i)
			}
		}
	})
}

// plainLiterals reports whether every literal and the verb of t would be
// written as they are in a template: none needs percent-encoding, none holds
// a delimiter (a verb may hold ':').
func plainLiterals(t *Template) bool {
	plain := func(s string, verb bool) bool {
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c <= ' ' || c >= 0x7f || strings.IndexByte("%/{}*=?#", c) >= 0 || (c == ':' && !verb) {
				return false
			}
		}
		return true
	}
	for _, sg := range t.Segments {
		if sg.Kind == SegLiteral && !plain(sg.Literal, false) {
			return false
		}
	}
	return plain(t.Verb, true)
}
