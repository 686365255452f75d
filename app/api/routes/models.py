"""GET /models: the bundles each live worker has loaded (name, version, hashes verified)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ApiKeyDep, StateDep
from app.api.public import bundle_label, without_server_paths
from app.api.schemas import ModelInfo, ModelsInfo
from models.errors import MammogenError
from workers.watchdog import live_workers

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelsInfo, summary="Model bundles served (per live worker, else on disk)")
def list_models(state: StateDep, _: ApiKeyDep) -> ModelsInfo:
    by_key: dict[tuple[str, str | None, str | None, bool], ModelInfo] = {}
    for w in live_workers(state.connection, state.queue.name):
        for kind, b in (w.get("bundles") or {}).items():
            key = (kind, b.get("name"), b.get("version"), bool(b.get("loaded")))
            if key not in by_key:
                detail = {k: v for k, v in b.items() if k not in ("name", "version", "loaded", "path", "kind")}
                if isinstance(detail.get("error"), str):
                    detail["error"] = without_server_paths(detail["error"], b.get("path"))
                by_key[key] = ModelInfo(
                    kind=kind,
                    path=bundle_label(b.get("path")),
                    loaded=bool(b.get("loaded")),
                    name=b.get("name"),
                    version=b.get("version"),
                    detail=detail,
                )
            by_key[key].workers.append(w.get("name", "?"))
    if by_key:
        return ModelsInfo(models=list(by_key.values()))
    # No worker yet: describe what is configured on disk (manifest only; workers verify hashes).
    out = []
    for kind in ("mambo", "dualview"):
        path = state.settings.bundle_path(kind)  # type: ignore[arg-type]
        try:
            from models.bundle import load_bundle

            b = load_bundle(path, verify=False)
            out.append(
                ModelInfo(
                    kind=kind,
                    path=bundle_label(path),
                    loaded=False,
                    name=b.name,
                    version=b.version,
                    detail={"note": "no live worker; manifest read from disk, not verified"},
                )
            )
        except MammogenError as exc:
            error = without_server_paths(exc.message, path)
            out.append(ModelInfo(kind=kind, path=bundle_label(path), loaded=False, detail={"error": error}))
    return ModelsInfo(models=out)
