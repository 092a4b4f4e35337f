#!/usr/bin/env bash
# The example shop, end to end: builds herald and shop, then for each variant
# (choreography, orchestration) starts a fresh `herald serve`, the four services, the
# orchestrator (orchestration only) and the order-summary projection as separate
# processes, places N seeded orders with injected failures and runs `shop check`.
# Usage: examples/shop/run.sh [ORDERS] [SEED]     (env: VARIANTS="choreography orchestration")
# The order-summary read model is an SQLite file in the run's directory, or, when
# HERALD_SHOP_POSTGRES_URL is set (postgres://user@host:port/db), that Postgres database
# (emptied at the start of each variant: every variant starts a fresh herald).
set -euo pipefail
cd "$(dirname "$0")/../.."

orders="${1:-50}"
seed="${2:-$RANDOM}"
variants="${VARIANTS:-choreography orchestration}"

cargo build --locked -q -p herald -p shop
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug"
work="$(mktemp -d -t herald-shop-XXXXXX)"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

herald_url() {
  local dir="$1" line=""
  for _ in $(seq 1 200); do   # up to 20 s for `herald listening http=127.0.0.1:PORT`
    line="$(grep -m1 '^herald listening' "$dir/herald.out" || true)"
    [ -n "$line" ] && break
    sleep 0.1
  done
  [ -n "$line" ] || { echo "herald did not start; see $dir/herald.log" >&2; exit 1; }
  line="${line#herald listening http=}"
  echo "http://${line%% *}"
}

status=0
for variant in $variants; do
  dir="$work/$variant"
  mkdir -p "$dir/state"
  "$bin/herald" serve --data-dir "$dir/data" --http-addr 127.0.0.1:0 --no-kafka \
    >"$dir/herald.out" 2>"$dir/herald.log" &
  pids+=($!)
  url="$(herald_url "$dir")"
  export HERALD_URL="$url"
  echo "== $variant: herald at $url, $orders orders, seed $seed (logs in $dir)"
  "$bin/shop" setup
  for service in order payment inventory shipping; do
    "$bin/shop" "$service" --variant "$variant" --state-dir "$dir/state" 2>"$dir/$service.log" &
    pids+=($!)
  done
  if [ "$variant" = orchestration ]; then
    "$bin/shop" orchestrator --state-dir "$dir/state" 2>"$dir/orchestrator.log" &
    pids+=($!)
  fi
  if [ -n "${HERALD_SHOP_POSTGRES_URL:-}" ]; then
    store_args=()   # `shop projection` reads the URL from the environment
    check_args=(--projection-postgres "$HERALD_SHOP_POSTGRES_URL")
    "$bin/shop" projection --rebuild --once >/dev/null 2>"$dir/projection-reset.log"
    echo "   read model in postgres"
  else
    store_args=(--db "$dir/state/summary.db")
    check_args=(--projection-db "$dir/state/summary.db")
  fi
  "$bin/shop" projection "${store_args[@]}" 2>"$dir/projection.log" &
  pids+=($!)
  start=$(date +%s.%N)
  "$bin/shop" place --orders "$orders" --seed "$seed" --failure-percent 30
  if "$bin/shop" check --orders "$orders" "${check_args[@]}" --timeout-secs 120 >"$dir/report.json"; then
    end=$(date +%s.%N)
    python3 - "$dir/report.json" "$start" "$end" <<'PY' || cat "$dir/report.json"
import json, sys
r = json.load(open(sys.argv[1]))
secs = float(sys.argv[3]) - float(sys.argv[2])
print(f"   consistent: {r['orders']} orders, {r['completed']} completed, {r['cancelled']} cancelled "
      f"(compensated), {r['events']} events, revenue {r['revenue']} cents, settled in {secs:.1f}s")
PY
  else
    echo "   INCONSISTENT: see $dir/report.json"
    cat "$dir/report.json"
    status=1
  fi
  cleanup
  pids=()
done
exit $status
