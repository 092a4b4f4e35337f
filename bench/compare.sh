#!/usr/bin/env bash
# Herald side by side with NATS JetStream and Redis Streams, and with the machine's
# physical limits, in one run on this machine. Prints ONE table (Markdown).
#
#   bench/compare.sh              # ~10 min on 2 cores
#   QUICK=1 bench/compare.sh      # ~1-2 min, smaller sizes
#
# Installs nats-server and redis-server from Debian if missing (needs root), starts
# both on 127.0.0.1 with persistence comparable to Herald's (JetStream file storage;
# Redis AOF, `appendfsync always` for the fsync rows and `everysec` for the others),
# runs the workloads of issue 7 with `herald bench` against each, then
# `herald bench table`. Everything (Herald data, NATS store, Redis AOF, results)
# lives under $DATA_DIR, so every system writes to the same disk.
#
# Settings (environment):
#   DATA_DIR     where all data and results go            (/tmp/herald-compare)
#   HERALD       herald binary (built --release if absent) (target/release/herald)
#   SYSTEMS      which to run                              ("embedded http kafka nats redis")
#   DURABILITY   which durability rows                     ("fsync no-fsync")
#   WORKLOADS    which workloads                           ("w1 w2 w3 w4")
#   PRODUCERS    producers in every workload               (4)
#   DURATION     seconds per timed run                     (8; QUICK 2)
#   W1_BATCH     workload 1 batch (1 KiB messages)         (100)
#   W2_BATCH     workload 2 batch                          (10)
#   W2_DURATION  seconds per workload-2 phase (max, 50 %)  (5; QUICK 2)
#   W3_COUNT     workload 3 events (100 B, 10,000 keys)    (1000000; QUICK 100000)
#   W3_BATCH     workload 3 batch                          (1000)
#   W4_BYTES     workload 4 replay bytes                   (1000000000; QUICK 100000000)
#   PARTITIONS   Herald topic partitions                   (1: one stream, like the peers)
#   DEDUP_WINDOW_MS  Herald topic dedup window; 0 = off     (unset: Herald's default, on)
#   NATS_PORT, REDIS_PORT                                  (14222, 16379)
#   NATS_SERVER  nats-server binary                        (nats-server)
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
quick() { if [ "$QUICK" = 1 ]; then echo "$2"; else echo "$1"; fi; }
DATA_DIR=${DATA_DIR:-/tmp/herald-compare}
HERALD=${HERALD:-target/release/herald}
SYSTEMS=${SYSTEMS:-"embedded http kafka nats redis"}
DURABILITY=${DURABILITY:-"fsync no-fsync"}
WORKLOADS=${WORKLOADS:-"w1 w2 w3 w4"}
PRODUCERS=${PRODUCERS:-4}
DURATION=${DURATION:-$(quick 8 2)}
W1_BATCH=${W1_BATCH:-100}
W2_BATCH=${W2_BATCH:-10}
W2_DURATION=${W2_DURATION:-$(quick 5 2)}
W3_COUNT=${W3_COUNT:-$(quick 1000000 100000)}
W3_BATCH=${W3_BATCH:-1000}
W4_BYTES=${W4_BYTES:-$(quick 1000000000 100000000)}
PARTITIONS=${PARTITIONS:-1}
DEDUP_WINDOW_MS=${DEDUP_WINDOW_MS:-}
NATS_PORT=${NATS_PORT:-14222}
REDIS_PORT=${REDIS_PORT:-16379}
NATS_SERVER=${NATS_SERVER:-nats-server}
OUT="$DATA_DIR/results"

log() { echo "== $*" >&2; }

install_peers() {
  local missing=()
  command -v "$NATS_SERVER" >/dev/null || missing+=(nats-server)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

wait_port() { # port seconds
  for _ in $(seq 1 $(($2 * 10))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on 127.0.0.1:$1" >&2
  return 1
}

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

start_nats() {
  mkdir -p "$DATA_DIR/nats"
  cat >"$DATA_DIR/nats/nats.conf" <<EOF
listen: 127.0.0.1:$NATS_PORT
jetstream {
  store_dir: "$DATA_DIR/nats/store"
  max_file_store: 64G
  max_memory_store: 1G
}
EOF
  "$NATS_SERVER" -c "$DATA_DIR/nats/nats.conf" >"$DATA_DIR/nats/nats.log" 2>&1 &
  PIDS+=($!)
  wait_port "$NATS_PORT" 10
}

start_redis() {
  mkdir -p "$DATA_DIR/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DATA_DIR/redis" \
    --appendonly yes --appendfsync always --save '' --auto-aof-rewrite-percentage 0 \
    --protected-mode no --daemonize no --logfile "$DATA_DIR/redis/redis.log" &
  PIDS+=($!)
  wait_port "$REDIS_PORT" 10
}

# Compacts Redis's AOF between runs (automatic rewrites are off, so none lands mid-run).
redis_compact() {
  redis-cli -p "$REDIS_PORT" BGREWRITEAOF >/dev/null 2>&1 || return 0
  for _ in $(seq 1 600); do
    redis-cli -p "$REDIS_PORT" INFO persistence | grep -q 'aof_rewrite_in_progress:0' && return 0
    sleep 0.1
  done
}

# run SYSTEM DURABILITY LABEL ARGS... : one `herald bench`, its JSON appended to runs.jsonl.
run() {
  local system=$1 durability=$2 label=$3
  shift 3
  local fsync=always
  [ "$durability" = no-fsync ] && fsync=never
  if [ "$system" = nats ] && [ "$durability" = fsync ]; then
    return 0 # nats-server 2.9 cannot fsync before acking (see BENCHMARKS.md)
  fi
  [ "$system" = redis ] && redis_compact
  log "$label $durability $system $*"
  local line
  if line=$("$HERALD" bench --json --label "$label" --transport "$system" --fsync "$fsync" \
    --partitions "$PARTITIONS" --data-dir "$DATA_DIR/herald" \
    ${DEDUP_WINDOW_MS:+--dedup-window-ms "$DEDUP_WINDOW_MS"} \
    --nats-url "nats://127.0.0.1:$NATS_PORT" --redis-url "redis://127.0.0.1:$REDIS_PORT/" \
    "$@" </dev/null); then
    echo "$line" | tail -n 1 >>"$OUT/runs.jsonl"
    echo "$line" | tail -n 1 | sed 's/"publish_ack_latency".*//' | cut -c1-400 >&2
  else
    echo "   (failed: $label $durability $system)" >&2
  fi
}

main() {
  install_peers
  if [ ! -x "$HERALD" ]; then
    log "building herald (release)"
    cargo build --release -p herald
  fi
  rm -rf "$DATA_DIR"
  mkdir -p "$OUT" "$DATA_DIR/herald"
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    free -h
    df -h "$DATA_DIR"
    echo "uptime: $(uptime)"
    echo "nats-server: $("$NATS_SERVER" --version 2>&1)"
    echo "redis-server: $(redis-server --version)"
    echo "settings: QUICK=$QUICK DURATION=$DURATION PRODUCERS=$PRODUCERS W1_BATCH=$W1_BATCH W2_BATCH=$W2_BATCH W2_DURATION=$W2_DURATION W3_COUNT=$W3_COUNT W3_BATCH=$W3_BATCH W4_BYTES=$W4_BYTES PARTITIONS=$PARTITIONS DEDUP_WINDOW_MS=${DEDUP_WINDOW_MS:-default}"
  } >"$OUT/machine.txt"
  cat "$OUT/machine.txt" >&2

  case " $SYSTEMS " in *" nats "*) start_nats ;; esac
  case " $SYSTEMS " in *" redis "*) start_redis ;; esac

  log "physical limits"
  "$HERALD" bench limits --json --dir "$DATA_DIR" \
    --write-bytes 1073741824 --syncs "$(quick 1000 200)" \
    --seconds "$(quick 2 1)" >"$OUT/limits.json"
  "$HERALD" bench table "$OUT/limits.json" >/dev/null

  for w in $WORKLOADS; do
    for d in $DURABILITY; do
      for s in $SYSTEMS; do
        case $w in
          w1) run "$s" "$d" w1-publish-1k --producers "$PRODUCERS" --message-bytes 1024 \
                --batch "$W1_BATCH" --duration "$DURATION" ;;
          w2) for k in 1 4; do
                run "$s" "$d" "w2-fanout-$k" --producers "$PRODUCERS" --groups "$k" \
                  --message-bytes 1024 --batch "$W2_BATCH" --duration "$W2_DURATION" \
                  --rate-fraction 0.5
              done ;;
          w3) run "$s" "$d" w3-100b-10k-keys --producers "$PRODUCERS" --message-bytes 100 \
                --keys 10000 --batch "$W3_BATCH" --count "$W3_COUNT" --duration 300 ;;
          w4) # Reading does not depend on the fsync policy: one row, filled without fsync.
              [ "$d" = no-fsync ] || continue
              run "$s" "$d" w4-replay --producers "$PRODUCERS" --message-bytes 1024 \
                --batch 1000 --replay-bytes "$W4_BYTES" ;;
        esac
      done
    done
  done

  log "uptime after: $(uptime)"
  echo "uptime after: $(uptime)" >>"$OUT/machine.txt"
  "$HERALD" bench table "$OUT/limits.json" "$OUT/runs.jsonl" | tee "$OUT/table.md"
  log "results in $OUT (runs.jsonl, limits.json, machine.txt, table.md)"
}

main "$@"
