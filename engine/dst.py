"""Dynamic sparse training (SET / RigL) for GroupSharedHead: the index sets move while training.

Every ΔT = `every` steps, until `stop_fraction` of the total T steps, each group g (m = 1: each
label) swaps n = round(ζ(t)·k) of its k inputs:

    ζ(t)      = ζ/2 · (1 + cos(π·t / (stop_fraction·T)))      for t < stop_fraction·T, else 0
    |w|[g,t]  = Σ_j |W[g,j,t]|                                 over the group's real labels j
    drop      the n slots t with the smallest |w|[g,t]
    regrow    n inputs i not in the group's set before the drop:
                "random"   (SET)  uniformly at random
                "gradient" (RigL) the largest Σ_j |Σ_b dZ[b, g·m+j] · h[b,i]| (= Σ_j |dense dW[l, i]|),
                                  computed a chunk of groups at a time ((chunk·m, d) at most), so
                                  the dense (L, d) gradient is never held
    new weights W[g,:,t] = 0, and the optimizer's per-entry state there (Adam's exp_avg,
    exp_avg_sq) is zeroed; every other entry is untouched.

The new input takes the dropped one's slot t (head.set_index keeps the row order, so
weight[g,:,t] stays with idx[g,t]). The fan-in stays exactly k, entries distinct (set_index checks).

    dst = DynamicSparsity(model.head, DSTConfig(every=100, zeta=0.3), total_steps=trainer.total_steps)
    ...after optimizer.step() at step t (1-based count of steps done):
    record = dst.update(t, optimizer, h=h.detach(), dZ=logits.grad)   # None when not an update step

Each update's random draws depend only on (seed, step), so a resumed run redraws the same.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError
from .heads.group_shared import GroupSharedHead

REGROW = ("random", "gradient")
_CHUNK = 1 << 22            # elements of a temporary (groups, d) or (groups·m, d) block


@dataclass
class DSTConfig:
    every: int = 100              # ΔT: steps between connectivity updates, >= 1
    zeta: float = 0.3             # ζ: drop fraction at step 0, in (0, 1); decays with a cosine
    stop_fraction: float = 0.75   # no updates after this fraction of the total steps, in (0, 1]
    regrow: str = "random"        # "random" (SET) | "gradient" (RigL-style)
    seed: int = 0                 # random regrowth draws from (seed, step)

    def __post_init__(self):
        def real(v):
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
                and math.isfinite(v)
        if isinstance(self.every, bool) or not isinstance(self.every, (int, np.integer)) or self.every < 1:
            raise ConfigError(f"every={self.every!r}: expected an integer >= 1 (steps between updates)")
        if not (real(self.zeta) and 0 < self.zeta < 1):
            raise ConfigError(f"zeta={self.zeta!r}: expected a drop fraction in (0, 1)")
        if not (real(self.stop_fraction) and 0 < self.stop_fraction <= 1):
            raise ConfigError(f"stop_fraction={self.stop_fraction!r}: expected a number in (0, 1]")
        if self.regrow not in REGROW:
            raise ConfigError(f"regrow={self.regrow!r}: expected one of {REGROW}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r}: expected an integer >= 0")


def _check_total(total_steps):
    if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
        raise ConfigError(f"total_steps={total_steps!r}: expected an integer >= 1")
    return int(total_steps)


def drop_fraction(step, total_steps, cfg):
    """ζ(t) = ζ/2 · (1 + cos(π·t / (stop_fraction·T))) before the stop, 0 from it on."""
    T = _check_total(total_steps)
    stop = cfg.stop_fraction * T
    if step < 0 or step >= stop:
        return 0.0
    return 0.5 * cfg.zeta * (1.0 + math.cos(math.pi * step / stop))


def sample_absent(idx, d, n, rng):
    """(r, n) int64: per row of idx (r, k), n distinct inputs of [0, d) not in the row, uniformly.

    Floyd's algorithm draws n distinct ranks among the d - k absent inputs (O(n²) per row), and
    rank a maps to the input a + #{t : sorted_idx[t] - t <= a} (the present inputs below it);
    no (r, d) array is made."""
    r, k = idx.shape
    N = d - k                                                          # absent inputs per row
    u = rng.random((r, n))
    rank = np.empty((r, n), np.int64)
    for i in range(n):
        j = N - n + i
        t = (u[:, i] * (j + 1)).astype(np.int64)                      # uniform in [0, j]
        rank[:, i] = np.where((rank[:, :i] == t[:, None]).any(1), j, t)
    q = np.sort(idx, axis=1).astype(np.int64) - np.arange(k)           # (r, k), nondecreasing
    return rank + (q[:, None, :] <= rank[:, :, None]).sum(2)


class DynamicSparsity:
    """Moves the index sets of a GroupSharedHead during training (see the module docstring).

    Parameters
    ----------
    head : GroupSharedHead
    cfg : DSTConfig
    total_steps : int >= 1
        T, the number of optimizer steps of the whole run (the schedule's time axis).
    padded : bool array of shape (G·m,) or (G, m), optional
        Slots that hold no label (excluded from the magnitudes and the gradient scores);
        default: the head's own padding, slots >= head.n_labels. With LabelGroups, pass
        `groups.padded_slots`.
    """

    def __init__(self, head, cfg, total_steps, padded=None):
        if not isinstance(head, GroupSharedHead):
            raise ConfigError(f"dynamic sparse training needs a GroupSharedHead, got {type(head).__name__}")
        if not isinstance(cfg, DSTConfig):
            raise ConfigError(f"cfg must be a DSTConfig, got {type(cfg).__name__}")
        self.total_steps = _check_total(total_steps)
        if head.fanin >= head.in_features:
            raise ConfigError(f"fanin={head.fanin} >= in_features={head.in_features}: every input is "
                              f"connected already, there is nothing to regrow")
        G, m = head.n_groups, head.group_size
        if padded is None:
            padded = np.arange(G * m) >= head.n_labels
        padded = np.asarray(padded)
        if padded.dtype != bool or padded.size != G * m:
            raise ConfigError(f"padded must be a bool mask of the head's {G}x{m} slots, "
                              f"got {padded.dtype} {padded.shape}")
        self.head, self.cfg = head, cfg
        self.padded = padded.reshape(G, m).copy()                      # (G, m)
        self.initial_idx = head.idx.cpu().numpy().copy()              # (G, k), for drift()

    # -----------------------------------------------------------------------------------------
    def n_swap(self, step):
        """Connections swapped per group at `step`: 0 when `step` is not an update step."""
        if step <= 0 or step % self.cfg.every:
            return 0
        n = int(round(drop_fraction(step, self.total_steps, self.cfg) * self.head.fanin))
        return min(n, self.head.in_features - self.head.fanin)

    def update_steps(self):
        """The steps (1..T) at which update() changes the index sets."""
        return [t for t in range(self.cfg.every, self.total_steps + 1, self.cfg.every) if self.n_swap(t)]

    @torch.no_grad()
    def update(self, step, optimizer=None, h=None, dZ=None):
        """Swap connections if `step` is an update step; return its record, else None.

        h (B, d) is the head's input and dZ (B, n_labels) or (B, G·m) the gradient of the loss
        with respect to the head's output on the same batch (regrow="gradient" only); dZ may also
        be a function (g0, g1) -> (B, (g1-g0)·m) giving the slots of groups g0..g1-1.

        Record: {"step", "zeta", "n_per_group", "dropped", "added", "churn" (per group),
        "group", "slot", "old_input", "new_input"} — the last four list every change."""
        n = self.n_swap(step)
        if n == 0:
            return None
        head = self.head
        G, m, k, d = head.n_groups, head.group_size, head.fanin, head.in_features
        if self.cfg.regrow == "gradient":
            h, dZ = self._check_grad_inputs(h, dZ)
        idx = head.idx.cpu().numpy()                                   # (G, k)
        rng = np.random.default_rng([self.cfg.seed, int(step)])
        rows = max(1, _CHUNK // max(d, m * d if self.cfg.regrow == "gradient" else d))
        drop = np.empty((G, n), np.int64)                              # slots dropped
        new = np.empty((G, n), np.int32)                               # inputs regrown there
        keep = torch.from_numpy(~self.padded).to(head.weight.device)   # (G, m)
        keep_all = not self.padded.any()
        for g0 in range(0, G, rows):
            g1 = min(G, g0 + rows)
            r = g1 - g0
            A = head.weight[g0:g1].abs()                               # (r, m, k)
            if not keep_all:
                A.mul_(keep[g0:g1, :, None])
            mag = A.sum(1).cpu().numpy()                               # (r, k)
            drop[g0:g1] = np.argpartition(mag, n - 1, axis=1)[:, :n]
            if self.cfg.regrow == "random":
                new[g0:g1] = sample_absent(idx[g0:g1], d, n, rng)
            else:
                score = self._grad_scores(h, dZ, g0, g1)               # (r, d)
                score[np.arange(r)[:, None], idx[g0:g1]] = -1.0        # never re-pick a present input
                new[g0:g1] = np.argpartition(-score, n - 1, axis=1)[:, :n]
        g = np.repeat(np.arange(G), n)                                 # (G·n,)
        t = drop.ravel()
        old = idx[g, t]
        new_idx = idx.copy()
        new_idx[g, t] = new.ravel()
        head.set_index(new_idx)                                        # checks: distinct, in range
        changed = np.zeros((G, 1, k), bool)
        changed[g, 0, t] = True
        changed = torch.from_numpy(changed).to(head.weight.device)     # (G, 1, k), broadcast over m
        head.weight.masked_fill_(changed, 0)
        if optimizer is not None:
            for v in optimizer.state.get(head.weight, {}).values():
                if torch.is_tensor(v) and v.shape == head.weight.shape:
                    v.masked_fill_(changed, 0)                         # exp_avg, exp_avg_sq, ...
        return {"step": int(step), "zeta": drop_fraction(step, self.total_steps, self.cfg),
                "n_per_group": n, "dropped": int(g.size), "added": int(g.size),
                "churn": np.full(G, n).tolist(),
                "group": g.tolist(), "slot": t.tolist(), "old_input": old.tolist(),
                "new_input": new.ravel().tolist()}

    def _check_grad_inputs(self, h, dZ):
        """h as float32 (B, d); dZ as its transpose (G·m, B), contiguous, padded slots zeroed (or
        the caller's function)."""
        head = self.head
        G, m = head.n_groups, head.group_size
        if h is None or dZ is None:
            raise ValueError("regrow='gradient' needs h (the head's input) and dZ (the gradient of "
                             "the loss w.r.t. its output) at update steps")
        h = torch.as_tensor(h).detach().float()
        if h.dim() != 2 or h.shape[1] != head.in_features:
            raise ValueError(f"h has shape {tuple(h.shape)}, expected (B, {head.in_features})")
        if callable(dZ):
            return h, dZ
        dZ = torch.as_tensor(dZ).detach()
        if dZ.dim() != 2 or dZ.shape[0] != h.shape[0] or dZ.shape[1] not in (head.n_labels, G * m):
            raise ValueError(f"dZ has shape {tuple(dZ.shape)}, expected ({h.shape[0]}, "
                             f"{head.n_labels}) or ({h.shape[0]}, {G * m})")
        Dt = torch.zeros(G * m, h.shape[0], dtype=torch.float32, device=dZ.device)
        Dt[:dZ.shape[1]] = dZ.t()                                      # (G·m, B)
        Dt[torch.from_numpy(self.padded.ravel()).to(Dt.device)] = 0
        return h.to(Dt.device), Dt

    def _grad_scores(self, h, dZ, g0, g1):
        """(g1-g0, d) numpy: Σ_j |Σ_b dZ[b, g·m+j] · h[b, i]| over the real labels j of each group."""
        m = self.head.group_size
        if callable(dZ):
            D = torch.as_tensor(dZ(g0, g1)).detach().float().to(h.device)   # (B, r·m)
            if tuple(D.shape) != (h.shape[0], (g1 - g0) * m):
                raise ValueError(f"dZ({g0}, {g1}) has shape {tuple(D.shape)}, "
                                 f"expected ({h.shape[0]}, {(g1 - g0) * m})")
            D = D * torch.from_numpy(~self.padded[g0:g1].ravel()).to(D)
            A = D.t() @ h
        else:
            A = dZ[g0 * m:g1 * m] @ h                                  # (r·m, d)
        return A.abs_().view(g1 - g0, m, -1).sum(1).cpu().numpy()

    # -----------------------------------------------------------------------------------------
    def drift(self):
        """(G,) int: per group, how many of its current inputs were not in its initial set."""
        idx = self.head.idx.cpu().numpy()
        G, d = idx.shape[0], self.head.in_features
        out = np.empty(G, np.int64)
        rows = max(1, _CHUNK // d)
        for g0 in range(0, G, rows):
            g1 = min(G, g0 + rows)
            init = np.zeros((g1 - g0, d), bool)
            init[np.arange(g1 - g0)[:, None], self.initial_idx[g0:g1]] = True
            out[g0:g1] = (~init[np.arange(g1 - g0)[:, None], idx[g0:g1]]).sum(1)
        return out


def index_history(idx, step, records, groups):
    """(U + 1, len(groups), k) int32: the index sets of `groups` before the first of the U recorded
    updates ([0]) and after each ([u]), replayed from the sets `idx` (G, k) a checkpoint holds at
    `step` and the records of update() (each lists every change: group, slot, old_input, new_input).

    The updates up to `step` are undone from idx (newest first), then all are applied in order; a
    change whose input is not where the record says raises ConfigError naming the update, group and
    slot (records that do not belong to this checkpoint)."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise ConfigError(f"step={step!r}: expected the checkpoint's step, an integer")
    idx = np.asarray(idx)
    groups = np.asarray(groups, np.int64).ravel()
    if idx.ndim != 2 or not len(groups) or groups.min() < 0 or groups.max() >= idx.shape[0]:
        raise ConfigError(f"groups {groups.tolist()[:8]} must be ids in [0, {idx.shape[0] if idx.ndim == 2 else 0})")
    row = np.full(idx.shape[0], -1, np.int64)                           # group -> row of the output
    row[groups] = np.arange(len(groups))
    changes = [_changes(rec, row, idx.shape[1]) for rec in records]
    sets = idx[groups].astype(np.int32)                                  # (n, k)
    for rec, ch in reversed(list(zip(records, changes))):
        if rec["step"] <= step:
            _apply(sets, rec, ch, undo=True)
    out = [sets.copy()]
    for rec, ch in zip(records, changes):
        _apply(sets, rec, ch)
        out.append(sets.copy())
    return np.stack(out)


def _changes(rec, row, k):
    """(rows, slots, old, new, groups) of one update record's changes to the chosen groups (checked);
    row: (G,) the row of each chosen group, -1 for the others."""
    keys = ("group", "slot", "old_input", "new_input")
    cols = [rec.get(key) if isinstance(rec, dict) else None for key in keys]
    if not isinstance(rec, dict) or not isinstance(rec.get("step"), int) or \
            not all(isinstance(c, list) for c in cols) or len({len(c) for c in cols}) != 1:
        step = rec.get("step") if isinstance(rec, dict) else None
        raise ConfigError(f"DST record at step {step!r}: expected an integer step and equal lists {keys}")
    arrays = [np.asarray(c) for c in cols]
    if any(a.size and a.dtype.kind not in "iu" for a in arrays):
        raise ConfigError(f"DST record at step {rec['step']}: {keys} must hold integers")
    g, t, old, new = (a.astype(np.int64) for a in arrays)
    for name, v, n in (("group", g, len(row)), ("slot", t, k)):
        bad = v[(v < 0) | (v >= n)]
        if len(bad):
            raise ConfigError(f"DST record at step {rec['step']}: {name} {int(bad[0])} is not in [0, {n})")
    mine = row[g] >= 0
    return row[g[mine]], t[mine], old[mine], new[mine], g[mine]


def _apply(sets, rec, changes, undo=False):
    """Apply (or undo) one update's changes to sets (n, k) in place, checking each is where it says."""
    r, t, old, new, g = changes
    have, put = (new, old) if undo else (old, new)
    wrong = np.flatnonzero(sets[r, t] != have)
    if len(wrong):
        i = wrong[0]
        raise ConfigError(f"DST update at step {rec['step']}: group {int(g[i])} slot {int(t[i])} holds input "
                          f"{int(sets[r[i], t[i]])}, the record says {int(have[i])}: the records do not belong "
                          f"to this model's index sets")
    sets[r, t] = put
