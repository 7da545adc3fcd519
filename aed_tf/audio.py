"""Reading audio: decoding to mono float32 at one rate, validation, and the decoded-audio cache.

Everything aed-tf hears comes through here, so one set of rules decides what a usable file is: a
file that cannot be used raises ``AudioError`` ('<path>: <reason>'), and ``decode_many`` returns
such errors in place instead of stopping. Decoded clips are cached by the hash of the file's
bytes, so each file content is decoded once, whatever its path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr
from tqdm.auto import tqdm

from aed_tf.errors import InputError, UserError
from aed_tf.files import atomic_write

# The file suffixes of audio that `decode` reads (libsndfile >= 1.1): the one list for finding
# recordings, in corpora (`aed-tf prepare`) and in folders given to `aed-tf predict`.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")

# Names the cache folder. Bump it whenever decoding changes the samples a file gives (mixdown,
# resampler, dtype): entries of the old decoder then live in another folder and are never read.
CACHE_VERSION = "audio-v1"


class AudioError(UserError):
    """A file that cannot be used; str() is '<path>: <reason>'."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


# eq=False: the default __eq__ would compare numpy arrays and fail; compare audio_hash instead.
@dataclasses.dataclass(frozen=True, eq=False)
class DecodedAudio:
    """A decoded file: its samples at the requested rate and the facts of the file itself."""

    samples: np.ndarray  # float32, mono, at sample_rate, shape (n,)
    sample_rate: int  # the requested (output) rate
    source_sample_rate: int  # of the file
    channels: int  # of the file
    duration: float  # seconds, of the file
    file_hash: str  # of the file's bytes
    audio_hash: str  # of the samples: identical audio gives identical hashes


def _digest(data: bytes | np.ndarray) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_hash(path: str | Path) -> str:
    """The hex digest (blake2b, 16 bytes) of the file's bytes."""
    with _opened(Path(path)) as (_, data):
        return _digest(data)


def is_silent(samples: np.ndarray, threshold_db: float = -60.0) -> bool:
    """Whether no sample reaches `threshold_db` dBFS (an empty clip is silent)."""
    return samples.size == 0 or float(np.max(np.abs(samples))) < 10.0 ** (threshold_db / 20.0)


def scale_to_unit(samples: np.ndarray) -> np.ndarray:
    """Signed integer samples scaled to [-1, 1) (full scale is the type's most negative value);
    floats as they are."""
    if np.issubdtype(samples.dtype, np.signedinteger):
        return samples / -float(np.iinfo(samples.dtype).min)
    return samples


def to_mono_float32(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Samples given as an array, shaped (frames,) or (frames, channels), as mono float32 at
    `target_rate`. Integer samples are scaled to [-1, 1); bad input raises ValueError."""
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2) or samples.size == 0:
        raise InputError(f"samples of shape {samples.shape}: expected (frames,) or (frames, channels)")
    if samples.ndim == 2 and samples.shape[1] > samples.shape[0]:
        raise InputError(
            f"samples of shape {samples.shape} look like (channels, frames); pass (frames, channels)"
        )
    if source_rate <= 0 or target_rate <= 0:
        raise InputError(f"sample rates must be positive, got {source_rate} -> {target_rate}")
    if not MIN_SAMPLE_RATE <= source_rate <= MAX_SAMPLE_RATE:
        raise InputError(
            f"sample_rate {source_rate} Hz: supported rates are {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )
    if not (np.issubdtype(samples.dtype, np.signedinteger) or np.issubdtype(samples.dtype, np.floating)):
        raise InputError(f"samples of dtype {samples.dtype}: expected floats or signed integers")
    frames = np.asarray(scale_to_unit(samples), dtype=np.float32).reshape(len(samples), -1)
    problem = _nonfinite(frames)
    if problem:
        raise InputError(f"samples contain {problem}")
    return _mono_at_rate(frames, source_rate, target_rate)


def decode(path: str | Path, sample_rate: int = 16000, max_seconds: float | None = None) -> DecodedAudio:
    """Decodes a file to mono float32 at `sample_rate` (no cache); AudioError if it is unusable."""
    path = Path(path)
    _check_header(path, max_seconds)
    with _opened(path) as (file, data):
        return _decode(path, file, data, sample_rate, _digest(data))


# Below 8 kHz nothing of speech above 4 kHz is left (telephone audio is 8 kHz); 1 Hz or 384 kHz
# is a broken header or not speech, refused rather than resampled without a word.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000
# Bytes after a WAV's last chunk that are tolerated as padding or junk from a careless writer.
UNDECLARED_WAV_BYTES = 1024
# A sample at or above this magnitude is taken to be clipped (full scale is 1.0).
CLIP_LEVEL = 0.999
# Bytes read from the start of a WAV to find its data chunk's declared size.
_WAV_HEADER_BYTES = 1 << 20


def clipped_frames(frames: np.ndarray) -> int:
    """Frames of float (frames, channels) or (frames,) samples in which a channel is at full scale."""
    at_full_scale = np.abs(frames) >= CLIP_LEVEL
    return int(at_full_scale.any(axis=1).sum() if at_full_scale.ndim == 2 else at_full_scale.sum())


class AudioStream:
    """A file read in blocks, each returned as mono float32 at `sample_rate`, so that memory stays
    flat however long the file is.

    The same rules as ``decode`` apply (same mixdown and resampler, soxr HQ, streamed): opening
    checks the header and raises AudioError for a missing, empty or unreadable file, or a WAV
    whose data chunk runs past the end of the file; iterating raises it for corrupt data, NaN or
    infinite samples, no samples at all, or fewer frames than the header declares. Each block is
    at most `block_seconds` of the file's own audio. After iterating, `frames_read` and
    `clipped_frames` count the file's frames and those at full scale.
    """

    def __init__(
        self,
        path: str | Path,
        sample_rate: int = 16000,
        block_seconds: float = 10.0,
        max_seconds: float | None = None,
    ) -> None:
        if block_seconds <= 0:
            raise InputError(f"block_seconds = {block_seconds}: must be > 0")
        self.path = Path(path)
        self.sample_rate = sample_rate
        _check_header(self.path, max_seconds)
        info = sf.info(self.path)
        self.source_sample_rate: int = info.samplerate
        self.channels: int = info.channels
        self.header_frames: int = info.frames
        self.duration: float = info.frames / info.samplerate  # seconds, as the header says
        self.block_frames = max(1, int(round(block_seconds * info.samplerate)))
        self.frames_read = 0
        self.clipped_frames = 0
        try:
            with self.path.open("rb") as file:
                declared = _wav_declared_frames(file.read(_WAV_HEADER_BYTES))
        except OSError as error:
            raise _unreadable(self.path, error) from None
        # libsndfile quietly shortens a WAV whose data chunk runs past the end of the file: seen
        # here, from the header alone, before any audio is read.
        if declared is not None and declared > info.frames:
            raise AudioError(
                self.path, f"truncated: header says {declared} frames, only {info.frames} are in the file"
            )
        try:
            with self.path.open("rb") as file:
                _refuse_undeclared_audio(self.path, file, info.frames)
        except OSError as error:
            raise _unreadable(self.path, error) from None

    def __iter__(self) -> Iterator[np.ndarray]:
        path, source_rate = self.path, self.source_sample_rate
        resampler = (
            soxr.ResampleStream(source_rate, self.sample_rate, 1, dtype="float32", quality="HQ")
            if source_rate != self.sample_rate
            else None
        )
        self.frames_read = self.clipped_frames = 0
        try:
            with sf.SoundFile(path) as audio:
                while True:
                    frames = audio.read(self.block_frames, dtype="float32", always_2d=True)
                    if not len(frames):
                        break
                    problem = _nonfinite(frames)
                    if problem:
                        raise AudioError(
                            path,
                            f"contains {problem} (in the block from {self.frames_read / source_rate:.1f} s)",
                        )
                    self.frames_read += len(frames)
                    self.clipped_frames += clipped_frames(frames)
                    mono = frames.mean(axis=1, dtype=np.float32)
                    block = mono if resampler is None else resampler.resample_chunk(mono, last=False)
                    if block.size:
                        yield np.ascontiguousarray(block, dtype=np.float32)
        except sf.LibsndfileError as error:
            raise AudioError(path, f"corrupt or truncated audio data ({_libsndfile_reason(error)})") from None
        except OSError as error:
            raise _unreadable(path, error) from None
        if self.frames_read == 0:
            raise AudioError(path, "no audio samples (0 frames)")
        if self.frames_read < self.header_frames:
            raise AudioError(
                path,
                f"truncated: header says {self.header_frames} frames, only {self.frames_read} could be read",
            )
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield np.ascontiguousarray(tail, dtype=np.float32)


_NPZ_READ_LOCK = threading.Lock()


class AudioCache:
    """Decoded clips on disk, one entry per file content and output rate.

    An entry is ``root/CACHE_VERSION/<rate>hz/<hash[:2]>/<hash>.npz``, where hash is the file's
    content hash: the folders hold every setting that changes the samples, so the path is the key.
    A hit reads the file's bytes (to hash them) but decodes nothing. Errors are not cached.
    """

    def __init__(self, root: str | Path | None = None, sample_rate: int = 16000) -> None:
        self.root = cache_root(root)
        self.sample_rate = sample_rate
        self.decodes = 0  # decodes done by this instance; a fully cached run leaves it at 0
        self._folder = self.root / CACHE_VERSION / f"{sample_rate}hz"
        self._lock = threading.Lock()

    def load(self, path: str | Path, max_seconds: float | None = None) -> DecodedAudio:
        """The decoded file, from the cache if there, else decoded and stored."""
        path = Path(path)
        _check_header(path, max_seconds)
        with _opened(path) as (file, data):
            key = _digest(data)
            cached = self._read(key)
            if cached is not None:
                return cached
            decoded = _decode(path, file, data, self.sample_rate, key)
        with self._lock:
            self.decodes += 1
        self._write(decoded)
        return decoded

    def contains(self, path: str | Path) -> bool:
        """Whether an entry for the file's content exists (it is validated when loaded)."""
        return self._entry(file_hash(path)).is_file()

    def _entry(self, key: str) -> Path:
        return self._folder / key[:2] / f"{key}.npz"

    def _read(self, key: str) -> DecodedAudio | None:
        """The entry for `key`, or None if it is missing or damaged (the caller rewrites it)."""
        try:
            # One entry at a time: numpy parses an array's header with ast.literal_eval, and
            # CPython 3.11's compile() is not thread-safe: decode_many's threads crashed a
            # cross-validation run with "SystemError: AST constructor recursion depth mismatch"
            # (python/cpython#106905, seen in threaded programs on 3.11). A cached read takes a
            # millisecond; decoding stays parallel.
            with _NPZ_READ_LOCK, np.load(self._entry(key), allow_pickle=False) as entry:
                audio = DecodedAudio(samples=entry["samples"], **json.loads(str(entry["meta"])))
        except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
            return None
        intact = (
            audio.samples.dtype == np.float32
            and audio.samples.ndim == 1
            and audio.sample_rate == self.sample_rate
            and audio.file_hash == key
            and _digest(audio.samples) == audio.audio_hash
        )
        return audio if intact else None

    def _write(self, audio: DecodedAudio) -> None:
        entry = self._entry(audio.file_hash)
        entry.parent.mkdir(parents=True, exist_ok=True)
        # One member for all the metadata: each npz member costs a header parse on every hit.
        meta = {f.name: getattr(audio, f.name) for f in dataclasses.fields(audio) if f.name != "samples"}
        # Written beside the entry, then renamed over it: a reader sees a whole entry or none,
        # even if this process is killed mid-write. Leftover temp files end in .tmp and are
        # never read. No fsync: an entry damaged by a power cut fails _read's checks and is
        # rewritten.
        handle, temp = tempfile.mkstemp(dir=entry.parent, prefix=f".{audio.file_hash}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, samples=audio.samples, meta=json.dumps(meta))
            os.replace(temp, entry)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def decode_many(
    paths: Iterable[str | Path],
    cache: AudioCache,
    workers: int = 0,
    max_seconds: float | None = None,
    progress: bool = True,
) -> list[DecodedAudio | AudioError]:
    """Loads every file through `cache`, in parallel, in the order given.

    A file that cannot be used gives its AudioError in its place and the others go on. Threads,
    because libsndfile, soxr, hashlib and file I/O release the GIL: on the 3998 shared FLAC files
    with 2 cores, processes were no faster cold and about 1.5x slower warm (each clip pickled back).
    """
    paths = list(paths)

    def load(path: str | Path) -> DecodedAudio | AudioError:
        try:
            return cache.load(path, max_seconds)
        except AudioError as error:
            return error

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = pool.map(load, paths)
        return list(tqdm(results, total=len(paths), desc="reading audio", unit="file", disable=not progress))


# -- helpers -------------------------------------------------------------------------------------


def _check_header(path: Path, max_seconds: float | None) -> None:
    """Refuses what the file system and the header alone show: nothing is decoded here, so a
    multi-hour file over `max_seconds` costs one header read."""
    if not path.exists():
        if path.is_symlink():  # exists() follows the link: a loop or a dangling target
            raise AudioError(path, f"a symbolic link that leads nowhere (to {os.readlink(path)})")
        raise AudioError(path, "file not found")
    if not path.is_file():
        raise AudioError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        info = sf.info(path)
    except sf.LibsndfileError as error:
        # libsndfile says "System error" when the file cannot even be opened: the OS's reason
        # (permission denied, an I/O error) is what the user can act on.
        try:
            path.open("rb").close()
        except OSError as os_error:
            raise _unreadable(path, os_error) from None
        raise AudioError(path, f"not a readable audio file ({_libsndfile_reason(error)})") from None
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(
            path,
            f"recorded at {info.samplerate} Hz: supported rates are {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz",
        )
    if max_seconds is not None and info.duration > max_seconds:
        raise AudioError(path, f"too long: {info.duration:.1f} s, the limit is {max_seconds:g} s")


@contextmanager
def _opened(path: Path) -> Iterator[tuple[BinaryIO, bytes]]:
    """The open file and all its bytes, so that what is decoded is the file that was hashed."""
    try:
        file = path.open("rb")
    except OSError as error:
        raise _unreadable(path, error) from None
    with file:
        try:
            data = file.read()
        except OSError as error:
            raise _unreadable(path, error) from None
        yield file, data


def _unreadable(path: Path, error: OSError) -> AudioError:
    if isinstance(error, FileNotFoundError):
        return AudioError(path, "file not found")
    return AudioError(path, f"cannot read the file ({error.strerror or error})")


def _decode(path: Path, file: BinaryIO, data: bytes, sample_rate: int, data_hash: str) -> DecodedAudio:
    """Decodes the open `file`, whose bytes are `data`.

    libsndfile reads the open file itself: reopening `path` might find another file than the one
    hashed, and decoding `data` through a BytesIO would run libsndfile's reads as Python callbacks,
    which take the GIL and serialise decode_many's threads.
    """
    file.seek(0)
    try:
        with sf.SoundFile(file.fileno(), closefd=False) as audio:
            header_frames = audio.frames
            source_rate = audio.samplerate
            frames = audio.read(dtype="float32", always_2d=True)
    except sf.LibsndfileError as error:
        raise AudioError(path, f"corrupt or truncated audio data ({_libsndfile_reason(error)})") from None
    declared = _wav_declared_frames(data)
    expected = declared if declared is not None else header_frames
    if len(frames) < expected:
        raise AudioError(path, f"truncated: header says {expected} frames, only {len(frames)} could be read")
    _refuse_undeclared_audio(path, file, len(frames))
    if len(frames) == 0:
        raise AudioError(path, "no audio samples (0 frames)")
    problem = _nonfinite(frames)
    if problem:
        raise AudioError(path, f"contains {problem}")
    samples = _mono_at_rate(frames, source_rate, sample_rate)
    return DecodedAudio(
        samples=samples,
        sample_rate=sample_rate,
        source_sample_rate=source_rate,
        channels=frames.shape[1],
        duration=len(frames) / source_rate,
        file_hash=data_hash,
        audio_hash=_digest(samples),
    )


def _mono_at_rate(frames: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """float32 (frames, channels) -> contiguous float32 (n,): channels averaged, then resampled."""
    mono = frames.mean(axis=1, dtype=np.float32)
    if source_rate != target_rate:
        mono = soxr.resample(mono, source_rate, target_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _nonfinite(frames: np.ndarray) -> str | None:
    """'<n> NaN and <m> infinite samples', or None when every sample is finite."""
    finite = np.isfinite(frames)
    if finite.all():
        return None
    nan = int(np.isnan(frames).sum())
    return f"{nan} NaN and {frames.size - int(finite.sum()) - nan} infinite samples"


def _wav_declared_frames(data: bytes) -> int | None:
    """Frames the data chunk of a RIFF/WAVE file declares; None for other formats or when unset.

    libsndfile quietly shortens a WAV whose data chunk runs past the end of the file, so without
    this a truncated WAV would pass as a shorter clip.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position, block_align = 12, 0
    while position + 8 <= len(data):
        chunk = data[position : position + 4]
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        if chunk == b"fmt ":
            block_align = int.from_bytes(data[position + 20 : position + 22], "little")
        elif chunk == b"data":
            # 0xFFFFFFFF marks a WAV written as a stream: its audio runs to the end of the file.
            if size == 0xFFFFFFFF or block_align == 0:
                return None
            return size // block_align
        position += 8 + size + size % 2  # chunks are padded to an even size
    return None


def _refuse_undeclared_audio(path: Path, file: BinaryIO, frames: int) -> None:
    undeclared = _wav_undeclared_bytes(file)
    if undeclared >= UNDECLARED_WAV_BYTES:
        raise AudioError(
            path,
            f"corrupt WAV header: its data chunk declares {frames} frames, and "
            f"{undeclared} bytes after them belong to no chunk",
        )


def _wav_undeclared_bytes(file: BinaryIO) -> int:
    """Bytes after a RIFF/WAVE file's data chunk that look like more audio, not another chunk
    (0 for other formats, or when a chunk follows).

    libsndfile reads only the frames the data chunk declares: with a header that understates them,
    seconds of audio would be read as a few milliseconds and the rest ignored without a word. A
    chunk after the data (LIST, id3 ...) is recognised by its printable four-letter id, found
    where the data's pad byte puts it or where a writer that omits the pad byte puts it; what it
    holds (even cut short by the end of the file) is not examined."""
    file.seek(0, os.SEEK_END)
    end = file.tell()
    file.seek(0)
    header = file.read(12)
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return 0
    position = 12
    while position + 8 <= end:
        file.seek(position)
        chunk_header = file.read(8)
        chunk, size = chunk_header[:4], int.from_bytes(chunk_header[4:8], "little")
        if chunk != b"data":
            if not _chunk_id(chunk):
                return 0  # a layout this check does not know: libsndfile's reading stands
            position += 8 + size + size % 2
            continue
        if size == 0xFFFFFFFF:
            return 0
        audio_end = position + 8 + size
        if end - audio_end < UNDECLARED_WAV_BYTES:
            return 0
        for start in (audio_end + size % 2, audio_end):  # after the pad byte, or without it
            file.seek(start)
            if _chunk_id(file.read(4)):
                return 0
        return end - audio_end
    return 0


def _chunk_id(name: bytes) -> bool:
    return len(name) == 4 and all(32 <= c < 127 for c in name)


def _libsndfile_reason(error: sf.LibsndfileError) -> str:
    """libsndfile's message without its 'Error : ' prefix and final period."""
    return error.error_string.removeprefix("Error : ").rstrip(".")


def cache_root(root: str | Path | None) -> Path:
    """`root`, else $AED_TF_CACHE, else $XDG_CACHE_HOME/aed_tf (~/.cache/aed_tf by default)."""
    if root:
        return Path(root).expanduser()
    if os.environ.get("AED_TF_CACHE"):
        return Path(os.environ["AED_TF_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "aed_tf"


# Clips a cold feature cache computes at a time: each batch is kept as soon as it is done.
_FEATURE_CACHE_BATCH = 256


def cached_clip_features(
    waveforms: Sequence[np.ndarray],
    compute: Callable[[list[np.ndarray]], np.ndarray],
    size: int,
    name: str,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """[clips, size]: ``compute(waveforms)`` (one row of `size` features per clip), each clip's
    row kept on disk under the hash of its samples, in folder `name` of the cache root
    (`cache_root(cache_dir)`): training, evaluation, the reports and the benchmark compute a
    clip's features once. `name` says what the features are and how they were computed: change
    it whenever they change. A missing or damaged entry is computed again; a run killed midway
    keeps the batches it finished."""
    folder = cache_root(cache_dir) / name
    keys = [_digest(np.ascontiguousarray(w, np.float32)) for w in waveforms]  # as `DecodedAudio.audio_hash`
    entries = [folder / key[:2] / f"{key}.npy" for key in keys]
    out = np.empty((len(keys), size))
    missing = []
    for row, entry in enumerate(entries):
        try:
            out[row] = np.load(entry)
        except (OSError, ValueError):  # missing, damaged, or not [size] (broadcast fails)
            missing.append(row)
    for start in range(0, len(missing), _FEATURE_CACHE_BATCH):
        rows = missing[start : start + _FEATURE_CACHE_BATCH]
        computed = compute([waveforms[row] for row in rows])
        for row, values in zip(rows, computed):
            atomic_write(entries[row], lambda tmp, values=values: np.save(tmp, values))
            out[row] = values
    return out
