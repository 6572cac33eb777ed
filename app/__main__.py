"""Start the app from any folder:

    python -m app [streamlit run flags]        e.g. python -m app --server.port 8502

Runs `streamlit run app/Home.py` with every option of .streamlit/config.toml passed as a flag
(app/server.py), since Streamlit reads that file only when it starts in the repository root: the app
listens on 127.0.0.1, with XSRF protection, no usage statistics and the upload limit, wherever it
starts. Flags given here come after those and win; Home.py still refuses unsafe ones, so sharing the
app takes both a flag and the environment: `XMC_ALLOW_REMOTE=1 python -m app --server.address 0.0.0.0`.
"""

import os
import sys
from pathlib import Path

from app import server

HOME = Path(__file__).resolve().parent / "Home.py"


def command(args):
    """The `streamlit run` command line: the declared options, then `args`."""
    return [sys.executable, "-m", "streamlit", "run", str(HOME), *server.flags(), *args]


def main(argv=None):
    """Replace this process by the Streamlit server; 2 and one line if the options cannot be read."""
    try:
        cmd = command(sys.argv[1:] if argv is None else argv)
    except server.ServerConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main())
