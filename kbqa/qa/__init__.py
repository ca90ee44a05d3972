"""kbqa.qa."""
