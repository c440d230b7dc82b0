#!/usr/bin/env bash
# End-to-end benchmark of hookbridge against the HTTP ceiling of the same receiver, in one run
# (see BENCHMARKS.md). Installs what it needs, idempotently (wrk; nats-server; linux-perf
# with --perf), builds release code with debug symbols and frame pointers (profile
# `profiling`) and runs benches/e2e. Figures: a table on stdout and target/bench/e2e.json.
#
#   scripts/bench.sh                       200,000 events per source, NATS and Kafka
#   scripts/bench.sh --quick               20,000 events (a couple of minutes)
#   scripts/bench.sh --perf [...]          also record `perf record -g` of hookbridge during the
#                                          backlog; reports in target/bench/perf/
#   scripts/bench.sh --criterion [NAME]    the criterion benches (hot_path, render) instead, with
#                                          the same build
#   scripts/bench.sh [...] -- OPTIONS      passed to the harness: --events N, --concurrency C,
#                                          --source nats|kafka|both, --max-in-flight M, --help
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
perf=0
criterion=0
harness_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --perf) perf=1 ;;
    --criterion) criterion=1 ;;
    --) shift; harness_args+=("$@"); break ;;
    *) harness_args+=("$1") ;;
  esac
  shift
done

need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
if [ "$perf" = 1 ]; then command -v perf >/dev/null 2>&1 || need_apt+=(linux-perf); fi
if [ "$criterion" = 0 ] && [ ${#need_apt[@]} -gt 0 ]; then
  echo "bench: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Frame pointers, so that `perf record -g` can walk hookbridge's stacks; debug symbols come
# from the profile. Only the profiling build sees these flags (its own target directory), and
# the criterion benches use the same build, so one release build serves everything here.
export RUSTFLAGS="${RUSTFLAGS:-} -C force-frame-pointers=yes"
if [ "$criterion" = 1 ]; then
  exec cargo bench --profile profiling --bench hot_path --bench render -- "${harness_args[@]}"
fi
cargo bench --profile profiling --bench e2e --no-run

args=()
if [ "$quick" = 1 ]; then args+=(--events 20000 --ceiling-secs 5 --latency-secs 5); fi
perf_dir=target/bench/perf
if [ "$perf" = 1 ]; then
  rm -rf "$perf_dir"
  args+=(--perf "$perf_dir")
fi
status=0
cargo bench --profile profiling --bench e2e -- "${args[@]}" "${harness_args[@]}" || status=$?

if [ "$perf" = 1 ]; then
  # perf pads its columns to the longest (Rust) symbol: trim them for reading.
  trim() { grep -E '^ +[0-9]' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | cut -c1-220; }
  for data in "$perf_dir"/perf-*.data; do
    [ -e "$data" ] || continue
    base="${data%.data}"
    # Self time by symbol, inclusive time by symbol (frame pointers), and the split by thread
    # and by library.
    perf report -i "$data" --no-children --sort symbol -g none --stdio --percent-limit 0.3 2>/dev/null | trim >"$base-self.txt" || true
    perf report -i "$data" --children --sort symbol -g none --stdio --percent-limit 1 2>/dev/null | trim >"$base-children.txt" || true
    perf report -i "$data" --no-children --sort comm -g none --stdio 2>/dev/null | trim >"$base-threads.txt" || true
    perf report -i "$data" --no-children --sort dso -g none --stdio --percent-limit 0.5 2>/dev/null | trim >"$base-dso.txt" || true
    echo "bench: profile of $(basename "$base"): $base-{self,children,threads,dso}.txt"
    head -25 "$base-self.txt"
  done
fi
exit "$status"
