"""Every built-in objective, compiled (torch and cpu backends), equals the reference interpreter on a
tiny FlowMapUNet (docs/math.md §4, the image UNet) in float64: the loss and the gradient of every
parameter (and of x0, x1). The distillation objectives get a frozen UNet as their teacher; one
declaration weights its loss with the image log-variance head; two second-order declarations nest
JVPs through the whole UNet.

LSD, MeanFlow and the mixed second partial ∂s∂t X are checked the same way in tests/test_unet.py
(`test_compiled_matches_reference_on_images`, `test_compiled_second_order_matches_reference_on_images`),
so they are not repeated here; this file covers the rest of the catalog (ESD and its variants, PSD-U,
PSD-M, the distillation objectives, shortcut, consistency), a second derivative in one time, a spatial
JVP under a time derivative and a learned weight.

Tolerance: flowcore.testing.FLOAT64_RTOL (1e-9, justified there). The UNet is deeper than the MLP
tests' nets — a few thousand float64 ops per sample, every one rounding at 1.1e-16, and the
magnitude-preserving normalisations keep intermediates O(1) — so the accumulated relative error
stays around 1e-13, four orders of magnitude inside the bound.
"""
import pytest
import torch
from torch import nn

import flowcore as fc
from backends import available
from flowcore import objectives
from flowcore.nn import FlowMapUNet, ImageLogVarHead
from flowcore.terms import draw_noise_and_times
from flowcore.testing import FLOAT64_RTOL, compare_with_reference
import unets

F64 = torch.float64
BATCH = 6  # with η = 0.75: 4 diagonal rows, 2 off-diagonal ones — every term gets samples
COVERED_BY_TEST_UNET = ("lsd", "meanflow")


def tiny_unet(seed: int) -> FlowMapUNet:
    """The shared tiny UNet (tests/unets.py): every gain non-zero, fast time features."""
    return unets.tiny_unet(seed)


class FrozenUNetTeacher(nn.Module):
    """A teacher velocity ``b̂_a(x) = unet(a, a, x)`` with frozen weights (the protocol's ``teacher(a, x)``)."""

    def __init__(self, seed: int):
        super().__init__()
        self.net = tiny_unet(seed).requires_grad_(False)

    def forward(self, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(a, a, x)


def logvar_head(seed: int) -> ImageLogVarHead:
    """The image head with a drawn (non-zero) last layer, so the weight varies with s and t."""
    head = ImageLogVarHead(features=16).to(F64)
    with torch.no_grad():
        head.linear.weight.copy_(torch.randn(head.linear.weight.shape, generator=torch.Generator().manual_seed(seed),
                                             dtype=F64))
    return head


def assert_compiled_matches_reference(objective, backend: str, seed: int = 0) -> None:
    program = fc.compile(objective, backend=backend)
    objective = program.objective
    net = tiny_unet(seed)
    teacher = FrozenUNetTeacher(seed + 1) if objective.needs_teacher else None
    weight_net = logvar_head(seed + 2) if objective.needs_weight_net else None
    gen = torch.Generator().manual_seed(seed + 3)
    x1 = torch.rand(BATCH, 1, 8, 8, generator=gen, dtype=F64) * 2 - 1  # images in [−1, 1]
    drawn = draw_noise_and_times(objective, x1, gen)  # x0 and every term's times, from its own sampler
    times = {term.name: term_times for term, term_times in zip(objective.terms, drawn.times)}
    result = compare_with_reference(program, objective, net, x1, drawn.x0, times, teacher=teacher,
                                    weight_net=weight_net, z=drawn.z)
    expected = len(list(net.parameters())) + (len(list(weight_net.parameters())) if weight_net else 0) + 2
    assert len(result.gradients) == expected  # every parameter, x0 and x1 compared
    assert result.worst <= FLOAT64_RTOL, result


COMPILED = [b for b in available() if b.values[0] != "cuda"]
BUILTINS = [(name, ()) for name in objectives.names() if name not in COVERED_BY_TEST_UNET] + [
    ("pfmm", (("teacher", "self"),)), ("consistency", (("mode", "training"),))]


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("name,options", BUILTINS, ids=[n + "".join(f"-{v}" for _, v in o) for n, o in BUILTINS])
def test_builtin_compiled_matches_reference_on_a_unet(name, options, backend):
    assert_compiled_matches_reference(objectives.get(name, **dict(options)), backend)


x = fc.Var("x")
DECLARATIONS = {
    # a second derivative in one time: ∂²_t X_{s,t}(x) at x = I_s
    "second_in_t": fc.sqnorm(fc.Dt(fc.Dt(fc.X(fc.s, fc.t, x)))).bind(x=fc.I(fc.s)),
    # a spatial JVP along a call output, under a time derivative: ∂_t (∇v̂_{s,t}(x) · v̂_{t,t}(x))
    "dx_under_dt": fc.sqnorm(fc.Dt(fc.Dx(fc.V(fc.s, fc.t, x), x, along=fc.V(fc.t, fc.t, x)))).bind(x=fc.I(fc.s)),
    # LSD's residual weighted by the image log-variance head: exp(−w_{s,t})·ℓ + w_{s,t}
    "learned_weight": fc.learned_logvar(fc.sqnorm(fc.Dt(fc.X(fc.s, fc.t, x))
                                                  - fc.sg(fc.V(fc.t, fc.t, fc.sg(fc.X(fc.s, fc.t, x)))))
                                        ).bind(x=fc.I(fc.s)),
}


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("name", sorted(DECLARATIONS))
def test_declaration_compiled_matches_reference_on_a_unet(name, backend):
    objective = fc.Objective(name, [fc.Term(name, DECLARATIONS[name], fc.UpperTriangle(fc.s, fc.t), 1.0)])
    assert_compiled_matches_reference(objective, backend, seed=5)


def test_every_builtin_is_checked_on_a_unet():
    """A new built-in joins the parametrization by itself; the names left to tests/test_unet.py are still built-ins."""
    checked = {name for name, _ in BUILTINS} | set(COVERED_BY_TEST_UNET)
    assert checked == set(objectives.names())
