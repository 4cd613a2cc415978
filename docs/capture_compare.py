"""Open the MLflow UI's compare page for a comparison's arm runs in headless Chromium, check that the page
lists every arm run, and save a screenshot.

    .venv/bin/python docs/capture_compare.py --store sqlite:///runs/offline-compare/mlflow.db \
        --out docs/mlflow-compare.png

Needs Debian's chromium (``apt-get install chromium``). Starts ``mlflow ui`` on 127.0.0.1 for the store,
finds the newest ``compare:*`` run and its ``arm:*`` runs, opens
``/#/compare-runs?runs=[...]&experiments=[...]``, reads the rendered DOM (``--dump-dom``) and fails unless
every arm run's name is on the page.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Annotated

import typer
from distill.testing import free_port, server_process
from mlflow import MlflowClient

app = typer.Typer(add_completion=False)


def chromium(*args: str, timeout: float = 120) -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise typer.BadParameter("chromium is not installed (apt-get install chromium)")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--virtual-time-budget=20000",
    ]
    done = subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=timeout)
    return done.stdout


@app.command()
def main(
    store: Annotated[str, typer.Option(help="MLflow tracking URI the comparison wrote")],
    out: Annotated[Path, typer.Option(help="Screenshot PNG")] = Path("docs/mlflow-compare.png"),
    width: int = 1600,
    height: int = 1100,
) -> None:
    client = MlflowClient(tracking_uri=store)
    parents = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`skilldistill.pipeline` = 'compare'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        raise typer.BadParameter(f"no comparison run in {store}")
    parent = parents[0]
    arms = sorted(
        client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`skilldistill.arm` != ''",
        ),
        key=lambda r: r.info.run_name,
    )
    ids = [r.info.run_id for r in arms]
    query = f"?runs={json.dumps(ids)}&experiments={json.dumps([parent.info.experiment_id])}"
    port = free_port()
    with server_process(
        [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
         "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/health", startup_timeout_s=120,
    ):  # fmt: skip
        url = f"http://127.0.0.1:{port}/#/compare-runs{urllib.parse.quote(query, safe='?&=')}"
        dom = chromium("--dump-dom", url)
        missing = [r.info.run_name for r in arms if r.info.run_name not in dom]
        if missing:
            raise SystemExit(f"the compare page does not list {missing} ({url})")
        out.parent.mkdir(parents=True, exist_ok=True)
        chromium(f"--window-size={width},{height}", f"--screenshot={out.resolve()}", url)
    if not out.is_file() or out.stat().st_size < 10_000:
        raise SystemExit(f"no screenshot written to {out}")
    typer.echo(f"the compare page lists all {len(arms)} arm runs; screenshot: {out} ({url})")


if __name__ == "__main__":
    app()
