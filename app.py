"""The playground app: read settings and flags, get the cached engine, build the UI, launch.

Owns: the command line of `python app.py [--model M] [--engine genai|optimum|remote]
[--base-url URL] [--host H] [--port P]`, logging set-up, the warm-up before serving, the
remote peer that Compare may run columns on (a server configured beside a local engine), and the
module-level `demo` that Hugging Face Spaces imports, and the housekeeping that gives back the
memory floods freed.
Does not own: anything else; each step is a call into `playground`.
"""

import argparse
import logging

from playground.engines import ENGINE_KINDS, EngineError, open_engine, open_peer
from playground.housekeeping import keep_tidy
from playground.models import ModelUnavailableError
from playground.settings import SettingsError, load_settings
from playground.ui import build_demo, launch

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app")

parser = argparse.ArgumentParser(description="Gemma-2 OpenVINO Playground")
parser.add_argument("--model", help="HF repo id, local OpenVINO IR folder, or tiny-random")
parser.add_argument("--engine", choices=ENGINE_KINDS)
parser.add_argument(
    "--base-url",
    help="the remote engine's server, e.g. http://127.0.0.1:8080/v1; with a local engine, the "
    "Compare tab's peer (columns may run on either)",
)
# No default host: Gradio then reads GRADIO_SERVER_NAME (0.0.0.0 on Spaces), else 127.0.0.1.
parser.add_argument("--host")
parser.add_argument("--port", type=int)  # likewise GRADIO_SERVER_PORT, else 7860
# parse_known_args: Spaces and test runners may pass arguments of their own.
args, _ = parser.parse_known_args()

try:
    settings = load_settings(model=args.model, engine=args.engine, base_url=args.base_url)
    engine, notice = open_engine(settings)
except (ModelUnavailableError, SettingsError, EngineError) as error:
    raise SystemExit(f"error: {error}") from None
if notice:
    log.warning(notice)
log.info("serving %s with the %s engine (loaded in %.2f s)", engine.info.model, engine.kind,
         engine.info.load_s)  # fmt: skip
log.info("warmed up in %.2f s", engine.warm_up())  # before the server reports ready
# A server that is down costs the peer, not the app: the Compare tab says why in one line.
peer, peer_note = open_peer(settings, engine)
if peer is not None:
    log.info("Compare's peer: the remote engine at %s", settings.remote.base_url)
demo = build_demo(engine, settings, notice, peer=peer, peer_note=peer_note)
# Memory a flood freed goes back once the app is quiet (`housekeeping`).
keep_tidy(busy=lambda: bool(engine.active or engine.waiting),
          work=lambda: demo.fair_admission.admitted)  # fmt: skip

if __name__ == "__main__":
    launch(demo, settings, server_name=args.host, server_port=args.port)
