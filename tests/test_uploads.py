"""Uploaded files: safe names, stored inside the knowledge base, a failing file never stops a batch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kbqa.config import load_settings
from kbqa.kb.uploads import (
    MAX_NAME_BYTES,
    UploadError,
    files_folder,
    sanitize_filename,
    store_upload,
)
from kbqa.service import KbqaService
from tests.ui_support import DOC_TEXT


@pytest.mark.parametrize("raw, safe", [
    ("报告.txt", "报告.txt"),
    ("a/b/../报告.PDF", "报告.PDF"),
    ("C:\\Users\\me\\手册.md", "手册.md"),
    ("/etc/x.csv", "x.csv"),
    ("../../x.txt", "x.txt"),
    ("we<ird>:na|me?.txt", "we_ird__na_me_.txt"),
    ("con.txt", "_con.txt"),
    ("tab\tand\x00nul.txt", "tabandnul.txt"),
    ("  spaced name .md  ", "spaced name.md"),
])
def test_sanitize_keeps_a_safe_base_name(raw: str, safe: str) -> None:
    assert sanitize_filename(raw) == safe


@pytest.mark.parametrize("raw, reason", [
    ("../../etc/passwd", "no extension"),
    (".env.txt", "hidden"),
    ("dir/.hidden.md", "hidden"),
    ("..", "empty"),
    ("a/", "empty"),
    ("evil.exe", "not supported"),
    ("noext", "no extension"),
    (".txt", "hidden"),
])
def test_sanitize_refuses_unsafe_or_unsupported(raw: str, reason: str) -> None:
    with pytest.raises(UploadError, match=reason):
        sanitize_filename(raw)


@pytest.mark.parametrize("stem", [
    "长" * 300,                        # 3-byte characters
    "a" + "长" * 300,                  # the byte limit falls inside a character
    "ab" + "长" * 300,
    "é" * 150,                         # 2-byte characters
    "😀" * 80,                         # 4-byte characters
    "report " + "报告😀é" * 60,        # mixed widths
])
@pytest.mark.parametrize("suffix", ["txt", "PDF", "markdown"])
def test_long_names_are_shortened_on_character_boundaries(stem: str, suffix: str) -> None:
    """A name over MAX_NAME_BYTES keeps its suffix and the longest whole-character prefix of
    its stem that fits; a name that fits is kept as it is."""
    name = sanitize_filename(f"{stem}.{suffix}")
    kept, dot, kept_suffix = name.rpartition(".")
    assert dot and kept_suffix == suffix
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert "\ufffd" not in name and kept and stem.startswith(kept)  # whole characters, in order
    longer = stem[: len(kept) + 1]  # one more character would not fit
    assert len(f"{longer}.{suffix}".encode()) > MAX_NAME_BYTES
    assert sanitize_filename(name) == name  # already short enough: unchanged
    fits = kept[:-1]
    assert sanitize_filename(f"{fits}.{suffix}") == f"{fits}.{suffix}"


def test_store_writes_inside_the_folder_only(tmp_path: Path) -> None:
    folder = tmp_path / "files"
    path = store_upload(folder, "../../outside.txt", b"abc")
    assert path == folder / "outside.txt" and path.read_bytes() == b"abc"
    assert not (tmp_path / "outside.txt").exists()
    with pytest.raises(UploadError, match="limit"):
        store_upload(folder, "big.txt", b"x" * 11, max_bytes=10)
    with pytest.raises(UploadError, match="empty"):
        store_upload(folder, "empty.txt", b"")
    assert sorted(os.listdir(folder)) == ["outside.txt"]  # no temp files left behind


def test_symlink_target_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "link.txt").symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(UploadError, match="outside"):
        store_upload(folder, "link.txt", b"abc")
    assert not (tmp_path / "elsewhere.txt").exists()


def test_batch_goes_on_after_failures_and_files_live_in_the_kb(tmp_path: Path) -> None:
    service = KbqaService(load_settings())
    kb = service.create_knowledge_base("uploads")
    calls: list[tuple[int, int, str]] = []
    outcomes = service.ingest_uploads("uploads", [
        ("../secret/手册.md", DOC_TEXT.encode("utf-8")),
        (".hidden.txt", b"x"),
        ("binary.txt", bytes(range(256)) * 20),
        ("tool.exe", b"MZ"),
        ("价格.txt", "标准版每年九百九十元。".encode()),
    ], on_progress=lambda *a: calls.append(a))
    assert [o.status for o in outcomes] == ["added", "failed", "failed", "failed", "added"]
    assert all(o.error for o in outcomes if o.status == "failed")
    assert calls[0] == (0, 5, "../secret/手册.md") and calls[-1] == (5, 5, "")
    folder = files_folder(kb)
    assert sorted(p.name for p in folder.iterdir()) == ["价格.txt", "手册.md"]
    assert {d.filename for d in kb.documents()} == {"价格.txt", "手册.md"}
    assert all(Path(d.source).parent == folder.resolve() for d in kb.documents())

    # same bytes again: skipped; changed bytes: updated
    again = service.ingest_uploads("uploads", [("手册.md", DOC_TEXT.encode("utf-8")),
                                               ("价格.txt", "标准版每年一千元。".encode())])
    assert [o.status for o in again] == ["skipped", "updated"]

    # a broken re-upload keeps the previous, indexed version of the file
    broken = service.ingest_uploads("uploads", [("价格.txt", bytes(range(256)) * 20)])
    assert broken[0].status == "failed"
    assert (folder / "价格.txt").read_text(encoding="utf-8") == "标准版每年一千元。"

    source = next(d.source for d in kb.documents() if d.filename == "价格.txt")
    assert service.remove_document("uploads", source) >= 1
    assert not (folder / "价格.txt").exists()
    assert [d.filename for d in kb.documents()] == ["手册.md"]


def test_cli_kb_remove_deletes_the_uploaded_copy_too() -> None:
    """`kbqa kb remove DOC` goes through the service like the web app and server do."""
    from kbqa.cli import main

    service = KbqaService(load_settings())
    kb = service.create_knowledge_base("uploads")
    service.ingest_uploads("uploads", [("价格.txt", "标准版每年九百九十元。".encode())])
    stored = files_folder(kb) / "价格.txt"
    source = next(d.source for d in kb.documents())
    assert stored.is_file()
    assert main(["kb", "remove", source, "--kb", "uploads"]) == 0
    assert not stored.exists()
    assert KbqaService(load_settings()).knowledge_base("uploads").documents() == []


def _fake_service(home: Path) -> KbqaService:
    from kbqa.config import Settings
    from tests.test_store import fake_embeddings

    return KbqaService(Settings(home=home), embeddings=fake_embeddings())


def test_two_files_of_one_batch_with_the_same_name_never_replace_each_other(tmp_path: Path) -> None:
    service = _fake_service(tmp_path / "home")
    kb = service.create_knowledge_base("dups")
    first, second = "# 一\n\n第一份报告讲年假。\n", "# 二\n\n第二份报告讲报销。\n"
    outcomes = service.ingest_uploads("dups", [("dir1/report.md", first.encode()),
                                               ("dir2/report.md", second.encode())])
    assert [o.status for o in outcomes] == ["added", "failed"]
    assert "would both be stored as 'report.md'" in (outcomes[1].error or "")
    assert (files_folder(kb) / "report.md").read_text(encoding="utf-8") == first
    assert [d.chunks for d in kb.documents()] == [1]


def test_an_upload_staged_on_disk_is_copied_and_a_failed_update_keeps_the_old_file(
        tmp_path: Path) -> None:
    service = _fake_service(tmp_path / "home")
    kb = service.create_knowledge_base("disk")
    staged = tmp_path / "staged.bin"
    staged.write_bytes("标准版每年九百九十元。".encode())
    assert [o.status for o in service.ingest_uploads("disk", [("价格.txt", staged)])] == ["added"]
    staged.write_bytes(bytes(range(256)) * 20)  # a broken re-upload, from disk
    assert [o.status for o in service.ingest_uploads("disk", [("价格.txt", staged)])] == ["failed"]
    folder = files_folder(kb)
    assert (folder / "价格.txt").read_text(encoding="utf-8") == "标准版每年九百九十元。"
    assert sorted(p.name for p in folder.iterdir()) == ["价格.txt"]  # no backup or temp left


_CRASH_MID_INGEST = """
import os, signal, sys
from pathlib import Path
from kbqa.config import Settings
from kbqa.kb.store import KnowledgeBase
from kbqa.service import KbqaService
from tests.test_store import fake_embeddings
KnowledgeBase.ingest = lambda self, paths, **kw: os.kill(os.getpid(), signal.SIGKILL)
service = KbqaService(Settings(home=Path(sys.argv[1])), embeddings=fake_embeddings())
service.ingest_uploads("crash", [("lost.md", "# 丢失\\n\\n这份文件在入库前进程被杀。\\n".encode())])
"""


def test_a_file_left_by_a_crash_mid_ingest_is_swept_at_the_next_upload(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    home = tmp_path / "home"
    service = _fake_service(home)
    kb = service.create_knowledge_base("crash")
    service.ingest_uploads("crash", [("kept.md", "# 保留\n\n已入库的文件。\n".encode())])
    crashed = subprocess.run([sys.executable, "-c", _CRASH_MID_INGEST, str(home)],
                             cwd=Path(__file__).resolve().parents[1], check=False)
    assert crashed.returncode == -signal.SIGKILL
    folder = files_folder(kb)
    assert (folder / "lost.md").is_file()  # stored, never indexed: invisible to every reader
    assert [d.filename for d in kb.documents()] == ["kept.md"]
    old = (folder / "lost.md").stat().st_mtime - 3600
    for name in ("lost.md", "kept.md"):  # time passes: older than any store still waiting
        os.utime(folder / name, (old, old))
    fresh = store_upload(folder, "waiting.md", b"# x\n\nstored, its ingest waits for the lock\n")
    service.ingest_uploads("crash", [("next.md", "# 下一\n\n下一次上传。\n".encode())])
    assert sorted(p.name for p in folder.iterdir()) == ["kept.md", "next.md", fresh.name]
    assert sorted(d.filename for d in kb.documents()) == ["kept.md", "next.md"]


def test_a_photo_upload_is_read_by_ocr_and_cited_by_page_and_a_png_named_txt_is_refused() -> None:
    """The path the web app and the server take: a page photographed as PNG is indexed through
    OCR and retrieved with its page; the same bytes named .txt are refused, saying what they are."""
    import io

    from tests.doc_samples import render_page

    buffer = io.BytesIO()
    render_page(["售后服务", "星河扫地机器人R2的保修期为三年，电池保修一年。"], dpi=150,
                width_inches=5).save(buffer, format="PNG")
    service = KbqaService(load_settings())
    service.create_knowledge_base("uploads")
    outcomes = service.ingest_uploads("uploads", [("保修通知.png", buffer.getvalue()),
                                                  ("notes.txt", buffer.getvalue())])
    assert [o.status for o in outcomes] == ["added", "failed"]
    assert "notes.txt: the content is image/png (a .png file), not text" in outcomes[1].error
    top = service.retrieve("星河扫地机器人R2的保修期是多久？", "uploads")[0]
    assert (top.metadata["filename"], top.metadata["page"]) == ("保修通知.png", 1)
    assert "保修期为三年" in top.page_content
