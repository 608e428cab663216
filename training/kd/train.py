"""KD training: voice embedding -> generator -> face image; a face embedding net judges real/fake and
identity;
a student reads generated faces and is distilled from a frozen teacher (Wu et al. 2022, Sec. 3.2).

Per step (batch of ``batch_size`` utterances: ``batch_size / utterances_per_speaker`` speakers):
- discriminator step: BCE(real faces -> 1) + BCE(generated -> 0) + d_id_weight * NLL(identity of real faces);
- generator + student step: adv_weight * BCE(generated -> 1) + id_weight * NLL(identity of generated faces)
  + mse_weight * MSE(teacher output, student output) + pkt_weight * (PKT(teacher, student pooled features)
  + PKT(teacher, student intermediate maps)) + triplet_weight * triplet(student's dense vertices;
  positive: another utterance of the speaker, negative: another speaker).
The teacher's weights are frozen; gradients reach the generator through both networks' activations. The
MSE compares the networks' own (whitened) outputs; the triplet margin is in the teacher's image-frame units
(``image_frame_vertices``: px of its input image).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn

from training.checkpoints import load_pretrained_encoder, read_torch_file, save_checkpoint
from training.embeddings import clean_embeddings
from training.eval_metrics import per_utterance_metrics
from training.kd.config import KDConfig, kd_config_to_dict
from training.kd.data import load_identity_images, read_voices_and_faces
from training.kd.mobilenet import DDFATeacher
from training.kd.nets import FaceEmbedNet, Generator, KDInference, to_unit_range
from training.kd.pkt import pkt_loss
from training.kd.teachers import load_teacher, prediction_face_model
from training.modelcard import build_card, write_card
from training.models import MeshDecoder, freeze
from training.run import RunLogger, checkpoint_due, resolve_device, set_threads

KD_FORMAT = "voice2mesh-kd-1"


def build_student(cfg: KDConfig, teacher: nn.Module) -> nn.Module:
    """The student: a network of the teacher's architecture (and output whitening), freshly initialised
    (``init: random``, the paper) or starting from the teacher's weights (``init: teacher``)."""
    student = copy.deepcopy(teacher)
    if cfg.student.init == "random":
        for m in student.modules():
            if m is not student and hasattr(m, "reset_parameters"):
                m.reset_parameters()  # BatchNorm: running statistics too
    for p in student.parameters():
        p.requires_grad_(True)
    return student_train_mode(student, cfg.student.batchnorm)


def student_train_mode(student: nn.Module, batchnorm: str) -> nn.Module:
    """Training mode; with ``batchnorm == "frozen"`` the BatchNorm layers stay in eval mode (fixed stats)."""
    student.train()
    if batchnorm == "frozen":
        for m in student.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    return student


def triplet_indices(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each sample: a positive (same label, another sample) and a negative (another label)."""
    n = len(labels)
    pos, neg = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for i in range(n):
        same = np.flatnonzero((labels == labels[i]) & (np.arange(n) != i))
        other = np.flatnonzero(labels != labels[i])
        pos[i] = rng.choice(same) if len(same) else i
        neg[i] = rng.choice(other) if len(other) else i
    return pos, neg


class KDTrainer:
    """Holds the nets, optimisers and data of one KD run; ``step()`` does one D and one G/student update."""

    def __init__(self, cfg: KDConfig, cache_dir: Path, device: torch.device, progress: bool = False) -> None:
        self.cfg, self.device = cfg, device
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        dc = cfg.data
        data, folders = read_voices_and_faces(dc.kind, dc.path, dc.images, dc.max_images_per_identity)
        self.data, self.folders = data, folders
        self.encoder, self.encoder_digest = load_pretrained_encoder(dc.encoder_checkpoint)
        teacher, info = load_teacher(
            cfg.teacher.kind, cfg.teacher.checkpoint, cfg.teacher.param_stats, cfg.teacher.face_model
        )
        self.teacher, self.teacher_info = teacher.to(device), info
        self.face_model = prediction_face_model(info["face_model"], info["n_identity"], info["n_expression"])
        self.decoder = MeshDecoder(self.face_model).to(device)
        # identities: training speakers with both voices and images
        train_spk = [s for s in data.speakers_of("train") if s in folders.files]
        self.identities = train_spk
        mask = (data.utt_splits == "train") & np.isin(data.utt_speakers, train_spk)
        self.embeddings = clean_embeddings(
            self.encoder, data, mask, cache_dir, dc.eval_frames, self.encoder_digest, show=progress
        )
        lab = {s: i for i, s in enumerate(train_spk)}
        self.utt_labels = np.array([lab[s] for s in data.utt_speakers[mask]], dtype=np.int64)
        self.utts_of = [np.flatnonzero(self.utt_labels == i) for i in range(len(train_spk))]
        self.generator = Generator(self.encoder.embed_dim, cfg.generator.channels, cfg.generator.noise_std)
        size = self.generator.image_size
        self.images, self.image_labels = load_identity_images(folders, train_spk, size)
        self.teacher_ids = cfg.discriminator.identity_features == "teacher"
        with torch.no_grad():
            probe = self.teacher.forward_features(torch.zeros(2, 3, size, size, device=device))
        self.d_net = FaceEmbedNet(
            len(train_spk),
            size,
            cfg.discriminator.channels,
            cfg.discriminator.embed_dim,
            id_feature_dim=int(probe.pooled.shape[1]) if self.teacher_ids else 0,
        )
        self.student = build_student(cfg, teacher)
        self.generator.to(device)
        self.d_net.to(device)
        self.student.to(device)
        oc = cfg.optim
        self.opt_g = torch.optim.Adam(
            list(self.generator.parameters()) + list(self.student.parameters()),
            lr=oc.lr,
            betas=tuple(oc.betas),
        )
        self.opt_d = torch.optim.Adam(self.d_net.parameters(), lr=oc.lr, betas=tuple(oc.betas))
        self.step_count = 0
        self.ema: dict[str, nn.Module] = {}
        if oc.ema_decay > 0:
            self.reset_ema()

    # ---------------------------------------------------------------------------------------------
    def reset_ema(self) -> None:
        """Start the weight averages at the current generator and student."""
        self.ema = {
            "generator": freeze(copy.deepcopy(self.generator)),
            "student": freeze(copy.deepcopy(self.student)),
        }

    @torch.no_grad()
    def update_ema(self) -> None:
        d = self.cfg.optim.ema_decay
        for name, avg in self.ema.items():
            live = getattr(self, name)
            for pa, pl in zip(avg.parameters(), live.parameters(), strict=True):
                pa.mul_(d).add_(pl.detach(), alpha=1.0 - d)
            for ba, bl in zip(avg.buffers(), live.buffers(), strict=True):
                ba.copy_(bl)

    def nets_for_inference(self) -> tuple[nn.Module, nn.Module]:
        """(generator, student) used by model.pt and the monitoring: the averages when EMA is on."""
        if self.ema:
            return self.ema["generator"], self.ema["student"]
        return self.generator, self.student

    # ---------------------------------------------------------------------------------------------
    def sample_batch(self) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, torch.Tensor]:
        oc = self.cfg.optim
        per = max(1, oc.utterances_per_speaker)
        n_spk = max(2, oc.batch_size // per)
        spk = self.rng.choice(len(self.identities), size=n_spk, replace=n_spk > len(self.identities))
        utt = np.concatenate(
            [self.rng.choice(self.utts_of[s], size=per, replace=len(self.utts_of[s]) < per) for s in spk]
        )
        labels = self.utt_labels[utt]
        img_idx = self.rng.integers(0, len(self.images), size=len(utt))
        emb = torch.from_numpy(self.embeddings[utt]).to(self.device)
        real = to_unit_range(torch.from_numpy(self.images[img_idx])).to(self.device)
        return emb, labels, real, torch.from_numpy(self.image_labels[img_idx]).to(self.device)

    def frame_vertices(self, out) -> torch.Tensor:
        """Dense vertices (B, N*3) of a student (or teacher) output in the teacher's image-frame units."""
        return self.teacher.image_frame_vertices(out, self.decoder(out.params))

    def judge(self, images: torch.Tensor, teacher_out=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The face embedding net on ``images`` (with the teacher's pooled features when configured)."""
        if not self.teacher_ids:
            return self.d_net(images)
        if teacher_out is None:
            with torch.no_grad():
                teacher_out = self.teacher.forward_features(images)
        return self.d_net(images, teacher_out.pooled)

    def distill(self, images: torch.Tensor, t=None) -> tuple[dict[str, torch.Tensor], Any]:
        """MSE + PKT terms of the student against the teacher on ``images``: (terms, student output).
        ``t``: the teacher's output on ``images`` when already computed. Nothing is detached: on generated
        images the gradients reach the generator through the teacher's activations too (its weights are
        frozen)."""
        lc = self.cfg.loss
        if t is None:
            with torch.set_grad_enabled(images.requires_grad):
                t = self.teacher.forward_features(images)
        s = self.student.forward_features(images)
        terms = {"mse": F.mse_loss(t.raw, s.raw)}
        pkt = torch.zeros((), device=images.device)
        if lc.pkt_pooled:
            pkt = pkt + pkt_loss(t.pooled, s.pooled)
        if lc.pkt_intermediate:
            pkt = pkt + pkt_loss(t.intermediate, s.intermediate)
        terms["pkt"] = pkt
        return terms, s

    def warmup_d(self, steps: int) -> float:
        """Identity-only discriminator steps on real faces; returns the last batch's identity accuracy."""
        acc = 0.0
        self.d_net.train()
        for _ in range(steps):
            _, _, real, real_labels = self.sample_batch()
            _, id_real = self.judge(real)
            loss = F.nll_loss(id_real, real_labels)
            self.opt_d.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_d.step()
            acc = float((id_real.argmax(1) == real_labels).float().mean())
        return acc

    def step(self) -> dict[str, float]:
        lc = self.cfg.loss
        emb, labels, real, real_labels = self.sample_batch()
        ones = torch.ones(len(emb), device=self.device)
        zeros = torch.zeros(len(emb), device=self.device)
        # discriminator step
        self.d_net.train()
        with torch.no_grad():
            fake = self.generator(emb, noise=True)
        rf_real, id_real = self.judge(real)
        rf_fake, _ = self.judge(fake)
        loss_d = (
            F.binary_cross_entropy_with_logits(rf_real, ones)
            + F.binary_cross_entropy_with_logits(rf_fake, zeros)
            + lc.d_id_weight * F.nll_loss(id_real, real_labels)
        )
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        # generator + student step
        fake = self.generator(emb, noise=True)
        # the teacher's output on the generated faces: the distillation's other side and, with
        # identity_features "teacher", the identity classifier's input (gradients reach the generator)
        t_fake = self.teacher.forward_features(fake)
        rf, idl = self.judge(fake, t_fake)
        y = torch.from_numpy(labels).to(self.device)
        terms = {"adv": F.binary_cross_entropy_with_logits(rf, ones), "id": F.nll_loss(idl, y)}
        dist_terms, s_fake = self.distill(fake, t_fake)
        terms.update(dist_terms)
        if lc.triplet_weight > 0:
            pos, neg = triplet_indices(labels, self.rng)
            v = self.frame_vertices(s_fake)
            terms["triplet"] = F.triplet_margin_loss(v, v[pos], v[neg], margin=lc.triplet_margin, p=2)
        else:
            terms["triplet"] = torch.zeros((), device=self.device)
        loss = (
            lc.adv_weight * terms["adv"]
            + lc.id_weight * terms["id"]
            + lc.mse_weight * terms["mse"]
            + lc.pkt_weight * terms["pkt"]
            + lc.triplet_weight * terms["triplet"]
        )
        if lc.real_distill_weight > 0:
            rterms, _ = self.distill(real)
            loss = loss + lc.real_distill_weight * (
                lc.mse_weight * rterms["mse"] + lc.pkt_weight * rterms["pkt"]
            )
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        if self.ema:
            self.update_ema()
        self.step_count += 1
        row = {k: float(v.detach()) for k, v in terms.items()}
        row.update(
            {
                "loss_d": float(loss_d.detach()),
                "loss_g": float(loss.detach()),
                "d_id_acc": float((id_real.argmax(1) == real_labels).float().mean()),
                "g_id_acc": float((idl.argmax(1) == y).float().mean()),
            }
        )
        return row

    # ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def monitor(self, cache_dir: Path, figure: Path | None = None) -> dict[str, float]:
        """Validation monitoring (not selection): the mean ARE of voice -> generator -> student on the
        validation speakers (clean utterances) and of the mean training face, when the dataset has 3D
        targets; optionally a PNG of 16 faces generated from validation voices."""
        data = self.data
        mask = data.utt_splits == "val"
        if not mask.any():
            return {}
        if not hasattr(self, "_val"):
            emb = clean_embeddings(
                self.encoder, data, mask, cache_dir, self.cfg.data.eval_frames, self.encoder_digest
            )
            self._val = (emb, mask)
        emb, mask = self._val
        gen, student = self.nets_for_inference()
        gen.eval()
        student.eval()
        faces, params = [], []
        for s in range(0, len(emb), 128):
            img = gen(torch.from_numpy(emb[s : s + 128]).to(self.device))
            faces.append(img)
            params.append(student(img).cpu().numpy())
        if not self.ema:
            self.generator.train()
            student_train_mode(self.student, self.cfg.student.batchnorm)
        if figure is not None:
            grid = torch.cat(faces)[:16].cpu()
            grid = ((grid.permute(0, 2, 3, 1) + 1) * 127.5).clamp(0, 255).round().byte().numpy()
            n, s = len(grid), grid.shape[1]
            Image.fromarray(grid.transpose(1, 0, 2, 3).reshape(s, n * s, 3)).save(figure)
        if data.params is None:
            return {}
        target = data.params[data.utt_speaker_index()[mask]]
        out = {
            "val_are": float(
                np.mean(per_utterance_metrics(self.face_model, np.concatenate(params), target)["ARE"])
            )
        }
        if not hasattr(self, "_val_base"):
            base = data.targets_for(np.array(self.identities)).mean(0, keepdims=True)
            self._val_base = float(
                np.mean(
                    per_utterance_metrics(self.face_model, np.repeat(base, len(target), 0), target)["ARE"]
                )
            )
        out["val_are_baseline"] = self._val_base
        return out

    def inference_module(self, cascade: bool = False) -> KDInference:
        """A CPU copy of voice -> generator -> student for export and evaluation; ``cascade``: the
        teacher in the student's place (the paper's baseline: voice -> generated image -> teacher)."""
        generator, student = self.nets_for_inference()
        return KDInference(
            copy.deepcopy(self.encoder).cpu(),
            copy.deepcopy(generator).cpu().eval(),
            copy.deepcopy(self.teacher if cascade else student).cpu().eval(),
        ).eval()

    def state(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "d_net": self.d_net.state_dict(),
            "student": self.student.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step_count,
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            **{f"ema_{k}": v.state_dict() for k, v in self.ema.items()},
        }

    def load_state(self, st: dict[str, Any]) -> None:
        self.generator.load_state_dict(st["generator"])
        self.d_net.load_state_dict(st["d_net"])
        self.student.load_state_dict(st["student"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        self.step_count = int(st["step"])
        self.rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        if self.cfg.optim.ema_decay > 0:
            self.reset_ema()  # from the loaded weights when the saved run had no averages
            for k, avg in self.ema.items():
                if f"ema_{k}" in st:
                    avg.load_state_dict(st[f"ema_{k}"])


def student_arch(student: nn.Module) -> dict[str, Any]:
    """What rebuilds the student (training.checkpoints.kd_model_from_checkpoint; weights and buffers
    come from the state dict)."""
    if isinstance(student, DDFATeacher):
        return {"kind": "ddfa", "n_params": student.n_params, "input_size": student.input_size}
    return {
        "kind": "ict",
        "n_params": student.n_params,
        "input_size": student.input_size,
        "width": student.width,
    }


def checkpoint_payload(
    trainer: KDTrainer, cfg: KDConfig, card: dict[str, Any] | None = None, cascade: bool = False
) -> dict[str, Any]:
    """What ``model.pt`` holds (the export and evaluation rebuild KDInference from it); ``cascade``: the
    same generator read by the teacher instead of the student (``cascade.pt``)."""
    module = trainer.inference_module(cascade)
    st = trainer.teacher if cascade else trainer.student
    return {
        "format": KD_FORMAT,
        "framework": "kd",
        "stage": "kd",
        "config": kd_config_to_dict(cfg),
        "state_dict": module.state_dict(),
        "encoder": "voiceembednet",
        "generator_arch": {
            "embed_dim": trainer.encoder.embed_dim,
            "channels": list(cfg.generator.channels),
            "noise_std": cfg.generator.noise_std,
        },
        "student_arch": student_arch(st),
        "teacher": {"kind": cfg.teacher.kind, "checkpoint": cfg.teacher.checkpoint},
        "face_model": trainer.teacher_info["face_model"],
        "n_identity": trainer.face_model.n_identity,
        "n_expression": trainer.face_model.n_expression,
        "param_mean": st.param_mean.reshape(-1).cpu().numpy(),
        "param_std": st.param_std.reshape(-1).cpu().numpy(),
        "identities": list(trainer.identities),
        "model_card": card or {},
        "input": "features (batch, time, 64)",
        "eval_frames": cfg.data.eval_frames,
    }


TEACHER_3D = {
    "ict": "the ICT teacher was trained on renders of random faces drawn from the ICT prior, with their "
    "parameters (no face of any dataset speaker)",
    "ddfa": "the 3DDFA-V2-style teacher's weights were trained by others on 3D fits of face photos",
}


def three_d_data_statement(cfg: KDConfig) -> str:
    """Exactly which 3D data touched this KD model (the model card's claim)."""
    monitor = (
        f"the validation speakers' mean ARE was logged every {cfg.optim.eval_every} steps "
        "(monitoring; it changes nothing in the run)"
        if cfg.optim.eval_every > 0
        else "no 3D error was computed during the run"
    )
    return (
        f"the KD losses use no 3D targets; {TEACHER_3D[cfg.teacher.kind]}; model.pt is the last step "
        f"(no checkpoint picked with 3D data); {monitor}. The recipe's settings may have been chosen on "
        "validation speakers' 3D faces: docs/kd.md says which (the synthvox recipe's were)."
    )


def run_kd(
    cfg: KDConfig, out: str | Path, device: str = "cpu", resume: bool = False, progress: bool = True
) -> Path:
    """Train; write ``out/last.pt`` (resumable), ``out/log.csv``, and ``out/model.pt`` + model card."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    dev = resolve_device(device)
    (out / "kd_config.yaml").write_text(yaml.safe_dump(kd_config_to_dict(cfg), sort_keys=False))
    t0 = time.time()
    trainer = KDTrainer(cfg, out.parent / "cache", dev, progress)
    t_setup = time.time() - t0
    last = out / "last.pt"
    if resume and last.is_file():
        trainer.load_state(read_torch_file(last, "KD checkpoint")["trainer"])
    if trainer.step_count == 0 and cfg.optim.d_warmup_steps > 0:
        acc = trainer.warmup_d(cfg.optim.d_warmup_steps)
        if progress:
            print(
                f"discriminator warm-up: {cfg.optim.d_warmup_steps} steps, identity accuracy {acc:.2f} "
                f"({time.time() - t0:.0f} s)",
                flush=True,
            )
    if not resume:
        (out / "log.csv").unlink(missing_ok=True)
    logger = RunLogger(out, step_key="step")
    oc = cfg.optim
    rows: list[dict[str, float]] = []
    t_train = time.time()
    while trainer.step_count < oc.steps:
        if oc.max_seconds > 0 and time.time() - t_train > oc.max_seconds:
            if progress:
                print(f"time box: stopping after {trainer.step_count} steps ({oc.max_seconds:.0f} s)")
            break
        row = trainer.step()
        rows.append(row)
        if trainer.step_count % oc.log_every == 0 or trainer.step_count == oc.steps:
            avg = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            if oc.eval_every > 0:
                due = trainer.step_count % oc.eval_every == 0 or trainer.step_count == oc.steps
                mon = trainer.monitor(out.parent / "cache", out / "val_faces.png") if due else {}
                avg["val_are"] = mon.get("val_are", float("nan"))
                avg["val_are_baseline"] = mon.get("val_are_baseline", float("nan"))
            avg = {"step": trainer.step_count, **avg, "seconds": round(time.time() - t0, 1)}
            rows = []
            logger.log(avg)
            if progress:
                print(
                    " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in avg.items()),
                    flush=True,
                )
        if checkpoint_due(trainer.step_count, oc.checkpoint_every, oc.steps):
            save_checkpoint(last, {"trainer": trainer.state(), "config": kd_config_to_dict(cfg)})
    logger.close()
    seconds = time.time() - t0
    data = trainer.data
    card = build_card(
        name=cfg.name,
        stage="kd",
        encoder="voiceembednet",
        face_model=trainer.teacher_info["face_model"],
        data={
            "name": data.name,
            "kind": data.kind,
            "path": str(data.root),
            "synthetic": data.synthetic,
            "n_train_identities": len(trainer.identities),
            "n_face_images": int(len(trainer.images)),
            "n_train_utterances": int(len(trainer.embeddings)),
        },
        config=kd_config_to_dict(cfg),
        metrics={},
        training={
            "framework": "unsupervised knowledge distillation: voices, face images and a frozen teacher",
            "3D data": three_d_data_statement(cfg),
            "steps": trainer.step_count,
            "seconds": round(seconds, 1),
            "setup_seconds": round(t_setup, 1),
            "device": str(dev),
            "teacher": f"{cfg.teacher.kind}: {cfg.teacher.checkpoint}",
            "encoder_weights": trainer.encoder_digest,
        },
    )
    card["framework"] = "kd"
    save_checkpoint(out / "cascade.pt", checkpoint_payload(trainer, cfg, card, cascade=True))
    final = save_checkpoint(out / "model.pt", checkpoint_payload(trainer, cfg, card))
    write_card(card, out)
    return final
