"""The web app's texts in Chinese (the default) and English, chosen by the sidebar's switch.

One table, `TEXTS`: key → (中文, English). `t("key", name=...)` gives the text in the language in
use, with `str.format` fields filled (write a literal brace as `{{` / `}}`). The language is kept
in session state and in the page's address (?lang=en), so a reload keeps it.
Streamlit's own widget texts that have no parameter are covered by `streamlit_texts_css`.
"""

from __future__ import annotations

from typing import Literal, get_args

import streamlit as st

Language = Literal["zh", "en"]
LANGUAGES: tuple[Language, ...] = get_args(Language)
DEFAULT_LANGUAGE: Language = "zh"
LANGUAGE_NAMES: dict[Language, str] = {"zh": "中文", "en": "English"}
LANGUAGE_KEY = "ui_lang"    # session state (the sidebar switch's key)
LANGUAGE_PARAM = "lang"     # the page's address

TEXTS: dict[str, tuple[str, str]] = {
    # the app's frame (streamlit_app.py)
    "app.title": ("kbqa · 知识库问答", "kbqa · knowledge-base QA"),
    "app.page": ("页面", "Page"),
    "app.language": ("语言 / Language", "语言 / Language"),  # readable whatever is chosen
    "page.chat": ("问答", "Chat"),
    "page.knowledge": ("知识库", "Knowledge bases"),
    "page.compare": ("对比", "Compare"),
    "page.evaluation": ("评测", "Evaluation"),
    "page.settings": ("设置", "Settings"),
    # shared (common.py)
    "common.details": ("详情", "Details"),
    "common.cancel": ("取消", "Cancel"),
    "common.choose": ("请选择", "Choose options"),
    "common.list_separator": ("、", ", "),
    "common.choose_one": ("请选择一项", "Choose an option"),
    "kb.selector": ("知识库", "Knowledge base"),
    "kb.none": ("还没有知识库。请在“知识库”页面创建知识库并上传文件。",
                "No knowledge base yet: create one on the Knowledge bases page and upload files."),
    "variant.plain": ("plain（无适配器）", "plain (no adapter)"),
    "variant.adapter": ("适配器：{name}", "adapter: {name}"),
    "variant.configured": ("{name}（已配置）", "{name} (configured)"),
    "variant.unfit": ("未列出 {count} 个适配器（{names}）：它们是为其他基础模型训练的，不能用于当前模型。",
                      ("{count} adapter(s) not listed ({names}): they were trained for another base "
                      "model and cannot be used with this one.")),
    "adapter.mismatch": ("这个适配器与当前模型不匹配，无法使用。请选择其他适配器或 plain。",
                         ("This adapter does not fit the loaded model. Choose another adapter or "
                         "plain.")),
    "sources.none": ("没有检索到相关段落", "No passage retrieved"),
    "sources.count": ("来源（{count}）", "Sources ({count})"),
    "sources.score": (" · 得分 {score:.3f}", " · score {score:.3f}"),
    "answer.refused": ("知识库中没有找到答案", "Not found in the knowledge base"),
    "answer.copy": ("复制", "Copy"),
    "answer.copy_help": ("打开后，点回答右上角的图标复制",
                         "Open it, then click the icon at the answer's top right to copy it"),
    "source.download": ("下载原文件", "Download the original file"),
    "source.missing": ("原文件已不在服务器上", "The original file is no longer on the server"),
    "source.removed": ("这个文件已不在知识库中", "This file is no longer in the knowledge base"),
    "source.show_page": ("查看原文第 {page} 页", "Show page {page} as printed"),
    "source.page_caption": ("{file} 第 {page} 页", "{file}, page {page}"),
    "source.rendering": ("正在渲染页面…", "Rendering the page…"),
    "timing.load": ("模型加载 {seconds:.1f} 秒 · ", "model load {seconds:.1f} s · "),
    "timing.first": ("首字 {seconds:.2f} 秒 · ", "first token {seconds:.2f} s · "),
    "answer.answerability": ("可答性 {p:.2f}", "answerability {p:.2f}"),
    "timing.total": ("总计 {seconds:.2f} 秒", "total {seconds:.2f} s"),
    # chat.py
    "chat.header": ("问答", "Chat"),
    "chat.conversations": ("对话", "Conversations"),
    "chat.new": ("新对话", "New chat"),
    "chat.no_saved": ("还没有保存的对话", "No saved conversation yet"),
    "chat.manage": ("重命名或删除", "Rename or delete"),
    "chat.title": ("标题", "Title"),
    "chat.rename": ("重命名", "Rename"),
    "chat.delete": ("删除", "Delete"),
    "chat.deleted": ("已删除对话“{title}”", "Deleted the conversation “{title}”"),
    "chat.stopped": ("（已停止生成）", "(generation stopped)"),
    "chat.loading": ("正在加载模型…", "Loading the model…"),
    "chat.loaded": ("模型已加载 · {seconds:.1f} 秒", "Model loaded · {seconds:.1f} s"),
    "chat.stop": ("停止生成", "Stop"),
    "chat.working": ("检索与生成中…", "Retrieving and generating…"),
    "chat.variant": ("模型", "Model variant"),
    "chat.empty_kb": ("知识库“{kb}”还是空的：请先在“知识库”页面上传文件，再来提问。",
                      ("The knowledge base “{kb}” is empty: upload files on the Knowledge bases page "
                      "first.")),
    "chat.history": ("最近 {turns} 轮对话会作为上下文", "The last {turns} turns go into the prompt"),
    "chat.clear": ("清空对话", "Clear"),
    "chat.input": ("输入问题，例如：入职满一年的员工每年享有几天带薪年假？",
                   "Ask a question, e.g. how many days of paid leave after one year?"),
    # compare.py
    "compare.header": ("对比", "Compare"),
    "compare.caption": (("同一问题、同一检索结果，比较无适配器与有适配器的回答：基础模型只加载一次，"
                        "plain 的回答由它在禁用适配器时生成。"),
                        ("The same question and the same retrieved passages; the base model is "
                        "loaded once and the plain answer comes from it with the adapters "
                        "disabled.")),
    "compare.no_adapters": ("没有可用的适配器（请在“设置”中配置，或把 peft 适配器文件夹放进 adapters/）",
                            ("No adapters found (configure them in Settings or put peft folders in "
                            "adapters/)")),
    "compare.variants": ("适配器", "Adapter variants"),
    "compare.question": ("问题", "Question"),
    "compare.go": ("对比", "Compare"),
    "compare.waiting": ("{label}：等待中…", "{label}: waiting…"),
    "compare.generating": ("生成中…", "Generating…"),
    "compare.context": ("共享的检索上下文", "Shared context"),
    "compare.last": ("上次的问题：{question}", "Last question: {question}"),
    "compare.failed": ("这个变体没有生成回答（详情见下）", "This variant could not answer (details below)"),
    "compare.plain_note": ("plain 模型（禁用适配器，同一权重）",
                           "plain model (adapters disabled, same weights)"),
    "compare.applied": ("适配器已生效 · 探针上最大 |Δlogit| {diff:.3g} · {modules} 个模块",
                        "adapter applied · max |Δlogit| {diff:.3g} on a probe · {modules} modules"),
    "compare.not_applied": ("适配器未生效：{reasons}", "adapter NOT applied: {reasons}"),
    "compare.mark": ("在段落中标出哪个回答", "Mark whose answer in the passages"),
    # knowledge.py
    "kb.header": ("知识库", "Knowledge bases"),
    "kb.new_name": ("新知识库名称", "New knowledge base name"),
    "kb.create": ("创建", "Create"),
    "kb.created": ("已创建知识库“{name}”", "Created the knowledge base “{name}”"),
    "kb.delete_section": ("删除一个知识库", "Delete a knowledge base"),
    "kb.delete_pick": ("要删除的知识库", "Knowledge base to delete"),
    "kb.delete_confirm": ("输入要删除的知识库名称以确认", "Type its name to confirm"),
    "kb.delete": ("删除知识库", "Delete knowledge base"),
    "kb.delete_mismatch": ("名称不符，没有删除。要删除“{name}”及其所有文件，请输入它的名称。",
                           ("The name typed does not match: nothing was deleted. To delete “{name}” "
                           "and all its files, type its name.")),
    "kb.deleted": ("已删除知识库“{name}”", "Deleted the knowledge base “{name}”"),
    "kb.status.added": ("新增", "added"),
    "kb.status.updated": ("更新", "updated"),
    "kb.status.skipped": ("未变", "unchanged"),
    "kb.status.failed": ("失败", "failed"),
    "kb.status.removed": ("移除", "removed"),
    "kb.result": ("导入结果：{summary}", "Ingest result: {summary}"),
    "kb.result_part": ("{status} {count} 个", "{count} {status}"),
    "kb.col.file": ("文件", "file"),
    "kb.col.stored_as": ("保存为", "stored as"),
    "kb.col.status": ("状态", "status"),
    "kb.col.chunks": ("片段数", "chunks"),
    "kb.col.reason": ("原因", "reason"),
    "kb.col.updated": ("更新时间", "updated"),
    "kb.upload_header": ("上传文件到“{kb}”", "Upload files to “{kb}”"),
    "kb.uploader": ("支持的格式：{types} · 每个文件不超过 {mb} MB",
                    "Supported: {types} · up to {mb} MB per file"),
    "kb.ingest": ("导入", "Ingest"),
    "kb.ingesting": ("导入中…", "Ingesting…"),
    "kb.file_waiting": ("{file}：等待导入", "{file}: waiting"),
    "kb.file_ingesting": ("{file}：正在导入…", "{file}: ingesting…"),
    "kb.file_pages": ("{file}：已读 {done}/{total} 页", "{file}: {done} of {total} pages read"),
    "kb.file_done": ("{file}：{status}", "{file}: {status}"),
    "kb.file_done_pages": ("{file}：已读 {done}/{total} 页，{status}",
                           "{file}: {done} of {total} pages read, {status}"),
    "kb.path_section": ("从服务器路径导入", "Ingest a file or folder on this machine"),
    "kb.path": ("路径", "Path"),
    "kb.ingest_path": ("导入路径", "Ingest path"),
    "kb.documents": ("文档", "Documents"),
    "kb.no_documents": ("这个知识库还没有文档", "No documents yet"),
    "kb.document_count": ("{docs} 个文档，{chunks} 个片段", "{docs} document(s), {chunks} chunks"),
    "kb.remove_pick": ("移除文档", "Remove a document"),
    "kb.remove": ("移除", "Remove"),
    "kb.remove_confirm": ("确认从“{kb}”移除 {file}（{chunks} 个片段）？",
                          "Remove {file} ({chunks} chunks) from “{kb}”?"),
    "kb.remove_yes": ("确认移除", "Yes, remove"),
    "kb.removed": ("已移除 {file}（{chunks} 个片段）", "Removed {file} ({chunks} chunks)"),
    "kb.chunks_header": ("查看片段", "Chunks"),
    "kb.chunks_pick": ("选择文档", "Document"),
    "kb.chunks_page": ("页（共 {pages} 页）", "Page (of {pages})"),
    "kb.chunks_range": ("{file}：共 {count} 个片段，显示第 {first}–{last} 个",
                        "{file}: {count} chunks, showing {first}–{last}"),
    "kb.chunk_title": ("片段 {number}", "Chunk {number}"),
    "kb.chunk_page": ("第 {page} 页", "page {page}"),
    "kb.reindex": ("重建索引", "Re-index"),
    "kb.reindexing": ("正在重建索引…", "Rebuilding the index…"),
    "kb.reindexed": ("索引已重建", "Index rebuilt"),
    # evaluation.py
    "eval.header": ("评测", "Evaluation"),
    "eval.caption": (("查看 `kbqa eval` 生成的评测报告（metrics.json、answers.jsonl、report.html），"
                     "或在这里运行一个小评测。"),
                     ("Open a report written by `kbqa eval` (metrics.json, answers.jsonl, "
                     "report.html), or run a small evaluation here.")),
    "eval.run_section": ("运行一个小评测", "Run a small evaluation"),
    "eval.questions": ("问题文件", "Questions file"),
    "eval.questions_help": (("每行一个 JSON 对象：{{\"qid\": …, \"question\": …, \"answers\": […], "
                            "\"doc_id\": …}}（JSONL），或由这些对象组成的 JSON 数组"),
                            ("one JSON object per line: {{\"qid\": …, \"question\": …, "
                            "\"answers\": […], \"doc_id\": …}} (JSONL), or a JSON array of them")),
    "eval.docs": ("文档", "Documents"),
    "eval.docs_help": ("docs.jsonl（每行 {{\"doc_id\": …, \"text\": …}}），或要评测的文档文件",
                       ("docs.jsonl (one {{\"doc_id\": …, \"text\": …}} per line), or the document "
                       "files themselves")),
    "eval.source.upload": ("上传", "Upload"),
    "eval.source.home": ("从数据目录选择", "From the data folder"),
    "eval.source.path": ("输入服务器路径（高级）", "Server path (advanced)"),
    "eval.source": ("{what}来源", "{what}: source"),
    "eval.upload_questions": ("上传问题文件（.jsonl 或 .json）", "Upload a questions file (.jsonl or .json)"),
    "eval.upload_docs": ("上传 docs.jsonl 或文档文件（可多选）",
                         "Upload docs.jsonl or document files (several at once)"),
    "eval.pick_file": ("{what}（{home} 中的文件）", "{what} (a file under {home})"),
    "eval.pick_docs": ("文档（{home} 中的 .jsonl 文件或文件夹）",
                       "Documents (a .jsonl file or a folder under {home})"),
    "eval.none_found": ("{home} 中没有找到合适的文件，请上传。",
                        "Nothing suitable found under {home}: upload a file instead."),
    "eval.path": ("{what}：服务器上的路径", "{what}: path on the server"),
    "eval.variants": ("与 plain 对比的变体", "Variants compared with plain"),
    "eval.limit": ("问题数（--limit）", "Questions (--limit)"),
    "eval.run_name": ("运行名称（报告保存在 {folder}/名称）", "Run name (the report goes to {folder}/NAME)"),
    "eval.run": ("运行", "Run"),
    "eval.need_inputs": ("请给出问题文件和文档", "Give a questions file and documents"),
    "eval.bad_name": ("运行名称只能包含字母、数字、“.”、“-”和“_”",
                      "A run name may hold letters, digits, '.', '-' and '_' only"),
    "eval.bad_json": ("{name} 不是有效的问题文件：{reason}", "{name} is not a valid questions file: {reason}"),
    "eval.starting": ("启动中…", "Starting…"),
    "eval.progress": ("已生成 {done} / {total} 个回答", "{done} / {total} answers"),
    "eval.failed": ("kbqa eval 运行失败（退出码 {code}）：", "kbqa eval failed (exit {code}):"),
    "eval.no_feedback": ("问答页还没有人点赞或点踩", "No thumbs-up or thumbs-down given in Chat yet"),
    "eval.export": ("导出问答反馈：{up} 赞，{down} 踩（JSON Lines）",
                    "Export feedback: {up} up, {down} down (JSON Lines)"),
    "eval.report": ("评测报告", "Evaluation report"),
    "eval.no_reports": ("{folder} 中还没有评测报告", "No evaluation report under {folder} yet"),
    "eval.report_path_section": ("打开其他位置的报告目录（高级）", "Open a report folder elsewhere (advanced)"),
    "eval.report_path": ("报告目录", "Report folder"),
    "eval.problem.not_folder": ("{path} 不是文件夹", "{path} is not a folder"),
    "eval.problem.unreadable": ("无法读取 {path}：{detail}", "{path} cannot be read: {detail}"),
    "eval.problem.missing": ("{path} 中没有 {detail}", "{path} has no {detail}"),
    "eval.problem.bad_lines": ("{path}：跳过了 {detail} 行无法读取的内容",
                               "{path}: {detail} unreadable line(s) skipped"),
    "eval.col.variant": ("变体", "variant"),
    "eval.col.question": ("问题", "question"),
    "eval.col.retrieval": ("检索 {metric}", "retrieval {metric}"),
    "eval.metrics": ("指标", "Metrics"),
    "eval.comparisons": ("与 plain 的配对比较", "Paired comparisons against plain"),
    "eval.side_by_side": ("答案对照", "Answers side by side"),
    "eval.unanswerable": ("金标文档隐藏时的答案", "Answers with the gold passage hidden"),
    "eval.no_report": ("这个目录里没有评测报告", "This folder holds no evaluation report"),
    "eval.report_alt": ("kbqa 评测报告", "kbqa evaluation report"),
    # settings.py
    "settings.header": ("设置", "Settings"),
    "settings.caption": ("保存到 `{path}`；下次启动时 KBQA_* 环境变量仍然优先。",
                         ("Saved to `{path}`; KBQA_* environment variables still win at the next "
                         "start.")),
    "settings.model": ("模型", "Model"),
    "settings.retrieval": ("检索", "Retrieval"),
    "settings.generation": ("生成", "Generation"),
    "settings.llm": ("大模型（'embedded'、'embedded:名称' 或模型文件夹）",
                     "LLM ('embedded', 'embedded:NAME' or a model folder)"),
    "settings.dtype": ("权重精度（dtype）", "dtype"),
    "settings.adapters": ("LoRA 适配器（每行一个文件夹，按顺序叠加）",
                          "LoRA adapters (one folder per line, stacked in order)"),
    "settings.adapters_help": ("已找到：{found}", "found: {found}"),
    "settings.none": ("无", "none"),
    "settings.top_k": ("检索段落数（top-k）", "top-k"),
    "settings.mode": ("检索方式", "Retrieval mode"),
    "settings.min_coverage": ("最低覆盖率（min_coverage）", "min_coverage"),
    "settings.min_coverage_help": ("段落必须包含的问题关键词比例", ("share of the question's terms a "
                                   "passage must hold")),
    "settings.score_threshold": ("相似度阈值（score_threshold）", "score_threshold"),
    "settings.score_threshold_help": ("向量余弦相似度下限", "dense cosine cut-off"),
    "settings.enabled": ("启用{label}", "{label}: on"),
    "settings.max_new_tokens": ("最大生成长度（max_new_tokens）", "max_new_tokens"),
    "settings.temperature": ("温度（temperature）", "temperature"),
    "settings.top_p": ("核采样（top_p）", "top_p"),
    "settings.repetition_penalty": ("重复惩罚（repetition_penalty）", "repetition_penalty"),
    "settings.refusal_bias": ("拒答阈值（refusal_bias）", "refusal threshold (refusal_bias)"),
    "settings.refusal_bias_help": (
        "模型第一个字偏向作答的把握低于此值时，改为拒答；越大拒答越多（也会拒答可回答的问题），0 = 由模型自己决定",
        "refuse when the model's first token prefers answering by less than this; higher refuses "
        "more (answerable questions too), 0 = the model decides alone"),
    "settings.min_answerability": ("可答性下限（min_answerability）",
                                   "answerability floor (min_answerability)"),
    "settings.min_answerability_help": (
        "模型自带的可答性探针判断“资料中有答案”的概率低于此值时，改为拒答；越大拒答越多，0 = 只记录不拒答；没有探针的模型忽略此项",
        "refuse when the model's answerability probe gives the passages less than this "
        "probability of holding the answer; higher refuses more, 0 = record only; models "
        "without a probe ignore it"),
    "settings.history_turns": ("历史轮数（history_turns）", "history_turns"),
    "settings.history_questions": ("追问检索参考的上文问题数（history_questions）", "history_questions"),
    "settings.history_questions_help": (
        "追问（如“那每月呢？”）单独检索不到足够段落时，连同前几轮问题再检索一次补足；0 = 只用当前问题",
        "a follow-up ('and per month?') that finds too few passages alone is searched again with "
        "this many earlier questions; 0 = the question alone"),
    "settings.grounding": ("答案核对（grounding）", "answer check (grounding)"),
    "settings.grounding_span": ("段落不支持时改用最相关原句", "unsupported: use the best passage sentence"),
    "settings.grounding_refuse": ("段落不支持时拒答", "unsupported: refuse"),
    "settings.grounding_off": ("不核对", "off"),
    "settings.max_file_mb": ("单个文件上限 MB（max_file_mb）", "max_file_mb"),
    "settings.template": ("提示词模板（留空 = 内置；必须包含 {{context}} 和 {{question}}，可包含 {{history}}）",
                          ("prompt template (empty = built-in; must use {{context}} and "
                          "{{question}}, may use {{history}})")),
    "settings.save": ("保存", "Save"),
    "settings.saved": ("已保存到 {path}", "Saved to {path}"),
    "settings.invalid": ("设置无效，没有保存：请修改标出的字段。",
                         "Invalid settings, nothing saved: fix the fields marked."),
    # validation problems shown under their field (settings.py)
    "error.ge": ("不能小于 {limit}", "must be at least {limit}"),
    "error.gt": ("必须大于 {limit}", "must be greater than {limit}"),
    "error.le": ("不能大于 {limit}", "must be at most {limit}"),
    "error.lt": ("必须小于 {limit}", "must be less than {limit}"),
    "error.choice": ("只能是以下之一：{expected}", "must be one of: {expected}"),
    "error.number": ("请输入数字", "enter a number"),
    "error.missing_path": ("路径不存在：{path}", "no such path: {path}"),
    "error.not_adapter": ("不是 peft 适配器文件夹：{path}", "not a peft adapter folder: {path}"),
    "error.template": ("提示词模板必须包含 {{context}} 和 {{question}}",
                       "the prompt template must use {{context}} and {{question}}"),
    "error.other": ("无效：{message}", "invalid: {message}"),
}


def language() -> Language:
    """The language in use: the switch's choice, else the address's ?lang=, else Chinese."""
    chosen = st.session_state.get(LANGUAGE_KEY)
    if chosen in LANGUAGES:
        return chosen
    wanted = st.query_params.get(LANGUAGE_PARAM)
    return wanted if wanted in LANGUAGES else DEFAULT_LANGUAGE


def t(key: str, lang: Language | None = None, **values: object) -> str:
    """The text for `key` in `lang` (default: the language in use); an unknown key is a bug, so
    it raises. A widget's format_func passes the run's `lang`: Streamlit's test harness calls it
    outside the run, where session state cannot be read."""
    zh, en = TEXTS[key]
    return (en if (lang or language()) == "en" else zh).format(**values)


def language_switch() -> Language:
    """The sidebar's 中文 / English switch; the choice also goes into the address (?lang=)."""
    if LANGUAGE_KEY not in st.session_state:
        st.session_state[LANGUAGE_KEY] = language()
    chosen: Language = st.radio(t("app.language"), LANGUAGES, format_func=LANGUAGE_NAMES.get,
                                horizontal=True, key=LANGUAGE_KEY)
    if chosen == DEFAULT_LANGUAGE:
        st.query_params.pop(LANGUAGE_PARAM, None)
    else:
        st.query_params[LANGUAGE_PARAM] = chosen
    return chosen


# Streamlit 1.67 has no locale setting and no parameters for these texts of its own widgets
# (streamlit/streamlit#13500). The upload button's "Upload" is replaced by CSS; the size/type
# line ("200MB per file • MD, TXT") is hidden because the uploader's label says the same in the
# user's language (and kbqa's own limit); the "Press Enter to apply" hints are hidden.
_ZH_CSS = """<style>
[data-testid="stFileUploaderDropzone"] button [data-testid="stMarkdownContainer"] p {
  font-size: 0; }
[data-testid="stFileUploaderDropzone"] button [data-testid="stMarkdownContainer"] p::after {
  content: "上传文件"; font-size: 0.875rem; }
[data-testid="stFileUploaderDropzoneInstructions"] { display: none; }
[data-testid="InputInstructions"] { display: none; }
</style>"""


def streamlit_texts_css() -> None:
    """In Chinese, Streamlit's own widget texts that cannot be set otherwise (see _ZH_CSS)."""
    if language() == "zh":
        st.html(_ZH_CSS)
