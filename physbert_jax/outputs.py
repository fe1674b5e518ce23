"""Where commands write: a command replaces only what it wrote itself, and never leaves half an output behind.

Every output folder a command publishes carries a marker, `.physbert-output.json` = {"stage": ...}. Before any work
starts, `check_out` refuses an --out that

  * is a plain file, or
  * is a folder holding anything without this stage's marker (the user's data, another stage's output, an input),
    naming what is there, or
  * holds an earlier output of this same stage, unless the command was given --overwrite (or --force).

Folder outputs are built in a staging folder beside --out (`.NAME.tmp-XXXX`, same file system) and renamed into
place when complete (`publish_dir`). A staging folder records its owner (host and pid); a rerun removes the
staging folders of its --out whose owner on this host is dead (a killed or disk-full run), so gigabytes of
half-written shards do not stay behind. A full disk is reported as such (`DiskFullError`), after the staging folder
is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
from typing import Iterator

MARKER = ".physbert-output.json"
_OWNER = ".owner.json"


class OutputError(ValueError):
  """An --out that this command must not write to; the message names it and the fix."""


class DiskFullError(OSError):
  """No space left while writing an output; the partial output was removed."""

  def __str__(self) -> str:
    return self.strerror or super().__str__()


def _marker_stage(path: str) -> str | None:
  try:
    with open(os.path.join(path, MARKER), encoding="utf-8") as f:
      return json.load(f).get("stage")
  except (OSError, ValueError, AttributeError):
    return None


def check_out(out: str, stage: str, overwrite: bool = False, flag: str = "--out") -> None:
  """Refuse an output path this stage may not write (see the module doc); creates nothing."""
  if not os.path.lexists(out):
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
      parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
      raise OutputError(f"{flag} {out}: {parent} is a file, not a folder; choose another path")
    return
  if os.path.islink(out):   # publishing renames --out itself: the link would be replaced, not its target written
    raise OutputError(f"{flag} {out} is a symbolic link; nothing was changed. Give the folder's real path "
                      f"({os.path.realpath(out)})")
  if not os.path.isdir(out):
    raise OutputError(f"{flag} {out} is a file, not a folder; nothing was changed. Choose a new folder path")
  # Another process's marker being written (array tasks claim one folder together) is not a foreign file.
  names = sorted(n for n in os.listdir(out) if n != MARKER and not n.startswith(f".{MARKER}."))
  own = _marker_stage(out)
  if own == stage:
    if names and not overwrite:
      raise OutputError(f"{flag} {out} holds an earlier output of {stage}; nothing was changed. Pass --overwrite to "
                        "replace it, or choose another folder")
    return
  if names or own is not None:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    what = f"output of {own}" if own else "files this command did not write"
    raise OutputError(f"{flag} {out} holds {what} ({shown or MARKER}); nothing was changed. Choose a new or empty "
                      "folder")


def mark(directory: str, stage: str) -> None:
  """Write the marker that says `directory` is `stage`'s output."""
  write_json(os.path.join(directory, MARKER), {"stage": stage})


def _owner_alive(staging: str) -> bool | None:
  """True/False for a staging folder made on this host by a live/dead process; None when unknown."""
  try:
    with open(os.path.join(staging, _OWNER)) as f:
      owner = json.load(f)
  except (OSError, ValueError):
    return None
  if owner.get("host") != socket.gethostname():
    return None
  try:
    os.kill(int(owner["pid"]), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, KeyError, ValueError, TypeError):
    return True
  return True


def remove_stale_staging(out: str) -> list[str]:
  """Remove the staging folders of `out` left by dead processes on this host; returns what was removed."""
  out = os.path.abspath(out)
  parent, prefix = os.path.dirname(out), f".{os.path.basename(out)}.tmp-"
  removed = []
  if not os.path.isdir(parent):
    return removed
  for name in sorted(os.listdir(parent)):
    path = os.path.join(parent, name)
    if name.startswith(prefix) and os.path.isdir(path) and _owner_alive(path) is False:
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
  return removed


def staging_dir(out: str) -> str:
  """A fresh staging folder next to `out` (same file system, so `publish_dir` is a rename), stale ones removed."""
  out = os.path.abspath(out)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  for path in remove_stale_staging(out):
    print(f"removed {path}: the staging folder of an earlier run that did not finish")
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.tmp-")
  try:
    os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; the published folder is shared with other jobs and users.
    with open(os.path.join(tmp, _OWNER), "w") as f:
      json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return tmp


def publish_dir(tmp: str, out: str, stage: str, overwrite: bool = False) -> None:
  """Move the finished staging folder `tmp` to `out`, marked as `stage`'s output.

  `out` is checked again (check_out), so a folder that appeared during the run is not replaced. A rename cannot
  replace a non-empty folder, so an earlier output of this stage is first renamed aside: readers see the old
  complete folder, briefly none, then the new complete one, never a mixture.
  """
  out = os.path.abspath(out)
  with contextlib.suppress(FileNotFoundError):
    os.remove(os.path.join(tmp, _OWNER))
  mark(tmp, stage)
  try:
    check_out(out, stage, overwrite)
  except OutputError:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  old = None
  if os.path.exists(out):
    old = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.old-")
    os.replace(out, os.path.join(old, "d"))
  os.replace(tmp, out)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def is_disk_full(e: BaseException) -> bool:
  """A full disk, as Python (OSError ENOSPC) or a native writer reports it (ArrayRecord's RuntimeError, tokenizers'
  bare Exception: both carry the C library's "No space left on device")."""
  return (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or (
      isinstance(e, Exception) and "No space left on device" in str(e))


@contextlib.contextmanager
def staged(out: str, stage: str, overwrite: bool = False) -> Iterator[str]:
  """`with staged(out, stage) as tmp:` write into tmp; published to `out` when the block succeeds. On any failure
  the staging folder is removed; a full disk becomes DiskFullError naming `out`."""
  check_out(out, stage, overwrite)
  tmp = None
  try:
    tmp = staging_dir(out)
    yield tmp
  except BaseException as e:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
    if is_disk_full(e):
      raise DiskFullError(errno.ENOSPC, f"no space left on the device while writing {out}; the partial output "
                                        "was removed. Free space (or choose another --out) and rerun") from e
    raise
  try:
    publish_dir(tmp, out, stage, overwrite)
  except OSError as e:   # the marker did not fit
    shutil.rmtree(tmp, ignore_errors=True)
    if is_disk_full(e):
      raise DiskFullError(errno.ENOSPC, f"no space left on the device while writing {out}; the partial output "
                                        "was removed. Free space (or choose another --out) and rerun") from e
    raise


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yield a temp path next to `path`; rename it to `path` if the block succeeds, delete it if not.

  The temp name starts with '.' and ends in '.tmp', so readers that match *.jsonl.gz or *.array_record never see it.
  """
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; outputs are read by other users' jobs.
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_json(path: str, obj, indent: int | None = 2, sort_keys: bool = False) -> None:
  with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    f.write("\n")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
  """For a command's main(): a bad input, a refused --out or a full disk ends the command with its one-line message
  (`error: ...`, exit status 1), not a traceback. The messages name the file and the fix."""
  try:
    yield
  except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
          DiskFullError) as e:
    raise SystemExit(f"error: {e}") from None
  except Exception as e:
    if is_disk_full(e):
      raise SystemExit(f"error: no space left on the device ({getattr(e, 'filename', None) or e}); free space "
                       "and rerun") from None
    raise
