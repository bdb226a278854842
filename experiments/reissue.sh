#!/usr/bin/env bash
# The studies still to run for the re-issue (issue 37) and the recall study (issue 41), one after
# the other, each from one clean commit (STUDY_COMMIT, or the commit in FROM a study began from:
# one code hash per study; those done from an earlier one are EARLIER_COMMITS), on a machine that
# may not last: each session can lose
# its processes, and a new session may be a new machine.
#
#   bash experiments/reissue.sh start      # set up if needed, continue where the last machine stopped
#   bash experiments/reissue.sh status     # which steps are done, which is running
#   bash experiments/reissue.sh stop       # SIGTERM (running jobs save), then snapshot what is unfinished
#   bash experiments/reissue.sh snapshot   # snapshot what is unfinished, the queue left running
#   bash experiments/reissue.sh every 30   # ... every 30 minutes, until the queue ends (run it nohup)
#   bash experiments/reissue.sh pause|resume   # SIGSTOP/SIGCONT, e.g. for a quiet measurement
#
# Where things live: $STUDIES (default ~/rnnlab-studies): a worktree per study commit with its own
# .venv, the MLflow store (store/mlflow.db, Optuna's beside it), the logs. None of it is committed.
# What carries a study across machines is its data in this repo: `stop` writes the unfinished
# experiment's runs (and a tuning's Optuna trials) as a snapshot marked incomplete
# (src/report.py --export --partial) into experiments/<experiment>/data, to be committed; `start`
# on a new machine loads that snapshot into a new store (src/open_study.py --store), and the same
# commands skip what finished (a sweep's configurations, a tuning's trials). A machine can go with
# no stop (on 2026-12-07 one took tune_adding_seeds' first 70 runs with it): keep `every` running
# beside the queue, and commit its snapshots. A step whose
# experiment's data in the repo is complete and from its commit (or EARLIER_COMMITS) is done.
# Exporting a finished study and writing its page is not done here: `make export-study`.
set -u
set -f  # the Hydra arguments below are split into words, never matched against file names
# The studies not begun run from dc5a4f4: its tuner fills both workers with 3 tuning seeds
# (tune_adding_seeds) and draws the same configurations in every arm however often a study stops;
# its other changes since dba1cc8 leave a single-process run's numbers alone.
STUDY_COMMIT=dc5a4f4
# A study begun from an earlier commit finishes from it (one code hash per study). The recall study
# runs from fb8ec05, where an outside review's corrections to it landed before it began (MQAR's
# query order, induction's baseline, attention without an MLP, runs stopped at skill 0.99).
declare -A FROM=([tune_modern_char_lm]=dba1cc8 [recall_study]=fb8ec05)
# Studies finished from an earlier study commit count as done: modern_study, modern_study_copy and
# modern_study_char_lm ran from e32fa7b, before dba1cc8 fixed char_lm's resume after its first epoch.
EARLIER_COMMITS="e32fa7b"
REPO=$(cd "$(dirname "$0")/.." && pwd)
STUDIES=${STUDIES:-$HOME/rnnlab-studies}
commit_of() { echo "${FROM[$1]:-$STUDY_COMMIT}"; }  # the commit experiment $1 runs from
wt_of() { echo "$STUDIES/wt-$(commit_of "$1")"; }
STORE=$STUDIES/store/mlflow.db
export MLFLOW_TRACKING_URI=sqlite:///$STORE

J="-m hydra/launcher=joblib hydra.launcher.n_jobs=2 threads=1"
ADD="task=adding batch_size=32 solve.early_stop=true trainer.max_steps=1500 trainer.val_check_interval=100 seed=1,2,3,4,5"
# step|experiment it writes to|src/train.py arguments (the presets' own commands: conf/experiment, conf/tune)
STEPS=(
  "modern_study|modern_study|+experiment=modern_study"
  "modern_study_copy|modern_study|+experiment=modern_study_copy"
  "modern_study_char_lm|modern_study_char_lm|+experiment=modern_study_char_lm"
  "tune_modern_char_lm|tune_modern_char_lm|+tune=modern_char_lm"
  # seeds 1-10: the preset re-seeds on conf/tune/char_lm.yaml's ten, and the default arm pairs with them
  "tune_modern_char_lm-defaults|tune_modern_char_lm|$J task=char_lm cell=mingru,minlstm,lru seq_len=100 model.param_budget=80000 trainer.max_steps=1000 trainer.val_check_interval=250 seed=1,2,3,4,5,6,7,8,9,10 tracking.experiment=tune_modern_char_lm sweep.name=tune_modern_char_lm-defaults"
  "tune_adding_lru|tune_adding_lru|+tune=adding_lru"
  "tune_adding_lru-defaults|tune_adding_lru|$J $ADD cell=lru seq_len=100,200 model.param_budget=20000 tracking.experiment=tune_adding_lru sweep.name=tune_adding_lru-defaults"
  "tune_adding|tune_adding|+tune=adding"
  "tune_adding-defaults|tune_adding|$J $ADD cell=rnn,lstm,gru seq_len=200,400 cell.hidden_size=64 tracking.experiment=tune_adding sweep.name=tune_adding-defaults"
  "tune_adding_seeds|tune_adding_seeds|+tune=adding_seeds"
  "tune_adding_seeds-defaults|tune_adding_seeds|$J $ADD cell=rnn,lstm,gru seq_len=200,400 cell.hidden_size=64 tracking.experiment=tune_adding_seeds sweep.name=tune_adding_seeds-defaults"
  "recall|recall_study|+tune=recall"
  "recall_mqar128|recall_study|+tune=recall_mqar128"
  "recall_copy|recall_study|+tune=recall_copy"
  "recall_induction|recall_study|+tune=recall_induction"
  "recall_mqar32|recall_study|+tune=recall_mqar32"
  # issue 37's "when the CPU allows" (its item 8), after the recall study that issue 41 needs
  "modern_copy_depth|modern_copy_depth|+experiment=modern_copy_depth"
  "modern_depth_char_lm|modern_depth_char_lm|+experiment=modern_depth_char_lm"
)

log() { echo "$(date -u +%FT%TZ) $*" | tee -a "$STUDIES/queue.log"; }

# whether a process group has a live process (a zombie left unreaped does not count)
alive() { ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {found = 1} END {exit !found}'; }

# the experiments in the store, one per line
in_store() {
  "$REPO/.venv/bin/python" -c "from mlflow import MlflowClient
for e in MlflowClient('$MLFLOW_TRACKING_URI').search_experiments():
    print(e.name) if e.name != 'Default' else None"
}

# "complete" when the repo holds the experiment's data, complete and from its commit (or one of
# EARLIER_COMMITS); "partial" for a snapshot from its commit (continued with the same code);
# else "none"
committed() {
  "$REPO/.venv/bin/python" - "$REPO/experiments/$1/data" "$(commit_of "$1")" $EARLIER_COMMITS <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
data, commit, earlier = Path(sys.argv[1]), sys.argv[2], tuple(a for a in sys.argv[3:] if a)  # "" would match all
if not (data / "runs.parquet").is_file():
    print("none"); sys.exit()
commits = pd.read_parquet(data / "runs.parquet", columns=None).get("tags.git_commit")
commits = commits.dropna() if commits is not None else pd.Series(dtype=str)
complete = json.loads((data / "study.json").read_text()).get("complete", True)
if complete and commits.str.startswith((commit, *earlier)).any():
    print("complete")
else:
    print("partial" if not complete and commits.str.startswith(commit).any() else "none")
PY
}

setup() {
  mkdir -p "$STUDIES/logs" "$STUDIES/done" "$(dirname "$STORE")"
  [ -e "$REPO/.venv/.installed" ] || make -C "$REPO" install >"$STUDIES/logs/install.log" 2>&1
  local seen="" step exp state partial="" wt
  for s in "${STEPS[@]}"; do
    step=${s%%|*}; exp=$(echo "$s" | cut -d'|' -f2)
    case " $seen " in *" $exp "*) continue;; esac
    seen="$seen $exp"
    state=$(committed "$exp")
    if [ "$state" = complete ]; then
      for t in "${STEPS[@]}"; do [ "$(echo "$t" | cut -d'|' -f2)" = "$exp" ] && touch "$STUDIES/done/${t%%|*}"; done
      continue
    elif [ "$state" = partial ]; then
      partial="$partial $exp"
    fi
    wt=$(wt_of "$exp")  # a study still to run: its commit's worktree and .venv
    if [ ! -d "$wt" ]; then
      git -C "$REPO" worktree prune
      git -C "$REPO" worktree add --detach "$wt" "$(commit_of "$exp")" >>"$STUDIES/logs/install.log" 2>&1 ||
        { log "git worktree add $wt $(commit_of "$exp") failed: $STUDIES/logs/install.log"; exit 1; }
    fi
    make -C "$wt" install >>"$STUDIES/logs/install.log" 2>&1 || { log "install failed: $STUDIES/logs/install.log"; exit 1; }
  done
  [ -e "$STORE" ] || [ -z "$partial" ] && return
  set -- $partial
  if [ $# -gt 1 ]; then  # one store holds one loaded snapshot (src/open_study.py builds it whole)
    log "several unfinished snapshots ($partial): the finished ones must be exported first, each from a store of its own:"
    log "  python src/open_study.py <exp>; MLFLOW_TRACKING_URI=sqlite:///.studies/<exp>/mlflow.db make export-study ..."
    exit 1
  fi
  log "a new machine: loading the snapshot of $1 into $STORE"
  "$REPO/.venv/bin/python" "$REPO/src/open_study.py" "$REPO/experiments/$1" --store "$STORE" || exit 1
}

run_queue() {
  echo $$ >"$STUDIES/queue.pgid"
  trap 'log "queue stopped"; exit 143' TERM INT
  local step exp args
  for s in "${STEPS[@]}"; do
    step=${s%%|*}; exp=$(echo "$s" | cut -d'|' -f2); args=${s#*|*|}
    [ -e "$STUDIES/done/$step" ] && continue
    if [ -e "$STUDIES/stopping" ]; then log "stopped before $step"; exit 143; fi
    log "start $step"
    echo "$exp" >"$STUDIES/current"
    (cd "$(wt_of "$exp")" && exec .venv/bin/python src/train.py $args) >"$STUDIES/logs/$step.log" 2>&1 &
    echo $! >"$STUDIES/launcher.pid"
    wait $!; local rc=$?
    rm -f "$STUDIES/launcher.pid"
    if [ $rc -eq 0 ]; then touch "$STUDIES/done/$step"; log "done $step"; continue; fi
    if [ -e "$STUDIES/stopping" ]; then log "stopped in $step"; exit 143; fi
    log "FAILED $step rc=$rc (log: $STUDIES/logs/$step.log)"; exit $rc
  done
  rm -f "$STUDIES/current"; log "queue finished"
}

# Every experiment in the store that the repo does not hold complete: its snapshot, to commit (a
# new machine continues one; export a finished one with `make export-study` first). Taken while
# the queue runs, it holds the runs finished so far: a run under way is done again on a new
# machine (its trial, RUNNING in the snapshot, is asked again; rnnlab.tune.resume).
snapshot() {
  exec 9>"$STUDIES/snapshot.lock"; flock 9  # one at a time: `every`'s and `stop`'s write the same files
  for exp in $(in_store); do
    [ "$(committed "$exp")" = complete ] && continue
    "$REPO/.venv/bin/python" "$REPO/src/report.py" --experiment "$exp" --export --partial --out "$REPO/experiments/$exp" \
      >>"$STUDIES/logs/snapshot.log" 2>&1 || { log "snapshot of $exp FAILED: $STUDIES/logs/snapshot.log"; continue; }
    log "snapshot of $exp in experiments/$exp/data: commit it"
  done
}

main() {
  case "${1:-}" in
    start)
      if [ -e "$STUDIES/queue.pgid" ] && alive "$(cat "$STUDIES/queue.pgid")"; then
        echo "the queue is running already (pgid $(cat "$STUDIES/queue.pgid")): bash $0 status" >&2; exit 1
      fi
      rm -f "$STUDIES/stopping"
      setup
      setsid nohup bash "$0" run >"$STUDIES/queue.out" 2>&1 </dev/null &
      sleep 1; log "queue started (pgid $(cat "$STUDIES/queue.pgid" 2>/dev/null))";;
    run) run_queue;;
    status)
      for s in "${STEPS[@]}"; do step=${s%%|*}; [ -e "$STUDIES/done/$step" ] && echo "done     $step" || echo "to do    $step"; done
      tail -3 "$STUDIES/queue.log";;
    pause) kill -STOP -"$(cat "$STUDIES/queue.pgid")";;
    resume) kill -CONT -"$(cat "$STUDIES/queue.pgid")";;
    stop)
      # SIGTERM to the launching process alone, as `make` forwards it: it asks every job to stop
      # at its next step, saved. (To the whole group it would also end the workers' forkserver in
      # dba1cc8's code, which predates the fix in rnnlab.warm, and fail the sweep.)
      pgid=$(cat "$STUDIES/queue.pgid")
      touch "$STUDIES/stopping"
      kill -CONT -"$pgid" 2>/dev/null
      signalled=""
      while alive "$pgid"; do  # the running jobs save their step
        # the launcher of the queue's step, once (a second SIGTERM would stop its jobs unsaved)
        pid=$(cat "$STUDIES/launcher.pid" 2>/dev/null)
        if [ -n "$pid" ] && [ "$pid" != "$signalled" ] && [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pgid" ]; then
          kill -TERM "$pid" 2>/dev/null; signalled=$pid
        fi
        sleep 2
      done
      rm -f "$STUDIES/stopping"
      snapshot;;
    snapshot) snapshot;;
    every)  # a snapshot every $2 minutes while the queue runs: a machine lost loses at most that
      case "${2:-}" in ''|*[!0-9]*|0) echo "every: give the minutes between snapshots, an integer > 0" >&2; exit 2;; esac
      while sleep $(($2 * 60)); do
        [ -e "$STUDIES/queue.pgid" ] && alive "$(cat "$STUDIES/queue.pgid")" || break
        snapshot
      done
      # the queue ended: finished (export it with `make export-study`), failed, or stopped (whose
      # own snapshot this repeats): what it did since the last one, unless a stop is writing it
      [ -e "$STUDIES/stopping" ] || snapshot;;
    *) sed -n '2,20p' "$0"; exit 2;;
  esac
}

# one line, read whole before it runs: a queue that runs for hours never reads this file again
main "$@"; exit $?
