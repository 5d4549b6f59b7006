#!/usr/bin/env bash
# Switchboard relay throughput against coturn relaying the same load, one server core each.
#
# Interleaved over ROUNDS rounds, each contender runs DURATION measured seconds:
#   switchboard  target/release/sb-bench: our switchboard relay on its own thread pinned to
#                SERVER_CPU, SB_PAIRS session pairs on GEN_CPU, each pair keeping SB_WINDOW
#                DATA frames of SIZE bytes in flight with the far side echoing every frame back.
#                The rate is the switchboard's own relayed-frames counter; its CPU is the
#                switchboard thread's utime+stime from /proc/self/task/TID/stat.
#   switchboard-w1  the same with SB1_PAIRS pairs and one frame in flight each: every relayed
#                frame is a read and a write of its own, as every datagram is for coturn.
#   coturn       turnserver (UDP client transport) pinned to SERVER_CPU, long-term credentials
#                user/pass on 127.0.0.1; turnutils_uclient (TURN_CLIENTS clients, SIZE-byte
#                messages over channels, one every TURN_INTERVAL ms per client) and
#                turnutils_peer (the echoing peer) pinned to GEN_CPU. Every completed round
#                trip is two relayed messages (client -> peer and back). uclient sends open
#                loop, so a saturated coturn loses messages; relayed/s counts what coturn got
#                and passed on: client's sent - kernel drops at coturn's TURN socket, plus
#                messages back at the client + drops at the client's sockets (uclient's
#                once-a-second cumulative counters, drops from /proc/net/udp). CPU is
#                turnserver's utime+stime from /proc/PID/stat.
#   coturn-tcp   the same with the TURN client on TCP (uclient -t), like the switchboard's
#                clients; the relay leg to the peer stays UDP (TURN).
# Everything binds 127.0.0.1 only. Servers are started by this script and stopped by pid.
#
# Usage: bench/relay-throughput.sh
# Environment (defaults in brackets):
#   ROUNDS [5] DURATION [5] seconds measured per contender and round, WARMUP [2] s (sb-bench)
#   CONTENDERS ["switchboard switchboard-w1 coturn coturn-tcp"]
#   SIZE [100] payload bytes per message
#   SB_PAIRS [32] SB_WINDOW [64] SB1_PAIRS [64]
#   TURN_CLIENTS [32] TURN_INTERVAL [0] ms between one client's messages (0: as fast as
#                 uclient's timer goes, up to 50 per client per tick)
#   TURN_MSGS [2000000] messages per TURN client at most (the count bound; time bounds it too)
#   TURN_RAMP [8] s from uclient's start to the measured window: its clients start sending at
#                 random times 1-6 s after connecting
#   TURN_PORT [3578] PEER_PORT [3580] RELAY_PORTS [51000-51999]
#   COTURN_ARGS ["-m 0"] extra turnserver flags (-m 0: relay in one thread, its best on one core)
#   SERVER_CPU [0] GEN_CPU [1] PRIO [nice]: nice (-20) | none
#   QUIET_WAIT [60] s to wait for other sessions' load to drop below QUIET_MAX [10] % busy
#   NO_BUILD=1  use existing binaries (BIN [$CARGO_TARGET_DIR/release or target/release])
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
CONTENDERS=${CONTENDERS:-switchboard switchboard-w1 coturn coturn-tcp}
SIZE=${SIZE:-100}
SB_PAIRS=${SB_PAIRS:-32}
SB_WINDOW=${SB_WINDOW:-64}
SB1_PAIRS=${SB1_PAIRS:-64}
TURN_CLIENTS=${TURN_CLIENTS:-32}
TURN_INTERVAL=${TURN_INTERVAL:-0}
TURN_MSGS=${TURN_MSGS:-2000000}
TURN_RAMP=${TURN_RAMP:-8}
TURN_PORT=${TURN_PORT:-3578}
PEER_PORT=${PEER_PORT:-3580}
RELAY_PORTS=${RELAY_PORTS:-51000-51999}
COTURN_ARGS=${COTURN_ARGS--m 0}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
PRIO=${PRIO:-nice}
QUIET_WAIT=${QUIET_WAIT:-60}
QUIET_MAX=${QUIET_MAX:-10}
ADDR=127.0.0.1

die() { echo "relay-throughput: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
isnum() { [[ $1 =~ ^[0-9]+$ ]]; }

isnum "$ROUNDS" && ((ROUNDS >= 1 && ROUNDS <= 50)) || die "ROUNDS must be 1..50"
isnum "$DURATION" && ((DURATION >= 2 && DURATION <= 120)) || die "DURATION must be 2..120"
isnum "$WARMUP" && ((WARMUP <= 30)) || die "WARMUP must be 0..30"
isnum "$SIZE" && ((SIZE >= 16 && SIZE <= 1200)) || die "SIZE must be 16..1200"
isnum "$TURN_CLIENTS" && ((TURN_CLIENTS >= 1 && TURN_CLIENTS <= 500)) || die "TURN_CLIENTS must be 1..500"
isnum "$TURN_INTERVAL" && ((TURN_INTERVAL <= 1000)) || die "TURN_INTERVAL must be 0..1000"
isnum "$TURN_MSGS" && ((TURN_MSGS >= 1 && TURN_MSGS <= 100000000)) || die "TURN_MSGS must be 1..1e8"
isnum "$TURN_RAMP" && ((TURN_RAMP >= 7 && TURN_RAMP <= 60)) || die "TURN_RAMP must be 7..60"
isnum "$QUIET_WAIT" && ((QUIET_WAIT <= 3600)) || die "QUIET_WAIT must be 0..3600"
[[ $RELAY_PORTS =~ ^([0-9]+)-([0-9]+)$ ]] || die "RELAY_PORTS must be LOW-HIGH"
RELAY_LO=${BASH_REMATCH[1]}
RELAY_HI=${BASH_REMATCH[2]}

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}

case $PRIO in
nice) PRIO_CMD=(nice -n -20) ;;
none) PRIO_CMD=() ;;
*) die "PRIO must be nice or none" ;;
esac

if [[ -z ${NO_BUILD:-} ]]; then
    log "building (cargo build --release -p p2p-servers --bins)"
    cargo build --release -p p2p-servers --bins >&2
fi

have() {
    case $1 in
    switchboard | switchboard-w1) [[ -x $BIN/sb-bench ]] && "$BIN/sb-bench" --help | grep -q -- '--sb-cpu' ;;
    coturn | coturn-tcp) command -v turnserver && command -v turnutils_uclient && command -v turnutils_peer ;;
    *) return 1 ;;
    esac >/dev/null 2>&1
}
ACTIVE=()
for c in $CONTENDERS; do
    if have "$c"; then ACTIVE+=("$c"); else log "SKIP $c: not available (sb-bench without --sb-cpu, or coturn not installed)"; fi
done
((${#ACTIVE[@]} > 0)) || die "nothing to measure"

TMPD=$(mktemp -d /tmp/relay-bench.XXXXXX)
PIDS=() # processes this script started and has not stopped yet
stop_pid() { # stop_pid PID: TERM, up to 3 s, then KILL
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
stop_all() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    PIDS=()
}
cleanup() {
    stop_all
    if [[ -n ${AG_SET:-} ]]; then echo "$AG_OLD" >/proc/self/autogroup 2>/dev/null || true; fi
    rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $PRIO == nice ]]; then
    # nice only ranks processes within an autogroup; raise this session's too (restored on exit).
    AG_OLD=$(sed -n 's/.* nice \(-\{0,1\}[0-9]*\)$/\1/p' /proc/self/autogroup 2>/dev/null || true)
    if [[ -n $AG_OLD ]] && echo -20 >/proc/self/autogroup 2>/dev/null; then AG_SET=1; fi
fi

# Busy share (percent of all CPUs) over one second, from /proc/stat.
cpu_busy_pct() {
    local a b i total=0
    a=($(head -1 /proc/stat))
    sleep 1
    b=($(head -1 /proc/stat))
    local idle=$(((b[4] + b[5]) - (a[4] + a[5])))
    for ((i = 1; i <= 8; i++)); do total=$((total + b[i] - a[i])); done
    ((total > 0)) || total=1
    echo $((100 * (total - idle) / total))
}
quiet_gate() { # waits up to QUIET_WAIT s for an idle machine; prints the last busy percentage
    local start=$SECONDS busy
    busy=$(cpu_busy_pct)
    while ((busy > QUIET_MAX && SECONDS - start < QUIET_WAIT)); do busy=$(cpu_busy_pct); done
    echo "$busy"
}

proc_ticks() { # utime+stime of a process (all threads), clock ticks
    local f
    f=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    f=${f##*) }
    local a=($f)
    echo $((a[11] + a[12]))
}

jget() { # jget KEY JSON -> number or null
    local v
    v=$(grep -oE "\"$1\":(null|[-0-9.]+)" <<<"$2" | head -1 | cut -d: -f2-)
    echo "${v:-NA}"
}

# UDP sockets and TCP listeners on the ports used here.
port_users() {
    ss -Htulnp 2>/dev/null | awk -v a="$ADDR" -v t="$TURN_PORT" -v p="$PEER_PORT" -v lo="$RELAY_LO" -v hi="$RELAY_HI" '
        { n = split($5, f, ":"); port = f[n] + 0
          if (port == t || port == p || (port >= lo && port <= hi)) print }'
}
wait_ports_free() {
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -z $(port_users) ]] && return 0
        sleep 0.1
    done
    return 1
}

mkdir -p target/bench
STAMP=$(date +%Y%m%d-%H%M%S)
RAW=target/bench/relay-throughput-$STAMP.tsv
CLK=$(getconf CLK_TCK)
{
    echo "# relay-throughput $STAMP: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r)"
    echo "# rounds=$ROUNDS duration=$DURATION warmup=$WARMUP size=$SIZE sb_pairs=$SB_PAIRS sb_window=$SB_WINDOW sb1_pairs=$SB1_PAIRS turn_clients=$TURN_CLIENTS turn_interval=$TURN_INTERVAL turn_msgs=$TURN_MSGS turn_ramp=$TURN_RAMP coturn_args='$COTURN_ARGS' server_cpu=$SERVER_CPU gen_cpu=$GEN_CPU prio=$PRIO"
    printf 'round\tcontender\trelayed_per_s\tserver_cpu\tper_cpu_s\tload_cpu\tsent_per_s\tloss\tp50_us\tp99_us\tbusy_before_pct\tstatus\tudp_drops_in_peer_relay_client\tunaccounted\n'
} >"$RAW"
row() { (IFS=$'\t'; echo "$*") >>"$RAW"; }

# --- switchboard: sb-bench pins its own threads ---------------------------------------------
run_switchboard() { # run_switchboard ROUND BUSY NAME PAIRS WINDOW
    local json status=ok name=$3
    json=$(timeout $((WARMUP + DURATION + 30)) "${PRIO_CMD[@]}" "$BIN/sb-bench" \
        --sb-cpu "$SERVER_CPU" --client-cpu "$GEN_CPU" --pairs "$4" --window "$5" \
        --size "$SIZE" --warmup "$WARMUP" --duration "$DURATION" --json 2>"$TMPD/sb.err") ||
        status="sb-bench-exit-$?"
    [[ -s $TMPD/sb.err ]] && sed 's/^/    [sb-bench] /' "$TMPD/sb.err" | head -5 >&2
    local rate cpu ccpu rt p50 p99 per
    rate=$(jget frames_per_s "$json")
    cpu=$(jget sb_cpu "$json")
    ccpu=$(jget client_cpu "$json")
    rt=$(jget round_trips_per_s "$json")
    p50=$(jget rtt_p50_us "$json")
    p99=$(jget rtt_p99_us "$json")
    per=$(awk -v r="$rate" -v c="$cpu" 'BEGIN { if (c + 0 > 0) printf "%.0f", r / c; else print "NA" }')
    # sent_per_s: frames the driving sides got back x 2 (what the clients saw relayed)
    row "$1" "$name" "$rate" "$cpu" "$per" "$ccpu" \
        "$(awk -v r="$rt" 'BEGIN { printf "%.0f", 2 * r }')" 0 "$p50" "$p99" "$2" "$status" NA NA
    log "round $1 $(printf '%-14s' "$name") $(printf '%8s' "$rate") relayed/s  server CPU $cpu  per CPU-s $per  load CPU $ccpu  rtt p50/p99 $p50/$p99 us  [$status]"
}

# --- coturn ---------------------------------------------------------------------------------
STATS_RE='tot_send_msgs=([0-9]+), tot_recv_msgs=([0-9]+),'
# Datagrams the kernel dropped at full receive buffers (cumulative, /proc/net/udp), as
# "INTO_COTURN AT_PEER AT_RELAYS AT_CLIENTS": sockets bound to the TURN port, to the peer's port,
# to the relay port range, and the clients' sockets (talking to the TURN port).
udp_drops() {
    awk -v t="$TURN_PORT" -v p="$PEER_PORT" -v lo="$RELAY_LO" -v hi="$RELAY_HI" '
        function port(a,    x, h, i, v) {
            split(a, x, ":"); h = toupper(x[2]); v = 0
            for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789ABCDEF", substr(h, i, 1)) - 1
            return v
        }
        NR > 1 { l = port($2); r = port($3); d = $NF
            if (l == t) a += d; else if (r == t) e += d; else if (l == p) b += d; else if (l >= lo && l <= hi) c += d }
        END { printf "%d %d %d %d\n", a, b, c, e }' /proc/net/udp
}
# Waits (up to 5 s) for a cumulative-stats line newer than line number $1 of the uclient log,
# then prints "LINE_NO EPOCH SENT RECEIVED COTURN_TICKS CLIENT_TICKS PEER_TICKS" and udp_drops,
# sampled within ~10 ms of the line being written.
next_stats() {
    local after=$1 i n line
    for ((i = 0; i < 500; i++)); do
        n=$(grep -c 'tot_send_msgs=.*tot_send_bytes' "$TMPD/uc.log" || true)
        if ((n > after)); then
            local now=$EPOCHREALTIME
            local t1 t2 t3 drops
            drops=$(udp_drops)
            t1=$(proc_ticks "$TS_PID")
            t2=$(proc_ticks "$UC_PID")
            t3=$(proc_ticks "$PEER_PID")
            line=$(grep 'tot_send_msgs=.*tot_send_bytes' "$TMPD/uc.log" | sed -n "${n}p")
            [[ $line =~ $STATS_RE ]] || return 1
            echo "$n $now ${BASH_REMATCH[1]} ${BASH_REMATCH[2]} $t1 $t2 $t3 $drops"
            return 0
        fi
        sleep 0.01
    done
    return 1
}

run_coturn() { # run_coturn ROUND BUSY NAME
    local round=$1 busy=$2 name=$3 status=ok tflag=()
    [[ $name == coturn-tcp ]] && tflag=(-t)
    # shellcheck disable=SC2086
    taskset -c "$SERVER_CPU" "${PRIO_CMD[@]}" turnserver -n --listening-ip "$ADDR" --relay-ip "$ADDR" \
        --listening-port "$TURN_PORT" --min-port "$RELAY_LO" --max-port "$RELAY_HI" \
        --lt-cred-mech --user user:pass --realm bench --userdb "$TMPD/turndb" \
        --no-cli --no-tls --no-dtls --allow-loopback-peers --log-file stdout --simple-log \
        --pidfile "$TMPD/coturn.pid" $COTURN_ARGS >"$TMPD/coturn-$round.log" 2>&1 &
    TS_PID=$!
    PIDS+=("$TS_PID")
    taskset -c "$GEN_CPU" "${PRIO_CMD[@]}" turnutils_peer -L "$ADDR" -p "$PEER_PORT" >"$TMPD/peer.log" 2>&1 &
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    local i
    for ((i = 0; i < 50; i++)); do
        port_users | grep -q "$ADDR:$TURN_PORT .*pid=$TS_PID," && break
        sleep 0.1
    done
    if ! port_users | grep -q "$ADDR:$TURN_PORT .*pid=$TS_PID,"; then
        log "round $round $name: turnserver did not start"
        tail -5 "$TMPD/coturn-$round.log" >&2 || true
        stop_all
        row "$round" "$name" NA NA NA NA NA NA NA NA "$busy" no-start NA NA
        return
    fi
    : >"$TMPD/uc.log"
    timeout $((TURN_RAMP + DURATION + 30)) taskset -c "$GEN_CPU" "${PRIO_CMD[@]}" turnutils_uclient \
        "${tflag[@]}" -c -u user -w pass -e "$ADDR" -r "$PEER_PORT" -p "$TURN_PORT" -l "$SIZE" \
        -n "$TURN_MSGS" -m "$TURN_CLIENTS" -z "$TURN_INTERVAL" "$ADDR" >"$TMPD/uc.log" 2>&1 &
    UC_PID=$!
    PIDS+=("$UC_PID")
    local a b
    sleep "$TURN_RAMP"
    if a=$(next_stats "$(grep -c 'tot_send_msgs=.*tot_send_bytes' "$TMPD/uc.log" || true)"); then
        sleep "$((DURATION - 1)).5"
        b=$(next_stats "${a%% *}") || status=no-stats
    else
        status=no-stats
    fi
    # What the client itself says (errors, the connect phase).
    grep -iE 'error|cannot|fail' "$TMPD/uc.log" | sort | uniq -c | head -3 | sed "s/^/    [$name uclient] /" >&2 || true
    kill -0 "$TS_PID" 2>/dev/null || status="$status,server-died"
    stop_all
    if [[ $status != ok ]]; then
        log "round $round $name: no measurement ($status); client log tail:"
        tail -3 "$TMPD/uc.log" >&2 || true
        row "$round" "$name" NA NA NA NA NA NA NA NA "$busy" "$status" NA NA
        return
    fi
    local out
    # Relayed by coturn = what reached it from the clients and went on to the peer (sent minus
    # drops at its TURN-port socket) + what it sent back to the clients (received plus drops at
    # the clients' sockets). Drops at the peer's and the relay sockets are losses on the way,
    # and balance the books: sent = received + all four drop counts (printed as "unaccounted").
    out=$(awk -v a="$a" -v b="$b" -v clk="$CLK" -v max="$TURN_MSGS" -v m="$TURN_CLIENTS" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        dt = y[2] - x[2]; s = y[3] - x[3]; g = y[4] - x[4]
        d1 = y[8] - x[8]; d2 = y[9] - x[9]; d3 = y[10] - x[10]; d4 = y[11] - x[11]
        relayed = ((s - d1) + (g + d4)) / dt
        cpu = (y[5] - x[5]) / clk / dt; load = (y[6] - x[6] + y[7] - x[7]) / clk / dt
        loss = s > 0 ? 1 - g / s : 0
        st = (y[3] >= max * m) ? "client-finished" : "ok"
        printf "%.0f %.3f %s %.3f %.0f %.4f %s %d/%d/%d/%d %d\n", relayed, cpu, (cpu > 0 ? sprintf("%.0f", relayed / cpu) : "NA"), load, s / dt, loss, st, d1, d2, d3, d4, s - g - d1 - d2 - d3 - d4
    }')
    local r=($out)
    status=${r[6]}
    row "$round" "$name" "${r[0]}" "${r[1]}" "${r[2]}" "${r[3]}" "${r[4]}" "${r[5]}" NA NA "$busy" "$status" "${r[7]}" "${r[8]}"
    log "round $round $(printf '%-11s' "$name")  $(printf '%8s' "${r[0]}") relayed/s  server CPU ${r[1]}  per CPU-s ${r[2]}  load CPU ${r[3]}  client sent ${r[4]}/s  loss ${r[5]}  drops in/peer/relay/client ${r[7]}  unaccounted ${r[8]}  [$status]"
}

# --- run ------------------------------------------------------------------------------------
log "contenders: ${ACTIVE[*]}; $ROUNDS rounds of ${DURATION}s; $SIZE-byte messages; server CPU $SERVER_CPU, load CPU $GEN_CPU"
for ((round = 1; round <= ROUNDS; round++)); do
    for c in "${ACTIVE[@]}"; do
        if ! wait_ports_free; then
            log "round $round $c: ports in use by someone else, skipping"
            port_users >&2
            row "$round" "$c" NA NA NA NA NA NA NA NA NA ports-busy NA NA
            continue
        fi
        busy=$(quiet_gate)
        case $c in
        switchboard) run_switchboard "$round" "$busy" switchboard "$SB_PAIRS" "$SB_WINDOW" ;;
        switchboard-w1) run_switchboard "$round" "$busy" switchboard-w1 "$SB1_PAIRS" 1 ;;
        coturn | coturn-tcp) run_coturn "$round" "$busy" "$c" ;;
        esac
    done
done

# --- summary --------------------------------------------------------------------------------
echo
echo "Relay throughput, $SIZE-byte messages, server on CPU $SERVER_CPU, load on CPU $GEN_CPU"
echo "$(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); kernel $(uname -r)"
echo "${DURATION}s x $ROUNDS rounds; switchboard: $SB_PAIRS pairs x window $SB_WINDOW; switchboard-w1: $SB1_PAIRS pairs x window 1; coturn: $TURN_CLIENTS clients, -z $TURN_INTERVAL, args '$COTURN_ARGS'"
echo "raw results: $RAW"
echo "relayed/s: messages the server relayed per second (switchboard: its own counter; coturn:"
echo "messages the client sent minus kernel drops at coturn's socket, plus messages back at the"
echo "client including drops at the client's sockets). srv cpu: the server's share of one core."
echo "per CPU-s: relayed per second of server CPU. load cpu: the load generator's share of its core."
echo "loss: share of the client's messages that never came back."
echo
awk -F'\t' -v order="${ACTIVE[*]}" '
function median(arr, n,    i, j, t) {
    if (n == 0) return "NA"
    for (i = 2; i <= n; i++) { t = arr[i]; j = i - 1; while (j >= 1 && arr[j] > t) { arr[j + 1] = arr[j]; j-- } arr[j + 1] = t }
    return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
/^#/ || $1 == "round" { next }
$3 != "NA" {
    s = $2; n[s]++; rate[s, n[s]] = $3; cpu[s, n[s]] = $4; per[s, n[s]] = $5; load[s, n[s]] = $6; loss[s, n[s]] = $8
    byr[$1, s] = $3; byp[$1, s] = $5; if ($1 > maxr) maxr = $1
    list[s] = list[s] (list[s] == "" ? "" : " ") $3
    if ($12 != "ok") flag[s] = flag[s] " r" $1 ":" $12
}
END {
    printf "%-15s %12s %8s %12s %8s %8s  %s\n", "contender", "relayed/s", "srv cpu", "per CPU-s", "load cpu", "loss", "all rounds (relayed/s)"
    k = split(order, names, " ")
    for (i = 1; i <= k; i++) {
        s = names[i]
        if (!(s in n)) { printf "%-15s %12s\n", s, "no data"; continue }
        for (j = 1; j <= n[s]; j++) { a[j] = rate[s, j]; b[j] = cpu[s, j]; c[j] = per[s, j]; d[j] = load[s, j]; e[j] = loss[s, j] }
        med[s] = median(a, n[s]); mc = median(b, n[s]); medp[s] = median(c, n[s]); ml = median(d, n[s]); ms = median(e, n[s])
        printf "%-15s %12.0f %8.2f %12.0f %8.2f %8.4f  %s%s\n", s, med[s], mc, medp[s], ml, ms, list[s], flag[s]
    }
    print ""
    for (h = 1; h <= k; h++) for (i = 1; i <= k; i++) {
        o = names[h]; r = names[i]
        if (o !~ /^switchboard/ || r ~ /^switchboard/ || !(r in n) || !(o in n)) continue
        m = 0; txt = ""; m2 = 0; txt2 = ""
        for (rd = 1; rd <= maxr; rd++) {
            if (((rd, o) in byr) && ((rd, r) in byr) && byr[rd, r] > 0) { q[++m] = byr[rd, o] / byr[rd, r]; txt = txt sprintf(" %.2f", q[m]) }
            if (((rd, o) in byp) && ((rd, r) in byp) && byp[rd, r] + 0 > 0 && byp[rd, o] + 0 > 0) { q2[++m2] = byp[rd, o] / byp[rd, r]; txt2 = txt2 sprintf(" %.2f", q2[m2]) }
        }
        printf "%s / %s relayed/s: median of per-round ratios %.2f (rounds:%s); ratio of medians %.2f\n", o, r, median(q, m), txt, med[o] / med[r]
        if (m2 > 0) printf "%s / %s per CPU-s: median of per-round ratios %.2f (rounds:%s); ratio of medians %.2f\n", o, r, median(q2, m2), txt2, medp[o] / medp[r]
    }
}' "$RAW"
