"""Ingestion: files → text elements (``load_file``) → chunks (``ChineseTextSplitter``).

unstructured is imported only when a file that needs it is loaded: it takes seconds to import.
"""

from kbqa.ingest.loaders import SUPPORTED_SUFFIXES, load_file
from kbqa.ingest.splitter import ChineseTextSplitter, split_elements

__all__ = ["SUPPORTED_SUFFIXES", "ChineseTextSplitter", "load_file", "split_elements"]
