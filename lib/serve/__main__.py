"""python -m lib.serve: the REST API and the web UI of the study, on http://127.0.0.1:8000.

Binds 127.0.0.1 unless --host says otherwise: there is no authentication built in, so expose it
(--host 0.0.0.0) only behind a firewall or a reverse proxy that adds one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .inference import DEFAULT_MAX_BYTES
from .service import FEEDBACK_DIR


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lib.serve", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="the study's folder (dvc.yaml, models/, reports/); default: .")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--feedback-dir", type=Path, default=None,
                        help=f"where feedback is stored (default: <root>/{FEEDBACK_DIR})")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_BYTES / 2**20,
                        help="largest accepted upload, MiB (default %(default)g)")
    parser.add_argument("--no-ui", action="store_true", help="the REST API only, no /ui")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ..data.manifest import DataError
    from .service import Service

    start = time.perf_counter()
    try:
        service = Service.open(args.root, args.feedback_dir,
                               max_bytes=int(args.max_upload_mb * 2**20))
    except (DataError, ValueError) as exc:  # no models yet, feedback inside raw data, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    loaded = time.perf_counter() - start

    import uvicorn

    from .api import create_app

    app = create_app(service, ui=not args.no_ui)
    base = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    print(f"loaded {len(service.registry.loaded)} models ({', '.join(service.registry.loaded)}) "
          f"in {loaded:.1f} s; default {service.registry.default}", flush=True)
    for name, model in service.registry.loaded.items():  # said at start, not only per request
        if model.ood is not None and not model.ood.available:
            print(f"{name}: {model.ood.message}", flush=True)
    if not args.no_ui:
        print(f"UI:   {base}/ui/", flush=True)
    print(f"API:  {base}/docs   (feedback -> {service.feedback_dir})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
