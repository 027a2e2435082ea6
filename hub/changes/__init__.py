"""What agents changed in the project's files, kept apart from the user's git.

``shadow``   a project's shadow git store in the data directory: snapshots, diffs, restoring
``tracker``  the hook around each writing tool call, and an agent's changes read back as a diff
``rewind``   putting back what an agent (and its descendants) changed, refused on a later edit
``proposed`` the diff an fs write would make, shown before it runs (the ``before_write`` checkpoint)
``worktrees`` isolated children's git worktrees: made from the parent's files, merged back, removed
``travel``   the project's files to a Ray node that does not share them, and an agent's work back (git bundles)
"""
