package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// percentile returns the p-th percentile (0–100) of sorted durations,
// nearest-rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.5) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

func sortDurations(d []time.Duration) { slices.Sort(d) }

// median of xs (the mean of the middle two for an even count), NaN for
// none. xs is not reordered.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// minMax returns the smallest and largest of xs, NaN for none.
func minMax(xs []float64) (lo, hi float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN()
	}
	return slices.Min(xs), slices.Max(xs)
}

// ratios pairs num[i] with den[i] (the same round) and returns num[i]/den[i]
// for every round where both are positive; a round that has no value on
// either side is left out rather than compared with another round.
func ratios(num, den []float64) []float64 {
	var out []float64
	for i := range min(len(num), len(den)) {
		if num[i] > 0 && den[i] > 0 {
			out = append(out, num[i]/den[i])
		}
	}
	return out
}

// rotation is the order in which n contenders run in round r (0-based):
// round 0 runs 0, 1, …, n-1; round 1 starts with 1 and ends with 0; and so
// on, so that over n rounds each contender runs once in each position.
func rotation(n, r int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = (r + i) % n
	}
	return order
}

// result is one measurement: one contender, one case, one round.
type result struct {
	requests  int
	errors    int
	rps       float64
	p50, p99  time.Duration
	cpuPerReq float64 // microseconds of the contender process's CPU per request
	// otherCores is the CPU the rest of the machine used during the
	// measurement (neither the bench process nor the contender), in cores.
	otherCores float64
}

// summary is a case's row for one contender over all rounds.
type summary struct {
	requests, errors  int
	rps, p50ms, p99ms float64 // medians over rounds
	cpu               float64 // median CPU µs/request over rounds
	// cpuRatios are the per-round ratios of CPU/request to the base's in
	// the same round; cpuRatio is their median, cpuLo–cpuHi their range.
	cpuRatios              []float64
	cpuRatio, cpuLo, cpuHi float64
	rpsRatio               float64 // median of the per-round req/s ratios
	hasBase                bool
}

// summarize reduces one contender's rounds; base is the reference
// contender's rounds of the same case (nil: no ratios).
func summarize(rounds, base []result) summary {
	var s summary
	var rps, p50, p99, cpu []float64
	for _, r := range rounds {
		s.requests += r.requests
		s.errors += r.errors
		rps = append(rps, r.rps)
		p50 = append(p50, ms(r.p50))
		p99 = append(p99, ms(r.p99))
		cpu = append(cpu, r.cpuPerReq)
	}
	s.rps, s.p50ms, s.p99ms, s.cpu = median(rps), median(p50), median(p99), median(cpu)
	if base == nil {
		return s
	}
	var brps, bcpu []float64
	for _, r := range base {
		brps = append(brps, r.rps)
		bcpu = append(bcpu, r.cpuPerReq)
	}
	s.hasBase = true
	s.cpuRatios = ratios(cpu, bcpu)
	s.cpuRatio = median(s.cpuRatios)
	s.cpuLo, s.cpuHi = minMax(s.cpuRatios)
	s.rpsRatio = median(ratios(rps, brps))
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// cpuTicks parses utime+stime (fields 14 and 15) from /proc/<pid>/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func cpuTicks(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat: no ')'")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state): utime is field 14 → f[11], stime f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed stat: %d fields", len(f))
	}
	u, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return 0, err
	}
	s, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return 0, err
	}
	return u + s, nil
}

// machineBusy parses the first (all-CPU) line of /proc/stat and returns
// the ticks spent busy: user, nice, system, irq, softirq and steal (guest
// time is within user); idle and iowait are not busy.
func machineBusy(stat string) (int64, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("malformed /proc/stat first line %q", line)
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system [idle iowait] irq softirq steal
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, err
		}
		busy += v
	}
	return busy, nil
}

// peakRSS parses VmHWM (the peak resident set size) from
// /proc/<pid>/status, in bytes.
func peakRSS(status string) (int64, error) { return statusBytes(status, "VmHWM") }

// statusBytes reads one "Key:  N kB" line of /proc/<pid>/status, in bytes.
func statusBytes(status, key string) (int64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		rest, ok := strings.CutPrefix(line, key+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed %s line %q", key, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, err
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s line", key)
}

// sumMetric adds the values of every sample of the named metric in a
// Prometheus text exposition.
func sumMetric(text, name string) (float64, bool) {
	var sum float64
	found := false
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		sum, found = sum+v, true
	}
	return sum, found
}
