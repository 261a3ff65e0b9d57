"""Checks every link between the pages of a built book: the file must exist, and an anchor
(`page.html#anchor`) must be an id in it. Links to other sites are not followed (CI has no
network to spare, and a page elsewhere may move). Usage: check-links.py <book dir>"""

import html.parser
import os
import sys
import urllib.parse


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        for name in ("href", "src"):
            if tag in ("a", "img", "link", "script") and attrs.get(name):
                self.links.append(attrs[name])


def main(book):
    pages = {}
    for folder, _, files in os.walk(book):
        for name in files:
            if name.endswith(".html"):
                path = os.path.normpath(os.path.join(folder, name))
                page = Page()
                with open(path, encoding="utf-8") as f:
                    page.feed(f.read())
                pages[path] = page
    broken = []
    for path, page in pages.items():
        for link in page.links:
            url = urllib.parse.urlsplit(link)
            if url.scheme or url.netloc or link.startswith("mailto:"):
                continue
            target = path
            if url.path:
                target = os.path.normpath(os.path.join(os.path.dirname(path), urllib.parse.unquote(url.path)))
            if not os.path.exists(target):
                broken.append(f"{path}: {link}: no such file")
            elif url.fragment and target in pages and url.fragment not in pages[target].ids:
                broken.append(f"{path}: {link}: no such anchor")
    if len(pages) < 5:
        broken.append(f"only {len(pages)} pages in {book}")
    for line in broken:
        print(f"check-links: {line}", file=sys.stderr)
    print(f"check-links: {len(pages)} pages, {sum(len(p.links) for p in pages.values())} links, {len(broken)} broken", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
