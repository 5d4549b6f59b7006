#!/usr/bin/env bash
# STUN Binding throughput on one core: a batched UDP echo (the ceiling), our stun-server, coturn
# and stund, measured interleaved over several rounds with the same load generator.
#
#   bench/stun-throughput.sh            # from the workspace root (or anywhere inside it)
#   ROUNDS=5 DURATION=10 bench/stun-throughput.sh
#
# Each server runs pinned to CPU $SERVER_CPU, the generator (target/release/stun-loadgen) to CPU
# $GEN_CPU. Every server answers on 127.0.0.1:3478 (plus 127.0.0.2 / port 3479 where it wants
# its second address); traffic never leaves loopback. Servers are started by this script and
# stopped by their pid only. Raw per-round results go to target/bench/, the summary to stdout.
#
# Knobs (environment):
#   ROUNDS=3        rounds; in each round every server runs once, in order
#   DURATION=5      measured seconds per run       WARMUP=1    unmeasured seconds before
#   WINDOW=64       requests in flight             SOCKETS=4   client sockets
#   FORM=modern     modern | classic request form
#   LOADGEN_ARGS="--gso"   extra stun-loadgen flags (default: GSO sending, see docs/BENCHMARKS.md)
#   SERVERS="echo-gso echo ours coturn stund"   which servers, in round order. echo-gso is
#                   not a contender but a probe of the generator: udp-echo --gso answers each
#                   sender's datagrams with one GSO send, far cheaper than the generator's work,
#                   so its rate is the most this generator can drive (must stay well above the
#                   servers' rates for their numbers to mean anything)
#   COTURN_ARGS="-m 0"     coturn thread options (single-threaded mode; see docs/BENCHMARKS.md).
#                   Server "coturn-default" runs coturn with its default threads (one UDP
#                   thread per CPU, all squeezed onto the one server CPU) for comparison.
#   PRIO=nice       nice: the session's autogroup gets nice -20 for the run (restored on exit)
#                   and so do server and generator, so other work on the machine (other
#                   sessions) barely competes with them;
#                   fifo: SCHED_FIFO (chrt -f 10), but RT throttling then caps each at 95 % of
#                   a CPU and stalls it 50 ms every second; none: leave priorities alone
#   QUIET_WAIT=180  before each run, wait up to this many seconds for the machine to be idle
#                   (other processes < QUIET_MAX % of all CPUs over 1 s); runs started on a
#                   busy machine are flagged "noisy" in the results
#   QUIET_MAX=10
#   IDLE_SPIN=0     1: keep the server's CPU from going idle during a run with a SCHED_IDLE busy
#                   loop (any server thread preempts it at once). In a VM an idle vCPU halts and
#                   each wakeup then costs a hypervisor exit; see docs/BENCHMARKS.md
#   SERVER_CPU=0 GEN_CPU=1
#   PORT=3478 ALT_PORT=3479   the servers' ports (another checkout's benchmark running at the
#                   same time holds the defaults now and then: its servers and ours would
#                   refuse to start or share the load)
#   OURS_ARGS="--no-rendezvous --no-switchboard"   extra flags for ours, ours-metrics and
#                   ours-base. The default measures STUN alone and opens no database (an older
#                   build as OURS_BASE would refuse a newer schema in the default home)
#   NO_BUILD=1      skip the cargo build (use existing binaries)
#   OURS_BASE=PATH  another stun-server binary (e.g. a build of an older commit), measured as
#                   server "ours-base" with the same flags as "ours": an A/B of a change,
#                   interleaved in the same rounds (add ours-base to SERVERS)
#   Server "ours-metrics" is "ours" with --metrics on 127.0.0.1 (a free port), scraped once a
#                   second during the run (15 times as often as Prometheus' default) from the
#                   generator's CPU: what the metrics endpoint costs, as ours-metrics / ours
#   SCRAPE_EVERY=1  seconds between those scrapes
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
WINDOW=${WINDOW:-64}
SOCKETS=${SOCKETS:-4}
FORM=${FORM:-modern}
LOADGEN_ARGS=${LOADGEN_ARGS---gso}
SERVERS=${SERVERS:-echo-gso echo ours coturn stund}
COTURN_ARGS=${COTURN_ARGS--m 0}
PRIO=${PRIO:-nice}
QUIET_WAIT=${QUIET_WAIT:-180}
QUIET_MAX=${QUIET_MAX:-10}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
IDLE_SPIN=${IDLE_SPIN:-0}
SCRAPE_EVERY=${SCRAPE_EVERY:-1}
OURS_ARGS=${OURS_ARGS---no-rendezvous --no-switchboard}

PRIMARY=127.0.0.1
ALTERNATE=127.0.0.2
PORT=${PORT:-3478}
ALT_PORT=${ALT_PORT:-3479}

die() { echo "stun-throughput: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 && $ROUNDS -le 50 ]] || die "ROUNDS must be 1..50"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 && $DURATION -le 600 ]] || die "DURATION must be 1..600"
[[ $WARMUP =~ ^[0-9]+$ && $WARMUP -le 60 ]] || die "WARMUP must be 0..60"
[[ $QUIET_WAIT =~ ^[0-9]+$ && $QUIET_WAIT -le 3600 ]] || die "QUIET_WAIT must be 0..3600"

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=$ROOT/target/release

case $PRIO in
fifo) PRIO_CMD=(chrt -f 10) ;;
nice) PRIO_CMD=(nice -n -20) ;;
none) PRIO_CMD=() ;;
*) die "PRIO must be fifo, nice or none" ;;
esac
if [[ $PRIO == fifo ]] && ! chrt -f 10 true 2>/dev/null; then
    log "SCHED_FIFO not permitted; falling back to PRIO=none"
    PRIO=none
    PRIO_CMD=()
fi

if [[ -z ${NO_BUILD:-} ]]; then
    log "building (cargo build --release -p p2p-servers)"
    cargo build --release -p p2p-servers >&2
fi
[[ -x $BIN/stun-loadgen && -x $BIN/udp-echo ]] || die "stun-loadgen/udp-echo not built"

# --- what can run -------------------------------------------------------------------------
have_server() {
    case $1 in
    echo | echo-gso) [[ -x $BIN/udp-echo ]] ;;
    ours) [[ -x $BIN/stun-server ]] && timeout 5 "$BIN/stun-server" --help 2>/dev/null | grep -q -- '--rate-limit' ;;
    ours-metrics) [[ -x $BIN/stun-server ]] && timeout 5 "$BIN/stun-server" --help 2>/dev/null | grep -q -- '--metrics' ;;
    ours-base) [[ -n ${OURS_BASE:-} && -x $OURS_BASE ]] ;;
    coturn | coturn-default) command -v turnserver >/dev/null ;;
    stund) command -v stund >/dev/null ;;
    *) return 1 ;;
    esac
}
ACTIVE=()
for s in $SERVERS; do
    if have_server "$s"; then
        ACTIVE+=("$s")
    else
        case $s in
        ours) log "SKIP ours: $BIN/stun-server missing or without --rate-limit (not written yet?)" ;;
        ours-base) log "SKIP ours-base: set OURS_BASE to a stun-server binary" ;;
        *) log "SKIP $s: not installed" ;;
        esac
    fi
done
((${#ACTIVE[@]} > 0)) || die "no server to measure"

server_cmd() {
    case $1 in
    echo) echo "$BIN/udp-echo --bind $PRIMARY:$PORT --max-secs 600" ;;
    echo-gso) echo "$BIN/udp-echo --bind $PRIMARY:$PORT --max-secs 600 --gso --batch 64" ;;
    ours) echo "$BIN/stun-server --primary $PRIMARY --alternate $ALTERNATE --port $PORT --alt-port $ALT_PORT --workers 1 --rate-limit 0 $OURS_ARGS" ;;
    ours-metrics) echo "$(server_cmd ours) --metrics 127.0.0.1:0" ;;
    ours-base) echo "$OURS_BASE --primary $PRIMARY --alternate $ALTERNATE --port $PORT --alt-port $ALT_PORT --workers 1 --rate-limit 0 $OURS_ARGS" ;;
    coturn | coturn-default)
        local extra=$COTURN_ARGS
        [[ $1 == coturn-default ]] && extra=""
        echo "turnserver -n --listening-ip $PRIMARY --listening-ip $ALTERNATE --listening-port $PORT --alt-listening-port $ALT_PORT --stun-only --no-cli --no-tls --no-dtls --log-file stdout --simple-log --pidfile $TMPD/coturn.pid $extra"
        ;;
    stund) echo "stund -h $PRIMARY -a $ALTERNATE -p $PORT -o $ALT_PORT" ;;
    esac
}

expect_of() { [[ $1 == echo* ]] && echo echo || echo stun; }

# --- helpers ------------------------------------------------------------------------------
TMPD=$(mktemp -d /tmp/stun-bench.XXXXXX)
SPID=""
SPINPID=""
SCRAPEPID=""
cleanup() {
    if [[ -n ${AG_SET:-} ]]; then echo "$AG_OLD" >/proc/self/autogroup 2>/dev/null || true; fi
    if [[ -n $SPINPID ]]; then kill "$SPINPID" 2>/dev/null || true; fi
    if [[ -n $SCRAPEPID ]]; then kill "$SCRAPEPID" 2>/dev/null || true; fi
    if [[ -n $SPID ]] && kill -0 "$SPID" 2>/dev/null; then
        kill -TERM "$SPID" 2>/dev/null || true
        sleep 0.5
        kill -KILL "$SPID" 2>/dev/null || true
    fi
    rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $PRIO == nice ]]; then
    # With autogroup scheduling (the default), nice only ranks processes within a session and
    # sessions share the CPU equally, so also raise this session's autogroup for the run.
    # cleanup() restores it.
    AG_OLD=$(sed -n 's/.* nice \(-\{0,1\}[0-9]*\)$/\1/p' /proc/self/autogroup 2>/dev/null || true)
    if [[ -n $AG_OLD ]] && echo -20 >/proc/self/autogroup 2>/dev/null; then
        AG_SET=1
    else
        log "cannot renice the session's autogroup (not root, or no autogroup)"
    fi
fi

# UDP sockets and TCP listeners bound to our ports on the two loopback addresses (one line each).
port_users() {
    ss -Htulnp "( sport = :$PORT or sport = :$ALT_PORT )" 2>/dev/null || true
}

# Waits (bounded) until nobody holds the ports.
wait_ports_free() {
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -z $(port_users) ]] && return 0
        sleep 0.1
    done
    return 1
}

# Busy share (percent of all CPUs) over one second, from /proc/stat.
cpu_busy_pct() {
    local a b
    a=($(head -1 /proc/stat))
    sleep 1
    b=($(head -1 /proc/stat))
    local idle=$(((b[4] + b[5]) - (a[4] + a[5])))
    local total=0 i
    for ((i = 1; i <= 8; i++)); do total=$((total + b[i] - a[i])); done
    ((total > 0)) || total=1
    echo $((100 * (total - idle) / total))
}

# Waits up to QUIET_WAIT seconds for an idle machine; prints the last busy percentage.
quiet_gate() {
    local start=$SECONDS busy
    busy=$(cpu_busy_pct)
    while ((busy > QUIET_MAX && SECONDS - start < QUIET_WAIT)); do
        if (((SECONDS - start) % 30 < 2)); then
            log "machine busy (${busy}% of CPUs used by others); waiting up to ${QUIET_WAIT}s"
        fi
        busy=$(cpu_busy_pct)
    done
    echo "$busy"
}

# utime+stime (clock ticks) of a process, all threads.
proc_ticks() {
    local f
    f=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    f=${f##*) }
    local a=($f)
    echo $((a[11] + a[12]))
}

# Involuntary context switches of all threads of a process.
proc_nvcsw() {
    local sum=0 t v
    for t in /proc/"$1"/task/*/status; do
        v=$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t" 2>/dev/null || echo 0)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

jget() { # jget KEY JSON -> value (numbers and plain strings only)
    local v
    v=$(grep -oE "\"$1\":(\"[^\"]*\"|[-0-9.]+)" <<<"$2" | head -1 | cut -d: -f2- | tr -d '"')
    echo "${v:-NA}"
}

na_row() { # na_row ROUND SERVER BUSY STATUS: a result line for a run that did not happen
    local row=("$1" "$2") i
    for ((i = 0; i < 14; i++)); do row+=(NA); done
    row+=("$3" "$4")
    (IFS=$'\t'; echo "${row[*]}") >>"$RAW"
}

start_server() { # start_server NAME LOGFILE -> sets SPID
    local cmd
    cmd=$(server_cmd "$1")
    # shellcheck disable=SC2086
    taskset -c "$SERVER_CPU" "${PRIO_CMD[@]}" $cmd >"$2" 2>&1 &
    SPID=$!
}

stop_server() {
    [[ -n $SPID ]] || return 0
    kill -TERM "$SPID" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    SPID=""
    wait_ports_free || log "WARNING: ports $PORT/$ALT_PORT still in use after stopping the server"
}

# --- run ----------------------------------------------------------------------------------
mkdir -p target/bench
STAMP=$(date +%Y%m%d-%H%M%S)
RAW=target/bench/stun-throughput-$STAMP.tsv
CLK=$(getconf CLK_TCK)
{
    echo "# stun-throughput $STAMP: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r)"
    echo "# rounds=$ROUNDS duration=$DURATION warmup=$WARMUP window=$WINDOW sockets=$SOCKETS form=$FORM prio=$PRIO idle_spin=$IDLE_SPIN loadgen_args='$LOADGEN_ARGS' coturn_args='$COTURN_ARGS' server_cpu=$SERVER_CPU gen_cpu=$GEN_CPU"
    printf 'round\tserver\trps\tlost\tlate\tinvalid\tp50_us\tp90_us\tp99_us\tp999_us\tmax_us\tgen_cpu\tgen_idle\tgen_backlog\tserver_cpu\tserver_nvcsw\tbusy_before_pct\tstatus\n'
} >"$RAW"

log "servers: ${ACTIVE[*]}; $ROUNDS rounds of ${DURATION}s (+${WARMUP}s warmup), window $WINDOW, $SOCKETS sockets, prio $PRIO"
for ((round = 1; round <= ROUNDS; round++)); do
    for s in "${ACTIVE[@]}"; do
        if ! wait_ports_free; then
            log "round $round $s: ports $PORT/$ALT_PORT busy (someone else's server?), skipping"
            na_row "$round" "$s" NA ports-busy
            continue
        fi
        busy=$(quiet_gate)
        status=ok
        ((busy <= QUIET_MAX)) || status=noisy
        slog=$TMPD/$s-$round.log
        start_server "$s" "$slog"
        sleep 1
        # Up to 4 more seconds for the port to appear.
        for ((i = 0; i < 40; i++)); do
            port_users | grep -q "$PRIMARY:$PORT" && break
            sleep 0.1
        done
        if ! kill -0 "$SPID" 2>/dev/null || ! port_users | grep -q "$PRIMARY:$PORT"; then
            log "round $round $s: server did not start; log:"
            tail -5 "$slog" >&2 || true
            stop_server
            na_row "$round" "$s" "$busy" no-start
            continue
        fi
        # Only our server may hold the port (a stray one with SO_REUSEPORT would share the load).
        if port_users | grep -v "pid=$SPID," | grep -q .; then
            log "round $round $s: another process also holds port $PORT/$ALT_PORT, skipping"
            port_users >&2
            stop_server
            na_row "$round" "$s" "$busy" port-shared
            continue
        fi
        if [[ $IDLE_SPIN == 1 ]]; then
            timeout $((DURATION + WARMUP + 20)) taskset -c "$SERVER_CPU" chrt -i 0 \
                bash -c 'while :; do :; done' &
            SPINPID=$!
        fi
        if [[ $s == ours-metrics ]]; then
            maddr=$(grep -o 'http://[0-9.:]*/metrics' "$slog" | head -1 | sed 's|http://||; s|/metrics||')
            [[ -n $maddr ]] || log "round $round $s: no metrics address in the log"
            # bash's /dev/tcp: no curl needed. Bounded like the run itself.
            timeout $((DURATION + WARMUP + 30)) taskset -c "$GEN_CPU" bash -c '
                while :; do
                    exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
                    printf "GET /metrics HTTP/1.0\r\n\r\n" >&3
                    cat <&3 >/dev/null
                    exec 3<&-
                    sleep "$2"
                done' scrape "$maddr" "$SCRAPE_EVERY" &
            SCRAPEPID=$!
        fi
        t0=$(proc_ticks "$SPID")
        n0=$(proc_nvcsw "$SPID")
        w0=$(date +%s.%N)
        # shellcheck disable=SC2086
        json=$(timeout $((DURATION + WARMUP + 30)) taskset -c "$GEN_CPU" "${PRIO_CMD[@]}" \
            "$BIN/stun-loadgen" --server "$PRIMARY:$PORT" --expect "$(expect_of "$s")" \
            --form "$FORM" --window "$WINDOW" --sockets "$SOCKETS" --duration "$DURATION" \
            --warmup "$WARMUP" --json $LOADGEN_ARGS 2>"$TMPD/gen.err") || status="loadgen-exit-$?"
        w1=$(date +%s.%N)
        t1=$(proc_ticks "$SPID")
        n1=$(proc_nvcsw "$SPID")
        if [[ -n $SPINPID ]]; then
            kill "$SPINPID" 2>/dev/null || true
            wait "$SPINPID" 2>/dev/null || true
            SPINPID=""
        fi
        if [[ -n $SCRAPEPID ]]; then
            kill "$SCRAPEPID" 2>/dev/null || true
            wait "$SCRAPEPID" 2>/dev/null || true
            SCRAPEPID=""
        fi
        alive=1
        kill -0 "$SPID" 2>/dev/null || alive=0
        stop_server
        ((alive)) || status="$status,server-died"
        if [[ -s $TMPD/gen.err ]]; then
            sed "s/^/    [$s] /" "$TMPD/gen.err" | head -12 >&2
        fi
        scpu=$(awk -v t="$((t1 - t0))" -v c="$CLK" -v a="$w0" -v b="$w1" 'BEGIN { printf "%.2f", t / c / (b - a) }')
        row=("$round" "$s")
        for k in responses_per_s lost late invalid p50_us p90_us p99_us p999_us max_us gen_cpu gen_idle gen_backlog; do
            row+=("$(jget "$k" "$json")")
        done
        [[ $(jget invalid "$json") == 0 ]] || status="$status,INVALID"
        row+=("$scpu" "$((n1 - n0))" "$busy" "$status")
        (IFS=$'\t'; echo "${row[*]}") >>"$RAW"
        log "round $round $(printf '%-14s' "$s") $(printf '%8s' "${row[2]}")/s  lost ${row[3]}  invalid ${row[5]}  p50 ${row[6]} us  p99 ${row[8]} us  server CPU ${scpu}  gen backlog ${row[13]}  [$status]"
    done
done

# --- summary ------------------------------------------------------------------------------
echo
echo "STUN Binding throughput, one server core (CPU $SERVER_CPU), generator on CPU $GEN_CPU"
echo "$(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); kernel $(uname -r)"
echo "window $WINDOW, $SOCKETS sockets, form $FORM, ${DURATION}s x $ROUNDS rounds, prio $PRIO, idle spin $IDLE_SPIN, loadgen '$LOADGEN_ARGS'"
echo "raw results: $RAW"
echo "srv cpu: server CPU share over the run; backlog: share of in-flight requests already answered"
echo "when the generator looked (high = the generator is behind, low = the server is)"
echo
awk -F'\t' -v order="${ACTIVE[*]}" '
function median(arr, n,    i, j, t) {
    for (i = 2; i <= n; i++) { t = arr[i]; j = i - 1; while (j >= 1 && arr[j] > t) { arr[j + 1] = arr[j]; j-- } arr[j + 1] = t }
    if (n == 0) return "NA"
    return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
/^#/ || $1 == "round" { next }
$3 != "NA" {
    s = $2; n[s]++; byround[$1, s] = $3; rounds[$1] = 1
    rps[s, n[s]] = $3; p50[s, n[s]] = $7; p99[s, n[s]] = $9; bl[s, n[s]] = $14; cpu[s, n[s]] = $15
    lost[s] += $4; inval[s] += $6
    list[s] = list[s] (list[s] == "" ? "" : " ") sprintf("%.0f", $3)
    if ($18 != "ok") flag[s] = flag[s] " r" $1 ":" $18
}
END {
    printf "%-15s %12s %9s %9s %7s %8s %8s %8s  %s\n", "server", "median rps", "p50 us", "p99 us", "srv cpu", "backlog", "lost", "invalid", "all rounds (rps)"
    k = split(order, names, " ")
    for (i = 1; i <= k; i++) {
        s = names[i]
        if (!(s in n)) { printf "%-15s %12s\n", s, "no data"; continue }
        for (j = 1; j <= n[s]; j++) { a[j] = rps[s, j]; b[j] = p50[s, j]; c[j] = p99[s, j]; d[j] = bl[s, j]; e[j] = cpu[s, j] }
        med[s] = median(a, n[s]); m50 = median(b, n[s]); m99 = median(c, n[s]); mbl = median(d, n[s]); mcpu = median(e, n[s])
        printf "%-15s %12.0f %9.1f %9.1f %7.2f %8.3f %8d %8d  %s%s\n", s, med[s], m50, m99, mcpu, mbl, lost[s], inval[s], list[s], flag[s]
    }
    print ""
    best = 0; bestname = ""
    for (i = 1; i <= k; i++) if (names[i] != "echo-gso" && (names[i] in med) && med[names[i]] > best) { best = med[names[i]]; bestname = names[i] }
    if (("echo-gso" in med) && best > 0)
        printf "generator ceiling (echo-gso) / fastest server (%s) = %.2f%s\n", bestname, med["echo-gso"] / best, (med["echo-gso"] >= 1.2 * best) ? "" : "  << generator may be limiting"
    if (("ours" in med) && ("echo" in med) && med["echo"] > 0)
        printf "ours / echo   = %.3f  (target >= 0.95): %s\n", med["ours"] / med["echo"], (med["ours"] >= 0.95 * med["echo"]) ? "MET" : "MISSED"
    if (("ours" in med) && ("coturn" in med) && med["coturn"] > 0)
        printf "ours / coturn = %.3f  (target >= 1.7): %s\n", med["ours"] / med["coturn"], (med["ours"] >= 1.7 * med["coturn"]) ? "MET" : "MISSED"
    if (("ours" in med) && ("stund" in med) && med["stund"] > 0)
        printf "ours / stund  = %.3f\n", med["ours"] / med["stund"]
    # The same ratios taken within each round (runs seconds apart, so slow drifts of the
    # machine cancel out), then the median over rounds.
    k2 = split("echo coturn stund ours-base", refs, " ")
    for (i = 1; i <= k2; i++) {
        r = refs[i]; m = 0; txt = ""
        for (rd in rounds)
            if (((rd, "ours") in byround) && ((rd, r) in byround) && byround[rd, r] > 0) {
                q[++m] = byround[rd, "ours"] / byround[rd, r]
            }
        if (m == 0) continue
        for (j = 1; j <= m; j++) txt = txt sprintf(" %.2f", q[j])
        printf "per-round ours / %-6s: median %.3f  (rounds:%s)\n", r, median(q, m), txt
    }
    # Metrics on against off, the same way: the issue-16 target is >= 0.97.
    m = 0; txt = ""
    for (rd in rounds)
        if (((rd, "ours") in byround) && ((rd, "ours-metrics") in byround) && byround[rd, "ours"] > 0)
            q[++m] = byround[rd, "ours-metrics"] / byround[rd, "ours"]
    if (m > 0) {
        for (j = 1; j <= m; j++) txt = txt sprintf(" %.3f", q[j])
        md = median(q, m)
        printf "per-round ours-metrics / ours: median %.3f  (target >= 0.97): %s  (rounds:%s)\n", md, (md >= 0.97) ? "MET" : "MISSED", txt
    }
}' "$RAW"
