"""The one validated configuration of an INR reconstruction.

Every option has an ASTRA-style CamelCase name (what users put in
``cfg['option']`` or pass on the command line) and a snake_case field here.
Values are checked once, in :meth:`INRConfig.__post_init__`; a bad value
raises ``ValueError`` naming the option, the value and what is expected, and
an unknown name lists the valid ones.

ASTRA converts option values before a plugin sees them (True -> 1,
None -> 'None', lists -> lists of floats); :meth:`INRConfig.from_options`
undoes that.  ASTRA aborts the whole process on a string option containing a
comma, so no option here ever needs one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["INRConfig", "option_help"]

_NONE_STRINGS = ("none", "")


def _opt(default: Any, astra: str, doc: str, kind: str, choices: tuple = ()) -> Any:
    return field(default=default, metadata={"astra": astra, "doc": doc, "kind": kind,
                                            "choices": choices})


@dataclass
class INRConfig:
    """Options of the INR algorithm (snake_case fields; CamelCase in ASTRA)."""

    width: int = _opt(300, "Width", "Neurons per hidden layer.", "int")
    depth: int = _opt(3, "Depth", "Number of hidden BW-ReLU layers.", "int")
    scale: float = _opt(
        3.0, "Scale", "Global BW-ReLU scale c in psi(c (W x + b)); larger c lets each neuron "
        "resolve finer detail.", "positive")
    activation: str = _opt("bw_relu", "Activation", "Hidden activation: 'bw_relu' (the "
                           "B-spline wavelet of ReLUs) or 'relu' (for comparison).", "choice",
                           ("bw_relu", "relu"))
    learning_rate: float = _opt(2e-3, "LearningRate", "Adam step size at the start of each run.",
                                "positive")
    learning_rate_decay: float = _opt(
        0.1, "LearningRateDecay", "Factor the learning rate falls by, exponentially, over the "
        "last fifth of each call of run(); the next run restarts at LearningRate with the network and Adam state "
        "kept.", "fraction")
    data_weighting: str = _opt(
        "ramp", "DataWeighting", "Residual weighting of the data term: 'ramp' (ramp filter "
        "along the detector; well conditioned, fits edges early) or 'l2' (plain least "
        "squares).", "choice", ("ramp", "l2"))
    seed: int = _opt(0, "Seed", "Seeds the network initialisation: same seed, same result on "
                     "the CPU.", "int")
    device: str = _opt("auto", "Device", "Where the network trains: 'auto' (CUDA when torch "
                       "sees a GPU), 'cpu' or 'cuda'.", "choice", ("auto", "cpu", "cuda"))
    gpu_index: int | None = _opt(None, "GPUindex", "CUDA device index for the network and "
                                 "ASTRA's GPU projectors (default: the current device).",
                                 "optional_int")
    min_constraint: float | None = _opt(None, "MinConstraint", "Lower bound on voxel values, in "
                                        "the data's units (e.g. 0 for attenuation).",
                                        "optional_float")
    max_constraint: float | None = _opt(None, "MaxConstraint", "Upper bound on voxel values.",
                                        "optional_float")
    fourier_features: int = _opt(0, "FourierFeatures", "Random Fourier frequencies in front of "
                                 "the network (0: plain coordinates).", "nonneg_int")
    fourier_sigma: float = _opt(3.0, "FourierSigma", "Standard deviation of those frequencies, "
                                "in cycles across half the field of view.", "positive")
    chunk_points: int = _opt(0, "ChunkPoints", "Voxels evaluated per network pass; bounds "
                             "memory for large volumes (0: automatic).", "nonneg_int")
    verbose: bool = _opt(False, "Verbose", "Print progress lines while training.", "bool")

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f, getattr(self, f.name)))
        if self.width < 1 or self.depth < 1:
            raise ValueError(f"Width and Depth must be >= 1, got Width={self.width}, Depth={self.depth}")
        if (self.min_constraint is not None and self.max_constraint is not None
                and self.min_constraint >= self.max_constraint):
            raise ValueError(f"MinConstraint ({self.min_constraint}) must be below MaxConstraint "
                             f"({self.max_constraint})")

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> "INRConfig":
        """Build from ASTRA-style CamelCase options, refusing unknown names.

        Raises
        ------
        ValueError
            For an unknown option (the message lists the valid names) or a bad value.
        """
        options = dict(options or {})
        by_astra = {f.metadata["astra"]: f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in options if k not in by_astra]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, by_astra, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"unknown INR option {', '.join(hints)}; valid options are: "
                             f"{', '.join(sorted(by_astra))}")
        return cls(**{by_astra[k]: v for k, v in options.items()})

    def to_options(self) -> dict[str, Any]:
        """The resolved options, CamelCase, JSON-friendly."""
        return {f.metadata["astra"]: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> "INRConfig":
        return dataclasses.replace(self, **changes)


def option_help() -> str:
    """A text table of every option, its default and meaning (for get_help and --help)."""
    lines = []
    for f in dataclasses.fields(INRConfig):
        default = f.default
        lines.append(f"  {f.metadata['astra']:<18} default {default!r:<10} {f.metadata['doc']}")
    return "\n".join(lines)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    name, kind, choices = f.metadata["astra"], f.metadata["kind"], f.metadata["choices"]

    def bad(expected: str) -> ValueError:
        return ValueError(f"option {name}={value!r} is invalid: expected {expected}")

    def as_float(v: Any) -> float:
        if isinstance(v, bool):
            raise bad("a number")
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise bad("a number") from None
        if not math.isfinite(x):
            raise bad("a finite number")
        return x

    def as_int(v: Any) -> int:
        x = as_float(v)
        if x != int(x):
            raise bad("an integer")
        return int(x)

    is_none = value is None or (isinstance(value, str) and value.strip().lower() in _NONE_STRINGS)
    if kind == "int":
        return as_int(value)
    if kind == "nonneg_int":
        x = as_int(value)
        if x < 0:
            raise bad("an integer >= 0")
        return x
    if kind == "optional_int":
        if is_none:
            return None
        x = as_int(value)
        if x < 0:
            raise bad("an integer >= 0 or None")
        return x
    if kind == "optional_float":
        return None if is_none else as_float(value)
    if kind == "positive":
        x = as_float(value)
        if x <= 0:
            raise bad("a number > 0")
        return x
    if kind == "fraction":
        x = as_float(value)
        if not 0 < x <= 1:
            raise bad("a number in (0, 1]")
        return x
    if kind == "bool":
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise bad("a boolean")
        if value in (0, 1):
            return bool(value)
        raise bad("a boolean")
    if kind == "choice":
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise bad("one of " + " ".join(repr(c) for c in choices))
    raise AssertionError(f"unhandled option kind {kind}")
