"""docs/troubleshooting.md quotes the messages the collection really prints.

Every quoted message (the fenced blocks) is split at its placeholders (`<guest>`, `...`) and at
the punctuation where the code joins parts of a message (`:`, `;`, brackets); each literal piece
must occur in the code of plugins/ or roles/, so a reworded message in the code fails here until
the page follows.
"""
import glob
import os
import re

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PLACEHOLDER = re.compile(r"<[^<>]+>|\.\.\.|[:;()\[\]]")
MIN_PIECE = 12  # shorter pieces ("), try: ") say nothing


def normalized_source():
    texts = []
    for pattern in ("plugins/**/*.py", "roles/**/*.yml"):
        for path in glob.glob(os.path.join(REPO, pattern), recursive=True):
            text = open(path, encoding="utf-8").read()
            # Adjacent Python string literals ("abc" "def", across lines) read as one string.
            text = re.sub(r"\"\s*\n\s*(?:\+\s*)?\"|'\s*\n\s*(?:\+\s*)?'|\"\s+\"", "", text)
            texts.append(text)
    return re.sub(r"\s+", " ", "\n".join(texts))


def quoted_messages(path):
    blocks = re.findall(r"```\n(.*?)```", open(path, encoding="utf-8").read(), re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_troubleshooting_quotes_real_messages():
    source = normalized_source()
    messages = quoted_messages(os.path.join(REPO, "docs", "troubleshooting.md"))
    assert len(messages) >= 8
    missing = []
    for message in messages:
        for piece in PLACEHOLDER.split(message):
            piece = re.sub(r"\s+", " ", piece).strip(" .,-")
            if len(piece) >= MIN_PIECE and piece not in source:
                missing.append("%r (from %r)" % (piece, message[:60]))
    assert not missing, "quoted in docs/troubleshooting.md but printed nowhere:\n" + "\n".join(missing)


def test_the_design_layout_table_names_every_plugin_file_and_no_missing_one():
    """docs/design.md's layout table matches the tree: each plugin file (modules as one row) has
    a row, and each row's path exists."""
    design = open(os.path.join(REPO, "docs", "design.md")).read()
    layout = design.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \|", layout, re.MULTILINE)
    files = [os.path.relpath(path, REPO) for kind in ("module_utils", "action", "inventory")
             for path in glob.glob(os.path.join(REPO, "plugins", kind, "*.py")) if not path.endswith("__init__.py")]
    assert sorted(set(files) - set(rows)) == []
    for row in rows:
        braces = re.search(r"\{([^}]+)\}", row)  # one {a,b} alternative at most
        expanded = [row.replace(braces.group(0), choice) for choice in braces.group(1).split(",")] if braces else [row]
        for path in expanded:
            assert glob.glob(os.path.join(REPO, path)), "docs/design.md names %s, which is not in the tree" % path
