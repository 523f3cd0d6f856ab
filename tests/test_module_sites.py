"""Sites in any torch module: recording equals a direct forward hook, vectors, steering (and
the no-op guard), tracking, and clear errors for LM-only features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import steerlens as sl
from steerlens.runtime.edits import NoOpEditError
from steerlens.track import excess_modules, track_modules


class MLP(nn.Module):
    def __init__(self, seed: int, d_in: int = 8, h: int = 16) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.layers = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(d_in, h), nn.ReLU()),
                nn.Sequential(nn.Linear(h, h), nn.ReLU()),
            ]
        )
        self.head = nn.Linear(h, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


SITES = ["layers.0", "layers.1"]


def _x(n: int = 37, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))


def test_recording_equals_a_direct_forward_hook() -> None:
    net = MLP(0)
    x = _x()
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        net.get_submodule(p).register_forward_hook(
            lambda _m, _a, out, p=p: seen.__setitem__(p, out.detach().clone())
        )
        for p in SITES
    ]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    lm = sl.wrap_module(net, SITES)
    assert lm.hidden_size == 16 and lm.n_layers == 2 and lm.backend == "module"
    acts = sl.record_activations(lm, x, "all", batch_size=10, keep_rows=True)
    for k, p in enumerate(SITES):
        assert acts.rows is not None
        torch.testing.assert_close(acts.rows[k], seen[p])
        torch.testing.assert_close(acts.means[k], seen[p].double().mean(0).float())
    assert acts.meta["backend"] == "module" and acts.meta["sites"] == {
        0: "module:layers.0",
        1: "module:layers.1",
    }
    assert acts.meta["fingerprint"] == lm.fingerprint
    by_path = sl.record_activations(lm, x, "layers.1", keep_rows=True)
    assert by_path.layers == [1]
    assert acts.rows is not None and by_path.rows is not None
    torch.testing.assert_close(by_path.rows[1], acts.rows[1])


def test_vectors_and_steering_on_a_module() -> None:
    net = MLP(1)
    lm = sl.wrap_module(net, SITES, name="mlp")
    pos, neg = _x(20, 1) + 1.0, _x(20, 2)
    vec = sl.module_vector(lm, pos, neg, "all")
    rows_p = sl.record_activations(lm, pos, keep_rows=True).rows
    rows_n = sl.record_activations(lm, neg, keep_rows=True).rows
    assert rows_p is not None and rows_n is not None
    torch.testing.assert_close(vec[1], rows_p[1].mean(0) - rows_n[1].mean(0))
    assert vec.meta["sites"][1] == "module:layers.1" and vec.meta["model"] == "mlp"
    assert vec.meta["model_fingerprint"] == lm.fingerprint and vec.meta["pos_prompts_hash"]
    x = _x(5, 3)
    with torch.no_grad():
        h1 = net.layers[1](net.layers[0](x))
        want = net.head(h1 + 2.0 * vec[1])
        with sl.steer(lm, vec, 2.0, layers=["layers.1"]):
            got = net(x)
        plain = net(x)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, plain)
    with torch.no_grad(), pytest.raises(NoOpEditError), sl.steer(lm, vec, 2.0, layers=[1]):
        sl.record_activations(lm, x, "layers.0")  # stops before the edited site


def test_lm_only_features_give_clear_errors() -> None:
    lm = sl.wrap_module(MLP(2), SITES)
    with pytest.raises(sl.LMOnlyError, match="plain torch module"):
        sl.record_activations(lm, ["hello"])
    with pytest.raises(sl.LMOnlyError, match="generation"):
        lm.generate(["hi"])
    with pytest.raises(sl.LMOnlyError, match="tokenizer"):
        lm.tokenizer.encode("hi")
    with pytest.raises(TypeError, match="module_vector"):
        sl.extract_vector(lm, ["a"], ["b"])
    vec = sl.module_vector(lm, _x(4, 1), _x(4, 2))
    with pytest.raises(sl.LMOnlyError, match="positions"), sl.steer(lm, vec, positions="prompt"):
        pass
    with pytest.raises(ValueError, match=r"no submodule .layers\.7."):
        sl.wrap_module(MLP(2), ["layers.7"])
    with pytest.raises(ValueError, match="wrapped with sites"):
        sl.record_activations(lm, _x(3), "head")


def test_tracking_on_modules_uses_the_track_statistics() -> None:
    a0, b0 = MLP(3), MLP(4)
    teacher = MLP(3)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.3 * torch.randn_like(p))
    base = sl.wrap_module(a0, SITES)
    x = _x(64, 5)
    vt = sl.shift_vector(sl.wrap_module(teacher, SITES), base, x)
    assert vt.meta["kind"] == "shift" and vt.meta["base_fingerprint"] == base.fingerprint
    same = track_modules(base, [(1, teacher)], vt, x, name="same", cfg=sl.track.NullConfig(200))
    assert same.series.steps == [0, 1]
    assert same.series.eas[1, 0] == pytest.approx(1.0, abs=1e-6)  # its own shift
    assert same.series.p_adj[1].max() < 0.05
    other = MLP(4)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.3 * torch.randn_like(p))
    diff = track_modules(
        sl.wrap_module(b0, SITES), [(1, other)], vt, x, name="diff", cfg=sl.track.NullConfig(200)
    )
    ex = excess_modules(same, diff, vt, n_boot=200)
    assert ex.steps == [1] and (ex.lo[0] > 0).all()
