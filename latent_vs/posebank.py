"""The pose bank of the MLVS controller (paper III-D): poses r_j, their embeddings z_r_j = φ(r_j)
in a FAISS index, and the latent interaction matrix interpolated from the K nearest (eq. 13).

Poses are φ's input Δr = c*r_c (the camera pose seen from the goal). The bank is the
authors' 6-D grid (10 steps per DOF over ±0.4 m in x, y, z and ±45°, ±45°, ±90° in θu,
i.e. 10^6 poses) plus 10^4 poses near the goal.

Memory: the bank keeps the poses (N×6 float32) and the FAISS index (N×D float32 + ids);
it does NOT store the N latent interaction matrices L_z_j (10^6 × 32 × 6 floats = 0.77 GB).
Instead L_z_j = ∂φ/∂r(r_j) · L_r(r_j) (eq. 5) is computed on the fly, in forward mode, for
the K neighbours of each query only — a few hundred microseconds for K = 50.

Jacobian modes of `interaction`:
  * "knn": eq. 13, L_z = Σ_j α_j L_z_j over the K nearest, α_j ∝ ‖z_r_j − z_I‖ ("proportional",
    as printed) or ∝ 1/‖z_r_j − z_I‖ ("inverse", the authors' code / scikit-learn's
    weights="distance");
  * "refine": the nearest pose r̂ refined by a few Gauss–Newton steps on ‖φ(r) − z_I‖, then
    the exact L_z at r̂ (also gives a pose estimate r̂ of the camera seen from the goal).

The index is an IndexIVFFlat (nprobe tuned by recall against brute force on real latents),
or an exact IndexFlatL2 for small banks. A built bank is cached on disk keyed by the hash of
φ's weights and the bank settings (see `load_or_build`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .errors import UserError
from .geometry import L_pose

BANK_VERSION = 2   # 2: IVF lists 4·√N (was √N)


class BankError(UserError):
    """A pose bank cache file that cannot be read (names the file)."""


# ----------------------------------------------------------------------------- Jacobians of φ
def phi_jacobian(phi, r: torch.Tensor) -> torch.Tensor:
    """∂φ/∂r at each row of r (B, 6) -> (B, D, 6), forward mode (works on TorchScript φ)."""
    from torch.func import jacfwd, vmap
    with torch.no_grad():
        return vmap(jacfwd(phi))(r)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# activation name -> (f, f'), for the forward-mode Jacobian of an MLP in NumPy
_ACTIVATIONS = {
    "ReLU": (lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(x.dtype)),
    "SiLU": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x)))),
    "Tanh": (np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "ELU": (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))), lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0)))),
    "Softplus": (lambda x: np.logaddexp(0.0, x), _sigmoid),
}


class MLPJacobian:
    """∂φ/∂r in forward mode, in NumPy (float64, or float32 for the bank's cache), for φ = input
    scale then Linear/activation layers (learning.nets.PoseNet, eager or TorchScript): ~100×
    faster than torch.func for the few dozen poses of one control step. `for_module` returns
    None for other φ."""

    def __init__(self, scale: np.ndarray, layers: list):
        self.scale, self.layers = scale, layers
        self._by_dtype: dict = {}

    @classmethod
    def for_module(cls, phi) -> "MLPJacobian | None":
        try:
            scale = phi.input_scale.detach().cpu().double().numpy().reshape(6)
            children = list(phi.mlp.children())
        except (AttributeError, RuntimeError):
            return None
        layers = []
        for m in children:
            kind = getattr(m, "original_name", type(m).__name__)
            if kind == "Linear":
                layers.append((m.weight.detach().cpu().double().numpy(), m.bias.detach().cpu().double().numpy()))
            elif kind in _ACTIVATIONS and (kind != "ELU" or getattr(m, "alpha", 1.0) == 1.0) \
                    and (kind != "Softplus" or (getattr(m, "beta", 1.0) == 1.0)):
                layers.append(_ACTIVATIONS[kind])
            else:
                return None
        return cls(scale, layers)

    def _layers(self, dtype) -> list:
        """The layers with weights in `dtype` (converted once)."""
        dtype = np.dtype(dtype)
        if dtype not in self._by_dtype:
            self._by_dtype[dtype] = [(W.astype(dtype), b.astype(dtype)) if isinstance(W, np.ndarray) else (W, b)
                                     for W, b in self.layers]
        return self._by_dtype[dtype]

    def __call__(self, r: np.ndarray, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
        """(φ(r) (B, D), ∂φ/∂r (B, D, 6)) at r (B, 6), computed in `dtype`."""
        x = (np.asarray(r, dtype=np.float64) * self.scale).astype(dtype, copy=False)
        B = len(x)
        # ∂(s r)/∂r = diag(s) for every pose, as (h, B·6): one GEMM a layer for all poses
        J = np.tile(np.diag(self.scale).astype(dtype), B)
        for layer in self._layers(dtype):
            if isinstance(layer[0], np.ndarray):
                W, b = layer
                J = W @ J
                x = x @ W.T + b
            else:
                f, df = layer
                J = (J.reshape(-1, B, 6) * df(x).T[:, :, None]).reshape(-1, B * 6)
                x = f(x)
        return x, J.reshape(-1, B, 6).transpose(1, 0, 2)


_JACOBIANS: dict = {}


def _fast_jacobian(phi):
    key = id(phi)
    hit = _JACOBIANS.get(key)
    if hit is None or hit[0] is not phi:
        hit = (phi, MLPJacobian.for_module(phi))
        _JACOBIANS[key] = hit
    return hit[1]


def latent_interaction(phi, r: np.ndarray, dtype=torch.float32, np_dtype=np.float64) -> np.ndarray:
    """L_z = ∂φ/∂r · L_r at poses r (B, 6) -> (B, D, 6) (paper III-D with eq. 5).

    ∂φ/∂r in NumPy `np_dtype` (float64; the bank's float32 cache asks for float32, ~1.5x
    faster) for MLP φ (MLPJacobian), else torch.func forward mode in `dtype`."""
    r = np.asarray(r, dtype=np.float64)
    fast = _fast_jacobian(phi)
    if fast is not None:
        J = fast(r, np_dtype)[1]
        return J @ L_pose(r).astype(np_dtype, copy=False)
    J = phi_jacobian(phi, torch.as_tensor(r, dtype=dtype)).numpy().astype(np.float64)
    return J @ L_pose(r)


def knn_weights(dist: np.ndarray, weighting: str = "inverse") -> np.ndarray:
    """Eq. 13's α_j from neighbour distances (B, K) -> (B, K), rows summing to 1.

    "proportional": α_j = d_j / Σ_k d_k (eq. 13 as printed);
    "inverse": α_j = (1/d_j) / Σ_k (1/d_k) (the authors' code); a neighbour at distance 0
    takes all the weight (as scikit-learn does)."""
    dist = np.asarray(dist, dtype=np.float64)
    if weighting == "proportional":
        s = dist.sum(-1, keepdims=True)
        return np.where(s > 0, dist / np.where(s > 0, s, 1.0), 1.0 / dist.shape[-1])
    if weighting == "inverse":
        zero = dist <= 1e-12
        w = np.where(zero.any(-1, keepdims=True), zero.astype(np.float64), 1.0 / np.maximum(dist, 1e-12))
        return w / w.sum(-1, keepdims=True)
    if weighting == "uniform":
        return np.full(dist.shape, 1.0 / dist.shape[-1])
    raise ValueError(f"unknown weighting '{weighting}' (proportional, inverse, uniform)")


# ----------------------------------------------------------------------------- pose sets
def grid_poses(steps: int = 10, t_max: float = 0.4, r_max_deg=(45.0, 45.0, 90.0)) -> np.ndarray:
    """The authors' 6-D grid of Δr = (t, θu): `steps` values per DOF, (steps^6, 6) float32."""
    axes = [np.linspace(-t_max, t_max, steps)] * 3 + [np.deg2rad(np.linspace(-m, m, steps)) for m in r_max_deg]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], -1).astype(np.float32)


def near_goal_poses(n: int = 10_000, seed: int = 0, t_max: float = 0.05, r_max_deg: float = 10.0) -> np.ndarray:
    """Poses oversampled near the goal: random directions, magnitudes log-uniform from 1/100
    of the maximum (5 cm, 10°) up to it, plus the goal itself. (n, 6) float32."""
    rng = np.random.default_rng(seed)
    dt = rng.normal(size=(n, 3))
    dr = rng.normal(size=(n, 3))
    dt *= (t_max * 10 ** rng.uniform(-2, 0, n) / np.linalg.norm(dt, axis=1))[:, None]
    dr *= (np.deg2rad(r_max_deg) * 10 ** rng.uniform(-2, 0, n) / np.linalg.norm(dr, axis=1))[:, None]
    out = np.concatenate([dt, dr], 1)
    out[0] = 0.0
    return out.astype(np.float32)


@dataclass
class BankConfig:
    """How the bank is built (part of the cache key)."""
    grid_steps: int = 10                 # values per DOF on the grid (10 -> 10^6 poses)
    t_max: float = 0.4                   # grid half-range in translation [m]
    r_max_deg: tuple = (45.0, 45.0, 90.0)  # grid half-ranges of θu [deg]
    near_goal: int = 10_000              # extra poses near the goal
    index: str = "ivf"                   # "ivf" (IndexIVFFlat) or "flat" (exact)
    nlist: int = 0                       # IVF lists (0: 4·sqrt(N): 4019 for 1,010,000 poses, ~250 each)
    nprobe: int = 16                     # IVF lists visited per query
    seed: int = 0

    def key(self) -> dict:
        d = asdict(self)
        d.pop("nprobe")                  # a search setting, not part of what is built
        d["r_max_deg"] = list(self.r_max_deg)
        return d


def phi_hash(phi) -> str:
    """sha256 of φ's weights and buffers (identical φ -> identical key)."""
    h = hashlib.sha256()
    for k, v in sorted(phi.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def embed(phi, poses: np.ndarray, batch: int = 65536, progress: bool = False) -> np.ndarray:
    """z_r = φ(r) in batches, (N, 6) -> (N, D) float32."""
    chunks = range(0, len(poses), batch)
    if progress:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc="φ(bank)", unit="batch", leave=False)
    return np.concatenate([phi(torch.as_tensor(poses[i:i + batch], dtype=torch.float32)).numpy()
                           for i in chunks]).astype(np.float32)


class PoseBank:
    """Poses (N, 6), their φ embeddings in a FAISS index, and eq. 13.

    bank.search(z, k) -> (dist (B, k), idx (B, k)); bank.interaction(z, k, ...) -> L_z (B, D, 6)."""

    def __init__(self, phi, poses: np.ndarray, index, config: BankConfig, key: str = "", build_s: float = 0.0,
                 cache_entries: int = 100_000):
        self.phi, self.poses, self.index, self.config, self.key = phi, poses, index, config, key
        self.build_s = build_s
        import faiss
        self._ivf = faiss.try_extract_index_ivf(index) if not isinstance(index, faiss.IndexFlat) else None
        self.set_nprobe(config.nprobe)
        # L_z_j of the bank poses visited so far (servoing revisits the same neighbours step
        # after step): slot[j] indexes _lz, -1 if not computed; emptied when full.
        self.cache_entries = int(cache_entries)
        self._slot = np.full(len(poses), -1, dtype=np.int32)
        self._lz = np.empty((0, self.index.d, 6), dtype=np.float32)
        self._used = 0

    def clear_cache(self) -> None:
        """Forget every cached L_z_j (they are computed again when next needed)."""
        self._slot[:] = -1
        self._used = 0

    def bank_interaction(self, ids: np.ndarray) -> np.ndarray:
        """L_z_j = ∂φ/∂r · L_r at bank poses `ids` (any shape) -> ids.shape + (D, 6), float64;
        computed once per pose and kept (up to cache_entries poses)."""
        ids = np.asarray(ids)
        return self._lz_rows(ids.reshape(-1)).astype(np.float64).reshape(ids.shape + (self.index.d, 6))

    def interpolate(self, dist: np.ndarray, idx: np.ndarray, weighting: str = "inverse") -> np.ndarray:
        """Eq. 13: L_z = Σ_j α_j L_z_j over neighbours idx (B, k) at distances dist (B, k) ->
        (B, D, 6) float64."""
        return self._weighted_lz(knn_weights(dist, weighting), idx)

    def _weighted_lz(self, alpha: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Σ_j α_j L_z_j for weights alpha (B, k) of neighbours idx (B, k), summed on the
        float32 cache -> (B, D, 6) float64."""
        B, k = idx.shape
        L = alpha[:, None, :].astype(np.float32) @ self._lz_rows(idx.reshape(-1)).reshape(B, k, -1)  # (B, 1, D·6)
        return L.reshape(B, -1, 6).astype(np.float64)

    def _lz_rows(self, flat: np.ndarray) -> np.ndarray:
        """L_z_j of bank poses `flat` (n,) -> (n, D, 6) float32, from the cache (filled as needed)."""
        slots = self._slot[flat]
        if (slots >= 0).all():                                       # all cached: a gather
            return self._lz[slots]
        uniq = np.unique(flat)
        if len(uniq) > self.cache_entries:                          # more than the cache holds
            return latent_interaction(self.phi, self.poses[flat], np_dtype=np.float32)
        missing = uniq[self._slot[uniq] < 0]
        if len(missing):
            if self._used + len(missing) > self.cache_entries:   # full: start again
                self.clear_cache()
                missing = uniq
            if len(self._lz) < self._used + len(missing):
                grow = np.empty((max(self._used + len(missing), min(2 * len(self._lz) + 1024, self.cache_entries)),
                                 self.index.d, 6), dtype=np.float32)
                grow[:self._used] = self._lz[:self._used]
                self._lz = grow
            self._lz[self._used:self._used + len(missing)] = latent_interaction(self.phi, self.poses[missing],
                                                                                 np_dtype=np.float32)
            self._slot[missing] = np.arange(self._used, self._used + len(missing))
            self._used += len(missing)
        return self._lz[self._slot[flat]]

    # -- building
    @classmethod
    def build(cls, phi, config: BankConfig = BankConfig(), progress: bool = False) -> "PoseBank":
        import faiss
        t0 = time.time()
        parts = []
        if config.grid_steps > 0:
            parts.append(grid_poses(config.grid_steps, config.t_max, config.r_max_deg))
        if config.near_goal > 0:
            parts.append(near_goal_poses(config.near_goal, config.seed))
        if not parts:
            raise ValueError("empty pose bank (grid_steps = 0 and near_goal = 0)")
        poses = np.concatenate(parts)
        z = embed(phi, poses, progress=progress)
        index = make_index(z, config)
        return cls(phi, poses, index, config, key=bank_key(phi, config), build_s=time.time() - t0)

    def set_nprobe(self, nprobe: int) -> None:
        if self._ivf is not None:
            self._ivf.nprobe = int(min(nprobe, self._ivf.nlist))
        self.config.nprobe = int(nprobe)

    def __len__(self) -> int:
        return len(self.poses)

    @property
    def latent_dim(self) -> int:
        return self.index.d

    def nbytes(self) -> int:
        """Bytes held by the poses, the index (vectors + ids + coarse centroids) and the L_z cache."""
        n = self.poses.nbytes + self.index.ntotal * self.index.d * 4 + self._slot.nbytes + self._lz.nbytes
        if self._ivf is not None:
            n += self.index.ntotal * 8 + self._ivf.nlist * self.index.d * 4
        return n

    # -- queries
    def search(self, z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """K nearest bank embeddings of z (B, D): Euclidean distances (B, k) and row ids (B, k)."""
        z = np.ascontiguousarray(np.atleast_2d(z), dtype=np.float32)
        d2, idx = self.index.search(z, int(k))
        ivf = self._ivf
        if ivf is not None and (idx < 0).any():  # fewer than k in the probed lists: visit them all
            old = ivf.nprobe
            ivf.nprobe = ivf.nlist
            bad = (idx < 0).any(1)
            d2[bad], idx[bad] = self.index.search(z[bad], int(k))
            ivf.nprobe = old
        return np.sqrt(np.maximum(d2, 0.0)), idx

    def interaction(self, z: np.ndarray, k: int = 50, weighting: str = "inverse", mode: str = "knn",
                    refine_steps: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Latent interaction matrix at z_I (B, D) -> (L_z (B, D, 6), pose estimate (B, 6)).

        mode "knn": eq. 13 over the k nearest (pose estimate = α-weighted mean of their poses);
        mode "refine": nearest pose refined by Gauss–Newton on ‖φ(r) − z_I‖, exact L_z there."""
        z = np.atleast_2d(np.asarray(z, dtype=np.float32))
        if mode == "knn":
            dist, idx = self.search(z, k)
            alpha = knn_weights(dist, weighting)                         # eq. 13
            r = self.poses[idx].astype(np.float64)                       # (B, k, 6)
            return self._weighted_lz(alpha, idx), (alpha[:, None, :] @ r)[:, 0]
        if mode == "refine":
            r_hat = self.estimate_pose(z, refine_steps)
            return latent_interaction(self.phi, r_hat), r_hat
        raise ValueError(f"unknown mode '{mode}' (knn, refine)")

    def estimate_pose(self, z: np.ndarray, steps: int = 3) -> np.ndarray:
        """The pose Δr (camera seen from the goal) whose embedding is nearest z (B, D): the
        bank's nearest pose refined by `steps` Gauss–Newton steps on ‖φ(r) − z‖. (B, 6) float64."""
        z = np.atleast_2d(np.asarray(z, dtype=np.float32))
        _, idx = self.search(z, 1)
        return refine_pose(self.phi, self.poses[idx[:, 0]].astype(np.float64), z, steps)

    # -- disk cache
    def save(self, path: str) -> None:
        """Write the bank to `path` (an .npz) atomically: temp name, then rename."""
        import faiss
        meta = {"version": BANK_VERSION, "key": self.key, "config": self.config.key(), "build_s": self.build_s}
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, poses=self.poses, index=faiss.serialize_index(self.index),
                     meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str, phi, config: BankConfig | None = None) -> "PoseBank":
        """Read a bank written by save(); BankError (naming the file) if unreadable or if it
        was built for another φ / other settings than `config`."""
        import faiss
        try:
            with np.load(path) as f:
                meta = json.loads(bytes(f["meta"]).decode())
                poses = f["poses"]
                index = faiss.deserialize_index(f["index"])
        except FileNotFoundError:
            raise BankError(f"pose bank file not found: {path}") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, RuntimeError, EOFError, json.JSONDecodeError) as e:
            raise BankError(f"pose bank file {path} is unreadable or truncated ({type(e).__name__}: {e})") from None
        if meta.get("version") != BANK_VERSION:
            raise BankError(f"pose bank file {path} has version {meta.get('version')}, expected {BANK_VERSION}")
        cfg = config or BankConfig(**{**meta["config"], "r_max_deg": tuple(meta["config"]["r_max_deg"])})
        if meta["key"] != bank_key(phi, cfg):
            raise BankError(f"pose bank file {path} was built for another φ or other bank settings")
        if index.ntotal != len(poses):
            raise BankError(f"pose bank file {path} is inconsistent ({index.ntotal} embeddings, {len(poses)} poses)")
        return cls(phi, poses, index, cfg, key=meta["key"], build_s=meta.get("build_s", 0.0))


def bank_key(phi, config: BankConfig) -> str:
    h = hashlib.sha256((phi_hash(phi) + json.dumps(config.key(), sort_keys=True) + f"v{BANK_VERSION}").encode())
    return h.hexdigest()


def make_index(z: np.ndarray, config: BankConfig):
    """FAISS index over z (N, D): IndexIVFFlat (k-means on ≤ 40·nlist samples) or IndexFlatL2."""
    import faiss
    n, d = z.shape
    if config.index == "flat" or n < 10_000:
        index = faiss.IndexFlatL2(d)
        index.add(z)
        return index
    if config.index != "ivf":
        raise ValueError(f"unknown index '{config.index}' (ivf, flat)")
    # 4·√N lists with nprobe 16: a single query scans ~4K poses, recall@50 1.000 against brute
    # force on the shipped φ (√N lists scanned ~16K: 0.14 ms instead of 0.08 ms per query); at
    # most N/39 lists, FAISS's floor of training points per centroid (small banks only)
    nlist = config.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist)
    rng = np.random.default_rng(config.seed)
    train = z[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
    index.train(train)
    index.add(z)
    return index


def default_cache_dir() -> str:
    return os.environ.get("LATENT_VS_CACHE",
                          os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "latent_vs"))


CACHE_KEEP = 3   # banks kept in the cache (~160 MB each); LATENT_VS_CACHE_KEEP overrides


def evict_old_banks(cache_dir: str, keep: int | None = None) -> list[str]:
    """Delete all but the `keep` most recently used banks in cache_dir (use = load or save,
    by modification time). Returns the deleted paths."""
    keep = int(os.environ.get("LATENT_VS_CACHE_KEEP", CACHE_KEEP)) if keep is None else keep
    try:
        files = [os.path.join(cache_dir, f) for f in os.listdir(cache_dir)
                 if f.startswith("posebank-") and f.endswith(".npz")]
        files.sort(key=os.path.getmtime, reverse=True)
    except OSError:
        return []
    gone = []
    for path in files[max(keep, 0):]:
        try:
            os.remove(path)
            gone.append(path)
        except OSError:
            pass
    return gone


def load_or_build(phi, config: BankConfig = BankConfig(), cache_dir: str | None = None,
                  progress: bool = False) -> PoseBank:
    """The bank for (φ, config): read from the cache if there, else built and cached.

    A cache file that is unreadable or truncated is rebuilt (and overwritten). cache_dir ""
    disables the cache. After a build, only the CACHE_KEEP most recently used banks stay.
    `make clean` removes the cache directory (default_cache_dir)."""
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    if not cache_dir:
        return PoseBank.build(phi, config, progress=progress)
    path = os.path.join(cache_dir, f"posebank-{bank_key(phi, config)[:24]}.npz")
    if os.path.exists(path):
        try:
            bank = PoseBank.load(path, phi, config)
            bank.set_nprobe(config.nprobe)
            try:
                os.utime(path)   # most recently used: the last to be evicted
            except OSError:
                pass
            return bank
        except BankError as e:
            import warnings
            warnings.warn(f"{e}; rebuilding it")
    bank = PoseBank.build(phi, config, progress=progress)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        bank.save(path)
        evict_old_banks(cache_dir)
    except OSError as e:  # a read-only cache is not fatal
        import warnings
        warnings.warn(f"could not cache the pose bank in {path}: {e}")
    return bank


def refine_pose(phi, r0: np.ndarray, z: np.ndarray, steps: int = 3, dtype=torch.float32) -> np.ndarray:
    """Gauss–Newton on ‖φ(r) − z‖ from r0 (B, 6): r ← r − (∂φ/∂r)⁺ (φ(r) − z). Returns (B, 6).

    An MLP φ runs in NumPy float64 (MLPJacobian: φ(r) and ∂φ/∂r in one pass, ~0.1 ms a step);
    any other φ in torch `dtype`."""
    fast = _fast_jacobian(phi)
    if fast is not None:
        r, zd = np.array(r0, dtype=np.float64), np.atleast_2d(np.asarray(z, dtype=np.float64))
        for _ in range(steps):
            f, J = fast(r)
            r = r - (np.linalg.pinv(J) @ (f - zd)[..., None])[..., 0]
        return r
    r = torch.as_tensor(r0, dtype=dtype).clone()
    zt = torch.as_tensor(np.atleast_2d(z), dtype=dtype)
    for _ in range(steps):
        with torch.no_grad():
            res = phi(r) - zt
        J = phi_jacobian(phi, r)
        r = r - (torch.linalg.pinv(J) @ res[..., None])[..., 0]
    return r.double().numpy()
