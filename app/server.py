"""The server options that keep the app safe, declared once in app/.streamlit/config.toml, and the rule
a running server is held to. Streamlit reads that file only when it starts in the repository root, so
the launcher (`python -m app`) passes every option of it as a flag (`flags`), and Home.py checks the
options the server really runs with (`problems`) and refuses to show the app when they fall short.

The rule, option by option (the declared values are those of the file):
- server.address: a loopback address (127.0.0.0/8, ::1, localhost) or a unix socket. Any other
  address, or none (every interface), only with XMC_ALLOW_REMOTE=1 in the server's environment;
- server.enableXsrfProtection, server.enableCORS, browser.gatherUsageStats: as declared;
- server.maxUploadSize: at most the declared number of MB.
"""

import ipaddress
import os
import tomllib
from pathlib import Path

CONFIG = Path(__file__).resolve().parent / ".streamlit" / "config.toml"    # in a wheel too; the repository's .streamlit/ links to it
ALLOW_REMOTE = "XMC_ALLOW_REMOTE"
EXACT = ("server.enableXsrfProtection", "server.enableCORS", "browser.gatherUsageStats")
CHECKED = ("server.address", "server.maxUploadSize") + EXACT
HOW = (f"Start it with `python -m app` (from any folder: it passes the options of {CONFIG.name}), or "
       f"`streamlit run app/Home.py` from the repository root; to share it deliberately, "
       f"`{ALLOW_REMOTE}=1 python -m app --server.address 0.0.0.0`.")


class ServerConfigError(Exception):
    """The options file is missing, unreadable, or lacks a checked option."""


def declared(path=CONFIG):
    """Every option of the options file, as {"section.name": value}; ServerConfigError if the file
    cannot be read or lacks one of CHECKED."""
    try:
        sections = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ServerConfigError(f"the app's server options cannot be read: {path}: {e}") from None
    options = dict(_flat(sections))
    missing = [key for key in CHECKED if key not in options]
    if missing:
        raise ServerConfigError(f"the app's server options lack {', '.join(missing)}: {path}")
    return options


def _flat(table, prefix=""):
    """("section.name", value) pairs of a parsed TOML document, nested tables included."""
    for name, value in table.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def flags(path=CONFIG):
    """The declared options as `streamlit run` flags: ["--server.address=127.0.0.1", ...]."""
    return [f"--{key}={str(value).lower() if isinstance(value, bool) else value}"
            for key, value in declared(path).items()]


def is_local(address):
    """Whether a server bound to `address` is reachable from this machine only."""
    if not address:
        return False                                    # Streamlit's default: every interface
    if address.startswith("unix://") or address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False                                    # a host name: it may name any interface


def problems(get_option, environ=os.environ, path=CONFIG):
    """What falls short of the rule (module docstring) in the options `get_option` reads (st.get_option
    in Home.py): one sentence per option, naming its value; [] when the server is safe."""
    try:
        want = declared(path)
    except ServerConfigError as e:
        return [str(e)]
    found = []
    address = get_option("server.address")
    if not is_local(address) and environ.get(ALLOW_REMOTE) != "1":
        where = "every interface" if not address else f"{address!r}"
        found.append(f"server.address: the server listens on {where}, which other machines can reach; "
                     f"that needs {ALLOW_REMOTE}=1")
    upload = get_option("server.maxUploadSize")
    if upload > want["server.maxUploadSize"]:
        found.append(f"server.maxUploadSize is {upload} MB, above {want['server.maxUploadSize']} MB")
    found += [f"{key} is {get_option(key)}, not {want[key]}" for key in EXACT if get_option(key) != want[key]]
    return found
