#!/usr/bin/env bash
# Bulk transfer over a link (p2p-client send/receive) against the tools people would otherwise
# use, on one lab path between two sites (real network namespaces; see tests::lab), as root.
#
# The lab: `natlab up --shape two-peers --nat none` (two public hosts on the core, the server
# host beyond it; no NAT, so every contender can connect). One random file of BYTES bytes is
# sent from site 0 (client0) to site 1 (client1) by each contender, interleaved, ROUNDS times:
#   ours          p2p-client send / receive (release build), direct path allowed: log in,
#                 introduction, punching while the relay already carries the link, QUIC over
#                 the link, SHA-256 checked, file fsync'd and renamed.
#   scp           OpenSSH scp (its default: SFTP protocol, default cipher) to our own sshd in
#                 client1's namespace (temporary host key, config and authorized key, a free
#                 port; stopped by pid).
#   iperf3        iperf3 TCP, memory to memory, -n BYTES, to our own `iperf3 -s` in client1's
#                 namespace (stopped by pid).
#   ours-relayed  p2p-client send / receive with --no-direct: the switchboard relay of the
#                 server host carries everything. The server runs with RELAY_ARGS (default
#                 `--relay-rate 0 --relay-session-cap 0`: no per-session limits, a relay of
#                 one's own; the defaults of 1 MiB/s and 1 GiB per session would measure the
#                 policy, not the relay). It moves RELAYED_BYTES.
#   socat         a plain TCP forwarder on the server host joining two inbound connections
#                 (`socat TCP-LISTEN:A TCP-LISTEN:B`, as a relay would), the receiver connected
#                 to A, the sender to B, both ends `socat -u` to/from the files; default
#                 buffers (8 KiB). RELAYED_BYTES, like ours-relayed.
#   socat-128k    the same with -b 131072 on all three socats.
# Goodput is BYTES over:
#   ours, ours-relayed: the receiver's first `progress` line (the file's header has arrived)
#                 to its `done` line (all data in, SHA-256 checked, file synced and renamed);
#                 the lines are time-stamped by this script as they are read. The whole run
#                 (login to exit) is reported as `wall`.
#   scp:          scp's wall time (including its SSH handshake, a few tens of ms).
#   iperf3:       iperf3's own receiver figure.
#   socat*:       from starting the sender to the receiver's exit (the relay and the receiver
#                 were already connected).
# CPU seconds per GiB: user+system time of each end (bash `time` of the client commands; the
# long-running servers, sshd and iperf3 -s, from /proc/PID/stat including reaped children),
# scaled to 2^30 bytes. For ours the whole process (login, classification, punching) counts.
# First byte: for `ours`, from the receiver's `connected` line (the introduction) to its first
# `progress` line: the first stream of the link has delivered the file's header (QUIC handshake,
# stream open, header read, partial file created). The path the link was on at that moment is
# reported beside it, and the time from the introduction to the receiver's first `direct` path.
# Every received file is compared with the source (cmp) and deleted.
#
# Usage: sudo bench/link-throughput.sh
# Environment (defaults in brackets):
#   ROUNDS [5] BYTES [1073741824] RELAYED_BYTES [BYTES]
#   RELAY_ARGS ["--relay-rate 0 --relay-session-cap 0"] the switchboard's limits
#   CONTENDERS ["ours scp iperf3 ours-relayed socat socat-128k"]
#   SSH_PORT [2222] IPERF_PORT [5201] SOCAT_PORTS ["7001 7002"]
#   RUN_TIMEOUT [600] s per transfer at most
#   STUN_SERVER_BIN [$BIN/stun-server] another server binary (e.g. one with other relay limits)
#   NO_BUILD=1  use existing binaries (BIN [$CARGO_TARGET_DIR/release or target/release],
#               NATLAB [$CARGO_TARGET_DIR/debug/natlab or target/debug/natlab])
#   KEEP=DIR    copy the raw per-run files (events, logs, times) to DIR
# Needs: root, ip, nft, conntrack, sshd/scp/ssh-keygen (openssh-server, openssh-client), iperf3,
# socat, python3, cmp.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
BYTES=${BYTES:-1073741824}
RELAYED_BYTES=${RELAYED_BYTES:-$BYTES}
RELAY_ARGS=${RELAY_ARGS:---relay-rate 0 --relay-session-cap 0}
CONTENDERS=${CONTENDERS:-ours scp iperf3 ours-relayed socat socat-128k}
SSH_PORT=${SSH_PORT:-2222}
IPERF_PORT=${IPERF_PORT:-5201}
SOCAT_PORTS=${SOCAT_PORTS:-7001 7002}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
KDF=argon2id:m=8:t=1:p=1
SERVER_IP=198.51.100.1
RENDEZVOUS=$SERVER_IP:1863

die() { echo "link-throughput: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
isnum() { [[ $1 =~ ^[0-9]+$ ]]; }

isnum "$ROUNDS" && ((ROUNDS >= 1 && ROUNDS <= 50)) || die "ROUNDS must be 1..50"
isnum "$BYTES" && ((BYTES >= 1048576 && BYTES <= 17179869184)) || die "BYTES must be 1 MiB..16 GiB"
isnum "$RELAYED_BYTES" && ((RELAYED_BYTES >= 1048576 && RELAYED_BYTES <= BYTES)) || die "RELAYED_BYTES must be 1 MiB..BYTES"
isnum "$RUN_TIMEOUT" && ((RUN_TIMEOUT >= 10 && RUN_TIMEOUT <= 3600)) || die "RUN_TIMEOUT must be 10..3600"
read -r SOCAT_A SOCAT_B <<<"$SOCAT_PORTS"
isnum "$SOCAT_A" && isnum "$SOCAT_B" || die "SOCAT_PORTS must be two ports"
((EUID == 0)) || die "needs root (network namespaces)"

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
STUN_SERVER_BIN=${STUN_SERVER_BIN:-$BIN/stun-server}
NATLAB=${NATLAB:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/natlab}

if [[ -z ${NO_BUILD:-} ]]; then
    log "building (cargo build --release -p p2p-servers -p p2p-client --bins; cargo build -p tests --bin natlab)"
    cargo build -q --release -p p2p-servers -p p2p-client --bins >&2
    cargo build -q -p tests --bin natlab >&2
fi
for f in "$STUN_SERVER_BIN" "$BIN/p2p-client" "$NATLAB"; do [[ -x $f ]] || die "$f is missing"; done

need() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]]; }
for c in $CONTENDERS; do
    case $c in
    ours | ours-relayed) ;;
    scp) for t in sshd scp ssh-keygen; do need "$t" || die "$t missing (apt-get install openssh-server openssh-client)"; done ;;
    iperf3) need iperf3 || die "iperf3 missing (apt-get install iperf3)" ;;
    socat | socat-128k) need socat || die "socat missing (apt-get install socat)" ;;
    *) die "unknown contender $c" ;;
    esac
done
need python3 || die "python3 missing"

TMPD=$(mktemp -d /tmp/link-bench.XXXXXX)
PIDS=() # servers this script started and has not stopped yet
LAB_PID=
RUN_SSHD_MADE=
stop_pid() { # stop_pid PID: TERM, up to 5 s, then KILL
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    PIDS=()
    # natlab tears the lab down (and kills whatever still runs in it) on SIGTERM.
    if [[ -n $LAB_PID ]]; then stop_pid "$LAB_PID"; fi
    if [[ -n $RUN_SSHD_MADE ]]; then rmdir /run/sshd 2>/dev/null || true; fi
    if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP" && cp -r "$TMPD"/runs "$TMPD"/*.log "$KEEP"/ 2>/dev/null || true; fi
    rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$TMPD/runs" "$TMPD/src" "$TMPD/out" "$TMPD/home" "$TMPD/srv"
SRC=$TMPD/src/data.bin
SRC_RELAYED=$TMPD/src/relayed.bin
OUT=$TMPD/out
# The received files need as much room as the source.
avail=$(df --output=avail -B1 "$TMPD" | tail -1)
((avail > 3 * BYTES)) || die "not enough space in $TMPD for 3 x $BYTES bytes"

# --- the lab ---------------------------------------------------------------------------------
"$NATLAB" up --shape two-peers --nat none >"$TMPD/lab.log" 2>&1 &
LAB_PID=$!
for ((i = 0; i < 600; i++)); do
    grep -qs '^up ' "$TMPD/lab.log" && break
    kill -0 "$LAB_PID" 2>/dev/null || die "natlab failed: $(cat "$TMPD/lab.log")"
    sleep 0.1
done
grep -q '^up ' "$TMPD/lab.log" || die "natlab did not come up within 60 s"
field() { awk -v r="$1" -v c="$2" '$1 == r { print $c }' "$TMPD/lab.log"; }
SRV_NS=$(field server 2)
C0_NS=$(field client0 2)
C0_IP=$(field client0 3)
C1_NS=$(field client1 2)
C1_IP=$(field client1 3)
[[ -n $SRV_NS && -n $C0_NS && -n $C1_NS && -n $C1_IP ]] || die "cannot read the lab: $(cat "$TMPD/lab.log")"
log "lab up: server $SRV_NS, sender $C0_NS ($C0_IP), receiver $C1_NS ($C1_IP)"
# (Servers are started with `ip netns exec` directly, not through this function, so that $! is
# the server's own pid: `ip netns exec` execs the command.)
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

wait_tcp() { # wait_tcp NS IP PORT: until it accepts, at most 15 s
    local i
    for ((i = 0; i < 150; i++)); do
        in_ns "$1" timeout 1 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing accepts on $2:$3 in $1"
}

# --- our server and two users ----------------------------------------------------------------
# shellcheck disable=SC2086 # RELAY_ARGS is a list of flags
ip netns exec "$SRV_NS" env RUST_LOG=info NO_COLOR=1 "$STUN_SERVER_BIN" --primary "$SERVER_IP" --alternate 198.51.100.2 \
    --port 3478 --alt-port 3479 --workers 1 --no-tcp --rate-limit 0 --stats-interval 0 \
    --rendezvous "$RENDEZVOUS" --switchboard "$SERVER_IP:1865" --db "$TMPD/srv/rendezvous.db" \
    --min-kdf "$KDF" $RELAY_ARGS 2>"$TMPD/server.log" >/dev/null &
PIDS+=($!)
wait_tcp "$SRV_NS" "$SERVER_IP" 1863
wait_tcp "$SRV_NS" "$SERVER_IP" 1865
export P2P_HOME=$TMPD/home P2P_MIN_KDF=$KDF NO_COLOR=1
unset P2P_USER
client() { # client NS USER ARGS...: p2p-client ARGS --server R --user USER in NS
    local ns=$1 user=$2
    shift 2
    P2P_PASSWORD="$user-bench-password" in_ns "$ns" "$BIN/p2p-client" "$@" --server "$RENDEZVOUS" --user "$user"
}
for u in alice bob; do client "$SRV_NS" "$u" register --kdf "$KDF" >/dev/null 2>>"$TMPD/setup.log"; done
client "$SRV_NS" alice contacts add bob >/dev/null 2>>"$TMPD/setup.log"
client "$SRV_NS" bob contacts add alice >/dev/null 2>>"$TMPD/setup.log"

# --- the file --------------------------------------------------------------------------------
log "writing $BYTES random bytes"
head -c "$BYTES" /dev/urandom >"$SRC"
head -c "$RELAYED_BYTES" "$SRC" >"$SRC_RELAYED"
sync "$SRC" "$SRC_RELAYED"

# --- the other servers -----------------------------------------------------------------------
proc_cpu() { # proc_cpu PID: utime+stime+cutime+cstime in seconds
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13 + $14 + $15) / hz }' "/proc/$1/stat"
}
SSHD_PID=
IPERF_PID=
if [[ " $CONTENDERS " == *" scp "* ]]; then
    mkdir -p "$TMPD/ssh"
    ssh-keygen -q -t ed25519 -N '' -f "$TMPD/ssh/host_ed25519"
    ssh-keygen -q -t ed25519 -N '' -f "$TMPD/ssh/client_ed25519"
    cp "$TMPD/ssh/client_ed25519.pub" "$TMPD/ssh/authorized_keys"
    cat >"$TMPD/ssh/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress $C1_IP
HostKey $TMPD/ssh/host_ed25519
PidFile none
AuthorizedKeysFile $TMPD/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
    if [[ ! -d /run/sshd ]]; then mkdir -p /run/sshd && RUN_SSHD_MADE=1; fi
    ip netns exec "$C1_NS" /usr/sbin/sshd -D -e -f "$TMPD/ssh/sshd_config" 2>"$TMPD/sshd.log" &
    SSHD_PID=$!
    PIDS+=("$SSHD_PID")
    wait_tcp "$C0_NS" "$C1_IP" "$SSH_PORT"
fi
if [[ " $CONTENDERS " == *" iperf3 "* ]]; then
    ip netns exec "$C1_NS" iperf3 -s -B "$C1_IP" -p "$IPERF_PORT" >"$TMPD/iperf3-server.log" 2>&1 &
    IPERF_PID=$!
    PIDS+=("$IPERF_PID")
    wait_tcp "$C0_NS" "$C1_IP" "$IPERF_PORT"
fi

# --- one run of each contender ---------------------------------------------------------------
RESULTS=$TMPD/results.txt
: >"$RESULTS"
TIMEFORMAT='%R %U %S'
stamp() { # each line of stdin prefixed with the time it was read (seconds, microseconds)
    local line
    while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done
}
cpu_of() { awk '{ printf "%.3f", $2 + $3 }' "$1"; }
check_out() { # check_out SOURCE FILE: FILE equal to SOURCE, then deleted
    local src=$1 f=$2
    cmp -s "$src" "$f" || { log "MISMATCH: $f differs from $src"; return 1; }
    rm -f "$f"
}
result() { echo "$*" >>"$RESULTS"; log "  $*"; }

run_ours() { # run_ours NAME SOURCE [--no-direct]
    local name=$1 src=$2 dir=$TMPD/runs/$1-$ROUND bytes
    shift 2
    bytes=$(stat -c %s "$src")
    mkdir -p "$dir"
    rm -rf "${OUT:?}"/* "$OUT"/.[!.]* 2>/dev/null || true
    local common=(--server "$RENDEZVOUS" --json --wait 30 "$@")
    local recv=(ip netns exec "$C1_NS" env RUST_LOG=info P2P_PASSWORD=bob-bench-password
        "$BIN/p2p-client" receive --user bob --peer alice --out "$OUT" "${common[@]}")
    local send=(ip netns exec "$C0_NS" env RUST_LOG=info P2P_PASSWORD=alice-bench-password
        "$BIN/p2p-client" send --user alice --peer bob "${common[@]}" "$src")
    {
        { time { rc=0; timeout "$RUN_TIMEOUT" "${recv[@]}" 2>"$dir/recv.err" || rc=$?; echo $rc >"$dir/recv.rc"; }; } 2>"$dir/recv.time"
    } | stamp >"$dir/recv.events" &
    local rp=$!
    {
        { time { rc=0; timeout "$RUN_TIMEOUT" "${send[@]}" 2>"$dir/send.err" || rc=$?; echo $rc >"$dir/send.rc"; }; } 2>"$dir/send.time"
    } | stamp >"$dir/send.events" &
    local sp=$!
    wait "$sp" "$rp" || true
    local rc
    rc="$(cat "$dir/send.rc")/$(cat "$dir/recv.rc")"
    if [[ $rc != 0/0 ]] || ! check_out "$src" "$OUT/$(basename "$src")"; then
        log "$name round $ROUND FAILED (exit $rc); logs in $dir"
        tail -n 5 "$dir/send.err" "$dir/recv.err" >&2 || true
        result "$name $ROUND FAILED"
        return
    fi
    # goodput, first byte and its path, from the receiver's stamped events
    local parsed
    parsed=$(python3 - "$dir/recv.events" "$bytes" <<'EOF'
import json, sys
first = done = connected = direct = None
path_at_first = "none"
paths = []
for line in open(sys.argv[1]):
    t, _, text = line.partition(" ")
    t = float(t)
    try:
        e = json.loads(text)
    except ValueError:
        continue
    kind = e.get("event")
    if kind == "connected" and connected is None:
        connected = t
    elif kind == "path":
        paths.append(e["path"])
        if first is None:
            path_at_first = e["path"]
        if e["path"] == "direct" and direct is None:
            direct = t
    elif kind == "progress" and first is None:
        first = t
    elif kind == "done":
        done = t
if None in (first, done, connected):
    print("PARSE-FAILED")
else:
    print("%.1f %.3f %s %s %s" % (int(sys.argv[2]) / 1e6 / (done - first), first - connected,
                                  path_at_first, ">".join(paths) or "none",
                                  "-" if direct is None else "%.3f" % (direct - connected)))
EOF
    )
    local wall
    wall=$(awk '{ print $1 }' "$dir/recv.time")
    # name round MB/s wall cpu-send cpu-recv first-byte path-at-first-byte paths to-direct
    result "$name $ROUND ${parsed%% *} $wall $(cpu_of "$dir/send.time") $(cpu_of "$dir/recv.time") ${parsed#* }"
}

run_scp() {
    local dir=$TMPD/runs/scp-$ROUND before after
    mkdir -p "$dir"
    before=$(proc_cpu "$SSHD_PID")
    { time timeout "$RUN_TIMEOUT" ip netns exec "$C0_NS" scp -q -i "$TMPD/ssh/client_ed25519" -P "$SSH_PORT" \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
        "$SRC" "root@$C1_IP:$OUT/data.bin" 2>"$dir/scp.err"; } 2>"$dir/scp.time" || true
    sleep 0.2 # the session's processes are reaped into sshd's counters
    after=$(proc_cpu "$SSHD_PID")
    if ! check_out "$SRC" "$OUT/data.bin"; then result "scp $ROUND FAILED"; return; fi
    local wall
    wall=$(awk '{ print $1 }' "$dir/scp.time")
    result "scp $ROUND $(awk -v b="$BYTES" -v w="$wall" 'BEGIN { printf "%.1f", b / 1e6 / w }') $wall $(cpu_of "$dir/scp.time") $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.3f", a - b }')"
}

run_iperf3() {
    local dir=$TMPD/runs/iperf3-$ROUND before after
    mkdir -p "$dir"
    before=$(proc_cpu "$IPERF_PID")
    { time timeout "$RUN_TIMEOUT" ip netns exec "$C0_NS" iperf3 -c "$C1_IP" -p "$IPERF_PORT" -n "$BYTES" -J \
        >"$dir/iperf3.json" 2>"$dir/iperf3.err"; } 2>"$dir/iperf3.time" || true
    after=$(proc_cpu "$IPERF_PID")
    local rate
    rate=$(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]["sum_received"]; print("%.1f %.3f" % (e["bytes"] / 1e6 / e["seconds"], e["seconds"]))' "$dir/iperf3.json" 2>/dev/null) \
        || { result "iperf3 $ROUND FAILED"; return; }
    result "iperf3 $ROUND $rate $(cpu_of "$dir/iperf3.time") $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.3f", a - b }')"
}

run_socat() { # run_socat NAME SOURCE [-b N]
    local name=$1 src=$2 dir=$TMPD/runs/$1-$ROUND i bytes
    shift 2
    bytes=$(stat -c %s "$src")
    mkdir -p "$dir"
    { time timeout "$RUN_TIMEOUT" ip netns exec "$SRV_NS" socat "$@" \
        "TCP4-LISTEN:$SOCAT_A,bind=$SERVER_IP,reuseaddr" "TCP4-LISTEN:$SOCAT_B,bind=$SERVER_IP,reuseaddr" \
        2>"$dir/relay.err"; } 2>"$dir/relay.time" &
    local relay=$!
    { time timeout "$RUN_TIMEOUT" ip netns exec "$C1_NS" socat "$@" -u \
        "TCP4:$SERVER_IP:$SOCAT_A,retry=100,interval=0.05" "CREATE:$OUT/data.bin" 2>"$dir/recv.err"; } 2>"$dir/recv.time" &
    local recv=$!
    # The relay listens on B once the receiver is in (socat opens its addresses in order).
    for ((i = 0; i < 100; i++)); do
        in_ns "$SRV_NS" ss -Htln "sport = :$SOCAT_B" | grep -q . && break
        sleep 0.05
    done
    local t0 t1
    t0=$EPOCHREALTIME
    { time timeout "$RUN_TIMEOUT" ip netns exec "$C0_NS" socat "$@" -u \
        "OPEN:$src" "TCP4:$SERVER_IP:$SOCAT_B,retry=100,interval=0.05" 2>"$dir/send.err"; } 2>"$dir/send.time" || true
    wait "$recv" || true
    t1=$EPOCHREALTIME
    wait "$relay" || true
    if ! check_out "$src" "$OUT/data.bin"; then result "$name $ROUND FAILED"; return; fi
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    result "$name $ROUND $(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.1f", b / 1e6 / s }') $secs $(cpu_of "$dir/send.time") $(cpu_of "$dir/recv.time") relay-cpu $(cpu_of "$dir/relay.time")"
}

log "$ROUNDS round(s) of: $CONTENDERS ($BYTES bytes each; $RELAYED_BYTES for ours-relayed and socat*)"
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    log "round $ROUND"
    for c in $CONTENDERS; do
        case $c in
        ours) run_ours ours "$SRC" ;;
        ours-relayed) run_ours ours-relayed "$SRC_RELAYED" --no-direct ;;
        scp) run_scp ;;
        iperf3) run_iperf3 ;;
        socat) run_socat socat "$SRC_RELAYED" ;;
        socat-128k) run_socat socat-128k "$SRC_RELAYED" -b 131072 ;;
        esac
    done
done

# --- medians and ratios ----------------------------------------------------------------------
python3 - "$RESULTS" "$BYTES" "$RELAYED_BYTES" <<'EOF'
import statistics, sys
from collections import defaultdict
rows = defaultdict(list)
failed = defaultdict(int)
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 3 or f[2] == "FAILED":
        failed[f[0]] += 1
        continue
    rows[f[0]].append(f)
gibs = {"direct": int(sys.argv[2]) / 2**30, "relayed": int(sys.argv[3]) / 2**30}
med = lambda v: statistics.median(v) if v else float("nan")
def rate(name):
    return med([float(r[2]) for r in rows[name]])
print("| contender | runs | goodput MB/s median (min-max) | seconds median | CPU s/GiB sender | CPU s/GiB receiver | other |")
print("|---|---|---|---|---|---|---|")
for name in ["ours", "scp", "iperf3", "ours-relayed", "socat", "socat-128k"]:
    if name not in rows and name not in failed:
        continue
    r = rows[name]
    gib = gibs["relayed" if name in ("ours-relayed", "socat", "socat-128k") else "direct"]
    rates = [float(x[2]) for x in r]
    other = ""
    if name.startswith("ours") and r:
        fb = sorted(float(x[6]) for x in r)
        direct = sorted(float(x[9]) for x in r if len(x) > 9 and x[9] != "-")
        other = "first byte %.3f s median (%.3f-%.3f), path then: %s; paths: %s; direct after %s" % (
            med(fb), fb[0], fb[-1], ",".join(sorted({x[7] for x in r})), ",".join(sorted({x[8] for x in r})),
            "%.3f s median" % med(direct) if direct else "-")
    if name.startswith("socat") and r:
        other = "relay CPU s/GiB %.2f" % (med([float(x[7]) for x in r]) / gib)
    print("| %s | %d%s | %.1f (%s) | %.2f | %.2f | %.2f | %s |" % (
        name, len(r), " (+%d failed)" % failed[name] if failed[name] else "", med(rates),
        "%.1f-%.1f" % (min(rates), max(rates)) if rates else "-",
        med([float(x[3]) for x in r]), med([float(x[4]) for x in r]) / gib,
        med([float(x[5]) for x in r]) / gib, other))
print()
for a, b in [("ours", "scp"), ("ours", "iperf3"), ("ours-relayed", "socat"), ("ours-relayed", "socat-128k")]:
    if rows[a] and rows[b]:
        print("- %s / %s goodput: %.2f" % (a, b, rate(a) / rate(b)))
EOF
echo
echo "raw (name round MB/s seconds cpu-send cpu-recv ...):"
cat "$RESULTS"
