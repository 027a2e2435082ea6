"""Worktree isolation: a child agent working in its own ``git worktree``, merged back when it reports.

A child summoned with ``isolation: worktree`` gets a worktree of the repository its parent works
in, on a branch of its own (``dispatch/<agent id>``), in a folder beside Dispatch's data directory
(``<data dir>-worktrees/<agent id>``: never inside the project, and not inside the data directory,
which the sandbox hides from every agent). It starts from the parent's files as they are, uncommitted
changes and untracked files included: a commit built from the parent's working tree with an index of
ours (``GIT_INDEX_FILE``), so the user's index, HEAD, stash and working tree are never written.

When the child reports, its work is merged into the parent's files with a three-way merge of
commits (``git merge-tree --write-tree``, Git 2.38 or later): the base it started from, the
parent's files now, the child's files now. A clean merge writes the files that differ into the
parent's tree; a conflict writes nothing and hands back the conflicting files with both versions
(each cut at :data:`MAX_VERSION_CHARS`), never conflict markers in the parent's files.

Each worktree is recorded in the data directory (``worktrees/<agent id>.json``, made before git
creates anything) and removed, with its branch, after its merge or discard; a hub that starts
removes what a crashed one left (:meth:`Worktrees.clean_leftovers`). Every git command here runs
with hooks off, and on the child's worktree with its git directory named explicitly (the ``.git``
file the child could see is never followed). Every method blocks: call it in a worker thread.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from dispatch.hub.errors import RunError, UserError

__all__ = [
    "BRANCH_PREFIX",
    "MAX_VERSION_CHARS",
    "Conflict",
    "GitTree",
    "MergeResult",
    "Worktree",
    "Worktrees",
    "commit_files",
    "diff_commits",
    "discover",
    "run_git",
    "temporary_index",
]

BRANCH_PREFIX = "dispatch/"
"""The branches of children's worktrees: ``dispatch/<agent id>``."""

MAX_VERSION_CHARS = 4000
"""How much of each version of a conflicting file the parent is handed."""

_SETTINGS = ("core.hooksPath=/dev/null", "core.fsmonitor=false", "gc.auto=0", "advice.detachedHead=false")
_OPTIONS = tuple(part for setting in _SETTINGS for part in ("-c", setting))
_IDENTITY = {
    "GIT_AUTHOR_NAME": "dispatch",
    "GIT_AUTHOR_EMAIL": "dispatch@localhost",
    "GIT_COMMITTER_NAME": "dispatch",
    "GIT_COMMITTER_EMAIL": "dispatch@localhost",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}


@dataclass(frozen=True)
class Worktree:
    """One child's worktree: where it is, its branch, and the commit it started from."""

    agent_id: str
    common_dir: str
    """The repository's own git directory (shared by all its worktrees)."""
    git_dir: str
    """The worktree's git directory (``<common dir>/worktrees/<name>``)."""
    path: str
    branch: str
    base: str
    subdir: str
    """Where the parent's root lies in its tree ("" at the top): the child's root is the same in its worktree."""

    @property
    def root(self) -> Path:
        """The child's project root: the parent's, in the worktree."""
        return Path(self.path) / self.subdir if self.subdir else Path(self.path)


@dataclass(frozen=True)
class Conflict:
    """A file both the parent's tree and the child changed, differently: each version (None: deleted)."""

    path: str
    parent: str | None
    child: str | None


@dataclass(frozen=True)
class MergeResult:
    """What a merge did: the files written into the parent's tree, or the conflicts (nothing written)."""

    files: list[str]
    conflicts: list[Conflict]


@dataclass(frozen=True)
class GitTree:
    """A working tree as git sees it: its top folder and its git directory."""

    top: Path
    git_dir: Path


def run_git(
    args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, ok: bool = False
) -> str:
    git = shutil.which("git")
    if git is None:
        raise UserError("isolation: worktree needs git, which is not installed")
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(
        [git, *_OPTIONS, *args], capture_output=True, env={**base, **_IDENTITY, **(env or {})}, cwd=cwd, check=False
    )
    if done.returncode != 0 and not ok:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise RunError(f"git {args[0]} failed for a worktree: {lines[-1] if lines else done.returncode}")
    return done.stdout.decode(errors="surrogateescape")


def discover(root: Path) -> tuple[GitTree, str] | None:
    """The working tree ``root`` lies in and ``root``'s place in it, or None outside a git repository."""
    found = run_git(["rev-parse", "--show-toplevel", "--absolute-git-dir"], cwd=root, ok=True).splitlines()
    if len(found) != 2:
        return None
    top = Path(found[0]).resolve()
    subdir = root.resolve().relative_to(top).as_posix()
    return GitTree(top, Path(found[1])), "" if subdir == "." else subdir


@contextmanager
def temporary_index(tree: GitTree, seed: Path | None) -> Generator[dict[str, str]]:
    """An environment naming ``tree`` and an index of ours, started from a copy of ``seed`` (for
    git's stat cache: only the files changed since are hashed)."""
    handle, name = tempfile.mkstemp(prefix="dispatch-index-")
    os.close(handle)
    os.unlink(name)
    if seed is not None and seed.is_file():
        shutil.copyfile(seed, name)
    try:
        yield {"GIT_DIR": str(tree.git_dir), "GIT_WORK_TREE": str(tree.top), "GIT_INDEX_FILE": name}
    finally:
        Path(name).unlink(missing_ok=True)


def commit_files(tree: GitTree, parent: str | None) -> str:
    """A commit of ``tree``'s files now, as ``git add -A`` takes them (its ignore files honoured),
    on ``parent`` (None: on its HEAD, when there is one). Built with an index of ours: the tree's
    own index, HEAD, stash and files are never written."""
    with temporary_index(tree, tree.git_dir / "index") as env:
        if parent is None:
            head = run_git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], env=env, ok=True).strip()
            parent = head or None
        if parent is not None and not (tree.git_dir / "index").is_file():
            run_git(["read-tree", parent], env=env)  # its tracked files, ignored ones too
        run_git(["add", "-A", "--", "."], env=env, cwd=tree.top)
        written = run_git(["write-tree"], env=env).strip()
        parents = ["-p", parent] if parent is not None else []
        return run_git(["commit-tree", written, *parents, "-m", "dispatch: an agent's files"], env=env).strip()


def diff_commits(git_dir: Path, base: str, child: str) -> str:
    """The unified diff from commit ``base`` to ``child`` in the repository at ``git_dir``."""
    return run_git(["diff-tree", "-r", "-p", "--no-renames", base, child], env={"GIT_DIR": str(git_dir)})


class Worktrees:
    """Children's worktrees: recorded under ``records`` (in the data directory), made under ``place``."""

    def __init__(self, records: Path, place: Path) -> None:
        self.records = records
        self.place = place
        self._merging = threading.Lock()
        """One merge at a time: two children merging into one tree each see the other's result."""

    # ---- making one ------------------------------------------------------------------------------

    def create(self, agent_id: str, root: Path) -> Worktree:
        """A worktree for the child ``agent_id`` from the files of the tree ``root`` lies in now;
        UserError naming the field when ``root`` is not in a git repository."""
        found = discover(root)
        if found is None:
            raise UserError(f"isolation: worktree needs a git repository, and {root} is not in one")
        tree, subdir = found
        common = Path(run_git(["rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=tree.top).strip())
        base = commit_files(tree, None)
        path = self.place / agent_id
        branch = BRANCH_PREFIX + agent_id
        planned = Worktree(agent_id, str(common), "", str(path), branch, base, subdir)
        self._record(planned)  # before git makes anything: a crash from here on leaves a record
        try:
            self.place.mkdir(parents=True, exist_ok=True, mode=0o700)
            run_git(["--git-dir", str(common), "worktree", "add", "--quiet", "-b", branch, str(path), base])
            git_dir = run_git(["rev-parse", "--absolute-git-dir"], cwd=path).strip()  # before the child runs
        except (RunError, OSError):
            self.remove(planned)
            raise
        made = Worktree(agent_id, str(common), git_dir, str(path), branch, base, subdir)
        self._record(made)
        return made

    def _record(self, worktree: Worktree) -> None:
        self.records.mkdir(parents=True, exist_ok=True, mode=0o700)
        final = self.records / f"{worktree.agent_id}.json"
        temporary = final.with_suffix(".tmp")
        with open(temporary, "w") as out:
            json.dump(asdict(worktree), out)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(final)

    # ---- merging back ----------------------------------------------------------------------------

    def merge(self, worktree: Worktree, into: Path) -> MergeResult:
        """Merge what the child changed in ``worktree`` since it started into the tree ``into`` lies
        in: written there when clean, else nothing written and the conflicts returned."""
        with self._merging:
            child = commit_files(GitTree(Path(worktree.path), Path(worktree.git_dir)), worktree.base)
            return self._merge(worktree.agent_id, worktree.base, child, into)

    def merge_commit(self, agent_id: str, base: str, child: str, into: Path) -> MergeResult:
        """Merge what ``child`` (a commit on ``base``, in the repository of ``into``: an agent's
        work that came back from elsewhere) changed into the tree ``into`` lies in, as :meth:`merge`."""
        with self._merging:
            return self._merge(agent_id, base, child, into)

    def _merge(self, agent_id: str, base: str, child: str, into: Path) -> MergeResult:
        found = discover(into)
        if found is None:
            raise RunError(f"the merge of {agent_id}'s work: {into} is no longer in a git repository")
        target = found[0]
        if self._tree_of(target, child) == self._tree_of(target, base):
            return MergeResult([], [])
        parent = commit_files(target, base)
        out = run_git(
            ["merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", parent, child],
            env={"GIT_DIR": str(target.git_dir)},
            ok=True,
        )
        fields = out.split("\0")
        merged, names = fields[0].strip(), [f for f in fields[1:] if f]
        if names:
            conflicts = [Conflict(p, self._version(target, parent, p), self._version(target, child, p)) for p in names]
            return MergeResult([], conflicts)
        if len(merged) < 40:
            raise RunError(f"git merge-tree failed for the work of {agent_id}")
        return MergeResult(self._write(target, self._tree_of(target, parent), merged), [])

    def diff(self, worktree: Worktree) -> str:
        """The unified diff of what the child changed in its worktree since it started."""
        child = commit_files(GitTree(Path(worktree.path), Path(worktree.git_dir)), worktree.base)
        return diff_commits(Path(worktree.git_dir), worktree.base, child)

    def _tree_of(self, tree: GitTree, commit: str) -> str:
        return run_git(["rev-parse", f"{commit}^{{tree}}"], env={"GIT_DIR": str(tree.git_dir)}).strip()

    def _version(self, tree: GitTree, commit: str, path: str) -> str | None:
        env = {"GIT_DIR": str(tree.git_dir)}
        if not run_git(["ls-tree", "--name-only", commit, "--", path], env=env).strip():
            return None
        raw = run_git(["cat-file", "blob", f"{commit}:{path}"], env=env).encode(errors="surrogateescape")
        if b"\0" in raw[:8000]:
            return f"(a binary file of {len(raw)} bytes)"
        text = raw.decode(errors="replace")
        return text if len(text) <= MAX_VERSION_CHARS else text[:MAX_VERSION_CHARS] + "\n[... cut]"

    def _write(self, tree: GitTree, before: str, merged: str) -> list[str]:
        """Write into ``tree``'s files what differs between its tree ``before`` and ``merged``."""
        env = {"GIT_DIR": str(tree.git_dir)}
        raw = run_git(["diff-tree", "-r", "-z", "--no-renames", "--name-status", before, merged], env=env)
        fields = raw.split("\0")
        written: list[str] = []
        kept: list[str] = []
        for status, path in zip(fields[0::2], fields[1::2], strict=False):
            if not status:
                continue
            written.append(path)
            target = tree.top / path
            if status == "D":
                if target.is_symlink() or target.is_file():
                    target.unlink()
            else:
                if target.is_symlink() or (target.exists() and not target.is_dir()):
                    target.unlink()
                kept.append(path)
        if kept:
            with temporary_index(tree, None) as index:
                run_git(["read-tree", merged], env=index)
                payload = "\0".join(kept) + "\0"
                git = shutil.which("git") or "git"
                subprocess.run(
                    [git, *_OPTIONS, "checkout-index", "-f", "-z", "--stdin"],
                    input=payload.encode(errors="surrogateescape"),
                    env={**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **index},
                    capture_output=True,
                    check=True,
                    cwd=tree.top,
                )
        return written

    # ---- removing them -------------------------------------------------------------------------

    def remove(self, worktree: Worktree) -> None:
        """Remove the worktree, its branch and its record (each step whatever became of the others)."""
        common = ["--git-dir", worktree.common_dir]
        if Path(worktree.common_dir).is_dir():
            run_git([*common, "worktree", "remove", "--force", "--force", worktree.path], ok=True)
        shutil.rmtree(worktree.path, ignore_errors=True)
        if Path(worktree.common_dir).is_dir():
            run_git([*common, "worktree", "prune"], ok=True)
            run_git([*common, "branch", "-D", worktree.branch], ok=True)
        (self.records / f"{worktree.agent_id}.json").unlink(missing_ok=True)

    def leftovers(self) -> list[Worktree]:
        """The worktrees recorded and not removed (by a hub that crashed, or one running now)."""
        found: list[Worktree] = []
        for record in sorted(self.records.glob("*.json")) if self.records.is_dir() else []:
            try:
                found.append(Worktree(**json.loads(record.read_text())))
            except (OSError, ValueError, TypeError):
                record.unlink(missing_ok=True)
        return found

    def clean_leftovers(self) -> list[Worktree]:
        """Remove every recorded worktree and its branch; returns them."""
        found = self.leftovers()
        for worktree in found:
            if worktree.branch.startswith(BRANCH_PREFIX):
                self.remove(worktree)
        return found
