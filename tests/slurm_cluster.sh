#!/bin/bash
# A one-node Slurm cluster on this machine, for the tests that submit real jobs (tests/slurmtools.py runs this).
#
#   bash tests/slurm_cluster.sh        # as root; prints "slurm ready" last, or one line saying what failed
#
# Idempotent: installs Debian's slurm-wlm and munge if slurmctld is missing, writes /etc/slurm/slurm.conf (only
# if there is none, or the one there carries this script's marker line), starts munged, slurmctld and slurmd as
# plain daemons (no systemd here) unless they are already up, resumes the node if it is down or drained, and
# checks `srun -n 2 hostname` and an `sbatch --wrap` job that must see this shell's environment and python.
# Exit status: 0 ready; 2 this machine cannot host it (not root, no apt-get, the install failed); 3 a slurm.conf
# that is not ours is in the way (never overwritten); 1 the daemons or the checks failed (logs under $LOG_DIR).
#
# slurm.conf choices (the file itself says them too):
#   CPUs = nproc and SelectTypeParameters=CR_CPU: one logical CPU is the unit a task gets, whatever the
#     socket/core/thread layout, so `srun -n 2` and `sbatch --ntasks-per-node=2` fit a 2-CPU machine.
#   OverSubscribe=FORCE:4 on the partition: up to 4 jobs share each CPU, so an `--array=0-3` of one-CPU tasks runs
#     all at once on 2 CPUs, next to a 2-task training job. One job still gets at most nproc CPUs (srun -n 4 on
#     2 CPUs needs --overcommit). The alternative, CPUs above nproc with SlurmdParameters=config_overrides, makes
#     every job's CPU count a fiction and hides a real mismatch; FORCE only shares.
#   No memory accounting (CR_CPU, not CR_CPU_Memory): --mem is only checked against RealMemory, 90% of MemTotal
#     rounded down to a GiB (MemTotal, not free memory, so the file is the same on every run and the daemons are
#     not restarted for nothing).
#   MinJobAge=600: a finished job stays in `scontrol show job` for 10 minutes; with no slurmdbd, sacct has nothing,
#     and that is the only place a test can read a job's final state.
#   proctrack/linuxproc, task/none, jobacct_gather/none: no cgroups (containers, no systemd).
set -euo pipefail

MARKER="# physbert-ci: written by tests/slurm_cluster.sh (delete this line to keep your own edits)"
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
SPOOL=/var/spool/slurm-physbert
RUN_DIR=/run/slurm-physbert
LOG_DIR=/var/log/slurm-physbert
MUNGE_KEY=/etc/munge/munge.key

fail() { echo "slurm_cluster.sh: $2" >&2; exit "$1"; }
need_root() { [ "$(id -u)" = 0 ] || fail 2 "must run as root to $1"; }

# A job submitted from inside an allocation would otherwise join it, or talk to another cluster (SLURM_CONF).
for v in $(compgen -e | grep -E '^(SLURM|SBATCH|SALLOC|SRUN)_' || true); do unset "$v"; done

# --- Install -----------------------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  need_root "install slurm-wlm and munge"
  command -v apt-get >/dev/null || fail 2 "slurmctld is not installed and there is no apt-get to install it"
  mkdir -p "$LOG_DIR"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache policy slurm-wlm 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get update >>"$LOG_DIR/apt.log" 2>&1 || fail 2 "apt-get update failed (no network?); see $LOG_DIR/apt.log"
  fi
  apt-get install -y --no-install-recommends slurm-wlm munge >>"$LOG_DIR/apt.log" 2>&1 \
    || fail 2 "apt-get install slurm-wlm munge failed; see $LOG_DIR/apt.log"
fi

# --- slurm.conf --------------------------------------------------------------------------------------------------
NODE=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {m = int($2 / 1024 * 0.9 / 1024) * 1024; print (m > 0 ? m : 512)}' /proc/meminfo)
desired=$(cat <<EOF
$MARKER
# A one-node test cluster; see tests/slurm_cluster.sh for why each setting is what it is.
ClusterName=physbert-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=30
JobRequeue=1
MinJobAge=600
InactiveLimit=0
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
)
changed=0
if [ -e "$CONF" ]; then
  grep -qxF "$MARKER" "$CONF" \
    || fail 3 "$CONF exists and was not written by this script; not touching it (move it away to use the test cluster)"
  [ "$(cat "$CONF")" = "$desired" ] || changed=1
else
  changed=1
fi
if [ "$changed" = 1 ]; then
  need_root "write $CONF"
  mkdir -p "$CONF_DIR"
  printf '%s\n' "$desired" >"$CONF.tmp.$$" && mv "$CONF.tmp.$$" "$CONF"
fi

# --- Daemons -----------------------------------------------------------------------------------------------------
alive() {  # alive NAME PIDFILE: the pid in PIDFILE is a running NAME
  local pid
  pid=$(cat "$2" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}
stop() {  # stop NAME PIDFILE: only the process this script's config started, by its pid
  alive "$1" "$2" || return 0
  local pid
  pid=$(cat "$2")
  kill "$pid"
  for _ in $(seq 50); do alive "$1" "$2" || return 0; sleep 0.2; done
  fail 1 "$1 (pid $pid) did not stop after SIGTERM"
}
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail 1 "$what"
}

if ! (munge -n </dev/null | unmunge) >/dev/null 2>&1; then
  need_root "start munged"
  if [ ! -s "$MUNGE_KEY" ]; then
    mkdir -p "$(dirname "$MUNGE_KEY")"
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile="$MUNGE_KEY"
    else
      dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
  fi
  chown munge:munge "$MUNGE_KEY" && chmod 0400 "$MUNGE_KEY"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- munged >/dev/null 2>&1 || fail 1 "munged did not start; see /var/log/munge/munged.log"
  wait_for 10 "munged started but munge -n | unmunge still fails" sh -c 'munge -n </dev/null | unmunge'
fi

mkdir -p "$SPOOL/ctld" "$SPOOL/d" "$RUN_DIR" "$LOG_DIR"
if [ "$changed" = 1 ]; then   # a new slurm.conf (first run, or another host name / core count): restart both
  need_root "restart the slurm daemons"
  stop slurmd "$RUN_DIR/slurmd.pid"
  stop slurmctld "$RUN_DIR/slurmctld.pid"
fi
if ! alive slurmctld "$RUN_DIR/slurmctld.pid"; then
  need_root "start slurmctld"
  slurmctld >>"$LOG_DIR/slurmctld.out" 2>&1 || fail 1 "slurmctld did not start; see $LOG_DIR/slurmctld.log"
fi
wait_for 30 "slurmctld is not answering (scontrol ping); see $LOG_DIR/slurmctld.log" \
  sh -c 'scontrol ping | grep -q "is UP"'
if ! alive slurmd "$RUN_DIR/slurmd.pid"; then
  need_root "start slurmd"
  slurmd >>"$LOG_DIR/slurmd.out" 2>&1 || fail 1 "slurmd did not start; see $LOG_DIR/slurmd.log"
fi

# --- The node: idle (or busy with jobs), resumed if down or drained ----------------------------------------------
node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -1; }
resumed=0
for _ in $(seq 150); do
  state=$(node_state)
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    down|drained|draining|fail*)
      if [ "$resumed" = 0 ]; then
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        resumed=1
      fi ;;
  esac
  sleep 0.2
done
case "$state" in
  idle|mixed|allocated|completing) ;;
  *) why=$(sinfo -h -N -n "$NODE" -o %E 2>/dev/null || true)
     fail 1 "node $NODE is '${state:-unknown}', not idle (${why:-no reason}); see $LOG_DIR/slurmd.log" ;;
esac

# --- Checks: a 2-task step, and a batch job that sees this environment and this python ---------------------------
hosts=$(timeout 60 srun -n 2 -t 1 hostname 2>&1) || fail 1 "srun -n 2 hostname failed: $(echo "$hosts" | tail -1)"
[ "$(echo "$hosts" | wc -l)" = 2 ] || fail 1 "srun -n 2 hostname printed '$hosts', not two lines"

probe=$(mktemp -d /tmp/slurm-physbert-probe.XXXXXX)
trap 'rm -rf "$probe"' EXIT
token="probe-$$-$RANDOM"
PY=$(command -v python >/dev/null && echo python || echo python3)
here_py=$($PY -c 'import sys; print(sys.executable)' 2>/dev/null || true)
if ! PHYSBERT_PROBE=$token timeout 120 sbatch --wait --quiet -t 1 -o "$probe/out" -D "$probe" \
    --wrap "echo \"\$PHYSBERT_PROBE\"; $PY -c 'import sys; print(sys.executable)' 2>/dev/null" >"$probe/sbatch" 2>&1; then
  fail 1 "sbatch --wrap job failed: $(tail -1 "$probe/sbatch") $(tail -1 "$probe/out" 2>/dev/null)"
fi
[ "$(sed -n 1p "$probe/out")" = "$token" ] || fail 1 "sbatch --wrap: the job did not see this shell's environment"
[ "$(sed -n 2p "$probe/out")" = "$here_py" ] \
  || fail 1 "sbatch --wrap: the job's $PY is '$(sed -n 2p "$probe/out")', not '$here_py' as here"

echo "slurm ready: node $NODE, $CPUS CPUs (4 jobs a CPU), partition debug, $CONF"
