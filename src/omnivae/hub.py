"""Share models through the Hugging Face Hub (docs/sharing.md).

push() uploads a saved model folder (config.json, model.safetensors, tokenizer JSON) with a
generated model card; pull() downloads one, taking only file types a model folder may hold
(never a pickle) and refusing a repository that holds anything else. `omnivae.load("hf://user/repo")`
pulls, then loads. The endpoint is the argument, else HF_ENDPOINT, else huggingface.co; the token
is the argument, else huggingface_hub's own (HF_TOKEN or `hf auth login`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import yaml

from omnivae.atomic import replacing_folder
from omnivae.errors import ConfigError, ModelFileError, OmniVAEError
from omnivae.io import ALLOWED_SUFFIXES, CONFIG_FILE, WEIGHTS_FILE, check_folder_contents, read_header, \
    recover_model_folder
from omnivae.run_folder import RunFolder
from omnivae.version import __version__

HUB_PREFIX = "hf://"
INSTALL_HINT = "pip install 'omnivae[hub]'"
DEFAULT_ENDPOINT = "https://huggingface.co"
SAFE_PATTERNS = sorted(f"*{suffix}" for suffix in ALLOWED_SUFFIXES)  # what pull() downloads
HUB_OWN_FILES = {".gitattributes"}  # every Hub repository has one; never downloaded
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")

DETAIL_KEYS = ("shape", "num_classes", "dim", "vocab_size", "max_len")
MAX_METRICS = 40


class HubError(OmniVAEError, OSError):
    """The Hub could not be reached, or refused the request."""


def hf_hub():
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ConfigError(f"sharing through the Hugging Face Hub needs the huggingface_hub package ({exc}); "
                          f"install it with: {INSTALL_HINT}") from None
    return huggingface_hub


def split_repo(repo: str, revision: str | None = None) -> tuple[str, str | None]:
    """"user/repo", "user/repo@rev" or "hf://user/repo@rev" -> (repo id, revision)."""
    text = repo[len(HUB_PREFIX):] if repo.startswith(HUB_PREFIX) else repo
    text, _, rev = text.partition("@")
    if not REPO_ID.fullmatch(text) or ".." in text or (_ and not rev):
        raise ConfigError(f"{repo!r} does not name a Hub model: expected user/repo or user/repo@revision "
                          f"(letters, digits, '.', '_', '-'), e.g. {HUB_PREFIX}user/my-model@main")
    return text, (rev or revision)


def resolve_endpoint(endpoint: str | None) -> str | None:
    return (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def resolve_cache_dir(cache_dir: str | Path | None) -> str | None:
    """huggingface_hub reads HF_HOME / HF_HUB_CACHE once, when imported; read them at each call."""
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def is_network_error(exc: BaseException) -> bool:
    return isinstance(exc, (ConnectionError, TimeoutError)) or any(
        c.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore") and
        c.__name__ in ("TransportError", "TimeoutException", "NetworkError") for c in type(exc).__mro__)


@contextmanager
def hub_errors(action: str, repo_id: str, endpoint: str | None, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's and the network's errors into one HubError line (the CLI shows no traceback)."""
    hf_hub()
    from huggingface_hub import errors

    where = endpoint or DEFAULT_ENDPOINT
    try:
        yield
    except OmniVAEError:
        raise
    except errors.RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision {revision!r} at {where}") from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"no model repository {repo_id} at {where} (or it is private: log in with "
                       "`hf auth login` or set HF_TOKEN)") from None
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        hint = " (check your token: HF_TOKEN or `hf auth login`)" if status in (401, 403) else ""
        raise HubError(f"the Hub at {where} refused to {action} {repo_id} (HTTP {status}){hint}: "
                       f"{str(exc).splitlines()[0]}") from None
    except errors.OfflineModeIsEnabled:
        raise HubError(f"cannot {action} {repo_id}: HF_HUB_OFFLINE is set and no copy is cached") from None
    except Exception as exc:
        if is_network_error(exc) or isinstance(exc, errors.LocalEntryNotFoundError):
            raise HubError(f"cannot reach the Hub at {where} to {action} {repo_id}: {exc}".splitlines()[0]) from None
        raise


# ----------------------------------------------------------------------------------------- push

def find_run_dir(model_dir: Path) -> Path | None:
    """RUN/model belongs to a run folder (run.yaml beside it; metrics.json and figures/ when evaluated)."""
    return model_dir.parent if RunFolder(model_dir.parent).has_config() else None


def flat_numbers(value: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """("coherence.image->label.all", 0.93), ... for every number in nested metrics."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from flat_numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield prefix, value


def data_summary(run_dir: Path) -> list[str]:
    run = RunFolder(run_dir).saved_config() or {}
    data = run.get("data") or {}
    lines = [f"- source: `{data.get('source', '?')}`"]
    for key, value in (data.get("options") or {}).items():
        if key in ("path", "root", "dir", "folder") or (isinstance(value, str) and ("/" in value or "\\" in value)):
            continue  # local paths stay private
        lines.append(f"- {key}: `{value}`")
    for key in ("test_fraction", "split_seed"):
        if key in data:
            lines.append(f"- {key}: `{data[key]}`")
    train = run.get("train") or {}
    lines += [f"- training: {train.get('max_epochs', '?')} epochs at most, batch size {train.get('batch_size', '?')}, "
              f"seed {train.get('seed', '?')}"]
    return lines


def model_card(model_dir: Path, repo_id: str, figures: list[str]) -> str:
    """README.md: YAML front matter for the Hub, then what the model is, its modalities, how to
    load it, its training data and metrics when its run folder has them, figures, and its config."""
    config = read_header(model_dir)["config"]
    name = str(config.get("model", "?"))
    modalities = config.get("modalities") or {}
    from omnivae.models import MODELS

    cls = MODELS.get(name)
    what, paper = (cls.about, cls.paper) if cls is not None else ("omnivae model", "")
    kinds = sorted({str(spec.get("kind")) for spec in modalities.values() if isinstance(spec, dict)})
    tags = ["omnivae", name] + (["multimodal"] if len(modalities) > 1 else []) + kinds
    front = yaml.safe_dump({"library_name": "omnivae", "tags": list(dict.fromkeys(tags))}, sort_keys=False)
    lines = ["---", front.rstrip(), "---", "", f"# {repo_id.split('/')[-1]}", "",
             f"An omnivae **`{name}`** model: {what}" + (f" ({paper})." if paper else "."),
             f"Latent dimension {config.get('latent_dim', '?')}; saved with omnivae {__version__}.", "",
             "## Modalities", "", "| name | kind | details |", "| --- | --- | --- |"]
    for mod, spec in modalities.items():
        spec = spec if isinstance(spec, dict) else {}
        details = ", ".join(f"{k} {spec[k]}" for k in DETAIL_KEYS if spec.get(k) is not None)
        lines.append(f"| {mod} | {spec.get('kind', '?')} | {details} |")
    lines += ["", "## Use", "", "```python", "import omnivae", "",
              f'model = omnivae.load("{HUB_PREFIX}{repo_id}")', "```", "",
              f"or `omnivae pull {repo_id} --out model/`. The folder holds JSON and safetensors files only "
              "(no pickles): `omnivae.load` refuses any other file type.", ""]
    run_dir = find_run_dir(model_dir)
    if run_dir is not None:
        lines += ["## Training data", ""] + data_summary(run_dir) + [""]
        if (run_dir / "metrics.json").is_file():
            metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
            rows = list(flat_numbers(metrics))
            lines += ["## Metrics", "", "On the run's held-out test split (all of them: `metrics.json`).", "",
                      "| metric | value |", "| --- | --- |"]
            lines += [f"| {k} | {v:.4g} |" for k, v in rows[:MAX_METRICS]] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"![{PurePosixPath(f).stem}]({f})" for f in figures] + [""]
    lines += ["## Configuration", "", "```json", json.dumps(config, indent=2), "```", ""]
    return "\n".join(lines)


def stage_upload(model_dir: Path, repo_id: str, staging: Path) -> None:
    """The files to upload: the model folder, README.md (the folder's own, else generated),
    metrics.json and figures/*.png from its run folder."""
    shutil.copytree(model_dir, staging, dirs_exist_ok=True)
    run_dir = find_run_dir(model_dir)
    figures: list[str] = []
    if run_dir is not None:
        if (run_dir / "metrics.json").is_file() and not (staging / "metrics.json").exists():
            shutil.copy2(run_dir / "metrics.json", staging / "metrics.json")
        for png in sorted((run_dir / "figures").glob("*.png")):
            (staging / "figures").mkdir(exist_ok=True)
            shutil.copy2(png, staging / "figures" / png.name)
            figures.append(f"figures/{png.name}")
    if not (staging / "README.md").exists():
        (staging / "README.md").write_text(model_card(model_dir, repo_id, figures), encoding="utf-8")


def push(model_dir: str | Path, repo_id: str, token: str | None = None, private: bool = False,
         endpoint: str | None = None, revision: str | None = None) -> str:
    """Upload a saved model folder to the Hub repository `repo_id` (created if needed) and return
    its URL. The repository then holds exactly the upload (earlier files not in it are removed)."""
    hf = hf_hub()
    repo_id, revision = split_repo(repo_id, revision)
    model_dir = Path(model_dir)
    recover_model_folder(model_dir)
    if not model_dir.is_dir():
        raise ModelFileError(f"model folder {model_dir} does not exist")
    try:  # nothing but JSON, safetensors and the like is ever uploaded
        check_folder_contents(model_dir)
    except ModelFileError as exc:
        raise ModelFileError(f"not uploading {model_dir}: {exc}") from None
    header = read_header(model_dir)
    if not (model_dir / WEIGHTS_FILE).is_file():
        raise ModelFileError(f"{model_dir}: {WEIGHTS_FILE} is missing")
    endpoint = resolve_endpoint(endpoint)
    api = hf.HfApi(endpoint=endpoint, token=token, library_name="omnivae", library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="omnivae-push-") as tmp:
        staging = Path(tmp) / "upload"
        stage_upload(model_dir, repo_id, staging)
        with hub_errors("upload to", repo_id, endpoint, revision):
            url = str(api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"))
            if revision not in (None, "main"):
                api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
            api.upload_folder(repo_id=repo_id, folder_path=staging, repo_type="model", revision=revision,
                              commit_message=f"Upload omnivae {header['config'].get('model')} model",
                              delete_patterns=["*"])
    return url + (f"/tree/{revision}" if revision not in (None, "main") else "")


# ----------------------------------------------------------------------------------------- pull

def check_remote_files(repo_id: str, files: list[str]) -> None:
    """Refuse a repository holding any file a model folder never has, before anything is downloaded."""
    for name in files:
        if name not in HUB_OWN_FILES and PurePosixPath(name).suffix.lower() not in ALLOWED_SUFFIXES:
            raise ModelFileError(f"refusing {HUB_PREFIX}{repo_id}: it holds {name!r}, a file type a model folder "
                                 f"never has (allowed: {sorted(ALLOWED_SUFFIXES)}); pickles and .pt files are "
                                 "never downloaded or loaded")
    if CONFIG_FILE not in files:
        raise ModelFileError(f"{HUB_PREFIX}{repo_id} is not an omnivae model: it has no {CONFIG_FILE}")


def pull(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None,
         endpoint: str | None = None, token: str | None = None, out: str | Path | None = None,
         overwrite: bool = False) -> Path:
    """Download a model from the Hub into huggingface_hub's cache (or `cache_dir`) and return its
    folder; with `out`, copy it to that plain folder and return that. Only the file types of
    io.ALLOWED_SUFFIXES are fetched, and a repository holding any other file is refused. When the
    Hub cannot be reached, a copy cached by an earlier pull is used."""
    hf = hf_hub()
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    repo_id, revision = split_repo(repo_id, revision)
    if out is not None:
        check_out(Path(out), overwrite)
    endpoint, cache = resolve_endpoint(endpoint), resolve_cache_dir(cache_dir)
    options = dict(cache_dir=cache, endpoint=endpoint, token=token, allow_patterns=SAFE_PATTERNS,
                   library_name="omnivae", library_version=__version__)
    api = hf.HfApi(endpoint=endpoint, token=token, library_name="omnivae", library_version=__version__)
    with hub_errors("download", repo_id, endpoint, revision):
        try:
            info = api.model_info(repo_id, revision=revision)
        except Exception as exc:
            if not (is_network_error(exc) or isinstance(exc, OfflineModeIsEnabled)):
                raise
            try:  # offline: the copy an earlier pull cached (its files were checked then)
                folder = Path(hf.snapshot_download(repo_id, revision=revision, local_files_only=True, **options))
            except LocalEntryNotFoundError:
                raise exc from None
        else:
            check_remote_files(repo_id, [s.rfilename for s in info.siblings or []])
            # by name, so the cache maps it to its commit (for offline use); whatever commit it
            # resolves to, only ALLOWED_SUFFIXES files are fetched, and checked again below
            folder = Path(hf.snapshot_download(repo_id, revision=revision, **options))
    check_folder_contents(folder)
    if out is None:
        return folder
    return copy_out(folder, Path(out), overwrite)


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"{out} already exists and is not empty; choose another folder or overwrite it")


def copy_out(folder: Path, out: Path, overwrite: bool) -> Path:
    """A plain copy of the downloaded model (the cache holds symlinks), swapped in whole."""
    check_out(out, overwrite)
    with replacing_folder(out) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)  # follows the cache's symlinks
    return out


def pull_uri(uri: str) -> Path:
    """"hf://user/repo[@revision]" -> the downloaded model folder (for omnivae.load)."""
    return pull(uri)
