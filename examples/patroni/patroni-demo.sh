#!/usr/bin/env bash
# patroni-demo.sh ETCD_URL
#
# Two-node Patroni/PostgreSQL cluster on loopback, using Patroni's `etcd3`
# DCS against the etcd-v3-compatible endpoint ETCD_URL (e.g.
# http://127.0.0.1:12379).  Does NOT start etcd (see start-etcd.sh).
#
#   1. writes node1.yml / node2.yml into a temp dir, starts both patroni
#      nodes (as an unprivileged user, via setpriv) in the background, logs to files;
#   2. waits until `patronictl list` shows one Leader + one running Replica
#      and pg_stat_replication on the leader shows the replica streaming;
#   3. writes a row on the leader, waits until the replica can read it;
#   4. SIGKILLs the leader's patroni (whole process group) AND its postgres
#      (whole postmaster process group), waits until the other node is
#      Leader and out of recovery, and checks that it accepts writes;
#   5. prints patronictl list before/after and the failover time;
#   6. on exit (any exit) stops everything, removes the cluster's keys from
#      the DCS (best effort) and removes the temp dir.
# Exit status is non-zero, with a "FAILED: ..." message, if any step fails.
#
# Environment knobs (all optional):
#   SCOPE            patroni scope / cluster name  (default demo-<epoch>-<pid>,
#                    unique per run so a stale cluster in the DCS can't interfere)
#   NAMESPACE        DCS key prefix               (default /service/)
#   PG_PORTS         "15432 15433"   REST_PORTS   "18008 18009"
#   RUN_AS           OS user for patroni/postgres (default postgres)
#   PG_BIN           PostgreSQL bin dir           (default newest /usr/lib/postgresql/*/bin)
#   TTL LOOP_WAIT RETRY_TIMEOUT   patroni DCS timings (default 10 / 2 / 4)
#   BOOT_TIMEOUT     s to wait for leader+replica  (default 120)
#   FAILOVER_TIMEOUT s to wait for the new leader  (default 60)
#   ETCD_USE_PROXIES true -> etcd3.use_proxies: true (patroni then never
#                    calls /cluster/member/list to discover other endpoints)
#   LOG_LEVEL        patroni log level            (default INFO; DEBUG logs requests)
#   POLL_INTERVAL    seconds between polls         (default 1)
#   KEEP_TMP=1       keep the temp dir (configs, logs, data) on exit
#   LOG_DIR=DIR      copy the node logs to DIR on exit
set -euo pipefail

usage() { echo "usage: $0 ETCD_URL   (e.g. $0 http://127.0.0.1:12379)" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
ETCD_URL=${1%/}
[[ "$ETCD_URL" =~ ^(https?)://([^/:]+|\[[0-9a-fA-F:]+\]):([0-9]+)$ ]] || {
    echo "ERROR: ETCD_URL must look like http://HOST:PORT (got '$1')" >&2; exit 2; }
ETCD_PROTO=${BASH_REMATCH[1]}
ETCD_HOSTPORT="${BASH_REMATCH[2]}:${BASH_REMATCH[3]}"

SCOPE=${SCOPE:-demo-$(date +%s)-$$}
NAMESPACE=${NAMESPACE:-/service/}
read -r -a PG_PORT <<<"${PG_PORTS:-15432 15433}"
read -r -a REST_PORT <<<"${REST_PORTS:-18008 18009}"
RUN_AS=${RUN_AS:-postgres}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
TTL=${TTL:-10}
LOOP_WAIT=${LOOP_WAIT:-2}
RETRY_TIMEOUT=${RETRY_TIMEOUT:-4}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-120}
FAILOVER_TIMEOUT=${FAILOVER_TIMEOUT:-60}
LOG_LEVEL=${LOG_LEVEL:-INFO}
POLL=${POLL_INTERVAL:-1}   # seconds between polls (each patronictl call costs ~0.5s CPU; keep it >= 0.5)
SUPERPASS=demo-super-pw
REPLPASS=demo-repl-pw
PATRONI=/usr/bin/patroni
PATRONICTL=/usr/bin/patronictl

TMPD=
declare -a NODE_PGID=("" "")   # patroni pid == its process group (setsid) per node (index 0/1)

say()  { printf '%s\n' "$*"; }
step() { printf '\n==> [%6.1fs] %s\n' "$(elapsed)" "$*"; }
T_START=$(date +%s.%N)
elapsed() { awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

die() {
    echo >&2
    echo "FAILED: $*" >&2
    if [[ -n "$TMPD" ]]; then
        for i in 1 2; do
            [[ -f "$TMPD/node$i.log" ]] || continue
            echo "---- last lines of node$i.log ----" >&2
            tail -n 25 "$TMPD/node$i.log" >&2
        done
    fi
    exit 1
}

# ---------------------------------------------------------------- cleanup
proc_alive() {  # pid is alive and not a zombie
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n "$st" && "$st" != Z* ]]
}
group_alive() {  # some non-zombie process is in process group $1 (an exited, not yet reaped patroni is a zombie)
    ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {f = 1} END {exit !f}'
}

postmaster_pid() {  # pid from postmaster.pid, only if it really is a postgres process
    local f="$TMPD/node$1/data/postmaster.pid" pid
    [[ -f "$f" ]] || return 1
    pid=$(head -n1 "$f" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && proc_alive "$pid" || return 1
    grep -qa postgres "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

kill_postgres_of() {  # SIGKILL node $1's postmaster and all its children
    local pm
    pm=$(postmaster_pid "$1") || return 0
    if [[ "$(ps -o pgid= -p "$pm" | tr -d ' ')" == "$pm" ]]; then
        kill -KILL -- "-$pm" 2>/dev/null || true     # patroni starts postgres in its own session
    else
        kill -KILL "$pm" 2>/dev/null || true
    fi
}

cleanup() {
    local rc=$? i g deadline removed=0
    set +e
    trap - EXIT INT TERM
    if [[ -n "$TMPD" ]]; then
        # graceful first: patroni stops postgres itself on SIGTERM
        for i in 0 1; do g=${NODE_PGID[$i]}; [[ -n "$g" ]] && kill -TERM -- "-$g" 2>/dev/null; done
        deadline=$((SECONDS + 20))
        for i in 0 1; do
            g=${NODE_PGID[$i]}; [[ -n "$g" ]] || continue
            while group_alive "$g" && (( SECONDS < deadline )); do sleep 0.2; done
            kill -KILL -- "-$g" 2>/dev/null
        done
        for i in 1 2; do kill_postgres_of "$i"; done
        wait 2>/dev/null
        # drop the cluster's keys from the DCS (best effort, through patroni's own client)
        if [[ -f "$TMPD/node1.yml" ]]; then
            # answers: cluster name, confirmation, leader name (asked only while a leader key exists,
            # e.g. a killed leader whose lease has not expired yet: try both names)
            local who
            for who in node1 node2; do
                if printf '%s\nYes I am aware\n%s\n' "$SCOPE" "$who" |
                    timeout 20 "$PATRONICTL" -c "$TMPD/node1.yml" remove "$SCOPE" >>"$TMPD/remove.log" 2>&1; then
                    removed=1; break
                fi
            done
            (( removed )) || echo "note: 'patronictl remove $SCOPE' failed (keys may remain under $NAMESPACE$SCOPE)" >&2
        fi
        if [[ -n "${LOG_DIR:-}" ]]; then
            mkdir -p "$LOG_DIR" && cp "$TMPD"/node?.log "$TMPD"/node?.yml "$LOG_DIR"/ 2>/dev/null
        fi
        if [[ "${KEEP_TMP:-0}" == 1 ]]; then
            echo "kept $TMPD" >&2
        else
            rm -rf -- "$TMPD"
        fi
        echo "cleanup: patroni/postgres stopped$( (( removed )) && echo ", DCS keys of $SCOPE removed"), temp dir $( [[ "${KEEP_TMP:-0}" == 1 ]] && echo kept || echo removed) (exit $rc)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# ---------------------------------------------------------------- helpers
psql_at() {  # psql_at PORT SQL  -> unaligned, tuples-only output
    PGPASSWORD=$SUPERPASS PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"
}

ctl_json() { timeout 20 "$PATRONICTL" -c "$TMPD/node1.yml" list -f json 2>/dev/null; }
ctl_list() { timeout 20 "$PATRONICTL" -c "$TMPD/node1.yml" list 2>&1; }

# members_summary -> lines "NAME ROLE STATE TL" from patronictl list -f json
members_summary() {
    ctl_json | /usr/bin/python3 -c '
import json, sys
try:
    data = json.load(sys.stdin)
except Exception:
    sys.exit(1)
for m in data:
    print(m.get("Member"), m.get("Role"), m.get("State", "").replace(" ", "_"), m.get("TL") or 0)
'
}

check_nodes_alive() {  # fail fast if a patroni we still expect to run has died
    local i
    for i in "$@"; do
        group_alive "${NODE_PGID[$((i-1))]}" || die "patroni node$i exited unexpectedly"
    done
}

# wait_for TIMEOUT DESCRIPTION NODES_THAT_MUST_LIVE COMMAND...
wait_for() {
    local timeout=$1 desc=$2 live=$3; shift 3
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        # shellcheck disable=SC2086
        check_nodes_alive $live
        (( SECONDS < deadline )) || die "timed out after ${timeout}s waiting for: $desc"
        sleep "$POLL"
    done
}

LEADER= REPLICA=
cluster_healthy() {  # exactly one Leader(running) and one Replica(running|streaming)
    local s leaders replicas
    s=$(members_summary) || return 1
    leaders=$(awk '$2=="Leader" && $3=="running"' <<<"$s" | wc -l)
    replicas=$(awk '$2=="Replica" && ($3=="running" || $3=="streaming")' <<<"$s" | wc -l)
    [[ $leaders -eq 1 && $replicas -eq 1 && $(wc -l <<<"$s") -eq 2 ]] || return 1
    LEADER=$(awk '$2=="Leader"{print $1}' <<<"$s")
    REPLICA=$(awk '$2=="Replica"{print $1}' <<<"$s")
}
port_of() { echo "${PG_PORT[$(( ${1#node} - 1 ))]}"; }
rest_of() { echo "${REST_PORT[$(( ${1#node} - 1 ))]}"; }
rest_code() {  # rest_code PORT PATH -> HTTP status of patroni's REST API (000 if down)
    curl -s -o /dev/null -m 3 -w '%{http_code}' "http://127.0.0.1:$1$2" 2>/dev/null || true
}
both_rest_up() {  # cheap pre-check before polling patronictl: both patroni REST APIs answer /patroni
    [[ "$(rest_code "${REST_PORT[0]}" /patroni)" == 200 && "$(rest_code "${REST_PORT[1]}" /patroni)" == 200 ]]
}

replica_streaming() {  # leader sees the replica streaming, replica's WAL receiver is streaming
    local lp rp
    lp=$(port_of "$LEADER"); rp=$(port_of "$REPLICA")
    [[ "$(psql_at "$lp" "select count(*) from pg_stat_replication where state='streaming' and application_name='$REPLICA'" 2>/dev/null)" == 1 ]] &&
    [[ "$(psql_at "$rp" "select status from pg_stat_wal_receiver" 2>/dev/null)" == streaming ]]
}

ROW_ID= ROW_NOTE=
row_visible_on_replica() {
    [[ "$(psql_at "$(port_of "$REPLICA")" "select note from demo_ha where id=$ROW_ID" 2>/dev/null)" == "$ROW_NOTE" ]]
}

NEW_LEADER=
new_leader_promoted() {  # cheap poll: survivor's REST /primary says 200 and postgres is out of recovery
    [[ "$(rest_code "$(rest_of "$NEW_LEADER")" /primary)" == 200 ]] &&
    [[ "$(psql_at "$(port_of "$NEW_LEADER")" "select pg_is_in_recovery()" 2>/dev/null)" == f ]]
}
OLD_TL=0
new_leader_in_dcs() {  # patronictl list shows the survivor as Leader/running on a new timeline
    local s
    s=$(members_summary) || return 1
    awk -v n="$NEW_LEADER" -v tl="$OLD_TL" '$1==n && $2=="Leader" && $3=="running" && $4 > tl {f=1} END{exit !f}' <<<"$s"
}

# ---------------------------------------------------------------- preflight
step "preflight"
[[ $EUID -eq 0 ]] || die "run as root (it switches to user '$RUN_AS' for patroni/postgres)"
for b in "$PATRONI" "$PATRONICTL" "$PG_BIN/initdb" "$PG_BIN/psql" /usr/bin/python3 setpriv setsid curl ps awk timeout; do
    command -v "$b" >/dev/null || die "missing $b"
done
id "$RUN_AS" >/dev/null 2>&1 || die "user $RUN_AS does not exist"
for p in "${PG_PORT[@]}" "${REST_PORT[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port 127.0.0.1:$p is already in use"; fi
done
ver=$(curl -fsS -m 5 "$ETCD_URL/version" 2>&1) || die "etcd endpoint $ETCD_URL/version not reachable: $ver"
say "etcd endpoint $ETCD_URL answers /version: $ver"
say "$("$PATRONI" --version), PostgreSQL bin dir $PG_BIN ($("$PG_BIN/postgres" --version))"
say "scope=$SCOPE namespace=$NAMESPACE ttl=$TTL loop_wait=$LOOP_WAIT retry_timeout=$RETRY_TIMEOUT"

TMPD=$(mktemp -d /tmp/patroni-demo.XXXXXX)
chmod 755 "$TMPD"
say "temp dir $TMPD"

# ---------------------------------------------------------------- configs
write_config() {
    local i=$1 pg=${PG_PORT[$(($1-1))]} rest=${REST_PORT[$(($1-1))]}
    local proxies=""
    [[ "${ETCD_USE_PROXIES:-false}" == true ]] && proxies="  use_proxies: true"
    mkdir -p "$TMPD/node$i"
    cat >"$TMPD/node$i.yml" <<EOF
scope: $SCOPE
namespace: $NAMESPACE
name: node$i

log:
  level: $LOG_LEVEL
  format: '%(asctime)s %(levelname)s: %(message)s'

restapi:
  listen: 127.0.0.1:$rest
  connect_address: 127.0.0.1:$rest

etcd3:
  hosts: ['$ETCD_HOSTPORT']
  protocol: $ETCD_PROTO
$proxies

bootstrap:
  dcs:
    ttl: $TTL
    loop_wait: $LOOP_WAIT
    retry_timeout: $RETRY_TIMEOUT
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: false
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: 'on'
        max_wal_senders: 5
        max_replication_slots: 5
        wal_keep_size: 64MB
  initdb:
  - encoding: UTF8
  - data-checksums

postgresql:
  listen: 127.0.0.1:$pg
  connect_address: 127.0.0.1:$pg
  data_dir: $TMPD/node$i/data
  bin_dir: $PG_BIN
  pgpass: $TMPD/node$i/pgpass
  authentication:
    superuser:
      username: postgres
      password: '$SUPERPASS'
    replication:
      username: replicator
      password: '$REPLPASS'
  parameters:
    unix_socket_directories: '$TMPD/node$i'
    max_connections: 20
    shared_buffers: 32MB
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 scram-sha-256
  - host all all 127.0.0.1/32 scram-sha-256

tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
EOF
}
write_config 1
write_config 2
chown -R "$RUN_AS:" "$TMPD"
chmod 700 "$TMPD/node1" "$TMPD/node2"

# ---------------------------------------------------------------- start
start_node() {
    local i=$1 pid
    # setsid: own session/process group, so the whole patroni tree can be killed at once.
    # (No job control in a script => the background child is not a group leader => setsid doesn't fork.)
    # setpriv rather than runuser: it just exec()s patroni as $RUN_AS, so $! IS patroni's pid.  runuser
    # stays as a parent and, on SIGTERM, SIGKILLs its child after 2s ("Session terminated, killing
    # shell... ...killed."), which cuts patroni's clean shutdown short and leaves its leader key behind.
    setsid setpriv --reuid="$RUN_AS" --regid="$(id -g "$RUN_AS")" --init-groups --reset-env -- \
        "$PATRONI" "$TMPD/node$i.yml" >"$TMPD/node$i.log" 2>&1 </dev/null &
    pid=$!
    NODE_PGID[$((i-1))]=$pid
    # sanity: the background pid must be its own process-group leader
    local deadline=$((SECONDS + 5))
    until [[ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$pid" ]]; do
        (( SECONDS < deadline )) || die "node$i: could not put patroni in its own process group"
        sleep 0.05
    done
    say "node$i: patroni started (process group $pid), postgres 127.0.0.1:${PG_PORT[$((i-1))]}, REST 127.0.0.1:${REST_PORT[$((i-1))]}, log $TMPD/node$i.log"
}
step "starting two patroni nodes against etcd3 at $ETCD_HOSTPORT"
start_node 1
start_node 2

step "waiting (<= ${BOOT_TIMEOUT}s) for one Leader and one running Replica"
T_BOOT0=$SECONDS
wait_for "$BOOT_TIMEOUT" "both patroni REST APIs to answer" "1 2" both_rest_up
wait_for "$BOOT_TIMEOUT" "patronictl list: 1 Leader + 1 Replica running" "1 2" cluster_healthy
wait_for "$BOOT_TIMEOUT" "replica $REPLICA streaming from leader $LEADER" "1 2" replica_streaming
say "cluster up after $((SECONDS - T_BOOT0))s: leader=$LEADER replica=$REPLICA (replication streaming)"
BEFORE=$(ctl_list)
OLD_TL=$(members_summary | awk '$2=="Leader"{print $4}')

step "write on leader $LEADER, read on replica $REPLICA"
LP=$(port_of "$LEADER")
psql_at "$LP" "create table if not exists demo_ha(id serial primary key, note text not null, at timestamptz default now())" >/dev/null ||
    die "create table on leader $LEADER failed"
ROW_NOTE="written-on-$LEADER-$(date +%s%N)"
ROW_ID=$(psql_at "$LP" "insert into demo_ha(note) values ('$ROW_NOTE') returning id") || die "insert on leader failed"
say "inserted id=$ROW_ID note=$ROW_NOTE on $LEADER"
wait_for 30 "row id=$ROW_ID to appear on replica $REPLICA" "1 2" row_visible_on_replica
say "replica $REPLICA returns: $(psql_at "$(port_of "$REPLICA")" "select id, note from demo_ha where id=$ROW_ID")"
if psql_at "$(port_of "$REPLICA")" "insert into demo_ha(note) values ('should-fail')" >/dev/null 2>&1; then
    die "replica $REPLICA accepted a write"
fi
say "replica $REPLICA correctly rejects writes (read-only)"

# ---------------------------------------------------------------- failover
OLD=$LEADER; NEW_LEADER=$REPLICA
OLD_I=${OLD#node}; NEW_I=${NEW_LEADER#node}
step "SIGKILL leader $OLD: patroni process group ${NODE_PGID[$((OLD_I-1))]} and its postgres"
OLD_PM=$(postmaster_pid "$OLD_I") || die "cannot find postmaster pid of $OLD"
T_KILL=$(date +%s.%N)
{   # (stderr redirected so bash's "Killed" job notice doesn't clutter the transcript)
    kill -KILL -- "-${NODE_PGID[$((OLD_I-1))]}" || true   # verified below
    kill_postgres_of "$OLD_I"
    wait "${NODE_PGID[$((OLD_I-1))]}" || true
} 2>/dev/null
deadline=$((SECONDS + 10))
while group_alive "${NODE_PGID[$((OLD_I-1))]}" || proc_alive "$OLD_PM"; do
    (( SECONDS < deadline )) || die "old leader processes still alive after SIGKILL"
    sleep 0.1
done
NODE_PGID[$((OLD_I-1))]=""
say "killed: patroni group + postmaster $OLD_PM of $OLD are gone"

step "waiting (<= ${FAILOVER_TIMEOUT}s) for $NEW_LEADER to become Leader"
wait_for "$FAILOVER_TIMEOUT" "$NEW_LEADER to be promoted (REST /primary=200, not in recovery)" "$NEW_I" new_leader_promoted
T_NEW=$(date +%s.%N)
FAILOVER_S=$(awk -v a="$T_KILL" -v b="$T_NEW" 'BEGIN{printf "%.1f", b-a}')
say "$NEW_LEADER is primary and read-write ${FAILOVER_S}s after the kill"
wait_for 30 "patronictl list to show $NEW_LEADER as Leader/running on a timeline > $OLD_TL" "$NEW_I" new_leader_in_dcs
say "patronictl list shows $NEW_LEADER as Leader (timeline $OLD_TL -> $(members_summary | awk -v n="$NEW_LEADER" '$1==n{print $4}'))"

NP=$(port_of "$NEW_LEADER")
[[ "$(psql_at "$NP" "select note from demo_ha where id=$ROW_ID")" == "$ROW_NOTE" ]] ||
    die "row written before failover is missing on new leader"
NOTE2="written-on-$NEW_LEADER-after-failover"
ID2=$(psql_at "$NP" "insert into demo_ha(note) values ('$NOTE2') returning id") || die "new leader $NEW_LEADER rejected a write"
say "new leader accepted write: id=$ID2 note=$NOTE2; rows now: $(psql_at "$NP" "select string_agg(id||':'||note, ', ' order by id) from demo_ha")"
AFTER=$(ctl_list)

# ---------------------------------------------------------------- transcript
step "transcript"
say "patronictl list BEFORE failover:"
say "$BEFORE"
say "patronictl list AFTER failover (the dead node's member key vanishes with its etcd lease, ttl=$TTL):"
say "$AFTER"
say ""
say "RESULT: PASS  etcd=$ETCD_URL scope=$SCOPE  leader $OLD -> $NEW_LEADER  failover_seconds=$FAILOVER_S"
