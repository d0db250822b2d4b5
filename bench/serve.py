"""App budgets: the REST API of `make serve` (lib.serve) measured against a real uvicorn.

On the study under --root when its models are trained (after `make repro`), else on a tiny
served study built in a temp folder (tests/serve_study.py, ~15 s). The server is the command
`make serve` runs (UI included), with its feedback folder in a temp folder, so nothing is
written under --root. Budgets, 2 CPU cores:

- server start until /health answers with the models loaded: <= 15 s;
- /predict without a saliency map, one client, p95 latency: <= 50 ms;
- /predict with Grad-CAM, one client, p95 latency: <= 150 ms;
- /predict without a map, 4 concurrent clients: >= 20 requests/s.

Prints each figure with its ratio to the budget (below 1 is in budget; for requests/s the ratio
is budget / measured); exit status 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lib.serve.launch import running

REPO = Path(__file__).resolve().parent.parent


BUDGET_START_S = 15.0
BUDGET_P95_MS = 50.0
BUDGET_GRADCAM_P95_MS = 150.0
BUDGET_RPS = 20.0
DEFAULT_MODEL = "scratch-batchnorm"


def trained(root: Path) -> bool:
    """Whether root declares model artifacts and at least one of them is trained."""
    try:
        from lib.serve.registry import cards

        return any(c.trained for c in cards(root))
    except Exception:  # noqa: BLE001 - no dvc.yaml, no artifacts: build the tiny study
        return False


def sample_image(root: Path) -> bytes:
    """The first test glioma image of the study (data/raw, or raw/ in the tiny study)."""
    for raw in (root / "data" / "raw", root / "raw"):
        found = sorted((raw / "Testing" / "glioma").glob("glioma_*[0-9].*"))
        if found:
            return found[0].read_bytes()
    raise SystemExit(f"no Testing/glioma image under {root}/data/raw")


def p95_ms(client, path: str, data: bytes, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        r = client.post(path, files={"file": ("x.png", data)})
        times.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
    return float(np.percentile(times, 95))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the study (default: this one)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="artifact to measure")
    parser.add_argument("--requests", type=int, default=100, help="sequential requests per p95")
    parser.add_argument("--load", type=int, default=200, help="requests of the concurrent run")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as json")
    args = parser.parse_args()

    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="brain-mri-bench-serve-"))
    root = args.root.resolve()
    try:
        if not trained(root):
            from tests.serve_study import build_served_study

            print(f"no trained models under {root}: building a tiny served study in {tmp}",
                  flush=True)
            root = build_served_study(tmp / "study")
        data = sample_image(root)
        with running(root, tmp / "feedback", tmp / "server.log") as server:
            url = server.url
            results = {"start_s": server.started_s}
            with httpx.Client(base_url=url, timeout=60) as client:
                models = client.get("/health").json()["models"]
                model = args.model if args.model in models else client.get(
                    "/health").json()["default"]
                path = f"/predict?model={model}"
                p95_ms(client, path, data, 5)  # warm up: first call traces the model
                p95_ms(client, path + "&method=gradcam", data, 3)  # builds the explainer
                results["p95_ms"] = p95_ms(client, path, data, args.requests)
                results["gradcam_p95_ms"] = p95_ms(client, path + "&method=gradcam", data,
                                                   args.requests // 2)

            def one(_: int) -> int:
                with httpx.Client(base_url=url, timeout=60) as c:
                    return c.post(path, files={"file": ("x.png", data)}).status_code

            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(one, range(args.clients)))  # connections and threads warm
                t0 = time.perf_counter()
                codes = list(pool.map(one, range(args.load)))
                results["rps"] = args.load / (time.perf_counter() - t0)
            results["errors"] = sum(c != 200 for c in codes)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [("server start to /health", results["start_s"], BUDGET_START_S, "s", False),
            ("/predict p95, no map", results["p95_ms"], BUDGET_P95_MS, "ms", False),
            ("/predict p95, Grad-CAM", results["gradcam_p95_ms"], BUDGET_GRADCAM_P95_MS, "ms",
             False),
            (f"/predict req/s, {args.clients} clients", results["rps"], BUDGET_RPS, "/s", True)]
    print(f"\nmodel {model} of {root}, {args.requests} sequential requests per p95, "
          f"{args.load} concurrent; {results['errors']} errors")
    print(f"{'budget':<32} {'measured':>9} {'limit':>7} {'ratio':>6}")
    failed = results["errors"] > 0
    for label, value, limit, unit, at_least in rows:
        ratio = limit / value if at_least else value / limit
        failed |= ratio > 1
        flag = "" if ratio <= 1 else "  OVER BUDGET"
        bound = ">=" if at_least else "<="
        print(f"{label:<32} {value:7.1f}{unit:<2} {bound}{limit:4.0f}{unit:<2} {ratio:6.2f}{flag}")
    if args.out:
        args.out.write_text(json.dumps({"model": model, **results}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
