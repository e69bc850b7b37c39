package main

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 0: time.Millisecond} {
		if got := percentile(d, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("empty")
	}
}

func TestCPUTicks(t *testing.T) {
	stat := "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 8 0 100 0 0"
	got, err := cpuTicks(stat)
	if err != nil || got != 287 {
		t.Fatalf("got %d %v, want 287", got, err)
	}
	if _, err := cpuTicks("garbage"); err == nil {
		t.Fatal("want error")
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{5}, 5},
		{[]float64{4, 1, 3, 2}, 2.5}, // even: the mean of the middle two
		{[]float64{10, 1, 1, 1, 10}, 1},
	} {
		in := slices.Clone(tc.in)
		if got := median(in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("median reordered its input: %v, was %v", in, tc.in)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
}

func TestMinMax(t *testing.T) {
	lo, hi := minMax([]float64{1.2, 0.9, 1.5, 1.1})
	if lo != 0.9 || hi != 1.5 {
		t.Errorf("minMax = %v–%v, want 0.9–1.5", lo, hi)
	}
	if lo, hi := minMax(nil); !math.IsNaN(lo) || !math.IsNaN(hi) {
		t.Errorf("minMax(nil) = %v–%v, want NaN–NaN", lo, hi)
	}
}

func TestRatiosPairRounds(t *testing.T) {
	got := ratios([]float64{2, 3, 0, 8}, []float64{1, 6, 5, 4})
	// Round 2 has no value on the contender's side: left out, not paired
	// with another round.
	if want := []float64{2, 0.5, 2}; !slices.Equal(got, want) {
		t.Errorf("ratios = %v, want %v", got, want)
	}
	if got := ratios([]float64{1, 2, 3}, []float64{1, 0}); !slices.Equal(got, []float64{1}) {
		t.Errorf("uneven lengths or a zero base: %v, want [1]", got)
	}
}

// The key figure is the median of the per-round ratios, which is not the
// ratio of the medians when the machine drifts between rounds: in the
// second part the contender costs what the base costs in two rounds of
// three and 4x in one, and the ratio of the medians would say 4x.
func TestSummaryMedianOfRatiosNotRatioOfMedians(t *testing.T) {
	r := func(cpu float64) result { return result{requests: 100, rps: 1000 / cpu, cpuPerReq: cpu} }
	// Each round the same on both sides: every ratio 1.
	contender := []result{r(200), r(100), r(400)}
	base := []result{r(200), r(100), r(400)}
	s := summarize(contender, base)
	if s.cpuRatio != 1 || s.cpuLo != 1 || s.cpuHi != 1 {
		t.Errorf("identical rounds: ratio %v [%v–%v], want 1 [1–1]", s.cpuRatio, s.cpuLo, s.cpuHi)
	}

	// Drift: the contender happens to run on the slow rounds.
	contender = []result{r(100), r(400), r(400)}
	base = []result{r(100), r(100), r(400)}
	s = summarize(contender, base)
	if s.cpu != 400 {
		t.Fatalf("median CPU %v, want 400", s.cpu)
	}
	// Ratio of medians would be 400/100 = 4; the per-round ratios are 1,
	// 4, 1, whose median is 1.
	if s.cpuRatio != 1 {
		t.Errorf("median of per-round ratios = %v, want 1", s.cpuRatio)
	}
	if s.cpuLo != 1 || s.cpuHi != 4 {
		t.Errorf("range = %v–%v, want 1–4", s.cpuLo, s.cpuHi)
	}
	if want := []float64{1, 4, 1}; !slices.Equal(s.cpuRatios, want) {
		t.Errorf("per-round ratios %v, want %v", s.cpuRatios, want)
	}
	// req/s ratios: 1, 0.25, 1 → median 1.
	if s.rpsRatio != 1 {
		t.Errorf("req/s ratio = %v, want 1", s.rpsRatio)
	}
	if s.requests != 300 {
		t.Errorf("requests = %d, want 300", s.requests)
	}

	if s := summarize(contender, nil); s.hasBase || s.cpuRatios != nil {
		t.Errorf("no base: hasBase %v, ratios %v", s.hasBase, s.cpuRatios)
	}
}

func TestRotation(t *testing.T) {
	if got := rotation(4, 0); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("round 0 = %v, want 0 1 2 3", got)
	}
	if got := rotation(4, 1); !slices.Equal(got, []int{1, 2, 3, 0}) {
		t.Errorf("round 1 = %v, want 1 2 3 0", got)
	}
	if got := rotation(4, 5); !slices.Equal(got, []int{1, 2, 3, 0}) {
		t.Errorf("round 5 = %v, want round 1's order", got)
	}
	// Over n rounds each contender runs once per round and once in every
	// position.
	for n := 1; n <= 5; n++ {
		pos := make([][]int, n) // pos[contender][position] counts
		for i := range pos {
			pos[i] = make([]int, n)
		}
		for r := range n {
			order := rotation(n, r)
			seen := make([]bool, n)
			for p, c := range order {
				if seen[c] {
					t.Fatalf("n=%d round %d: %d twice in %v", n, r, c, order)
				}
				seen[c] = true
				pos[c][p]++
			}
		}
		for c := range n {
			for p := range n {
				if pos[c][p] != 1 {
					t.Errorf("n=%d: contender %d ran %d times in position %d over %d rounds, want 1", n, c, pos[c][p], p, n)
				}
			}
		}
	}
}

func TestPeakRSS(t *testing.T) {
	status := "Name:\tportico\nVmPeak:\t 1300000 kB\nVmHWM:\t   50612 kB\nVmRSS:\t   48000 kB\n"
	got, err := peakRSS(status)
	if err != nil || got != 50612<<10 {
		t.Fatalf("peakRSS = %d, %v; want %d", got, err, 50612<<10)
	}
	if _, err := peakRSS("Name:\tx\nVmRSS:\t 1 kB\n"); err == nil {
		t.Error("no VmHWM line: want an error")
	}
	if _, err := peakRSS("VmHWM:\t 12 MB\n"); err == nil {
		t.Error("unknown unit: want an error")
	}
}

func TestSumMetric(t *testing.T) {
	text := `# HELP portico_http_requests_total Requests answered.
# TYPE portico_http_requests_total counter
portico_http_requests_total{code="200",grpc_code="OK",method="GET",route="/v1/products/{id}"} 120
portico_http_requests_total{code="200",grpc_code="OK",method="POST",route="/v1/products"} 30
portico_http_requests_total_other 1000
portico_http_requests_in_flight 1
`
	got, ok := sumMetric(text, "portico_http_requests_total")
	if !ok || got != 150 {
		t.Errorf("sumMetric = %v, %v; want 150, true", got, ok)
	}
	if _, ok := sumMetric(text, "portico_missing"); ok {
		t.Error("missing metric reported as found")
	}
}

func TestMachineBusy(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	stat := "cpu  100 5 40 6000 300 2 8 10 50 0\ncpu0 50 2 20 3000 150 1 4 5 25 0\n"
	got, err := machineBusy(stat)
	// guest (50) is within user; idle and iowait are not busy.
	if want := int64(100 + 5 + 40 + 2 + 8 + 10); err != nil || got != want {
		t.Errorf("machineBusy = %d, %v; want %d", got, err, want)
	}
	if _, err := machineBusy("cpu0 1 2 3\n"); err == nil {
		t.Error("a per-CPU or short line: want an error")
	}
}
