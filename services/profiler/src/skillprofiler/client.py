"""A small HTTP client for the profiling service (what the pipeline uses when given ``http://host:port``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import httpx
from distill.judge import JudgeItem
from skillcore import Verdict


class ProfilerError(RuntimeError):
    """The service refused a request or a task failed; carries the HTTP status and the service's message."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"profiler service answered {status_code}: {message}")
        self.status_code = status_code
        self.message = message


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text
    if isinstance(body, list) and body and isinstance(body[0], dict):  # BentoML wraps some errors in a list
        body = body[0]
    if isinstance(body, dict) and "error" in body:
        detail = body.get("detail")
        return f"{body['error']}: {detail}" if detail else str(body["error"])
    return resp.text


class ProfilerClient:
    def __init__(self, base_url: str, *, timeout_s: float = 120.0) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ProfilerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            raise ProfilerError(resp.status_code, _message(resp))
        return resp.json()

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def judge(self, items: Iterable[JudgeItem]) -> list[Verdict]:
        body = {"items": [i.model_dump() for i in items]}
        data = self._check(self.http.post("/judge", json=body))
        return [Verdict.model_validate(v) for v in data["verdicts"]]

    def check_profile(self, **request: Any) -> dict[str, Any]:
        return dict(self._check(self.http.post("/check_profile", json=request)))

    def submit_profile(self, **request: Any) -> str:
        """Start a profiling task; ``request`` holds the /profile fields (model, pool, tree, ...)."""
        return str(self._check(self.http.post("/profile/submit", json=request))["task_id"])

    def status(self, task_id: str) -> str:
        return str(self._check(self.http.get("/profile/status", params={"task_id": task_id}))["status"])

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Stop a running task (its status turns ``canceled`` once it has stopped, within moments); its
        finished answers are kept: submit again with the returned ``profile_id`` to resume."""
        return dict(self._check(self.http.put("/profile/cancel", params={"task_id": task_id})))

    def result(self, task_id: str) -> dict[str, Any]:
        return dict(self._check(self.http.get("/profile/get", params={"task_id": task_id})))

    def profile(
        self, *, poll_s: float = 1.0, timeout_s: float | None = None, **request: Any
    ) -> dict[str, Any]:
        """Check the request (so a refusal fails fast), submit it, wait, and return the profile summary.

        Past ``timeout_s`` the task is cancelled (``TimeoutError``); a cancelled task raises
        ``ProfilerError`` (409) saying how far it got."""
        self.check_profile(
            **{
                k: request[k]
                for k in ("model", "pool", "tree", "engine", "base_url", "profile_id")
                if k in request
            }
        )
        task_id = self.submit_profile(**request)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.status(task_id) in ("pending", "in_progress"):
            if deadline is not None and time.monotonic() > deadline:
                self.cancel(task_id)
                raise TimeoutError(f"profiling task {task_id} still running after {timeout_s}s: cancelled")
            time.sleep(poll_s)
        return self.result(task_id)

    def weakest(self, profile_id: str, k: int = 10, min_attempts: int = 1) -> list[dict[str, Any]]:
        body = {"profile_id": profile_id, "k": k, "min_attempts": min_attempts}
        return list(self._check(self.http.post("/weakest", json=body)))
