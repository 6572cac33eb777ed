"""User text as plain text. Label and feature names, file tokens quoted in error messages, imported
config values, run ids and file names reach the page inside Markdown (captions, error boxes, headers)
and inside Plotly's HTML-like text (hover labels, tick labels, legends). Each is passed through one
of the two functions here at the place it is drawn, so it shows as written and can neither fetch an
address (an image), link to one, nor change how the page looks."""

import html
import re
import string

WORD_JOINER = "\u2060"                        # invisible, and no line break: the text reads the same
_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
# where GitHub-flavoured Markdown starts a link of bare text: "http://", "mailto:", "www.", "a@b.c"
_AUTOLINK = re.compile(r":|@|www(?=\.)", re.IGNORECASE)


def md(text):
    """`text` for Streamlit's Markdown, shown exactly as written.

    Every ASCII punctuation character gets a backslash (CommonMark: any of them may be escaped, and an
    escaped one is a literal), so no emphasis, link, image, HTML tag, entity, math (`$`), directive
    (`:red[...]`), heading, list or table can start. GFM's literal autolinks (`http://...`, `www.`,
    `a@b.c`) are found in the text after the escapes are undone, so a word joiner (U+2060) follows each
    `:`, `@` and `www` before a dot: the address no longer parses, and the reader sees the same text.
    """
    joined = _AUTOLINK.sub(lambda m: m.group(0) + WORD_JOINER, str(text))
    return _PUNCTUATION.sub(r"\\\1", joined)


def plotly(text):
    """`text` for Plotly's text (hover labels, tick labels, legend entries), shown exactly as written.

    Plotly reads `<a href=...>`, `<b>`, `<br>` ... as tags and `&lt;`, `&#60;` ... as entities, after
    splitting the text at tags; escaping `&`, `<` and `>` leaves no tag, and the entities show as the
    characters they stand for, so the text reads as given.
    """
    return html.escape(str(text), quote=False)
