"""arXiv's physics categories, written once from arXiv's category taxonomy (arxiv.org/category_taxonomy).

Physics group archives: astro-ph, cond-mat, gr-qc, hep-ex, hep-lat, hep-ph, hep-th, math-ph, nlin, nucl-ex,
nucl-th, physics, quant-ph. Papers from before 2009 (astro-ph) and 2004 (cond-mat) may carry the bare archive
code; papers from 1992-1998 may carry a legacy archive that arXiv later folded into physics.* or nlin.* (the
mapping arXiv applies is LEGACY_ALIASES). math-ph is also listed as math.MP: a paper whose primary is math-ph
is physics, one whose primary is math.MP is not (arXiv lists math-ph as the canonical name).

PhysBERT's labelling (paper Sec. 3.2): astro-ph.*, cond-mat.* and hep-* are merged into one class each, every
other physics category is its own class, and classes with fewer than 5,000 papers are dropped (21 remain on the
full arXiv). The subdomain tasks split astro-ph (6 + bare = 7), cond-mat (9 + bare = 10) and hep (4).
"""

from __future__ import annotations

ASTRO_PH = ("astro-ph", "astro-ph.CO", "astro-ph.EP", "astro-ph.GA", "astro-ph.HE", "astro-ph.IM", "astro-ph.SR")
COND_MAT = ("cond-mat", "cond-mat.dis-nn", "cond-mat.mes-hall", "cond-mat.mtrl-sci", "cond-mat.other",
            "cond-mat.quant-gas", "cond-mat.soft", "cond-mat.stat-mech", "cond-mat.str-el", "cond-mat.supr-con")
HEP = ("hep-ex", "hep-lat", "hep-ph", "hep-th")
NLIN = ("nlin.AO", "nlin.CD", "nlin.CG", "nlin.PS", "nlin.SI")
NUCL = ("nucl-ex", "nucl-th")
PHYSICS = tuple(f"physics.{s}" for s in (
    "acc-ph", "ao-ph", "app-ph", "atm-clus", "atom-ph", "bio-ph", "chem-ph", "class-ph", "comp-ph", "data-an",
    "ed-ph", "flu-dyn", "gen-ph", "geo-ph", "hist-ph", "ins-det", "med-ph", "optics", "plasm-ph", "pop-ph",
    "soc-ph", "space-ph"))
OTHER = ("gr-qc", "math-ph", "quant-ph")

# Every code a physics paper's primary category can have today (bare astro-ph / cond-mat included).
PHYSICS_CATEGORIES: tuple[str, ...] = ASTRO_PH + COND_MAT + HEP + NLIN + NUCL + PHYSICS + OTHER

# Legacy archives -> the category arXiv maps them to (arXiv's "subsumed archives").
LEGACY_ALIASES = {
    "acc-phys": "physics.acc-ph", "ao-sci": "physics.ao-ph", "atom-ph": "physics.atom-ph",
    "bayes-an": "physics.data-an", "chem-ph": "physics.chem-ph", "plasm-ph": "physics.plasm-ph",
    "adap-org": "nlin.AO", "chao-dyn": "nlin.CD", "comp-gas": "nlin.CG", "patt-sol": "nlin.PS",
    "solv-int": "nlin.SI", "mtrl-th": "cond-mat.mtrl-sci", "supr-con": "cond-mat.supr-con",
    # legacy archives outside physics, so that they are recognised and rejected rather than unknown
    "alg-geom": "math.AG", "dg-ga": "math.DG", "funct-an": "math.FA", "q-alg": "math.QA", "cmp-lg": "cs.CL",
}

SUBDOMAINS = {"astro-ph": ASTRO_PH, "cond-mat": COND_MAT, "hep": HEP}
MIN_CLASS_PAPERS = 5_000   # the paper's threshold for a class to be kept, an absolute count on the full arXiv
# The paper's thresholds and sizes are absolute numbers for its corpus, ~1.2M physics papers (Sec. 3.1). On a
# smaller corpus they drop most classes (the 116,738-paper sample keeps 8 of 35 at 5,000), so the pair builders
# scale them by the corpus's size by default; `--min-class-papers 5000` (or `--num-pairs ...`) gives the paper's.
PAPER_PHYSICS_PAPERS = 1_200_000


def scaled(paper_value: int, physics_papers: int) -> int:
  """A threshold or size the paper gives for its ~1.2M-paper corpus, scaled to a corpus of `physics_papers`
  (rounded up, at least 1): 5,000 papers a class -> 487 on the 116,738-paper sample."""
  return max(1, -(-paper_value * physics_papers // PAPER_PHYSICS_PAPERS))


def normalize(code: str) -> str:
  """A category code as arXiv lists it today (legacy archive names mapped)."""
  code = code.strip()
  return LEGACY_ALIASES.get(code, code)


def primary(categories: str) -> str:
  """The primary category of a snapshot record's `categories` field (the first code), normalised."""
  parts = categories.split()
  if not parts:
    raise ValueError("empty categories field")
  return normalize(parts[0])


def is_physics(code: str) -> bool:
  return normalize(code) in _PHYSICS_SET


def merged_class(code: str) -> str:
  """PhysBERT's class: astro-ph.*, cond-mat.*, hep-* merged; any other physics category is its own class."""
  code = normalize(code)
  if code not in _PHYSICS_SET:
    raise ValueError(f"{code!r} is not a physics category")
  for name, members in SUBDOMAINS.items():   # the merged classes are the subdomains
    if code in members:
      return name
  return code


def subdomain(code: str) -> tuple[str, str] | None:
  """(domain, subcategory) for the subdomain tasks, e.g. ('cond-mat', 'cond-mat.str-el'); None outside them."""
  code = normalize(code)
  for name, members in SUBDOMAINS.items():
    if code in members:
      return name, code
  return None


_PHYSICS_SET = frozenset(PHYSICS_CATEGORIES)
