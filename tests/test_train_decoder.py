"""The decoder stage: a decoder-only fine-tune with a PatchGAN term that leaves the encoder —
and so the latent space a denoiser was trained on — bit-identical; and ``stages=`` runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from geot2e.errors import ParameterError
from geot2e.models import from_pretrained
from geot2e.train import run_training
from geot2e.train.gan import PatchDiscriminator, adaptive_weight, hinge_d_loss

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning")


def _config(tmp_path: Path, drop=()) -> Path:
    d = yaml.safe_load((ROOT / "configs" / "tiny_test.yaml").read_text())
    d["out_dir"] = str(tmp_path / "run")
    d["export"] = None
    for s in d["sources"]:
        s["path"] = str(ROOT / s["path"])
    for st in ("vae", "denoiser", "finetune", "decoder"):
        if d.get(st):
            d[st].update(steps=2, save_every=2, batch_size=2)
    for k in drop:
        d.pop(k, None)
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _sd(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_decoder_stage_changes_only_the_decoder(tmp_path):
    cfg = _config(tmp_path, drop=("denoiser", "finetune"))
    run_training(cfg, progress=False, stages=["vae"])          # a partial run: VAE only, no export
    run_dir = tmp_path / "run"
    assert (run_dir / "vae_done").exists() and not (run_dir / "final").exists()
    vae0 = from_pretrained(run_dir / "vae" / "model").vae
    run_training(cfg, progress=False)                           # now the decoder stage, then export
    vae1 = from_pretrained(run_dir / "final").vae
    for part in ("encoder", "quant_conv"):                      # the latent space is untouched
        a, b = _sd(getattr(vae0, part)), _sd(getattr(vae1, part))
        assert all(torch.equal(a[k], b[k]) for k in a), part
    a, b = _sd(vae0.decoder), _sd(vae1.decoder)
    assert any(not torch.equal(a[k], b[k]) for k in a)          # the decoder did train


def _decoder_sd(path: Path) -> dict:
    return _sd(from_pretrained(path).vae.decoder)


def test_decoder_resume_restores_the_critic(tmp_path, monkeypatch):
    """Interrupted after its step-2 checkpoint and resumed, the decoder stage ends exactly where an
    uninterrupted run does: the critic and its optimizer come back from the checkpoint (a fresh
    critic would give different weights), and the exported decoder is the EMA."""
    import geot2e.train.loop as L
    from safetensors import safe_open

    def cfg_for(d):
        cfg = _config(d, drop=("denoiser", "finetune"))
        y = yaml.safe_load(cfg.read_text())
        y["decoder"].update(steps=4, save_every=2, ema_decay=0.5)
        cfg.write_text(yaml.safe_dump(y))
        return cfg

    ref = cfg_for(tmp_path / "ref")
    run_training(ref, progress=False)
    cfg = cfg_for(tmp_path / "cut")
    real, calls = L._rec_loss, [0]

    def dying(*a, **k):
        calls[0] += 1
        if calls[0] == 3:                          # the decoder's third step, after the step-2 save
            raise KeyboardInterrupt("simulated interruption")
        return real(*a, **k)

    run_training(cfg, progress=False, stages=["vae"])
    monkeypatch.setattr(L, "_rec_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, progress=False)
    monkeypatch.setattr(L, "_rec_loss", real)
    state = tmp_path / "cut" / "run" / "decoder" / "state.safetensors"
    with safe_open(str(state), framework="pt") as fh:
        keys = list(fh.keys())
    assert any(k.startswith("aux.critic.") for k in keys) and any(k.startswith("aux.critic_opt.") for k in keys)
    assert any(k.startswith("ema.") for k in keys)
    run_training(cfg, progress=False)              # resumes at step 2
    a, b = _decoder_sd(tmp_path / "ref" / "run" / "final"), _decoder_sd(tmp_path / "cut" / "run" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stage_selection_errors(tmp_path):
    cfg = _config(tmp_path)
    with pytest.raises(ParameterError, match="unknown stages"):
        run_training(cfg, progress=False, stages=["unet"])
    with pytest.raises(ParameterError, match="finished VAE stage"):
        run_training(cfg, progress=False, stages=["decoder"])   # nothing trained yet
    cfg2 = _config(tmp_path / "b", drop=("decoder",))
    with pytest.raises(ParameterError, match="not configured"):
        run_training(cfg2, progress=False, stages=["decoder"])


def test_gan_pieces():
    torch.manual_seed(0)
    d = PatchDiscriminator(3, width=16)
    x = torch.randn(2, 3, 32, 32)
    assert d(x).shape == (2, 1, 6, 6)
    assert float(hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))) == 0.0   # confident critic
    w = torch.nn.Parameter(torch.ones(3))
    rec, adv = (w * 2).sum(), (w * 0.5).sum()
    assert float(adaptive_weight(rec, adv, w)) == pytest.approx(4.0, rel=1e-3)       # ‖2‖ / ‖0.5‖


def test_hf_energy_loss_penalises_lost_detail_and_its_gradient_restores_it():
    import torch.nn.functional as F

    from geot2e.train.loop import _hf_energy_loss

    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1                       # pixel-scale detail
    assert float(_hf_energy_loss(x, x)) == 0.0
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    assert float(_hf_energy_loss(blur, x)) > 1.0                 # a blurred tile: far less detail
    rec = blur.clone().requires_grad_(True)
    loss = _hf_energy_loss(rec, x)
    loss.backward()
    step = (rec - 0.05 * rec.grad / rec.grad.abs().max()).detach()
    assert float(_hf_energy_loss(step, x)) < float(loss)        # descending it puts detail back
    lap = lambda a: a[..., 1:-1, 1:-1] * -4 + a[..., :-2, 1:-1] + a[..., 2:, 1:-1] + a[..., 1:-1, :-2] + a[..., 1:-1, 2:]  # noqa: E731
    assert float(lap(step).std()) > float(lap(blur).std())


def test_cli_stage_runs_one_stage_and_says_so(tmp_path, capsys):
    from geot2e import cli

    cfg = _config(tmp_path, drop=("finetune",))
    assert cli.main(["train", str(cfg), "--stage", "vae", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "stage(s) vae finished" in out and "without --stage" in out
    assert not (tmp_path / "run" / "final").exists()               # a --stage run exports nothing
    assert cli.main(["train", str(cfg), "--stage", "unet", "--no-progress"]) == 3  # bad input, typed


def test_hf_energy_loss_wants_brightness_detail_not_colour_noise():
    """Real ground's detail moves the bands together. Detail of the same per-band energy added
    to each band independently (colour noise, the off-palette specks) costs more than detail
    shared by the bands."""
    from geot2e.train.loop import _hf_energy_loss

    g = torch.Generator().manual_seed(0)
    base = torch.linspace(-0.5, 0.5, 32).expand(2, 3, 32, 32)
    x = base + 0.1 * torch.randn(2, 1, 32, 32, generator=g)               # brightness detail
    shared = base + 0.1 * torch.randn(2, 1, 32, 32, generator=g)          # other detail, bands together
    noisy = base + 0.1 * torch.randn(2, 3, 32, 32, generator=g)           # same energy per band, independent
    assert float(_hf_energy_loss(shared, x)) < 0.1
    assert float(_hf_energy_loss(noisy, x)) > 1.0
