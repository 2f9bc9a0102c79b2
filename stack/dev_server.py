"""The command line of the Temporal dev server that `make run` starts (stack/supervisor.py)
and the benchmarks start (bench/bench_stack.py): one place, so the benchmarks measure the
server `make run` runs.

Two settings differ from `temporal server start-dev`'s own defaults, each for a reason a
long-running local stack has and the CLI's quick start does not:

- **Its search attribute cache is kept** (`KEEP_SEARCH_ATTRIBUTE_CACHE`). The CLI turns it
  off so that attributes created while the server runs work at once; the server then reads
  the cluster's attributes from its database on every use of one. Ours are all registered
  by `--search-attribute` before the server starts, so it can cache them as a production
  server does. Without the cache a case cost the server 45 database reads (a bare workflow
  11); with it, none (README "What `make run` starts").
- **Its SQLite file is written ahead (WAL)**. The default rollback journal syncs the disk
  several times per transaction and blocks readers (the Web UI, the console's queue) while
  it writes; the write-ahead log syncs once per transaction, with the same durability
  (`synchronous` stays FULL), and lets them read meanwhile.
"""

from __future__ import annotations

from pathlib import Path

from core import binaries, search_attributes

KEEP_SEARCH_ATTRIBUTE_CACHE = [
    "--dynamic-config-value", "system.forceSearchAttributesCacheRefreshOnRead=false"]
WRITE_AHEAD_LOG = ["--sqlite-pragma", "journal_mode=wal"]


def argv(*, port: int, ui_port: int, db_file: Path, namespace: str) -> list[str]:
    """`temporal server start-dev` on 127.0.0.1 with its state in `db_file`, our search
    attributes registered, and the two settings above."""
    return [
        binaries.temporal_cli(), "server", "start-dev",
        "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(ui_port),
        "--db-filename", str(db_file), "--namespace", namespace, "--log-level", "warn",
        *search_attributes.cli_flags(), *KEEP_SEARCH_ATTRIBUTE_CACHE, *WRITE_AHEAD_LOG,
    ]
