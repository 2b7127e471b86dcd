import numpy as np
import pytest

from edgetune.frontend import FrontEnd, StreamingLogMel, clip_features, log_mel, mel_filterbank


def speechlike(seed=0, n=16000):
    """A gliding harmonic voice with formant-like colouring, silence and noise: real-looking audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    f0 = 120 + 60 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voice = sum(np.sin(k * phase) / k for k in range(1, 25))
    env = np.clip(np.sin(np.pi * (t - 0.2) / 0.5), 0, None) * (t > 0.2) * (t < 0.7)
    return (0.3 * env * voice + 0.01 * rng.standard_normal(n)).astype(np.float32)


def test_frontend_dict_round_trip():
    fe = FrontEnd(n_mels=64, f_max=8000.0)
    assert FrontEnd.from_dict(fe.to_dict()) == fe
    with pytest.raises(ValueError):
        FrontEnd.from_dict({**fe.to_dict(), "bogus": 1})


def test_frame_count_follows_constants():
    fe = FrontEnd()
    assert (fe.win_length, fe.hop_length) == (480, 160)
    assert fe.n_frames == 1 + (16000 - 480) // 160 == 98
    assert clip_features(fe, speechlike()).shape == (1, 98, 40)


@pytest.mark.parametrize("preset,norm", [("speech", None), ("sembed", "slaney")])
def test_filterbank_matches_torchaudio(preset, norm):
    torchaudio = pytest.importorskip("torchaudio")
    fe = FrontEnd.preset(preset)
    ref = torchaudio.functional.melscale_fbanks(fe.n_freqs, fe.f_min, fe.f_max, fe.n_mels, fe.sample_rate,
                                                norm=norm, mel_scale=fe.mel_scale).numpy()
    assert np.abs(ref - mel_filterbank(fe)).max() < 1e-5 * ref.max()


def test_unknown_mel_scale_is_refused():
    with pytest.raises(ValueError, match="mel_scale"):
        FrontEnd(mel_scale="bark")


@pytest.mark.parametrize("preset,shape", [("speech", (98, 40)), ("sembed", (98, 32))])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_matches_torchaudio_host(seed, preset, shape):
    torch = pytest.importorskip("torch")
    from edgetune.train.features import LogMel

    fe = FrontEnd.preset(preset)
    audio = speechlike(seed)
    host = LogMel(fe)(torch.from_numpy(audio)[None])[0, 0].numpy()
    device = log_mel(fe, audio)
    assert host.shape == device.shape == shape
    assert np.abs(host - device).max() <= 1e-4


@pytest.mark.parametrize("chunk", [160, 1000, 1600, 4096, 7])
def test_streaming_equals_whole_clip(chunk):
    fe = FrontEnd()
    audio = np.concatenate([speechlike(0), speechlike(1)])
    whole = log_mel(fe, audio)
    stream = StreamingLogMel(fe)
    frames = [stream.push(audio[i : i + chunk]) for i in range(0, len(audio), chunk)]
    streamed = np.concatenate(frames)
    assert streamed.shape == whole.shape
    assert np.abs(streamed - whole).max() <= 1e-5


def test_streaming_reset_forgets_pending_audio():
    fe = FrontEnd()
    s = StreamingLogMel(fe)
    s.push(np.ones(300, np.float32))
    s.reset()
    assert s.push(np.zeros(479, np.float32)).shape == (0, 40)
    assert s.push(np.zeros(1, np.float32)).shape == (1, 40)


def test_digital_silence_looks_like_faint_noise_and_old_floors_are_raised():
    from edgetune.frontend import LOG_FLOOR, with_current_floor

    fe = FrontEnd()
    zeros = log_mel(fe, np.zeros(16000, np.float32))  # how fit_clip pads a trimmed recording
    faint = log_mel(fe, (1e-4 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32))  # -80 dBFS
    assert np.median(np.abs(zeros - faint)) < 0.3  # at the old floor (1e-6) over 2 log units apart
    assert with_current_floor(FrontEnd(log_floor=1e-6)).log_floor == LOG_FLOOR
    assert with_current_floor(FrontEnd(log_floor=1e-3)).log_floor == 1e-3
    assert with_current_floor(FrontEnd.preset("sembed")) == FrontEnd.preset("sembed")  # a Slaney floor is its own
