"""Pair sets for PhysBERT's contrastive stage (paper Sec. 3.3), one subcommand each:

    python -m data_prep.pairs category     --meta data/meta --exclude evalsets/ids.txt --out data/pairs/category
    python -m data_prep.pairs citation     --source paperscape DIR --meta data/meta --out data/pairs/citation
    python -m data_prep.pairs synthetic-qa --corpus data/corpus --engine vllm --model M --out data/pairs/qa

| set          | anchor           | positive          | paper's size                              | module          |
|--------------|------------------|-------------------|-------------------------------------------|-----------------|
| category     | abstract         | abstract          | 2M pairs, balanced over 21 merged classes | category.py     |
| citation     | citing title     | cited title       | 1M pairs (Semantic Scholar)               | citation.py     |
| synthetic-qa | LLM question     | 1,000-char chunk  | 2M pairs (LLaMA-3-70B via vLLM)           | synthetic_qa.py |

Every output directory is in records.py's "physbert-pairs-v1" format: `train-KKKKK-of-NNNNN.array_record` files of
`records.encode_pair` JSON ({"anchor", "positive", "source", "anchor_id", "positive_id"}), `manifest.json` (format,
kind, splits, plus seed, counts and sources) and `report.json` (settings, counts, skipped lines and pairs with
reasons). Outputs depend only on the inputs and the flags (--seed included): a rerun with the same settings is
skipped, a changed one rebuilds. Papers in `--exclude` (one arXiv id a line: eval.build_sets' ids.txt) never
appear in any pair, on either side.

Modules: papers.py (metadata and exclusion lists), writer.py (shards, manifest, report), category.py,
citation.py (Paperscape and S2 bulk sources, the builder), s2_client.py (Semantic Scholar Graph API),
qa_text.py (chunks, prompt, parsing, filters), llm.py (vLLM / OpenAI endpoint / transformers engines),
http_retry.py (the HTTP retry loop both remote clients use),
synthetic_qa.py (the sharded, resumable generation driver).
"""
