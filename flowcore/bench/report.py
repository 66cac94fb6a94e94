"""Readable tables and the JSON file of a benchmark run (`flowcore.bench.suite.run_suite`'s result)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..cli.table import table
from ..wording import counted
from .config import net_title

MIB = 2 ** 20


def _ms(value) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


# A step cannot run faster than its own GEMMs, so bound / step above 1 means the bound was timed
# wrong (at a tiny size a few microseconds of timer and launch noise dominate it), not that flowcore
# beat it: such a cell is marked instead of printed as "3294%".
UNRELIABLE = "—*"
UNRELIABLE_NOTE = ("* efficiency above 100 %: the GEMM bound was timed slower than the whole step, so it is "
                   "mis-measured at this size; unreliable, not printed")


def _efficiency(value) -> str:
    return UNRELIABLE if value is not None and value > 1 else _pct(value)


def _variant_ms(row: dict, variant: str) -> str:
    measured = row.get("variants", {}).get(variant, {})
    if "median_ms" in measured:
        return _ms(measured["median_ms"])
    if "error" in measured:
        return "error"
    if "skipped" in measured:
        return "skip"
    return "-"


def _key(row: dict) -> list[str]:
    net = net_title(row["net"], row.get("label") or f"{row['depth']}x{row['width']}")
    return [row["objective"], net, str(row["batch"]), row["device"]]


def times_table(rows: list[dict]) -> str:
    header = ["objective", "net", "batch", "dev", "flowcore ms", "fc torch ms", "reference ms", "t.compile ms",
              "hand ms", "hand tc ms", "ref/fc", "ref/fc torch", "tc/fc", "hand/fc", "hand tc/fc", "obj/fm",
              "flops obj/fm", "GFLOP", "bound ms", "eff fc", "eff fc torch", "eff ref", "eff tc", "eff hand",
              "eff hand tc"]
    body = []
    for row in rows:
        if "error" in row:
            body.append(_key(row) + ["error"] + [""] * (len(header) - 5))
            continue
        ratios, variants = row.get("ratios", {}), row.get("variants", {})
        body.append(_key(row) + [
            *(_variant_ms(row, v) for v in ("flowcore", "flowcore_torch", "reference", "torch_compile", "handwritten",
                                             "handwritten_compile")),
            *(_ratio(ratios.get(r)) for r in ("reference/flowcore", "reference/flowcore_torch", "torch_compile/flowcore",
                                               "handwritten/flowcore", "handwritten_compile/flowcore")),
            _ratio(ratios.get("objective/fm")), _ratio(ratios.get("objective/fm flops")),
            f"{row['gemm_flops'] / 1e9:.3g}", _ms(row["bound_ms"]),
            *(_efficiency(variants.get(v, {}).get("efficiency")) for v in ("flowcore", "flowcore_torch", "reference",
                                                                            "torch_compile", "handwritten",
                                                                            "handwritten_compile"))])
    text = table(body, header)
    return text + "\n" + UNRELIABLE_NOTE if any(UNRELIABLE in row for row in body) else text


def memory_table(rows: list[dict]) -> str:
    header = ["objective", "net", "batch", "dev", "peak MiB fc", "peak MiB ref", "peak MiB tc", "peak MiB hand",
              "fc backend",
              "fc build s", "tc compile s", "matmul GFLOP/s", "notes"]
    body = []
    for row in rows:
        if "error" in row:
            continue
        variants = row.get("variants", {})

        def mib(variant, variants=variants):
            value = variants.get(variant, {}).get("peak_memory_bytes")
            return "-" if value is None else f"{value / MIB:.3g}"

        fc, tc = variants.get("flowcore", {}), variants.get("torch_compile", {})
        notes = list(row.get("notes", []))
        for name, measured in variants.items():
            if "error" in measured:
                notes.append(f"{name}: {measured['error'][:120]}")
            elif measured.get("graph_breaks"):
                notes.append(f"{name}: {measured['graph_breaks']} graph breaks")
        for name, diff in (row.get("first_loss_rel_diffs") or {}).items():
            if diff > 1e-3:
                notes.append(f"first-step loss differs {name} vs reference by {diff:.1e}")
        gflops = row.get("matmul_gflops")
        body.append(_key(row) + [mib("flowcore"), mib("reference"), mib("torch_compile"), mib("handwritten"),
                                 fc.get("backend", "-") + (" +jvp" if row.get("native_jvp") else ""),
                                 "-" if fc.get("build_s") is None else f"{fc['build_s']:.2f}",
                                 "-" if tc.get("compile_s") is None else f"{tc['compile_s']:.1f}",
                                 "-" if gflops is None else f"{gflops:.3g}", "; ".join(notes) or ""])
    return table(body, header) if body else ""


def breakdown_table(rows: list[dict]) -> str:
    header = ["objective", "net", "batch", "dev", "variant", "profiled ms", "GEMM", "fused", "other ops", "overhead",
              "bound by"]
    body = []
    for row in rows:
        for variant, measured in row.get("variants", {}).items():
            split = measured.get("breakdown")
            if not split or not split.get("wall_ms"):
                continue
            wall = split["wall_ms"]
            shares = {"GEMM": split["gemm_ms"], "elementwise/other ops": split["fused_ms"] + split["other_ms"],
                      "overhead": split["overhead_ms"]}
            body.append(_key(row) + [variant, _ms(wall)] +
                        [_pct(split[k] / wall) for k in ("gemm_ms", "fused_ms", "other_ms", "overhead_ms")] +
                        [max(shares, key=shares.get)])
    return table(body, header) if body else ""


def compile_table(entries: list[dict]) -> str:
    header = ["backend", "device", "objective", "cold compile s", "cold symbolic s", "cold build s", "cold cache",
              "cold 1st call s", "warm compile s", "warm build s", "warm cache"]
    body = []
    for entry in entries:
        if "error" in entry:
            body.append([entry["backend"], entry["device"], "error: " + entry["error"][:100]] + [""] * 8)
            continue
        cold, warm = entry["cold"], entry["warm"]
        hit = lambda d: "hit" if d["cache_hit"] else "miss"
        body.append([entry["backend"], entry["device"], entry["objective"], f"{cold['compile_s']:.2f}",
                     f"{cold['symbolic_s']:.2f}", f"{cold['build_s']:.2f}", hit(cold), f"{cold['first_call_s']:.2f}",
                     f"{warm['compile_s']:.2f}", f"{warm['build_s']:.2f}", hit(warm)])
    return table(body, header) if body else ""


def render(result: dict) -> str:
    """Every table of a run, with the machine line on top."""
    m = result["machine"]
    lines = [f"flowcore {m['flowcore']} bench, {m['date']}: torch {m['torch']}, {counted(m['threads'], 'thread')}, "
             f"{m['cpu_model']} ({counted(m['cpu_count'], 'core')})"
             + (f", {m['device_name']}" if m.get("device_name") else "")
             + (f", load average {m['load_average'][0]:.2f}" if m.get("load_average") else ""),
             (f"step = draw + forward + backward + RAdam, median of {result['config']['repeats']} interleaved rounds "
              f"after {result['config']['warmup']} warm-up; bound = the step's GEMMs alone (torch.mm on their "
              "shapes, same rounds); eff = bound / step; ratios and eff are medians of per-round ratios"),
             "", times_table(result["rows"])]
    for title, text in (("peak memory over the step's start, builds, notes", memory_table(result["rows"])),
                        ("where a profiled step's time goes", breakdown_table(result["rows"])),
                        ("compile time of a new objective", compile_table(result.get("compile", [])))):
        if text:
            lines += ["", title + ":", text]
    for note in result.get("notes", []):
        lines += ["", "note: " + note]
    return "\n".join(lines)


def write_json(result: dict, path: str | os.PathLike) -> Path:
    """Write `result` to `path` (atomically: a half-written file never replaces a good one)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, path)
    return path
