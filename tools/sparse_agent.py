"""Acts from a sparse Q-network file written by tools/export_sparse.py, alone: numpy and scipy.sparse (the default), or
jax.experimental.sparse with --backend jax. It never imports a training script, flax or (by default) JAX.

    agent = load("runs/x/eaudedqn_atari_jax.sparseq")     # checks the file's checksum first
    actions = agent.act(obs)                               # obs: (B, 4, 84, 84) uint8 frame stacks -> (B,) int64
    q = agent.q_values(obs)                                # (B, num_actions) float32

The network is the scripts' QNetwork (Nature CNN, SAME padding, ReLU, a hidden dense layer, a dense output), rebuilt
from the file's metadata: each layer's kernel shape, strides and explicit padding, its CSR kernel and dense bias.

Computation (scipy backend). Activations are kept channels-first with the batch last, (C, H, W, B). A convolution is
one sparse-times-dense product over image patches (im2col): the patch matrix X has one row per kernel input (i, j, c)
and one column per (output row, output column, sample), and y = W^T X, W being the kernel reshaped to
(kh*kw*cin, cout) as stored. Patch rows whose kernel row kept no weight are never built (at high sparsity whole
input channels of a layer drop out). The last convolution's output is flattened in flax's (H, W, C) order; the dense
layers are y = W^T x. The uint8 input is divided by 255 in float32, as the scripts do.

File format (version 1), little-endian:
    bytes 0-7     magic b"SPARSEQN"
    bytes 8-11    format version, uint32
    bytes 12-15   header length H, uint32
    bytes 16..    header: H bytes of UTF-8 JSON (the metadata below and "arrays", the table of arrays)
    ...           zero padding up to a multiple of 64, then the data section: each array's raw bytes at
                  "offset" (relative to the data section, 64-byte aligned), "nbytes" long, of numpy "dtype" and "shape"
    last 32 bytes SHA-256 of every byte before them: one flipped byte or a truncation anywhere is refused
Metadata: format, version, script, exp_name, env_id, network_size, hidden, num_actions, input ({shape, dtype, layout,
divide_by}), layers (in order; conv: kernel_shape (kh, kw, cin, cout), strides, padding ((top, bottom), (left,
right)), input_hw, output_hw; flatten: order; dense: kernel_shape (in, out); every conv and dense: activation
("relu" or null), nonzero, weights, and array names kernel_indptr, kernel_indices, kernel_data, bias), kernel_weights,
nonzero (kept kernel weights), biases, sparsity (of the kernels), source (the model file's name, bytes, sha256).
A kernel is CSR of the (rows = kernel inputs, columns = output units) matrix: indptr (rows + 1), indices (column of each
kept weight), data (float32); each index array has the smallest unsigned dtype that holds its largest value.

Usage:
  python tools/sparse_agent.py FILE                    # check the file and print what it holds
  python tools/sparse_agent.py FILE --obs obs.npy      # greedy actions of the (B, 4, 84, 84) uint8 frames in obs.npy
"""
import argparse
import hashlib
import json
import os
import struct
import sys

import numpy as np

MAGIC = b"SPARSEQN"
VERSION = 1
FORMAT = "sparse-q-network"
ALIGN = 64
PREFIX = struct.Struct("<8sII")  # magic, version, header length
DIGEST = 32  # SHA-256
DTYPES = {"<f4", "|u1", "<u2", "<u4", "<u8"}
BACKENDS = ("scipy", "jax")


class FormatError(ValueError):
    """The file is not a readable sparse Q-network export (its message is one line, for an `error:` line)."""


# ------------------------------------------------------------------------------------------------------- container
def index_dtype(max_value):
    """The smallest unsigned integer dtype that holds max_value."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"{max_value} does not fit in 64 bits")


def _aligned(n):
    return -(-n // ALIGN) * ALIGN


def write_container(path, meta, arrays):
    """Writes meta (a JSON-able dict) and arrays ({name: numpy array}) to path in the format above; returns its size."""
    table, offset = {}, 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        table[name] = {"dtype": dtype.str, "shape": list(array.shape), "offset": offset, "nbytes": int(array.nbytes)}
        offset = _aligned(offset + array.nbytes)
    header = json.dumps({**meta, "arrays": table}, sort_keys=True).encode()
    start = _aligned(PREFIX.size + len(header))
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        def put(chunk):
            f.write(chunk)
            digest.update(chunk)

        put(PREFIX.pack(MAGIC, VERSION, len(header)) + header + bytes(start - PREFIX.size - len(header)))
        written = 0
        for name, array in arrays.items():
            put(bytes(table[name]["offset"] - written))
            put(np.ascontiguousarray(array).astype(table[name]["dtype"], copy=False).tobytes())
            written = table[name]["offset"] + table[name]["nbytes"]
        put(bytes(offset - written))
        f.write(digest.digest())
    return start + offset + DIGEST


def read_container(path):
    """(meta, {name: read-only numpy array viewing the file's bytes}); FormatError if the file is not an export, is
    corrupt or truncated."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise FormatError(f"cannot read {path}: {e.strerror or e}") from None
    if buf[:len(MAGIC)] != MAGIC[:len(buf)] or not buf:
        raise FormatError(f"{path} is not a sparse Q-network file (tools/export_sparse.py writes them)")
    if len(buf) < PREFIX.size + DIGEST:
        raise FormatError(f"{path} is truncated ({len(buf)} bytes)")
    if hashlib.sha256(memoryview(buf)[:-DIGEST]).digest() != buf[-DIGEST:]:
        raise FormatError(f"{path} fails its SHA-256 checksum: the file is corrupt or truncated ({len(buf)} bytes)")
    _, version, header_len = PREFIX.unpack_from(buf)
    if version != VERSION:
        raise FormatError(f"{path} is format version {version}; this reader knows version {VERSION}")
    try:
        meta = json.loads(buf[PREFIX.size:PREFIX.size + header_len].decode())
        start, end = _aligned(PREFIX.size + header_len), len(buf) - DIGEST
        arrays = {}
        for name, entry in meta.pop("arrays").items():
            dtype, shape, offset, nbytes = np.dtype(entry["dtype"]), tuple(entry["shape"]), entry["offset"], entry["nbytes"]
            if entry["dtype"] not in DTYPES or nbytes != dtype.itemsize * int(np.prod(shape)) or start + offset + nbytes > end:
                raise FormatError(f"{path}: array {name!r} has an inconsistent entry {entry}")
            arrays[name] = np.frombuffer(buf, dtype, int(np.prod(shape)), start + offset).reshape(shape)
    except FormatError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise FormatError(f"{path}: unreadable header ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise FormatError(f"{path}: header format is {meta.get('format')!r}, not {FORMAT!r}")
    return meta, arrays


# ------------------------------------------------------------------------------------------------------------ layers
class Layer:
    """One conv or dense layer: CSR kernel rows (kernel inputs) restricted to the rows that kept a weight."""

    def __init__(self, spec, arrays, path):
        self.spec, self.type = spec, spec["type"]
        self.activation = spec.get("activation")
        shape = tuple(spec["kernel_shape"])
        self.rows, self.cols = int(np.prod(shape[:-1])), int(shape[-1])
        try:
            indptr, indices = arrays[spec["kernel_indptr"]], arrays[spec["kernel_indices"]]
            data, bias = arrays[spec["kernel_data"]], arrays[spec["bias"]]
        except KeyError as e:
            raise FormatError(f"{path}: layer {spec.get('name')} names a missing array {e}") from None
        nnz = int(spec["nonzero"])
        ok = (indptr.shape == (self.rows + 1,) and indices.shape == (nnz,) and data.shape == (nnz,)
              and data.dtype == np.float32 and bias.dtype == np.float32
              and bias.shape == (self.cols,) and int(indptr[0]) == 0 and int(indptr[-1]) == nnz
              and bool(np.all(np.diff(indptr.astype(np.int64)) >= 0)) and (nnz == 0 or int(indices.max()) < self.cols))
        if not ok:
            raise FormatError(f"{path}: layer {spec.get('name')} has an inconsistent CSR kernel")
        self.nnz = nnz
        self.indptr, self.indices, self.data, self.bias = indptr, indices, data, bias
        counts = np.diff(indptr.astype(np.int64))
        self.used = np.flatnonzero(counts)  # kernel rows (inputs) that kept a weight
        # compacted CSR: only the used rows, in order (a patch row per used kernel row)
        self.c_indptr = np.concatenate([[0], np.cumsum(counts[self.used])]).astype(np.int64)
        if self.type == "conv":
            kh, kw, cin, _ = shape
            i, j, c = np.unravel_index(self.used, (kh, kw, cin))
            # per kernel offset (i, j): the input channels used, in row order
            self.taps = [(a, b, c[(i == a) & (j == b)]) for a in range(kh) for b in range(kw)
                         if np.any((i == a) & (j == b))]


class SparseQNetwork:
    """The Q-network of an export; q_values / act take (B, 4, 84, 84) uint8 frame stacks (or one (4, 84, 84))."""

    def __init__(self, meta, arrays, path="<export>", backend="scipy"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.meta, self.backend, self.path = meta, backend, path
        try:
            self.layers = [Layer(s, arrays, path) if s["type"] in ("conv", "dense") else s for s in meta["layers"]]
            self.input_shape = tuple(meta["input"]["shape"])
            self.divide_by = np.float32(meta["input"]["divide_by"])
            self.num_actions = int(meta["num_actions"])
        except FormatError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{path}: unreadable metadata ({type(e).__name__}: {e})") from None
        self._forward = self._scipy_forward() if backend == "scipy" else self._jax_forward()

    def __repr__(self):
        m = self.meta
        return (f"SparseQNetwork({m['script']}, hidden {m['hidden']}, {m['num_actions']} actions, sparsity "
                f"{m['sparsity']:.4f}, {m['nonzero']:,} of {m['kernel_weights']:,} kernel weights, backend {self.backend})")

    def _check(self, obs):
        obs = np.asarray(obs)
        single = obs.shape == self.input_shape
        if single:
            obs = obs[None]
        if obs.shape[1:] != self.input_shape or obs.dtype != np.uint8:
            raise ValueError(f"observations must be uint8 of shape (B, {', '.join(map(str, self.input_shape))}), "
                             f"got {obs.dtype} {obs.shape}")
        return obs, single

    def q_values(self, obs):
        obs, single = self._check(obs)
        q = np.asarray(self._forward(obs))
        return q[0] if single else q

    def act(self, obs):
        """Greedy actions (the first of tied maxima, as argmax)."""
        q = self.q_values(obs)
        return np.argmax(q, axis=-1)

    # ---------------------------------------------------------------------------------------------- numpy / scipy
    def _scipy_forward(self):
        import scipy.sparse

        mats = []
        for layer in self.layers:
            if isinstance(layer, Layer):
                w = scipy.sparse.csr_matrix((layer.data, layer.indices, layer.c_indptr), shape=(len(layer.used), layer.cols))
                mats.append(w.T)  # CSC of W^T: y = W^T x by columns of W^T (rows of W), each an axpy over the batch
            else:
                mats.append(None)

        def forward(obs):
            b = obs.shape[0]
            a = np.transpose(obs, (1, 2, 3, 0)).astype(np.float32) / self.divide_by  # (C, H, W, B)
            for layer, wt in zip(self.layers, mats):
                if isinstance(layer, dict):  # flatten: (C, H, W, B) -> (H*W*C, B), flax's (H, W, C) order
                    a = np.ascontiguousarray(np.transpose(a, (1, 2, 0, 3))).reshape(-1, b)
                    continue
                if layer.type == "conv":
                    x, out_hw = self._patches(a, layer), layer.spec["output_hw"]
                else:
                    x, out_hw = (a if len(layer.used) == layer.rows else a[layer.used]), None
                y = wt @ x
                y += layer.bias[:, None]
                if layer.activation == "relu":
                    np.maximum(y, 0, out=y)
                a = y if out_hw is None else y.reshape(layer.cols, *out_hw, b)
            return a.T

        return forward

    @staticmethod
    def _patches(a, layer):
        """im2col of a (C, H, W, B) activation: one row per used kernel row (i, j, c), one column per (oh, ow, b)."""
        (pt, pb), (pl, pr) = layer.spec["padding"]
        sh, sw = layer.spec["strides"]
        oh, ow = layer.spec["output_hw"]
        c, h, w, b = a.shape
        padded = np.zeros((c, h + pt + pb, w + pl + pr, b), np.float32)
        padded[:, pt:pt + h, pl:pl + w] = a
        x = np.empty((len(layer.used), oh, ow, b), np.float32)
        row = 0
        for i, j, chans in layer.taps:
            window = padded[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            x[row:row + len(chans)] = window if len(chans) == c else window[chans]
            row += len(chans)
        return x.reshape(len(layer.used), oh * ow * b)

    # ------------------------------------------------------------------------------------ jax.experimental.sparse
    def _jax_forward(self):
        import jax
        import jax.numpy as jnp
        from jax.experimental import sparse

        weights = []
        for layer in self.layers:
            if not isinstance(layer, Layer):
                continue
            rows = np.repeat(np.arange(len(layer.used)), np.diff(layer.c_indptr))
            coords = np.stack([layer.indices.astype(np.int32), rows.astype(np.int32)], axis=1)  # W^T: (out, used input)
            wt = sparse.BCOO((jnp.asarray(layer.data), jnp.asarray(coords)), shape=(layer.cols, len(layer.used)),
                             indices_sorted=False, unique_indices=True)
            weights.append((wt, jnp.asarray(layer.bias)))
        layers = self.layers

        def forward(weights, obs):
            b = obs.shape[0]
            a = jnp.transpose(obs, (1, 2, 3, 0)).astype(jnp.float32) / self.divide_by
            params = iter(weights)
            for layer in layers:
                if isinstance(layer, dict):
                    a = jnp.transpose(a, (1, 2, 0, 3)).reshape(-1, b)
                    continue
                wt, bias = next(params)
                if layer.type == "conv":
                    (pt, pb), (pl, pr) = layer.spec["padding"]
                    sh, sw = layer.spec["strides"]
                    oh, ow = layer.spec["output_hw"]
                    padded = jnp.pad(a, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
                    c = padded.shape[0]
                    windows = [padded[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] for i, j, _ in layer.taps]
                    windows = [w if len(chans) == c else w[chans] for w, (_, _, chans) in zip(windows, layer.taps)]
                    x = jnp.concatenate(windows, axis=0) if windows else jnp.zeros((0, oh, ow, b), jnp.float32)
                    x = x.reshape(len(layer.used), oh * ow * b)
                else:
                    x, oh = (a if len(layer.used) == layer.rows else a[layer.used]), None
                y = wt @ x + bias[:, None]
                if layer.activation == "relu":
                    y = jnp.maximum(y, 0)
                a = y if oh is None else y.reshape(layer.cols, oh, ow, b)
            return a.T

        compiled = jax.jit(forward)
        return lambda obs: compiled(weights, obs)


def load(path, backend="scipy"):
    """The SparseQNetwork of an export file; FormatError (a ValueError) if it is not one, or is corrupt/truncated."""
    meta, arrays = read_container(path)
    return SparseQNetwork(meta, arrays, path, backend)


def main(argv=None):
    doc = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=doc[0], epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="a file written by tools/export_sparse.py")
    parser.add_argument("--backend", choices=BACKENDS, default="scipy",
                        help="scipy.sparse (default) or jax.experimental.sparse")
    parser.add_argument("--obs", help="a .npy of (B, 4, 84, 84) uint8 frame stacks: print their greedy actions")
    a = parser.parse_args(argv)
    try:
        agent = load(a.file, a.backend)
        if a.obs is None:
            print(agent)
            for layer in agent.layers:
                if isinstance(layer, Layer):
                    s = layer.spec
                    print(f"  {s['name']:8s} {s['type']:5s} kernel {tuple(s['kernel_shape'])}: {s['nonzero']:,} of "
                          f"{s['weights']:,} kept ({s['nonzero'] / s['weights']:.4f}), indices {layer.indices.dtype}")
            return 0
        if not os.path.exists(a.obs):
            raise FormatError(f"--obs {a.obs}: no such file")
        try:
            obs = np.load(a.obs, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise FormatError(f"--obs {a.obs}: not a .npy array ({e})") from None
        print(" ".join(str(int(x)) for x in np.atleast_1d(agent.act(obs))))
        return 0
    except ValueError as e:  # FormatError, or observations of the wrong shape
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
