#!/usr/bin/env bash
# House rules that gofmt and vet do not check, in the style of grpc-go's
# scripts/vet.sh. Each rule says why.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
rule() { # rule <why> <extended regexp> <pathspec...>
  local why=$1 re=$2; shift 2
  local hits
  hits=$(git grep -n -E "$re" -- "$@" ':!*.pb.go' ':!*.pb.gw.go' 2>/dev/null || true)
  if [ -n "$hits" ]; then echo "vet.sh: $why"; echo "$hits"; fail=1; fi
}
# Libraries log through zap so operators get one structured stream.
rule "use zap, not the log package or fmt.Print, outside cmd/ and tests" \
  '(^|[^.[:alnum:]])(log\.(Print|Fatal|Panic)|fmt\.Print)' '*.go' ':!cmd/**' ':!**/cmd/**' ':!integration/bench/**' ':!*_test.go'
# time.After leaks a timer until it fires; use a Timer you stop.
rule "time.After outside tests leaks timers; use time.NewTimer and Stop" \
  'time\.After\(' '*.go' ':!*_test.go'
# Test contexts must end: a test without a deadline can hang CI.
rule "context.Background() in tests needs a deadline (t.Context() or WithTimeout)" \
  '= context\.Background\(\)$' '*_test.go'
# panic is for programmer errors in init only; requests never panic the edge.
rule "no panic in edge, transcode or mesh" '(^|[^.[:alnum:]])panic\(' 'edge/*.go' 'transcode/*.go' 'mesh/*.go' ':!*_test.go'
exit $fail
