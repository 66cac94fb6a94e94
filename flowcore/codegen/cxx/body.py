"""The C++ that the `cpu` and `cuda` backends share: one readable per-sample body per kernel.

Every kernel ``K`` becomes ONE per-sample body, shared verbatim by the `cpu` and `cuda` backends::

    template <typename scalar_t, typename acc_t>
    FLOWCORE_HD inline void K_sample(int64_t b, int64_t N, const scalar_t* const* ein,
                                     const scalar_t* const* sin, scalar_t* const* eout,
                                     scalar_t* const* sout);

It loads inputs as ``acc_t``, computes in ``acc_t`` (per-sample temporaries once; per-element
temporaries inside the loop over the sample's elements that needs them; sums accumulate in
``acc_t``) and stores as ``scalar_t``. The backends add thin entry points around it: the `cpu`
backend ``extern "C" K_f32 / K_f64(begin, end, N, ein, sin, eout, sout)`` (flowcore.codegen.cpu.emit), the `cuda`
backend ``__global__`` kernels and ``K_cuda_<dtype>`` launchers (flowcore.codegen.cuda.emit).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import sympy

from ...compiler.kernel import Kernel
from ...compiler.schedule import Assign, Loop, Schedule, schedule
from .printer import cxx_code

INCLUDE_DIR = Path(__file__).resolve().parent / "include"
HEADER_NAME = "flowcore_kernel.h"

_CXX_KEYWORDS = {
    "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break", "case", "catch",
    "char", "char8_t", "char16_t", "char32_t", "class", "compl", "concept", "const", "consteval", "constexpr",
    "constinit", "const_cast", "continue", "co_await", "co_return", "co_yield", "decltype", "default", "delete",
    "do", "double", "dynamic_cast", "else", "enum", "explicit", "export", "extern", "false", "float", "for",
    "friend", "goto", "if", "inline", "int", "long", "mutable", "namespace", "new", "noexcept", "not", "not_eq",
    "nullptr", "operator", "or", "or_eq", "private", "protected", "public", "register", "reinterpret_cast",
    "requires", "return", "short", "signed", "sizeof", "static", "static_assert", "static_cast", "struct",
    "switch", "template", "this", "thread_local", "throw", "true", "try", "typedef", "typeid", "typename",
    "union", "unsigned", "using", "virtual", "void", "volatile", "wchar_t", "while", "xor", "xor_eq",
}
#: names the generated code itself uses, plus C library names a local could shadow confusingly
_RESERVED = _CXX_KEYWORDS | {
    "b", "j", "N", "B", "ein", "sin", "eout", "sout", "acc_t", "scalar_t", "int64_t", "std", "main",
    "exp", "log", "sqrt", "cos", "tan", "pow", "abs", "fabs", "erf", "gamma", "lgamma", "tgamma",
    "y0", "y1", "yn", "j0", "j1", "jn", "signbit", "isnan", "isinf", "NAN", "INFINITY", "errno",
    "blockIdx", "blockDim", "threadIdx", "gridDim", "warpSize",
}


def header_text() -> str:
    return (INCLUDE_DIR / HEADER_NAME).read_text()


def file_stem(title: str, digest: str) -> str:
    stem = re.sub(r"\W", "_", f"{title}_{digest}")
    return stem if not stem[0].isdigit() else f"k_{stem}"


def _identifier(name: str) -> str:
    text = re.sub(r"\W", "_", name, flags=re.ASCII)
    if not text or text[0].isdigit():
        text = f"v_{text}"
    return text


class Names:
    """C++ names for a kernel's symbols: kept as they are (``x0``, ``tmp3``, ``sqnorm1``,
    ``adj_sqnorm1``) unless reserved or clashing, then suffixed with ``_``."""

    def __init__(self):
        self.taken: set[str] = set(_RESERVED)
        self.of: dict[sympy.Symbol, str] = {}

    def fresh(self, wanted: str) -> str:
        name = _identifier(wanted)
        if name.startswith(("fc_", "FLOWCORE_", "__")):
            name = f"v_{name}"
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return name

    def add(self, symbol: sympy.Symbol) -> str:
        if symbol not in self.of:
            self.of[symbol] = self.fresh(symbol.name)
        return self.of[symbol]

    def __getitem__(self, symbol: sympy.Symbol) -> str:
        return self.of[symbol]


@dataclass(frozen=True)
class SampleBody:
    """The shared per-sample function of one kernel: its text and its arity."""

    kernel: Kernel
    text: str
    counts: tuple[int, int, int, int]  # element inputs, sample inputs, element outputs, sample outputs

    @property
    def name(self) -> str:
        return f"{self.kernel.name}_sample"


def _short(expr: sympy.Expr, limit: int = 90) -> str:
    text = str(expr).replace("**", "^")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _signature(kernel: Kernel) -> str:
    ins = ", ".join(s.name for s in kernel.element_inputs)
    samples = ", ".join(s.name for s in kernel.sample_inputs)
    outs = ", ".join(s.name for s, _ in kernel.element_outputs + kernel.sample_outputs)
    return f"{kernel.name}({ins}{'; ' + samples if samples else ''}) -> {outs or '()'}"


def sample_body(kernel: Kernel, plan: Schedule | None = None) -> SampleBody:
    """The per-sample C++ template of `kernel` (see the module docstring)."""
    plan = plan or schedule(kernel)
    names = Names()
    for sym in kernel.element_inputs + kernel.sample_inputs:
        names.add(sym)
    for sym, _ in kernel.element_outputs + kernel.sample_outputs:
        names.add(sym)
    for phase in plan.phases:
        for sym, _ in (phase.statements if isinstance(phase, Assign) else phase.temps + phase.sums):
            names.add(sym)
    rows = {sym: names.fresh(f"{names[sym]}_row") for sym in kernel.element_inputs}
    rows.update({sym: names.fresh(f"{names[sym]}_row") for sym, _ in kernel.element_outputs})
    phases = plan.phases  # already without dead work (compiler.schedule)

    def code(expr: sympy.Expr) -> str:
        return cxx_code(expr, names.of)

    # A Kernel's steps run in order, so a symbol assigned twice (as the torch backend executes it)
    # means "the later value from here on": the redefinition gets a fresh C++ name.
    defined: set = set(kernel.sample_inputs)

    def define(symbol: sympy.Symbol) -> str:
        if symbol in defined:
            names.of[symbol] = names.fresh(symbol.name)
        defined.add(symbol)
        return names[symbol]

    used: set = set()
    for phase in phases:
        exprs = [e for _, e in phase.statements] if isinstance(phase, Assign) else \
            [e for _, e in phase.temps + phase.sums + phase.outputs]
        used.update(*(e.free_symbols for e in exprs))
    used.update(*(e.free_symbols for _, e in plan.sample_outputs))

    ein = {sym: i for i, sym in enumerate(kernel.element_inputs)}
    sin = {sym: i for i, sym in enumerate(kernel.sample_inputs)}
    eout = {sym: i for i, (sym, _) in enumerate(kernel.element_outputs)}
    lines = [f"// ---- {_signature(kernel)}"]
    for label, table in (("element inputs ", ein), ("sample inputs  ", sin), ("element outputs", eout),
                         ("sample outputs ", {sym: i for i, (sym, _) in enumerate(kernel.sample_outputs)})):
        if table:
            array = {"element inputs ": "ein", "sample inputs  ": "sin", "element outputs": "eout",
                     "sample outputs ": "sout"}[label]
            lines.append(f"// {label}: " + ", ".join(f"{array}[{i}] = {sym.name}" for sym, i in table.items()))
    opening = f"FLOWCORE_HD inline void {kernel.name}_sample("
    lines += [
        "template <typename scalar_t, typename acc_t>",
        f"{opening}int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,",
        f"{' ' * len(opening)}scalar_t* const* eout, scalar_t* const* sout) {{",
    ]
    body: list[str] = []
    loaded = [sym for sym in kernel.sample_inputs if sym in used]
    if loaded:
        body.append("// sample inputs")
        body += [f"const acc_t {names[s]} = fc_load<acc_t>(sin[{sin[s]}], b);" for s in loaded]
    row_inputs = [sym for sym in kernel.element_inputs if sym in used]
    if row_inputs or kernel.element_outputs:
        body.append("// this sample's rows of the element inputs and outputs")
        body += [f"const scalar_t* const {rows[s]} = ein[{ein[s]}] + b * N;" for s in row_inputs]
        body += [f"scalar_t* const {rows[s]} = eout[{eout[s]}] + b * N;" for s, _ in kernel.element_outputs]
    loop_number, previous = 0, None
    for phase in phases:
        if isinstance(phase, Assign):
            if previous is not Assign:
                body.append("// per-sample values")
            previous = Assign
            for sym, expr in phase.statements:
                value = code(expr)
                body.append(f"const acc_t {define(sym)} = {value};")
            continue
        assert isinstance(phase, Loop)
        previous = Loop
        loop_number += 1
        what = []
        if phase.sums:
            what.append("reductions " + "; ".join(f"{s.name} = sum_j {_short(e)}" for s, e in phase.sums))
        if phase.outputs:
            what.append("element outputs " + ", ".join(s.name for s, _ in phase.outputs))
        body.append(f"// loop {loop_number} over the sample's elements: " + " and ".join(what))
        body += [f"acc_t {define(s)} = acc_t(0);" for s, _ in phase.sums]
        body.append("for (int64_t j = 0; j < N; ++j) {")
        inner_exprs = [e for _, e in phase.temps + phase.sums + phase.outputs]
        inner_used = set().union(*(e.free_symbols for e in inner_exprs)) if inner_exprs else set()
        inner = [f"const acc_t {names[s]} = fc_load<acc_t>({rows[s]}, j);"
                 for s in kernel.element_inputs if s in inner_used]
        inner += [f"const acc_t {names[s]} = {code(e)};" for s, e in phase.temps]
        inner += [f"{names[s]} += {code(e)};" for s, e in phase.sums]
        inner += [f"fc_store<scalar_t, acc_t>({rows[s]}, j, {code(e)});" for s, e in phase.outputs]
        body += ["  " + line for line in inner]
        body.append("}")
    if plan.sample_outputs:
        body.append("// sample outputs")
        index = {sym: i for i, (sym, _) in enumerate(kernel.sample_outputs)}
        body += [f"fc_store<scalar_t, acc_t>(sout[{index[s]}], b, {code(e)});" for s, e in plan.sample_outputs]
    unused = [array for array, needed in (("ein", row_inputs), ("sin", loaded), ("eout", kernel.element_outputs),
                                          ("sout", plan.sample_outputs)) if not needed]
    if unused:
        body.insert(0, " ".join(f"(void){array};" for array in unused) + "  // not used by this kernel")
    lines += ["  " + line for line in body]
    lines.append("}")
    counts = (len(kernel.element_inputs), len(kernel.sample_inputs), len(kernel.element_outputs),
              len(kernel.sample_outputs))
    return SampleBody(kernel, "\n".join(lines), counts)


def file_header(title: str, digest: str, backend: str, kernels: list[Kernel]) -> str:
    title = " ".join(str(title).split())  # one comment line, whatever the title holds
    lines = [
        f"// flowcore generated code: objective `{title}`, digest {digest}; backend {backend}.",
        "// Do not edit: it is regenerated from the objective's declaration (the digest names it).",
        f"// {len(kernels)} kernel(s), each segment's and the backward kernels it needs, each a per-sample body",
        "// `K_sample<scalar_t, acc_t>` computing in acc_t, plus thin entry points:",
    ]
    lines += [f"//   {_signature(k)}" for k in kernels]
    lines += ["#include <cmath>", "#include <cstdint>", "", f'#include "{HEADER_NAME}"']
    return "\n".join(lines)


def check_names(kernels: list[Kernel]) -> None:
    seen: set[str] = set()
    for k in kernels:
        if not re.fullmatch(r"[A-Za-z_]\w*", k.name, flags=re.ASCII):
            raise ValueError(f"kernel name {k.name!r} is not a C identifier")
        if k.name in seen:
            raise ValueError(f"two kernels are named {k.name!r}")
        seen.add(k.name)


def emit_file(title: str, digest: str, kernels: list[Kernel], backend: str,
              entry_points: Callable[[SampleBody], str]) -> str:
    """One source file: the header, then per kernel its per-sample body and `backend`'s entry points."""
    check_names(kernels)
    parts = [file_header(title, digest, backend, kernels)]
    for kernel in kernels:
        body = sample_body(kernel)
        parts.append(body.text + "\n\n" + entry_points(body))
    return "\n\n".join(parts) + "\n"
