"""A local stand-in for the Hugging Face Hub HTTP API, for tests: model repos with branches and
commits, stored in a folder, served by uvicorn on a loopback port in a background thread.

Only what huggingface_hub's create_repo, create_branch, upload_folder / upload_file (every file
"regular": contents inline, base64, in the ndjson commit; no LFS or Xet), model_info / repo_info,
list_repo_tree and hf_hub_download / snapshot_download call. No authentication.
"""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class NotFound(Exception):
    def __init__(self, code: str, message: str, commit: str | None = None):
        self.code, self.message, self.commit = code, message, commit


class Store:
    """ROOT/NS/NAME/{meta.json (private, refs), commits/SHA/<files>}."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.lock = threading.Lock()
        self.downloads: list[str] = []  # "ns/name:path" of every file GET, in order

    def repo(self, repo_id: str) -> Path:
        if not (self.root / repo_id / "meta.json").is_file():
            raise NotFound("RepoNotFound", f"Repository {repo_id} not found")
        return self.root / repo_id

    def meta(self, repo_id: str, update: dict | None = None) -> dict:
        if update is not None:
            (self.repo(repo_id) / "meta.json").write_text(json.dumps(update))
        return json.loads((self.repo(repo_id) / "meta.json").read_text())

    def resolve(self, repo_id: str, revision: str) -> str:
        meta, path = self.meta(repo_id), self.repo(repo_id)
        if revision in meta["refs"]:
            return meta["refs"][revision]
        if len(revision) == 40 and (path / "commits" / revision).is_dir():
            return revision
        raise NotFound("RevisionNotFound", f"Invalid rev id: {revision}")

    def files(self, repo_id: str, sha: str) -> dict[str, bytes]:
        base = self.repo(repo_id) / "commits" / sha
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}

    def commit(self, repo_id: str, branch: str, files: dict[str, bytes], summary: str) -> str:
        path, meta = self.repo(repo_id), self.meta(repo_id)
        parent = meta["refs"].get(branch, "")
        contents = b"".join(git_blob_oid(v).encode() + k.encode() for k, v in sorted(files.items()))
        sha = hashlib.sha1(f"{repo_id}\n{parent}\n{summary}\n{time.time_ns()}".encode() + contents).hexdigest()
        for rel, data in files.items():
            target = path / "commits" / sha / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (path / "commits" / sha).mkdir(parents=True, exist_ok=True)
        meta["refs"][branch] = sha
        self.meta(repo_id, meta)
        return sha


def create_app(root: Path) -> FastAPI:
    app = FastAPI()
    store = app.state.store = Store(root)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        headers = {"X-Error-Code": exc.code, "X-Error-Message": exc.message}
        if exc.commit:
            headers["X-Repo-Commit"] = exc.commit
        return JSONResponse({"error": exc.message}, status_code=404, headers=headers)

    @app.post("/api/repos/create")
    async def create_repo(request: Request):
        body = await request.json()
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        url = f"{str(request.base_url).rstrip('/')}/{repo_id}"
        with store.lock:
            path = store.root / repo_id
            if (path / "meta.json").is_file():
                return JSONResponse({"error": "You already created this model repo", "url": url}, status_code=409)
            path.mkdir(parents=True)
            private = bool(body.get("private")) or body.get("visibility") == "private"
            (path / "meta.json").write_text(json.dumps({"private": private, "refs": {}}))
            store.commit(repo_id, "main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                         "initial commit")
        return {"url": url, "name": repo_id, "id": repo_id}

    @app.post("/api/validate-yaml")
    async def validate_yaml():
        return {"errors": [], "warnings": []}

    @app.post("/api/models/{ns}/{name}/branch/{branch}")
    async def create_branch(ns: str, name: str, branch: str, request: Request):
        repo_id, body = f"{ns}/{name}", (await request.json() if await request.body() else {})
        with store.lock:
            meta = store.meta(repo_id)
            if branch in meta["refs"]:
                return JSONResponse({"error": f"Reference {branch} already exists"}, status_code=409)
            meta["refs"][branch] = store.resolve(repo_id, body.get("startingPoint") or "main")
            store.meta(repo_id, meta)
        return {}

    @app.post("/api/models/{ns}/{name}/preupload/{revision}")
    async def preupload(ns: str, name: str, revision: str, request: Request):
        store.resolve(f"{ns}/{name}", revision)
        files = (await request.json())["files"]
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                          for f in files]}

    @app.post("/api/models/{ns}/{name}/commit/{revision}")
    async def commit(ns: str, name: str, revision: str, request: Request):
        repo_id = f"{ns}/{name}"
        if request.query_params.get("create_pr"):
            return JSONResponse({"error": "pull requests are not supported here"}, status_code=400)
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
        with store.lock:
            if revision not in store.meta(repo_id)["refs"]:
                raise NotFound("RevisionNotFound", f"Invalid rev id: {revision}")
            files = store.files(repo_id, store.resolve(repo_id, revision))
            summary = ""
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    summary = value.get("summary", "")
                elif ".." in value["path"].split("/") or value["path"].startswith("/"):
                    return JSONResponse({"error": f"bad path {value['path']!r}"}, status_code=400)
                elif key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {k: v for k, v in files.items() if not k.startswith(prefix)}
                else:  # lfsFile, copies: not in this stand-in
                    return JSONResponse({"error": f"unsupported commit operation {key!r}"}, status_code=422)
            sha = store.commit(repo_id, revision, files, summary)
        base = str(request.base_url).rstrip("/")
        return {"commitUrl": f"{base}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}

    @app.get("/api/models/{ns}/{name}")
    @app.get("/api/models/{ns}/{name}/revision/{revision}")
    async def model_info(ns: str, name: str, revision: str = "main"):
        repo_id = f"{ns}/{name}"
        sha = store.resolve(repo_id, revision)
        files = store.files(repo_id, sha)
        return {"id": repo_id, "modelId": repo_id, "sha": sha, "private": store.meta(repo_id)["private"],
                "tags": [], "siblings": [{"rfilename": p, "size": len(v), "blobId": git_blob_oid(v)}
                                         for p, v in files.items()]}

    @app.get("/api/models/{ns}/{name}/tree/{revision}")
    @app.get("/api/models/{ns}/{name}/tree/{revision}/{path:path}")
    async def tree(ns: str, name: str, revision: str, path: str = ""):  # always recursive
        repo_id, prefix = f"{ns}/{name}", path.strip("/") + "/" if path.strip("/") else ""
        entries: dict[str, dict] = {}
        for rel, data in store.files(repo_id, store.resolve(repo_id, revision)).items():
            if rel.startswith(prefix):
                parts = rel.split("/")
                for folder in ("/".join(parts[:d]) for d in range(1, len(parts))):
                    entries.setdefault(folder, {"type": "directory", "oid": git_blob_oid(folder.encode()),
                                                "size": 0, "path": folder})
                entries[rel] = {"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": rel}
        return list(entries.values())

    @app.api_route("/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    async def resolve(ns: str, name: str, revision: str, path: str, request: Request):
        repo_id = f"{ns}/{name}"
        sha = store.resolve(repo_id, revision)
        files = store.files(repo_id, sha)
        if path not in files:
            raise NotFound("EntryNotFound", f"{path} does not exist on {revision}", commit=sha)
        data = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_oid(data)}"', "Content-Length": str(len(data))}
        if request.method == "HEAD":
            return Response(b"", headers=headers)
        store.downloads.append(f"{repo_id}:{path}")
        return Response(data, headers=headers, media_type="application/octet-stream")

    return app


@contextmanager
def serve(root: Path):
    """Run the stand-in on a free loopback port; yields (base URL, Store)."""
    app = create_app(root)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the Hub stand-in did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.store
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
