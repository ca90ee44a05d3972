"""Streamlit pages for kbqa's web front end. Each module renders one page from kbqa's library
(KbqaService); nothing here parses, retrieves, generates or writes state by itself."""
