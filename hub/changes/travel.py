"""The project's files to a node that does not share them, and an agent's work back, as git bundles.

With ``execution.engine: ray``, a tool host on a node that does not see the hub's files (or one
whose template says ``placement: {files: copy}``) works in a copy of the project of its own.
:meth:`GitTravel.pack` (on the hub) takes the files as they are, uncommitted changes and untracked
files included, with the rule a worktree starts from (:func:`~dispatch.hub.changes.worktrees.commit_files`),
into a commit of no parent (its *base*, only the files travel, not the history) and bundles it.
:meth:`GitTravel.unpack` (on the node) checks that bundle out into a folder of the tool host's own,
with a git directory beside it (never inside the files the agent sees), and makes the folders of
the agent's write scope that git does not carry (empty ones). When the agent ends,
:meth:`GitTravel.pack_back` (on the node) commits its files on the base, by the same rule, and
bundles that commit alone; :meth:`GitTravel.receive` (on the hub) adds it to the project's
repository (no ref is written: the commit is merged by its id, as a worktree child's work is,
:meth:`~dispatch.hub.changes.worktrees.Worktrees.merge_commit`). Files git ignores do not travel.
Every method blocks: call it in a worker thread.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from dispatch.hub.changes.worktrees import GitTree, commit_files, discover, run_git, temporary_index
from dispatch.hub.errors import UserError
from dispatch.hub.mounts.hosts import Packed

__all__ = ["GitTravel"]

_FILES, _GIT = "files", "git"
"""In a tool host's folder on the node: the project's files (its root), and their git directory."""


def _need_git(where: str) -> None:
    if shutil.which("git") is None:
        raise UserError(f"copying the project's files to a Ray node needs git, which is not installed {where}")


def _bundle(git_dir: Path, commit: str, exclude: str | None) -> bytes:
    """A bundle of ``commit`` (less what ``exclude`` has)."""
    with tempfile.TemporaryDirectory(prefix="dispatch-bundle-") as folder:
        env = {"GIT_DIR": str(git_dir)}
        temporary = f"refs/dispatch/travel/{uuid.uuid4().hex}"
        run_git(["update-ref", temporary, commit], env=env)
        try:
            out = Path(folder) / "files.bundle"
            wanted = [f"{exclude}..{temporary}"] if exclude else [temporary]
            run_git(["bundle", "create", "--quiet", str(out), *wanted], env=env)
            return out.read_bytes()
        finally:
            run_git(["update-ref", "-d", temporary], env=env, ok=True)


def _unbundle(git_dir: Path, bundle: bytes) -> str:
    """Add the bundle's objects to the repository at ``git_dir``; its one commit."""
    with tempfile.TemporaryDirectory(prefix="dispatch-bundle-") as folder:
        path = Path(folder) / "files.bundle"
        path.write_bytes(bundle)
        listed = run_git(["bundle", "unbundle", str(path)], env={"GIT_DIR": str(git_dir)})
        return listed.split()[0]


@dataclass(frozen=True)
class GitTravel:
    """Files to a node and back by git bundles (the :class:`~dispatch.hub.mounts.hosts.FileTravel`
    the Ray engine is given)."""

    def pack(self, root: Path) -> Packed:
        """On the hub: the files of the project at ``root`` now, bundled."""
        _need_git("on the hub")
        found = discover(root)
        if found is None:
            raise UserError(
                f"placement.files: copying the project's files to a Ray node needs git, and {root} is not in a "
                "git repository (git init it, or use nodes that share the files)"
            )
        tree, subdir = found
        env = {"GIT_DIR": str(tree.git_dir)}
        start = commit_files(tree, None)
        base = run_git(
            ["commit-tree", f"{start}^{{tree}}", "-m", "dispatch: the files a tool host starts from"], env=env
        )
        base = base.strip()
        return Packed(_bundle(tree.git_dir, base, None), base, subdir)

    def unpack(self, packed: Packed, folder: Path) -> Path:
        """On the node: the files of ``packed`` checked out under ``folder``; the agent's root there."""
        _need_git("on this Ray node")
        tree = GitTree(folder / _FILES, folder / _GIT)
        tree.top.mkdir(parents=True)
        run_git(["init", "--quiet", "--bare", str(tree.git_dir)])
        run_git(["config", "core.bare", "false"], env={"GIT_DIR": str(tree.git_dir)})
        _unbundle(tree.git_dir, packed.bundle)
        with temporary_index(tree, None) as env:
            run_git(["read-tree", packed.base], env=env)
            run_git(["checkout-index", "--all", "--force"], env=env, cwd=tree.top)
            shutil.copyfile(env["GIT_INDEX_FILE"], tree.git_dir / "index")  # git's stat cache for pack_back
        root = tree.top / packed.subdir if packed.subdir else tree.top
        for name in packed.folders:  # its scope's folders, empty ones too, as on the hub
            folder_path = (root / name).resolve()
            if folder_path.is_relative_to(tree.top.resolve()):
                folder_path.mkdir(parents=True, exist_ok=True)
        return root

    def pack_back(self, folder: Path, base: str) -> bytes:
        """On the node: the files under ``folder`` now, committed on ``base`` and bundled (that commit alone)."""
        tree = GitTree(folder / _FILES, folder / _GIT)
        return _bundle(tree.git_dir, commit_files(tree, base), base)

    def receive(self, root: Path, bundle: bytes) -> str:
        """On the hub: the work a tool host sent back, added to the repository of ``root``; its commit."""
        found = discover(root)
        if found is None:
            raise UserError(f"the work that came back from a Ray node: {root} is no longer in a git repository")
        return _unbundle(found[0].git_dir, bundle)
