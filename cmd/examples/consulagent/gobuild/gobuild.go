// Package gobuild runs `go build` and says how a long build is going: what
// is being built, how many of the packages that need compiling are done, and
// the elapsed time, one line every few seconds (never one per package).
//
// consulagent builds the pinned Consul agent with it, and the Makefile's
// demo and portico targets build through its command (../cmd/gobuild). It
// imports only the standard library, so that command itself compiles in
// seconds on a fresh machine.
package gobuild

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// DefaultEvery is how often Build reports while a step runs.
const DefaultEvery = 10 * time.Second

// Options say what to build and where to report.
type Options struct {
	// Label names what is built in the progress lines ("Consul v1.20.0").
	Label string
	// Dir is where go runs (a directory of the module to build); empty: the
	// current directory.
	Dir string
	// Env is added to the environment go runs with.
	Env []string
	// Flags are build flags given to both go list and go build (-trimpath,
	// -tags); Output is go build's -o.
	Flags  []string
	Output string
	// Packages to build.
	Packages []string
	// Progress receives the progress lines; nil: os.Stderr.
	Progress io.Writer
	// Every is the interval between progress lines; 0: DefaultEvery.
	Every time.Duration
	// Go is the go command; empty: "go".
	Go string
}

// Build lists the packages that need compiling (go list downloads the
// modules a fresh machine lacks), then runs go build -v and counts them as
// they compile. Progress lines go to o.Progress; a failed build's output is
// in the error.
func Build(ctx context.Context, o Options) error {
	if o.Progress == nil {
		o.Progress = os.Stderr
	}
	if o.Every <= 0 {
		o.Every = DefaultEvery
	}
	if o.Go == "" {
		o.Go = "go"
	}
	start := time.Now()
	p := &progress{w: o.Progress, label: o.Label, start: start}

	p.set(phaseResolve, 0)
	stop := p.every(o.Every)
	stale, err := o.staleWhileCounting(ctx, p)
	stop()
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		p.set(phaseCompile, len(stale))
		p.report()
	}
	stop = p.every(o.Every)
	err = o.build(ctx, stale, p)
	stop()
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		p.finish()
	}
	return nil
}

// staleWhileCounting runs go list and returns the import paths go build
// will compile; the "go: downloading" lines it prints on a fresh machine
// count as progress.
func (o Options) staleWhileCounting(ctx context.Context, p *progress) (map[string]bool, error) {
	args := append([]string{"list", "-deps", "-f", "{{if .Stale}}{{.ImportPath}}\t{{.StaleReason}}{{end}}"}, o.Flags...)
	args = append(args, o.Packages...)
	cmd := o.command(ctx, args...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	var errOut lines
	if err := o.scan(cmd, func(line string) {
		if strings.HasPrefix(line, "go: downloading ") {
			p.add(1)
			return
		}
		errOut.add(line)
	}); err != nil {
		return nil, fmt.Errorf("go list: %w\n%s", err, errOut.String())
	}
	return staleSet(stdout.String()), nil
}

// cachedCommand is go list's StaleReason for a command whose package is in
// the build cache: only the link is left, which -v does not report.
const cachedCommand = "not installed but available in build cache"

// staleSet reads go list's "path<TAB>reason" lines: the packages go build
// -v will name as it compiles them.
func staleSet(out string) map[string]bool {
	stale := map[string]bool{}
	for line := range strings.Lines(out) {
		path, reason, _ := strings.Cut(strings.TrimSpace(line), "\t")
		if path == "" || path == "unsafe" || reason == cachedCommand { // nothing to compile
			continue
		}
		stale[path] = true
	}
	return stale
}

// build runs go build -v; each line naming a package of stale is one more
// package compiled, anything else is kept for the error.
func (o Options) build(ctx context.Context, stale map[string]bool, p *progress) error {
	args := append([]string{"build", "-v"}, o.Flags...)
	if o.Output != "" {
		args = append(args, "-o", o.Output)
	}
	args = append(args, o.Packages...)
	cmd := o.command(ctx, args...)
	var out lines
	cmd.Stdout = &out
	if err := o.scan(cmd, func(line string) {
		if stale[line] {
			p.add(1)
			return
		}
		out.add(line)
	}); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out.String())
	}
	return nil
}

func (o Options) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, o.Go, args...)
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(), o.Env...)
	return cmd
}

// scan runs cmd, handing each line of its stderr to f.
func (o Options) scan(cmd *exec.Cmd, f func(string)) error {
	r, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f(sc.Text())
	}
	// Wait closes the pipe; read it to the end first.
	_, _ = io.Copy(io.Discard, r)
	return errors.Join(cmd.Wait(), sc.Err())
}

// lines keeps what a go command printed that is not progress.
type lines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lines) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
	l.b.WriteByte('\n')
}

func (l *lines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(b)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.TrimSpace(l.b.String())
}

type phase int

const (
	phaseResolve phase = iota // go list: finding packages, downloading modules
	phaseCompile              // go build: compiling, then linking
)

// progress is the state of one build; the reporting goroutine and the
// scanning one share it under mu.
type progress struct {
	w     io.Writer
	label string
	start time.Time

	mu    sync.Mutex
	phase phase
	done  int
	total int
}

func (p *progress) set(ph phase, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase, p.done, p.total = ph, 0, total
}

func (p *progress) add(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
}

func (p *progress) report() {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.w, Line(p.label, p.phase == phaseResolve, p.done, p.total, time.Since(p.start)))
}

func (p *progress) finish() {
	fmt.Fprintf(p.w, "built %s in %s\n", p.label, Elapsed(time.Since(p.start)))
}

// every reports each interval until the returned stop is called; stop
// returns once the reporting goroutine has exited.
func (p *progress) every(d time.Duration) (stop func()) {
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				p.report()
			}
		}
	}()
	return func() { close(quit); <-exited }
}

// Line is one progress line: while resolving, the modules downloaded so far;
// while compiling, packages done out of total, then "linking" once every
// package is compiled.
func Line(label string, resolving bool, done, total int, elapsed time.Duration) string {
	switch {
	case resolving && done == 0:
		return fmt.Sprintf("building %s: finding its packages, %s", label, Elapsed(elapsed))
	case resolving:
		return fmt.Sprintf("building %s: finding its packages (%d modules downloaded), %s", label, done, Elapsed(elapsed))
	case done == 0 && total == 1:
		return fmt.Sprintf("building %s: 1 package to compile, %s", label, Elapsed(elapsed))
	case done == 0:
		return fmt.Sprintf("building %s: %d packages to compile, %s", label, total, Elapsed(elapsed))
	case done >= total:
		return fmt.Sprintf("building %s: %d/%d packages, linking, %s", label, done, total, Elapsed(elapsed))
	}
	return fmt.Sprintf("building %s: %d/%d packages, %s", label, done, total, Elapsed(elapsed))
}

// Elapsed rounds d to the second: 0s, 45s, 2m10s, 1h0m5s.
func Elapsed(d time.Duration) string { return d.Round(time.Second).String() }
