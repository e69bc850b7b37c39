package policies

import (
	"math"
	"testing"
	"time"
)

func TestClientTimeout(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1S", time.Second, true}, {"100m", 100 * time.Millisecond, true}, {"2H", 2 * time.Hour, true},
		{"5u", 5 * time.Microsecond, true}, {"7n", 7, true}, {"3M", 3 * time.Minute, true},
		{"99999999H", time.Duration(math.MaxInt64), true}, {"2562048H", time.Duration(math.MaxInt64), true},
		{"2562047H", 2562047 * time.Hour, true}, {"99999999n", 99999999, true},
		{"", 0, false}, {"S", 0, false}, {"10", 0, false}, {"1x", 0, false}, {"-1S", 0, false}, {"123456789S", 0, false},
	}
	for _, tt := range tests {
		got, ok := clientTimeout(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("clientTimeout(%q) = %v %v, want %v %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
