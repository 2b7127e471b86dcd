"""Host-side log-mel (torch): the same features as edgetune.frontend, batched, on any device.

torchaudio's MelSpectrogram with `center=False` frames an n_fft-sample window
whose Hann part (win_length) sits in the middle; padding the signal by that
offset on both sides makes its frames start where the numpy front end's do.
The filterbank is the front end's own matrix, so the two agree to float error.
"""

from __future__ import annotations

import torch
import torchaudio

from edgetune.frontend import FrontEnd, mel_filterbank


class LogMel(torch.nn.Module):
    def __init__(self, fe: FrontEnd):
        super().__init__()
        self.fe = fe
        self.pad = (fe.n_fft - fe.win_length) // 2
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=fe.sample_rate, n_fft=fe.n_fft, win_length=fe.win_length,
            hop_length=fe.hop_length, f_min=fe.f_min, f_max=fe.f_max, n_mels=fe.n_mels,
            power=2.0, center=False, mel_scale="htk", norm=None,
        )
        self.mel.mel_scale.fb.copy_(torch.from_numpy(mel_filterbank(fe)))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """[batch, samples] -> [batch, 1, frames, n_mels]"""
        right = self.fe.n_fft - self.fe.win_length - self.pad
        x = torch.nn.functional.pad(audio, (self.pad, right))
        mel = self.mel(x)  # [batch, n_mels, frames]
        return torch.log(mel + self.fe.log_floor).transpose(1, 2).unsqueeze(1)
