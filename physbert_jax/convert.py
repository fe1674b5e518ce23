"""Weights in and out: our workdirs <-> Hugging Face / sentence-transformers folders. Conversion is exact (a rename
and a transpose, `hf_names.py`), fp32 both ways.

    python -m physbert_jax.convert to-hf   --workdir runs/contrastive [--step N | --best] --out exported/physbert
    python -m physbert_jax.convert from-hf --hf path/to/bert-or-sentence-transformers-folder --out runs/imported

to-hf writes a folder that loads offline in transformers (AutoModel, BertModel; BertForMaskedLM when the run kept
its MLM head) and in sentence-transformers 5.x and 6.x (the pre-5.4 config keys, which 6.x still reads):
config.json, fp32 model.safetensors, tokenizer files, modules.json, 1_Pooling/config.json, sentence_bert_config.json,
config_sentence_transformers.json, README.md (model card) and encoder.json (EncoderSettings: our pooling name, which
sentence-transformers cannot always express).

from-hf writes a workdir that `train` (config.init_from) and `encode` read: config.json (what was imported: variant
"imported", the source folder and the model; no training settings), tokenizer/, encoder.json (the pooling, max
length, normalisation and lowercasing the folder declared) and checkpoints/0/state = {step: 0, params,
opt_state: {}}. The model card a to-hf export carries is model_card.py's.

Safety: only safetensors are read (a pickled pytorch_model.bin can run code when loaded, so it is refused with the
command that converts it), nothing is fetched from the Hub, no remote code runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import warnings

import numpy as np
from absl import logging as absl_logging

from physbert_jax import hf_names, outputs
from physbert_jax.model import BertConfig
from physbert_jax.model_card import model_card

# Files that make up a BERT tokenizer folder; the ones present are copied.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
# What sentence-transformers 5.x writes in config_sentence_transformers.json; claiming 5.0 keeps 5.x quiet.
ST_VERSION_CLAIMED = "5.0.0"
NO_SPECIAL_WARNING = (
    "pooling 'mean_no_special' (mean over tokens except [CLS]/[SEP]) cannot be expressed in sentence-transformers: "
    "the exported 1_Pooling uses plain mean, so SentenceTransformer embeddings include [CLS]/[SEP] and differ "
    "slightly from physbert_jax.encode, which reads encoder.json and pools without them")
POOLINGS = ("mean", "cls", "mean_no_special")


@dataclasses.dataclass(frozen=True)
class EncoderSettings:
  """How a model turns a text into one vector, besides its weights: the one record of it, `encoder.json`.

  Written once per folder: by `train` into its workdir (what the run trained and validated with), by `from-hf`
  into an import, by `to-hf` beside the sentence-transformers files (which cannot say mean_no_special). Read by
  encode, convert, eval and the contrastive validator, so the best checkpoint's numbers are reproducible outside
  the run.
  """
  pooling: str = "mean"        # mean | cls | mean_no_special
  max_length: int = 512        # longest input in tokens, never past the model's max_position_embeddings
  normalize: bool = False      # L2-normalise embeddings (a sentence-transformers Normalize module)
  lowercase: bool = False      # lowercase text before tokenising (sentence-transformers' do_lower_case; rare)

  FILE = "encoder.json"

  def __post_init__(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f"unknown pooling {self.pooling!r}; use {', '.join(POOLINGS)}")

  @classmethod
  def read(cls, folder: str) -> "EncoderSettings | None":
    path = os.path.join(folder, cls.FILE)
    if not os.path.exists(path):
      return None
    record = _read_json(path)
    try:
      return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})
    except (TypeError, ValueError) as e:
      raise ValueError(f"{path}: {e}") from None

  def write(self, folder: str) -> None:
    outputs.write_json(os.path.join(folder, self.FILE), dataclasses.asdict(self), sort_keys=True)


@dataclasses.dataclass
class Weights:
  """A BERT encoder as read from any source, with what encoding it needs besides the parameters."""
  cfg: BertConfig
  params: dict          # numpy fp32 tree of model.Bert; 'cls' holds the MLM head when the source has one
  encoder: EncoderSettings
  tokenizer_dir: str
  source: str           # the file or checkpoint read, for messages and the model card
  step: int | None = None
  train_config: dict | None = None


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing")
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from None


def is_workdir(path: str) -> bool:
  """Ours: a checkpoints/ folder, or a config.json that is an ml_collections config (it has `model`) not HF's."""
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return True
  config = os.path.join(path, "config.json")
  if not os.path.exists(config):
    return False
  cfg = _read_json(config)
  return isinstance(cfg.get("model"), dict) and "model_type" not in cfg


def load(path: str, step: int | str | None = None) -> Weights:
  """Any supported source: our workdir (step None = latest, an int, or 'best'), an exported or HF/ST folder."""
  path = path.rstrip("/") or path
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: no such folder (models are local folders; nothing is downloaded)")
  if is_workdir(path):
    return read_workdir(path, step=None if step == "best" else step, best=step == "best")
  if step is not None:
    raise ValueError(f"{path}: step={step!r} applies to a training workdir; this is a Hugging Face folder")
  return read_hf_folder(path)


# ---------------------------------------------------------------------------------------------------------------
# Our workdirs.

def read_workdir(workdir: str, step: int | None = None, best: bool = False) -> Weights:
  import jax
  import orbax.checkpoint as ocp
  from physbert_jax import checkpointing

  config = _read_json(os.path.join(workdir, "config.json"))
  if best:
    if step is not None:
      raise ValueError("give --step or --best, not both")
    best_path = os.path.join(workdir, "best.json")
    step = _read_json(best_path).get("step")
    if not isinstance(step, int):
      raise ValueError(f"{best_path} has no integer 'step'")
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  steps = []
  if os.path.isdir(directory):
    manager = ocp.CheckpointManager(directory, item_handlers={"state": ocp.StandardCheckpointHandler()},
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    steps = sorted(manager.all_steps())
  if not steps:
    raise FileNotFoundError(f"{workdir}: no checkpoint under {directory}; train it first "
                            "(python -m physbert_jax.train --workdir ...) or import one (convert from-hf)")
  step = steps[-1] if step is None else int(step)
  if step not in steps:
    raise FileNotFoundError(f"{workdir}: no checkpoint for step {step}; it has steps {steps}")
  # Read the parameter shapes from the checkpoint itself, so a run with or without the MLM head both load.
  meta = manager.item_metadata(step)["state"]
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), dict(meta)["params"])
  manager.close()
  params, _ = checkpointing.restore_params(workdir, abstract, step)   # ShapeDtypeStruct, no sharding -> numpy
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)

  model = dict(config["model"], dtype="float32", attention_impl=None, remat=False)
  tokenizer_dir = os.path.join(workdir, "tokenizer")
  if not os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")):
    raise FileNotFoundError(f"{tokenizer_dir}/tokenizer.json is missing; runs started before the trainer copied "
                            "its tokenizer need it copied by hand from the data directory's tokenizer")
  cfg = BertConfig(**model)
  settings = EncoderSettings.read(workdir)
  if settings is None:
    raise FileNotFoundError(f"{workdir}/{EncoderSettings.FILE} is missing (runs started before the trainer wrote it): "
                            "rerun the run's train command, which writes it (a finished run then exits), or write "
                            f"{{\"pooling\": \"mean\", \"max_length\": {cfg.max_position_embeddings}, "
                            "\"normalize\": false, \"lowercase\": false}, what such runs encoded with")
  return Weights(cfg=cfg, params=params, encoder=_fit(settings, cfg), tokenizer_dir=tokenizer_dir,
                 source=f"{directory}/{step}", step=step, train_config=config)


def _fit(settings: EncoderSettings, cfg: BertConfig) -> EncoderSettings:
  return dataclasses.replace(settings, max_length=min(int(settings.max_length), cfg.max_position_embeddings))


def import_hf(folder: str, out: str, pooling: str | None = None, overwrite: bool = False) -> str:
  """HF/ST folder -> our workdir. Returns `out`."""
  import ml_collections
  from physbert_jax import checkpointing

  w = read_hf_folder(folder)
  with outputs.staged(out, "convert from-hf", overwrite) as tmp:   # a new or empty --out; published whole
    # What the workdir is and nothing more: no training happened here, so no training settings are claimed.
    outputs.write_json(os.path.join(tmp, "config.json"), {
        "variant": "imported", "objective": "imported", "imported_from": os.path.abspath(folder),
        "model": dataclasses.asdict(w.cfg)})
    dataclasses.replace(w.encoder, pooling=pooling or w.encoder.pooling).write(tmp)
    _copy_tokenizer(w.tokenizer_dir, os.path.join(tmp, "tokenizer"))
    # A params-only train state: init_from (checkpointing.restore_params) reads `params` and nothing else.
    manager = checkpointing.make_manager(tmp, ml_collections.ConfigDict(dict(keep=1, keep_every=0,
                                                                              async_save=False)))
    checkpointing.save(manager, 0, {"step": np.zeros((), np.int32), "params": w.params, "opt_state": {}})
    manager.wait_until_finished()
    manager.close()
  return out


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face / sentence-transformers folders.

def read_hf_folder(folder: str) -> Weights:
  """BertModel / BertForMaskedLM / sentence-transformers folder (safetensors) -> Weights."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder}: no such folder (models are local folders; nothing is downloaded)")
  transformer_dir, pooling, normalize = folder, None, False
  modules_path = os.path.join(folder, "modules.json")
  if os.path.exists(modules_path):
    for module in _read_json(modules_path):
      kind = module.get("type", "").rsplit(".", 1)[-1]
      path = os.path.join(folder, module.get("path", ""))
      if kind == "Transformer":
        transformer_dir = path
      elif kind == "Pooling":
        pooling = hf_names.pooling_from_st(_read_json(os.path.join(path, "config.json")),
                                           source=os.path.join(path, "config.json"))
      elif kind == "Normalize":
        normalize = True
      else:
        raise ValueError(f"{modules_path}: module {module.get('type')!r} is not supported; physbert-jax encodes "
                         "with Transformer + Pooling (+ Normalize)")
  config_path = os.path.join(transformer_dir, "config.json")
  hf = _read_json(config_path)
  try:
    cfg = hf_names.config_from_hf(hf)
  except (ValueError, KeyError) as e:
    raise ValueError(f"{config_path}: {e}") from None
  state, weights_path = read_safetensors(transformer_dir)
  params = hf_names.from_hf_state_dict(state, cfg, source=weights_path)

  st_path = os.path.join(transformer_dir, "sentence_bert_config.json")
  st = _read_json(st_path) if os.path.exists(st_path) else {}
  tok_path = os.path.join(transformer_dir, "tokenizer_config.json")
  tok_max = _read_json(tok_path).get("model_max_length") if os.path.exists(tok_path) else None
  max_length = st.get("max_seq_length") or (tok_max if isinstance(tok_max, int) and tok_max < 1_000_000 else None)
  settings = EncoderSettings.read(folder) or EncoderSettings(   # ours (to-hf) says what ST cannot; else ST's files
      pooling=pooling or "mean", max_length=int(max_length or cfg.max_position_embeddings), normalize=normalize,
      lowercase=bool(st.get("do_lower_case", False)))             # ST's default pooling is mean
  return Weights(cfg=cfg, params=params, encoder=_fit(settings, cfg), tokenizer_dir=transformer_dir,
                 source=weights_path)


def read_safetensors(folder: str) -> tuple[dict[str, np.ndarray], str]:
  """model.safetensors (or its sharded index) -> numpy state dict. Never unpickles."""
  from safetensors.numpy import load_file as _load

  def load_file(path):
    try:
      return _load(path)
    except Exception as e:   # SafetensorError (a truncated or damaged file) derives from Exception only
      raise ValueError(f"{path}: not a readable safetensors file ({e}); copy or export it again") from None

  single = os.path.join(folder, "model.safetensors")
  index = os.path.join(folder, "model.safetensors.index.json")
  if os.path.exists(single):
    return load_file(single), single
  if os.path.exists(index):
    state = {}
    for shard in sorted(set(_read_json(index)["weight_map"].values())):
      state.update(load_file(os.path.join(folder, shard)))
    return state, index
  pickled = [f for f in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack") if os.path.exists(
      os.path.join(folder, f))]
  hint = ""
  if pickled:
    hint = (f"; found {pickled[0]}, which is not read (a pickled checkpoint can run code when loaded). If you trust "
            f"it, convert it once: python -c \"from transformers import AutoModel as M; "
            f"M.from_pretrained('{folder}').save_pretrained('{folder}')\"")
  raise FileNotFoundError(f"{folder}: no model.safetensors{hint}")


def write_hf_folder(w: Weights, out: str, pooling: str | None = None, workdir: str | None = None,
                    overwrite: bool = False) -> str:
  """Weights -> a transformers + sentence-transformers folder at `out`. Returns `out`."""
  from safetensors.numpy import save_file

  settings = dataclasses.replace(w.encoder, pooling=pooling or w.encoder.pooling)
  pooling = settings.pooling
  st_pooling = hf_names.pooling_to_st(pooling, w.cfg.hidden_size)
  if pooling == "mean_no_special":
    warnings.warn(NO_SPECIAL_WARNING, stacklevel=2)
  with outputs.staged(out, "convert to-hf", overwrite) as tmp:   # a new or empty --out; published whole
    head = "cls" in w.params
    state = hf_names.to_hf_state_dict(w.params, prefix="bert." if head else "")
    if head:   # tied to the word embeddings: one tensor on disk, as transformers saves it
      del state["cls.predictions.decoder.weight"], state["cls.predictions.decoder.bias"]
    save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    outputs.write_json(os.path.join(tmp, "config.json"),
                hf_names.config_to_hf(w.cfg, "BertForMaskedLM" if head else "BertModel"))
    _copy_tokenizer(w.tokenizer_dir, tmp, model_max_length=settings.max_length)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if settings.normalize:
      modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
      os.makedirs(os.path.join(tmp, "2_Normalize"))
    outputs.write_json(os.path.join(tmp, "modules.json"), modules)
    os.makedirs(os.path.join(tmp, "1_Pooling"))
    outputs.write_json(os.path.join(tmp, "1_Pooling", "config.json"), st_pooling)
    outputs.write_json(os.path.join(tmp, "sentence_bert_config.json"),
                {"max_seq_length": settings.max_length, "do_lower_case": settings.lowercase})
    outputs.write_json(os.path.join(tmp, "config_sentence_transformers.json"), {
        "model_type": "SentenceTransformer",
        "__version__": {"sentence_transformers": ST_VERSION_CLAIMED, "transformers": "4.56.0", "pytorch": "2.4.0"},
        "prompts": {"query": "", "document": ""}, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    settings.write(tmp)
    with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
      f.write(model_card(w, settings, os.path.basename(out.rstrip("/")), workdir))
  return out


def _copy_tokenizer(src: str, dst: str, model_max_length: int | None = None) -> None:
  os.makedirs(dst, exist_ok=True)
  if not os.path.exists(os.path.join(src, "tokenizer.json")):
    # Older BERT folders (SciBERT) ship vocab.txt only: build the fast tokenizer with transformers, which reads
    # the folder's casing options, so encode and training see what transformers users see.
    if not os.path.exists(os.path.join(src, "vocab.txt")):
      raise FileNotFoundError(f"{src}: no tokenizer.json or vocab.txt")
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(src, local_files_only=True, trust_remote_code=False).backend_tokenizer.save(
        os.path.join(dst, "tokenizer.json"))
  for name in TOKENIZER_FILES:
    if os.path.exists(os.path.join(src, name)):
      shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
  # Some tokenizer.json files pad and truncate every text to a fixed length (all-MiniLM-L6-v2's: 128); tools
  # that use `tokenizers` directly would inherit that. transformers sets both per call, so dropping them is safe.
  path = os.path.join(dst, "tokenizer.json")
  tokenizer = _read_json(path)
  if tokenizer.get("padding") or tokenizer.get("truncation"):
    with open(path, "w", encoding="utf-8") as f:
      json.dump({**tokenizer, "padding": None, "truncation": None}, f, ensure_ascii=False)
  if model_max_length is not None:
    path = os.path.join(dst, "tokenizer_config.json")
    config = _read_json(path) if os.path.exists(path) else {"tokenizer_class": "BertTokenizer"}
    outputs.write_json(path, {**config, "model_max_length": model_max_length})


# ---------------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m physbert_jax.convert", description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  to_hf = sub.add_parser("to-hf", help="workdir checkpoint -> transformers / sentence-transformers folder")
  to_hf.add_argument("--workdir", required=True)
  which = to_hf.add_mutually_exclusive_group()
  which.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  which.add_argument("--best", action="store_true", help="the step named in workdir/best.json")
  to_hf.add_argument("--out", required=True)
  to_hf.add_argument("--pooling", choices=("mean", "cls", "mean_no_special"), help="default: the run's")
  to_hf.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
  from_hf = sub.add_parser("from-hf", help="BERT / sentence-transformers folder -> physbert-jax workdir")
  from_hf.add_argument("--hf", required=True, help="a local folder (nothing is downloaded)")
  from_hf.add_argument("--out", required=True)
  from_hf.add_argument("--pooling", choices=("mean", "cls", "mean_no_special"), help="default: the folder's")
  from_hf.add_argument("--overwrite", action="store_true", help="replace an earlier import in --out")
  args = parser.parse_args(argv)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  absl_logging.set_verbosity(absl_logging.ERROR)   # Orbax warns about every read-only checkpoint it opens
  try:
    if args.command == "to-hf":
      if not is_workdir(args.workdir):
        raise FileNotFoundError(f"{args.workdir}: not a physbert-jax workdir (no config.json / checkpoints)")
      w = read_workdir(args.workdir, step=args.step, best=args.best)
      out = write_hf_folder(w, args.out, pooling=args.pooling, workdir=args.workdir, overwrite=args.overwrite)
      print(f"wrote {out} from {w.source}", file=sys.stderr)
    else:
      out = import_hf(args.hf, args.out, pooling=args.pooling, overwrite=args.overwrite)
      print(f"wrote {out}; train from it with --config.init_from={out}", file=sys.stderr)
  except (OSError, ValueError, KeyError) as e:
    if outputs.is_disk_full(e):
      sys.exit(f"convert {args.command}: no space left on the device while writing {args.out}; nothing was "
               "written. Free space and rerun")
    sys.exit(f"convert {args.command}: {e}")


if __name__ == "__main__":
  with outputs.user_errors():   # bad input or a full disk: one line naming the file, not a traceback
    main()
