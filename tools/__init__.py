"""Tools of the source tree (not installed): the crash and compaction tortures.

Run them as ``python -m tools.crash_torture`` and ``python -m tools.compaction_torture``
(``--help`` for their options); :mod:`tools.common` holds what they share.
"""
