#!/usr/bin/env bash
# Runs every SPIN check of model/protocol.pml: the normal ones must end with "errors: 0"; the
# discriminating ones (a -D switch restores an old bug, or a documented window is switched on) must
# end with a violation and a trail. Prints per check: result, states stored, depth, time.
# Usage: model/run.sh [check-name ...]     (no name: all). Needs spin and gcc (apt-get install spin).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${MODEL_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/srw-model.XXXXXX")}"
mkdir -p "$work"
command -v spin >/dev/null || { echo "spin not found: apt-get install -y spin" >&2; exit 2; }

# name | expect (pass: errors 0; fail: a violation) | search (full, full+: exhaustive; bitsNN: bitstate, 2^NN bits) | -D flags
CHECKS=(
  "healthy-2msgs|pass|full+|-DMSGS=2 -DTMAX=3 -DONCE"
  "handler-faults|pass|full|-DTMAX=3 -DF_HFAIL -DF_SHUTDOWN -DF_PAUSE -DF_WCRASH -DF_VISIBILITY -DF_SQSFAIL"
  "node-crash|pass|full|-DTMAX=3 -DF_NCRASH -DFAULTS=1"
  "node-crash-redeliver|pass|bits24|-DTMAX=2 -DF_NCRASH -DFAULTS=1 -DF_VISIBILITY -DF_PAUSE"
  "network|pass|bits24|-DTMAX=2 -DF_NET -DF_RESEND -DFAULTS=1 -DF_VISIBILITY"
  "late-2msgs|pass|bits25|-DMSGS=2 -DTMAX=3 -DF_PAUSE -DF_NCRASH -DFAULTS=1"
  "shutdown-quit|pass|full|-DTMAX=3 -DF_SHUTDOWN"
  "redeliver-once|pass|full|-DTMAX=3 -DF_VISIBILITY -DONCE"
  "handoff|pass|full|-DHANDOFF -DTMAX=3 -DF_VISIBILITY -DONCE"
  "handoff-crashes|pass|full|-DHANDOFF -DTMAX=2 -DF_VISIBILITY -DF_PAUSE -DF_NCRASH -DFAULTS=1 -DF_WCRASH"
  "handoff-network|pass|bits24|-DHANDOFF -DTMAX=2 -DF_NET -DF_RESEND -DFAULTS=1 -DF_VISIBILITY"
  "window-dataloss|fail|full|-DTMAX=2 -DF_DATALOSS -DF_VISIBILITY -DSTART_DOWN -DFAULTS=1"
  "D-marker-in-lock|fail|full|-DMSGS=2 -DTMAX=3 -DBUG_MARKER_IN_LOCK"
  "D-late-mark|fail|full+|-DMSGS=2 -DTMAX=3 -DF_PAUSE -DF_NCRASH -DFAULTS=1 -DBUG_LATE_MARK"
  "D-shutdown-release|fail|full|-DTMAX=3 -DF_SHUTDOWN -DBUG_SHUTDOWN_RELEASE"
  "D-quit-release|fail|full|-DTMAX=3 -DF_SHUTDOWN -DBUG_QUIT_RELEASE"
  "D-adopt-no-swap|fail|full|-DHANDOFF -DTMAX=3 -DF_VISIBILITY -DBUG_ADOPT_NO_SWAP"
)

selected=("$@")
want() { [ ${#selected[@]} -eq 0 ] || [[ " ${selected[*]} " == *" $1 "* ]]; }

# Build every verifier first, two at a time (gcc takes longer than most searches).
for spec in "${CHECKS[@]}"; do
  IFS='|' read -r name expect mode flags <<<"$spec"
  want "$name" || continue
  dir="$work/$name"
  mkdir -p "$dir"
  cp "$here/protocol.pml" "$dir/"
  # shellcheck disable=SC2086
  (cd "$dir" && spin -a -DROUNDS=1 -DMAXRC=2 $flags protocol.pml >spin.log 2>&1)
  # -DSAFETY: assertions only (no liveness). bitsNN: bitstate hashing over 2^NN bits (not exhaustive:
  # a hash collision can skip states; pan prints the hash factor), where the full state space does
  # not fit the time budget. Otherwise exhaustive, with state compression. Partial-order reduction is
  # SPIN's default.
  # gcc -O1 takes ~14 s on pan.c and -O0 ~2 s, but an -O0 search runs twice as slow: -O1 only for the
  # long searches (full+ and bitstate).
  case "$mode" in
    bits*) cflags="-O1 -DBITSTATE" ;;
    full+) cflags="-O1 -DCOLLAPSE" ;;
    *) cflags="-O0 -DCOLLAPSE" ;;
  esac
  echo "cd '$dir' && gcc -w -DSAFETY -DMEMLIM=3000 $cflags -o pan pan.c" >"$dir/build.sh"
  echo "$dir/build.sh"
done | xargs -P 2 -n 1 sh

# Run the searches two at a time too (each is one single-threaded pan); each writes its elapsed time
# beside its output, and the table below reads them back in the order of CHECKS.
for spec in "${CHECKS[@]}"; do
  IFS='|' read -r name expect mode flags <<<"$spec"
  want "$name" || continue
  dir="$work/$name"
  case "$mode" in
    bits*) rflags="-w${mode#bits}" ;;
    *) rflags="" ;;
  esac
  # -E: a run that stops with a worker blocked (the clock reached TMAX) is not an error.
  cat >"$dir/search.sh" <<SEARCH
start=\$(date +%s.%N)
cd '$dir' && ./pan -E -m100000 $rflags >pan.out 2>&1
awk -v s="\$start" -v e="\$(date +%s.%N)" 'BEGIN { printf "%.1fs", e - s }' >elapsed
SEARCH
  echo "$dir/search.sh"
done | xargs -P 2 -n 1 sh

failures=0
printf '%-20s %-6s %-6s %-10s %12s %7s %8s\n' check expect mode result states depth time
for spec in "${CHECKS[@]}"; do
  IFS='|' read -r name expect mode flags <<<"$spec"
  want "$name" || continue
  dir="$work/$name"
  elapsed=$(cat "$dir/elapsed" 2>/dev/null || echo '?')
  out="$dir/pan.out"
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$out" | tail -1)
  states=$(awk '/states, stored/ { print $1 }' "$out" | tail -1)
  depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$out" | tail -1)
  if [ -z "$errors" ]; then result="NO-RESULT"; ok=0
  elif [ "$expect" = pass ] && [ "$errors" = 0 ]; then result="ok"; ok=1
  elif [ "$expect" = fail ] && [ "$errors" != 0 ]; then result="violated"; ok=1
  else result="UNEXPECTED"; ok=0
  fi
  printf '%-20s %-6s %-6s %-10s %12s %7s %8s\n' "$name" "$expect" "$mode" "$result" "${states:-?}" "${depth:-?}" "$elapsed"
  if [ -n "$errors" ] && [ "$errors" != 0 ]; then
    what=$(grep -m1 -E '^pan:[0-9]+:' "$out" || true)
    echo "    ${what}  (trail: cd $dir && spin -t -p -g -DROUNDS=1 -DMAXRC=2 $flags protocol.pml)"
  fi
  [ "$ok" = 1 ] || failures=$((failures + 1))
done
echo "work directory: $work"
[ "$failures" = 0 ] || { echo "$failures check(s) did not give the expected result" >&2; exit 1; }
