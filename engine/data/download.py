"""Downloading one file over HTTP(S), resumed where the server allows, and its SHA-256.

    sha = download(url, part)        # `part` holds the whole file afterwards; its hex SHA-256

A `part` left by an interrupted download is resumed: the request asks for ``Range: bytes=n-``
and a 206 whose Content-Range starts at n is appended; any other answer (a 200: the server
ignores ranges) restarts from byte 0. A connection that drops mid-file, or ends short of the
length the server announced, is retried from where it got to, `attempts` times. Long downloads
show a progress bar on stderr (tqdm, on a terminal).

The caller owns `part`: it keeps it for the next resume after a failure, deletes it after a
bad checksum. Redirects are followed to http(s) URLs only.
"""

import hashlib
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException

from tqdm import tqdm

from ..errors import FetchError
from ..files import DATASET_FILE_LIMIT

CHUNK = 1 << 20
TIMEOUT_S = 60              # per connection and per read
ATTEMPTS = 5
BACKOFF_S = 1.0             # wait attempt * BACKOFF_S before retrying
_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)")


class _Short(Exception):
    """The connection ended before the announced length (resumed)."""


class _Restart(Exception):
    """The server cannot continue the part (restarted from byte 0)."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise FetchError(f"{req.full_url}: redirected to {newurl!r}, not an http(s) URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def check_url(url):
    """Raise FetchError unless url is an http(s) URL with a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"{url!r} is not an http(s) URL")


def download(url, part, *, size=None, limit=DATASET_FILE_LIMIT, progress=True, attempts=ATTEMPTS):
    """Download `url` into the file `part` (resuming what is there); returns its hex SHA-256.

    Parameters
    ----------
    url : str
        http or https.
    part : Path
        The file to write; its folder must exist.
    size : int, optional
        The expected length in bytes; a server that announces another is refused at once.
    limit : int
        Refuse a file longer than this many bytes.
    progress : bool
        Show a progress bar (on a terminal).
    """
    check_url(url)
    last = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(attempt * BACKOFF_S)
        try:
            _fetch_once(url, part, size, limit, progress)
            return sha256_of(part)
        except _Restart as e:
            part.unlink()
            last = e
        except urllib.error.HTTPError as e:
            if e.code == 416 and part.exists():             # Range Not Satisfiable: restart
                part.unlink()
            elif e.code < 500:
                part.unlink(missing_ok=True)
                raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
            last = e
        except FetchError:
            part.unlink(missing_ok=True)
            raise
        except (_Short, HTTPException, OSError) as e:        # URLError, timeouts, resets are OSErrors
            last = e
    got = part.stat().st_size if part.exists() else 0
    raise FetchError(f"{url}: download failed after {attempts} attempts ({_reason(last)}); {got:,} bytes "
                     "kept, the next fetch resumes them")


def _reason(e):
    return getattr(e, "reason", None) or str(e) or type(e).__name__


def _fetch_once(url, part, size, limit, progress):
    """One request: append to or restart `part`; raise _Short if it ends early."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "xmc-lab", **({"Range": f"bytes={have}-"} if have else {})}
    with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as response:
        start, total = _span(response, have)
        if total is not None and size is not None and total != size:
            raise FetchError(f"{url}: the server announces {total:,} bytes, the registry {size:,}")
        if total is not None and total > limit:
            raise FetchError(f"{url}: {total:,} bytes, over the limit of {limit:,}")
        with open(part, "r+b" if start else "wb") as f, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=url.rsplit("/", 1)[-1][:30], disable=None if progress else True, leave=False) as bar:
            f.seek(start)
            f.truncate()
            written = start
            while chunk := response.read(CHUNK):
                written += len(chunk)
                if written > limit:
                    raise FetchError(f"{url}: more than {limit:,} bytes, over the limit")
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and written < total:
        raise _Short(f"connection closed at byte {written:,} of {total:,}")


def _span(response, have):
    """(byte the body starts at, total length or None) of a response to a request from byte `have`."""
    if response.status == 206:
        m = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if m and int(m[1]) == have:
            return have, None if m[3] == "*" else int(m[3])
        raise _Restart(f"the server sent Content-Range {response.headers.get('Content-Range')!r} for bytes {have}-")
    length = response.headers.get("Content-Length", "")
    return 0, int(length) if length.isdigit() else None


def sha256_of(path):
    """The hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
