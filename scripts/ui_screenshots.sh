#!/usr/bin/env bash
# What a new user sees in the MLflow UI, from a real small run, as PNGs in docs/img/ (docs/tracking.md).
#
#   bash scripts/ui_screenshots.sh          # needs `make setup` and a chromium (apt-get install -y chromium)
#
# In a scratch copy of this checkout (shrunk demo params, committed like a teammate's clone) it runs
# `dvc repro` and `dvc exp run -n alpha-0.1 -S alpha=0.1`, starts `mlflow ui` on 127.0.0.1 against that
# store, opens the link `python -m lmmreg.tracking link` prints, and screenshots it with headless chromium.
# Nothing leaves the machine; the scratch copy is removed at the end (KEEP=1 keeps it).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=$REPO/.venv/bin
PORT=${PORT:-5077}
OUT=${OUT:-$REPO/docs/img}
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -x "$BIN/python" ] || { echo "run 'make setup' first" >&2; exit 2; }
[ -n "$CHROME" ] || { echo "needs chromium: apt-get install -y chromium" >&2; exit 2; }

WORK=$(mktemp -d)
UI_PID=
cleanup() {
  [ -n "$UI_PID" ] && kill "$UI_PID" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] && echo "scratch project kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

# A scratch project: the tracked files of this checkout as they are now, with small demo params.
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar cf - 2>/dev/null) | tar xf - -C "$WORK"
"$BIN/python" - "$WORK/params.yaml" <<'PY'
import sys, yaml
path = sys.argv[1]
raw = yaml.safe_load(open(path))
raw["demo"].update(n_classes=4, train_per_class=16, test_per_class=8, image_size=32)
raw["seeds"] = [0, 1, 2]
raw["train"]["epochs"] = 10
raw["pretrain"]["enabled"] = False  # the UI is the point, not the numbers: random-init CLIP, no 6-min pretraining
raw["clip"]["pretrained"] = ""
raw["report"]["bootstrap"] = 50
yaml.safe_dump(raw, open(path, "w"), sort_keys=False)
PY
cd "$WORK"
export PATH="$BIN:$PATH" PYTHONPATH="$WORK/src" MLFLOW_DISABLE_TELEMETRY=true
unset MLFLOW_TRACKING_URI DVC_ROOT
export GIT_AUTHOR_NAME=lmmreg GIT_AUTHOR_EMAIL=lmmreg@localhost GIT_COMMITTER_NAME=lmmreg GIT_COMMITTER_EMAIL=lmmreg@localhost
git init -q && dvc init -q && git add -A && git commit -qm baseline
python -m lmmreg.tracking init
dvc repro -q
git add -A && git commit -qm "baseline results"
dvc exp run -q -n alpha-0.1 -S alpha=0.1

mlflow ui --backend-store-uri "sqlite:///$WORK/mlflow.db" --host 127.0.0.1 --port "$PORT" --workers 1 \
  > "$WORK/ui.log" 2>&1 &
UI_PID=$!
for _ in $(seq 180); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/health" && break
  sleep 1
done
LINK=$(python -m lmmreg.tracking link | grep -o 'http://[^ ]*' | head -1 | sed "s#127.0.0.1:5000#127.0.0.1:$PORT#")
echo "runs table: $LINK"

shoot() {  # shoot NAME URL: a 2400x900 screenshot after the page's requests settle
  timeout 180 "$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=2400,900 \
    --virtual-time-budget=15000 --screenshot="$OUT/$1" "$2" > "$WORK/chrome-$1.log" 2>&1
  echo "wrote $OUT/$1"
}
mkdir -p "$OUT"
shoot mlflow_runs_table.png "$LINK"
shoot mlflow_model_registry.png "http://127.0.0.1:$PORT/#/models/lmmreg-demo"
