"""MkDocs hooks (mkdocs.yml `hooks:`): the reference pages' generated sections
(`<!-- generated: NAME -->`, parity.docgen), filled in from the code at every build."""

from parity.docgen import generate


def on_page_markdown(markdown, page, config, files):
    return generate(markdown)
