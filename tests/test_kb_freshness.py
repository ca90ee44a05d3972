"""Every reader sees the knowledge base on disk now: a base deleted or re-created by another
process is noticed on the next use (a stat), never answered from the old copy (issue 15, item 1)."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kbqa.config import Settings
from kbqa.errors import KnowledgeBaseError
from kbqa.service import KbqaService
from tests.test_store import fake_embeddings

REPO = Path(__file__).resolve().parents[1]
OLD = "# 旧制度\n\n旧版员工每年享有五天带薪年假，由行政部登记。\n"
NEW = "# 新制度\n\n新版员工每年享有十二天带薪年假，由人事部登记。\n"


def _service(home: Path) -> KbqaService:
    return KbqaService(Settings(home=home, retrieval_mode="bm25"), embeddings=fake_embeddings())


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def _names(service: KbqaService, kb: str) -> list[str]:
    return [Path(r.source).name for r in service.knowledge_base(kb).documents()]


def test_a_base_recreated_by_another_service_is_reopened(tmp_path: Path) -> None:
    server, cli = _service(tmp_path / "home"), _service(tmp_path / "home")
    server.ingest([_write(tmp_path / "a", "old.md", OLD)], "kbb")
    assert _names(server, "kbb") == ["old.md"]
    cli.delete_knowledge_base("kbb")
    cli.ingest([_write(tmp_path / "b", "new.md", NEW)], "kbb")
    assert _names(server, "kbb") == ["new.md"]
    sources = [Path(d.metadata["source"]).name for d in server.retrieve("员工每年享有几天带薪年假？", "kbb")]
    assert sources == ["new.md"]
    # a write through the reopened base works (the stale one wrote into the new folder and
    # broke with "index.1.faiss is missing")
    server.ingest_uploads("kbb", [("up.md", "# 上传\n\n上传的文件说明报销流程。\n".encode())])
    assert sorted(_names(server, "kbb")) == ["new.md", "up.md"]
    assert sorted(_names(cli, "kbb")) == ["new.md", "up.md"]


def test_a_base_deleted_elsewhere_is_missing_not_served(tmp_path: Path) -> None:
    server, cli = _service(tmp_path / "home"), _service(tmp_path / "home")
    server.ingest([_write(tmp_path / "a", "old.md", OLD)], "kbb")
    cli.delete_knowledge_base("kbb")
    with pytest.raises(KnowledgeBaseError, match="does not exist"):
        server.knowledge_base("kbb")
    with pytest.raises(KnowledgeBaseError, match="does not exist"):
        server.retrieve("带薪年假", "kbb")


def test_an_unchanged_base_is_reused_and_writes_are_seen(tmp_path: Path) -> None:
    server, cli = _service(tmp_path / "home"), _service(tmp_path / "home")
    server.ingest([_write(tmp_path / "a", "old.md", OLD)], "kbb")
    first = server.knowledge_base("kbb")
    cli.ingest([_write(tmp_path / "b", "new.md", NEW)], "kbb")  # same base, a new generation
    assert server.knowledge_base("kbb") is first  # no reopen for a write
    assert sorted(_names(server, "kbb")) == ["new.md", "old.md"]
    hits = server.retrieve("新版员工每年享有几天带薪年假？", "kbb")
    assert Path(hits[0].metadata["source"]).name == "new.md"


def test_a_stale_base_stays_readable_by_a_request_still_holding_it(tmp_path: Path) -> None:
    server, cli = _service(tmp_path / "home"), _service(tmp_path / "home")
    server.ingest([_write(tmp_path / "a", "old.md", OLD)], "kbb")
    held = server.retriever("kbb")  # a request that began before the delete
    cli.delete_knowledge_base("kbb")
    cli.ingest([_write(tmp_path / "b", "new.md", NEW)], "kbb")
    assert _names(server, "kbb") == ["new.md"]  # the server moved on ...
    assert [Path(d.metadata["source"]).name for d in held.invoke("带薪年假")] == ["old.md"]
    connection = held.kb._conn
    del held
    gc.collect()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):  # ... closed once let go
        connection.execute("SELECT 1")


def test_a_base_recreated_by_the_cli_in_another_process(tmp_path: Path) -> None:
    """The repro with a real second process: it deletes and re-creates the base."""
    home = tmp_path / "home"
    server = _service(home)
    server.ingest([_write(tmp_path / "a", "old.md", OLD)], "kbb")
    assert _names(server, "kbb") == ["old.md"]
    script = textwrap.dedent(f"""
        from pathlib import Path
        from kbqa.config import Settings
        from kbqa.service import KbqaService
        from tests.test_store import fake_embeddings
        cli = KbqaService(Settings(home=Path({str(home)!r})), embeddings=fake_embeddings())
        cli.delete_knowledge_base("kbb")
        folder = Path({str(tmp_path / "b")!r}); folder.mkdir()
        (folder / "new.md").write_text({NEW!r}, encoding="utf-8")
        cli.ingest([folder / "new.md"], "kbb")
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO)
    assert _names(server, "kbb") == ["new.md"]


def test_an_upload_to_a_base_deleted_meanwhile_fails_cleanly_and_creates_nothing(
        tmp_path: Path) -> None:
    """The CI failure of stop 22: a job held the base, the CLI deleted it, and the job's upload
    re-made the folder and an empty manifest, so every later open said "no such table: meta"."""
    from kbqa.kb import folders
    from kbqa.kb.uploads import ingest_uploads

    server, cli = _service(tmp_path / "home"), _service(tmp_path / "home")
    server.ingest([_write(tmp_path / "a", "old.md", OLD)], "kbb")
    held = server.knowledge_base("kbb")  # the job took the base before the delete
    cli.delete_knowledge_base("kbb")
    outcomes = ingest_uploads(held, [("up.md", "# 上传\n\n报销流程说明。\n".encode())],
                              max_file_mb=10)
    assert [o.status for o in outcomes] == ["failed"]
    assert "deleted" in outcomes[0].error and str(tmp_path) not in outcomes[0].error
    root = server.settings.kb_root
    assert not (root / "kbb").exists() and not folders.exists(root, "kbb")
    cli.ingest([_write(tmp_path / "b", "new.md", NEW)], "kbb")  # the name is free again
    assert _names(server, "kbb") == ["new.md"]


def test_a_write_through_a_base_re_created_meanwhile_is_refused_and_the_new_base_kept(
        tmp_path: Path) -> None:
    server, cli = _service(tmp_path / "home"), _service(tmp_path / "home")
    server.ingest([_write(tmp_path / "a", "old.md", OLD)], "kbb")
    held = server.knowledge_base("kbb")
    cli.delete_knowledge_base("kbb")
    cli.ingest([_write(tmp_path / "b", "new.md", NEW)], "kbb")
    with pytest.raises(KnowledgeBaseError, match="re-created"):
        held.ingest([_write(tmp_path / "c", "late.md", "# 迟到\n\n迟到的文件。\n")])
    assert _names(cli, "kbb") == ["new.md"]
    assert _names(server, "kbb") == ["new.md"]


def test_opening_a_missing_manifest_never_creates_one(tmp_path: Path) -> None:
    from kbqa.kb import manifest

    (tmp_path / "kbb").mkdir()
    with pytest.raises(KnowledgeBaseError, match="kbb"):
        manifest.connect(tmp_path / "kbb" / manifest.DB_FILENAME)
    assert list((tmp_path / "kbb").iterdir()) == []


def test_a_base_left_with_an_empty_manifest_by_an_older_kbqa_is_named_and_deletable(
        tmp_path: Path) -> None:
    service = _service(tmp_path / "home")
    folder = service.settings.kb_root / "kbb"
    folder.mkdir(parents=True)
    sqlite3.connect(folder / "kb.sqlite3").close()  # what the racing write left behind
    with pytest.raises(KnowledgeBaseError, match="empty manifest.*kbqa kb remove --kb kbb"):
        service.knowledge_base("kbb")
    service.delete_knowledge_base("kbb")
    assert not folder.exists()
