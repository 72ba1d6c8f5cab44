"""Pretrained feature extractors from a local folder, through `transformers` (optional extra:
pip install 'omnivae[pretrained]'): a BERT-family text encoder, or an image backbone (ResNet,
ViT), each followed by a trained head to the modality's 2 * latent_dim outputs,

    text:   h = sum_t m_t H_t / sum_t m_t    (H: last hidden state, m: attention mask)
    image:  h = pooled output [ResNet]  or  H_0, the class token [ViT]
    then    (mu, logvar) = head(h)

Loading never reaches a network and never runs code from the folder: `local_files_only=True`,
`trust_remote_code=False` and `use_safetensors=True` (a folder holding only pytorch_model.bin,
a pickle, is refused). Images are resized, rescaled and normalised as the folder's image
processor config (preprocessor_config.json) says, with torch ops on whole batches.

Frozen (the default): the network stays out of the module tree (no parameters, nothing in a
state_dict or a saved model, always in eval mode) and is shared by every encoder of the same
folder in the process, with its feature cache: text features are computed once per distinct
caption, image features once per distinct image (keyed by a hash of its pixels, so the training
images that recur every epoch hit the cache whatever batch or order they come in). The cache
holds up to CACHE_BYTES of features per folder, least recently used dropped first. With
`fine_tune: true` the network is an ordinary submodule: trained, saved with the model, no cache;
its batch norms keep using their running statistics (batches hold placeholders of missing
examples, see omnivae.modalities.image). A saved model records the folder in its config and
needs it to load.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from omnivae.errors import InputError
from omnivae.modalities.base import mlp

INSTALL_HINT = "pretrained encoders need the optional package transformers: pip install 'omnivae[pretrained]'"
LOAD = {"local_files_only": True, "trust_remote_code": False}  # never a download, never the folder's code
CACHE_BYTES = 1 << 30  # frozen features kept per folder
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL codes in image processor configs; others: bicubic

_SHARED: dict[tuple, tuple[nn.Module, "FeatureCache"]] = {}  # frozen networks and their caches, by folder


def resolve_folder(path: str | None) -> str | None:
    """A spec's `pretrained_path` as an absolute path, so a saved model finds it from anywhere."""
    if path is None:
        return None
    if not path.strip():
        raise ValueError("pretrained_path is empty: give the folder of a transformers model")
    return str(Path(path).expanduser().resolve())


def require_transformers():
    try:
        import transformers
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return transformers


def check_folder(path: str, where: str) -> Path:
    """The folder, or an InputError saying what it lacks (config.json, safetensors weights)."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{where}: pretrained_path {folder} is not a folder (a model built with a pretrained "
                         "encoder needs that folder, also to load once saved)")
    if not (folder / "config.json").is_file():
        raise InputError(f"{where}: {folder} has no config.json (save the model there with save_pretrained)")
    if not any((folder / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        pickled = " (only pytorch_model.bin, a pickle, which is not loaded)" if \
            (folder / "pytorch_model.bin").is_file() else ""
        raise InputError(f"{where}: {folder} has no model.safetensors weights{pickled}; save_pretrained writes them")
    return folder


def feature_width(config, where: str) -> int:
    """Width of the features: hidden_size (BERT, ViT) or the last of hidden_sizes (ResNet)."""
    sizes = getattr(config, "hidden_sizes", None)
    width = sizes[-1] if sizes else getattr(config, "hidden_size", None)
    if not isinstance(width, int):
        raise InputError(f"{where}: the config of {type(config).__name__} gives no hidden_size or hidden_sizes")
    return width


def load_network(folder: Path, where: str) -> nn.Module:
    """AutoModel from the folder, in float32. On the meta device (load_model sizes a model there
    first) it is built from the config alone: no weights are read."""
    transformers = require_transformers()
    try:
        if torch.get_default_device().type == "meta":
            return transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(folder, **LOAD))
        net, info = transformers.AutoModel.from_pretrained(folder, use_safetensors=True, output_loading_info=True,
                                                           **LOAD)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{where}: the model in {folder} cannot be loaded: {exc}") from None
    missing = sorted(k for k in info["missing_keys"] if not k.startswith("pooler."))  # poolers are not read
    if missing:
        raise InputError(f"{where}: the weights in {folder} lack {len(missing)} tensors of "
                         f"{type(net).__name__} (first: {missing[0]}): is it the right folder?")
    return net.float()


def shared_network(folder: Path, where: str) -> tuple[nn.Module, "FeatureCache"]:
    """The frozen network of a folder and its feature cache, loaded once per process (and again
    when the weights file changes)."""
    weights = next(folder / f for f in ("model.safetensors", "model.safetensors.index.json")
                   if (folder / f).is_file())
    stat = weights.stat()
    key = (str(folder), stat.st_mtime_ns, stat.st_size)
    if key not in _SHARED:
        net = load_network(folder, where).eval().requires_grad_(False)
        if torch.get_default_device().type == "meta":  # a sizing pass: nothing to share
            return net, FeatureCache(1)
        entries = max(1, CACHE_BYTES // (4 * feature_width(net.config, where)))
        _SHARED[key] = net, FeatureCache(entries)
    return _SHARED[key]


class FeatureCache:
    """Features by key (a caption, an image hash), up to `entries` of them, least recently used
    dropped first. Stored as ordinary CPU tensors (made outside inference mode, so features first
    computed during validation can be trained on)."""

    def __init__(self, entries: int):
        self.entries = entries
        self.store: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self.store)

    def get(self, keys: list, compute: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """[len(keys), F]: cached rows, and compute(indices) for the first example of each new key."""
        new = list(dict.fromkeys(k for k in keys if k not in self.store))
        if new:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            with torch.no_grad():
                feats = compute([first[k] for k in new])
            with torch.inference_mode(False):
                for k, f in zip(new, feats.float().cpu()):
                    self.store[k] = f.clone()
        rows = []
        for k in keys:
            self.store.move_to_end(k)
            rows.append(self.store[k])
        while len(self.store) > self.entries:
            self.store.popitem(last=False)
        return torch.stack(rows)


class TransformersEncoder(nn.Module):
    """A pretrained network's features -> trained head -> [B, out_dim]. Frozen: the network is
    shared and outside the module tree, its features cached; fine-tuned: a submodule."""

    def __init__(self, path: str, fine_tune: bool, head_sizes: list[int], out_dim: int, where: str):
        super().__init__()
        require_transformers()  # the install hint before any folder check
        self.folder, self.fine_tune = check_folder(path, where), fine_tune
        if fine_tune:
            self.network = load_network(self.folder, where)
        else:
            net, self.cache = shared_network(self.folder, where)
            self.__dict__["_frozen"] = net  # a plain attribute: not a parameter, not in state_dict
        self.head = mlp([feature_width(self.net.config, where), *head_sizes, out_dim])

    @property
    def net(self) -> nn.Module:
        return self.network if self.fine_tune else self.__dict__["_frozen"]

    def train(self, mode: bool = True) -> "TransformersEncoder":
        """A fine-tuned network keeps its batch norms in eval mode (running statistics): batches
        mix in placeholders of missing examples, and an example's features must not depend on them."""
        super().train(mode)
        if self.fine_tune:
            for m in self.network.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def on_device(self, device: torch.device) -> nn.Module:
        """The network, moved to `device` if it is not there (a frozen one does not follow .to())."""
        net = self.net
        if not self.fine_tune and next(net.parameters()).device != device:
            net.to(device)
        return net


class TransformersTextEncoder(TransformersEncoder):
    """Token ids [B, L] -> captions (`to_text`, the modality's own tokenizer) -> the folder's
    tokenizer and BERT-family model -> masked mean of the last hidden state -> head."""

    def __init__(self, to_text: Callable[[torch.Tensor], list[str]], path: str, fine_tune: bool, hidden: int,
                 out_dim: int, where: str):
        super().__init__(path, fine_tune, [hidden], out_dim, where)
        transformers = require_transformers()
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.folder, **LOAD)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{where}: {self.folder} has no tokenizer that loads (tokenizer.json or the "
                             f"vocabulary files a tokenizer's save_pretrained writes): {str(exc).splitlines()[0]}"
                             ) from None
        size, vocab = len(self.tokenizer), getattr(self.net.config, "vocab_size", None)
        if size <= len(self.tokenizer.all_special_tokens):  # what a folder without vocabulary files gives
            raise InputError(f"{where}: {self.folder} has no tokenizer vocabulary (tokenizer.json or the "
                             "vocabulary files a tokenizer's save_pretrained writes)")
        if vocab is not None and size > vocab:
            raise InputError(f"{where}: the tokenizer in {self.folder} has {size} tokens but its model embeds {vocab}")
        positions = getattr(self.net.config, "max_position_embeddings", 512)
        self.max_tokens = min(self.tokenizer.model_max_length, positions)
        self._to_text = to_text

    def embed(self, captions: list[str], device: torch.device) -> torch.Tensor:
        """[B, F]: mean of the last hidden state over each caption's tokens (padding left out)."""
        inputs = self.tokenizer(captions, padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt").to(device)
        hidden = self.on_device(device)(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captions = self._to_text(x)
        if self.fine_tune:
            return self.head(self.embed(captions, x.device))
        feats = self.cache.get(captions, lambda idx: self.embed([captions[i] for i in idx], x.device))
        return self.head(feats.to(x.device))


class TransformersImageEncoder(TransformersEncoder):
    """Pixels in [0, 1] [B, C, H, W] -> the folder's image preprocessing -> image model ->
    pooled output (4-D feature maps: ResNet) or class token (token sequences: ViT) -> head."""

    def __init__(self, path: str, fine_tune: bool, channels: int, head_sizes: list[int], out_dim: int,
                 where: str):
        super().__init__(path, fine_tune, head_sizes, out_dim, where)
        wanted = getattr(self.net.config, "num_channels", 3)
        if channels not in (1, wanted):
            raise InputError(f"{where}: images have {channels} channels; the model in {self.folder} reads {wanted}")
        self.preprocess = ImagePreprocess(processor_config(self.folder, where), wanted, where)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.on_device(x.device)(pixel_values=self.preprocess(x))
        if out.last_hidden_state.dim() == 3:  # tokens: the class token of the last layer
            return out.last_hidden_state[:, 0]
        pooled = getattr(out, "pooler_output", None)
        return pooled.flatten(1) if pooled is not None else out.last_hidden_state.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fine_tune:
            return self.head(self.embed(x))
        return self.head(self.cache.get(image_keys(x), lambda idx: self.embed(x[idx])).to(x.device))


def image_keys(x: torch.Tensor) -> list[bytes]:
    """One 16-byte digest per image of its shape, dtype and pixel bytes."""
    rows = x.detach().cpu().contiguous()
    head = f"{list(rows.shape[1:])}{rows.dtype}".encode()
    return [hashlib.blake2b(head + row.numpy().tobytes(), digest_size=16).digest() for row in rows]


def processor_config(folder: Path, where: str) -> dict:
    """The image processor's settings (preprocessor_config.json), read without building one."""
    transformers = require_transformers()
    try:
        config, _ = transformers.ImageProcessingMixin.get_image_processor_dict(folder, **LOAD)
    except (OSError, ValueError) as exc:
        raise InputError(f"{where}: {folder} has no image processor config (preprocessor_config.json, "
                         f"which an image processor's save_pretrained writes): {str(exc).splitlines()[0]}") from None
    return config


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (size["height"], size["width"])


class ImagePreprocess:
    """What an image processor config does, on a batch [B, C, H, W] in [0, 1]: grey to the model's
    channels; resize (`size` as height/width, or shortest_edge: with `crop_pct` the short side to
    shortest_edge / crop_pct then a centre crop of shortest_edge, as ConvNeXt's processor, which
    below 384 crops and from 384 resizes to a square); a centre crop to `crop_size` when
    do_center_crop; pixel values = 255 x [0, 1] x rescale_factor (when do_rescale); then
    (v - image_mean) / image_std (when do_normalize). Resampling is the config's (nearest,
    bilinear, else bicubic), antialiased, clamped to [0, 1] as 8-bit pixels would be."""

    def __init__(self, config: dict, channels: int, where: str):
        self.channels = channels
        self.mode = RESAMPLE.get(config.get("resample"), "bicubic")
        self.exact = self.short = self.crop = None
        size = config.get("size")
        if config.get("do_resize", True) and size is not None:
            if isinstance(size, int) or {"height", "width"} <= set(size):
                self.exact = _pair(size)
            elif "shortest_edge" in size:
                edge, pct = size["shortest_edge"], config.get("crop_pct")
                convnext = str(config.get("image_processor_type", "")).startswith("ConvNext")
                if pct and convnext and edge >= 384:
                    self.exact = (edge, edge)
                elif pct:
                    self.short, self.crop = int(edge / pct), (edge, edge)
                else:
                    self.short = edge
            else:
                raise InputError(f"{where}: image processor size {dict(size)} is not one this reads "
                                 "(height and width, or shortest_edge)")
        if config.get("do_center_crop") and config.get("crop_size") is not None:
            self.crop = _pair(config["crop_size"])
        self.scale = 255.0 * config.get("rescale_factor", 1 / 255) if config.get("do_rescale", True) else 255.0
        self.mean = self.std = None
        if config.get("do_normalize", True):
            if config.get("image_mean") is None or config.get("image_std") is None:
                raise InputError(f"{where}: the image processor config normalises but gives no image_mean/image_std")
            self.mean, self.std = (torch.tensor(config[k], dtype=torch.float32).reshape(-1, 1, 1)
                                   .expand(channels, 1, 1) for k in ("image_mean", "image_std"))

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        smooth = {} if self.mode == "nearest" else {"antialias": True, "align_corners": False}
        return F.interpolate(x, size=size, mode=self.mode, **smooth).clamp(0, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] == 1 and self.channels != 1:
            x = x.expand(-1, self.channels, -1, -1)
        if self.exact is not None:
            x = self._resize(x, self.exact)
        elif self.short is not None:
            h, w = x.shape[-2:]
            ratio = self.short / min(h, w)
            x = self._resize(x, (self.short, int(w * ratio)) if h <= w else (int(h * ratio), self.short))
        if self.crop is not None:
            (h, w), (ch, cw) = x.shape[-2:], self.crop
            top, left = max(0, (h - ch) // 2), max(0, (w - cw) // 2)
            x = x[..., top:top + ch, left:left + cw]
        x = x * self.scale
        if self.mean is not None:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x
