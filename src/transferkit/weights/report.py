"""What a load of pretrained weights did, for people and for code: :class:`LoadReport`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["LoadReport", "Match", "Mismatch"]


@dataclass
class Match:
    key: str  # the model's name
    source: str  # the checkpoint's name
    shape: tuple[int, ...]
    # "name", "prefix", "structure", "adapted" (input channels, as timm's adapt_input_conv) or
    # "resampled" (a position table for another input size, by timm's filter for the family)
    how: str


@dataclass
class Mismatch:
    key: str
    source: str
    model_shape: tuple[int, ...]
    source_shape: tuple[int, ...]


@dataclass
class LoadReport:
    """What a load did: matched, missing, unexpected and mismatched tensors, and the loaded fraction.

    ``loaded_fraction`` counts parameter elements (not buffers): 0.997 means 99.7% of the
    model's weights now hold pretrained values.
    """

    source: str
    matched: list[Match] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    loaded_fraction: float = 0.0
    backbone_fraction: float = 0.0  # the same, over the parameters outside the head
    head: str | None = None
    # Parameters outside the head that keep their random values, and model tensors whose
    # structural alignment could shift (left unloaded, with the candidate sources).
    partial: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    container: str | None = None
    stripped_prefixes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    applied: bool = False
    nonfinite: list[str] = field(default_factory=list)  # matched tensors holding NaN or infinity
    converted: list[str] = field(default_factory=list)  # "key: int64 -> float32", copied across kinds of dtype
    # Tables resampled to the model's input size: {"key", "from": checkpoint shape, "to": model shape}.
    resampled: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["matched"] = [m.key for m in self.matched]
        d["matches"] = [asdict(m) for m in self.matched]
        d["mismatched"] = [asdict(m) for m in self.mismatched]
        d["how"] = self.how_counts
        return d

    def lines(self, *, limit: int = 8, more: str = "report.to_dict() lists all") -> list[str]:
        """The report for people: counts, notes, and the first ``limit`` of each list (``more`` says where the rest
        are); at most about 30 lines whatever the model's size."""
        how = ", ".join(f"{n} by {k}" for k, n in self.how_counts.items()) or "none"
        lines = [f"Loaded {self.source}: {len(self.matched)} tensors matched ({how})"]
        found = [f"weights found under '{self.container}'"] if self.container else []
        if self.stripped_prefixes:
            found.append("stripped prefixes " + ", ".join(f"'{p}'" for p in self.stripped_prefixes))
        if found:
            lines.append("  " + "; ".join(found))
        lines.append(
            f"  loaded fraction: {self.loaded_fraction:.1%} of parameters "
            f"({self.backbone_fraction:.1%} outside the head '{self.head}')"
        )
        lines += [f"  note: {note}" for note in self.notes]
        lines += [
            f"  resampled for the input size: {item['key']} {tuple(item['from'])} -> {tuple(item['to'])}"
            for item in self.resampled
        ]
        if self.ambiguous:
            shown = ", ".join(list(self.ambiguous)[:limit])
            lines.append(f"  ambiguous (left unloaded, alignment could shift): {shown}")
        for title, items in (
            ("mismatched", [f"{m.key}: checkpoint {m.source_shape} vs model {m.model_shape}" for m in self.mismatched]),
            ("missing (kept their initial values)", self.missing),
            ("unexpected (in the checkpoint, unused)", self.unexpected),
        ):
            if items:
                lines.append(f"  {title}: {len(items)}")
                lines += [f"    {item}" for item in items[:limit]]
                if len(items) > limit:
                    lines.append(f"    ... and {len(items) - limit} more ({more})")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:  # the summary, not the dataclass's hundreds of matches (to_dict() has them all)
        return str(self)

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(str(self))}</pre>"

    def key_map(self) -> dict[str, str]:
        """``{model name: checkpoint name}`` for every loaded tensor."""
        return {m.key: m.source for m in self.matched}

    @property
    def head_classes(self) -> int | None:
        """The class count of the checkpoint's head: the first dimension of its tensor for the model's head."""
        head = (self.head or "") + "."
        shapes = [m.shape for m in self.matched if m.key.startswith(head)]
        shapes += [m.source_shape for m in self.mismatched if m.key.startswith(head)]
        return next((int(s[0]) for s in shapes if len(s) >= 2), None)

    @property
    def how_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self.matched:
            counts[m.how] = counts.get(m.how, 0) + 1
        return counts
