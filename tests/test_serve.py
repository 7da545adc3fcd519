"""The web demo in a real browser: `aed-tf serve` in a child process on 127.0.0.1, driven through
Playwright by Debian's headless Chromium. The page shows what EmotionRecognizer gives for the same
file, the reason for a file it cannot use, and asks nothing of any other host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from playwright.sync_api import Browser, Page, expect, sync_playwright

from aed_tf import EmotionRecognizer
from aed_tf.audio import AudioError, decode
from tests.conftest import RAVDESS_DIR, TESS_DIR
from tests.responsive import make_responsive_run
from tests.servers import aed_tf_serve
from tests.test_recognizer import BAD_FILES

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A microphone that plays a beep, allowed without asking.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
RAVDESS_CLIP = RAVDESS_DIR / "Actor_01" / "03-01-05-01-01-01-01.flac"  # 3.9 s
TESS_CLIP = TESS_DIR / "YAF_fear" / "YAF_bath_fear.flac"
ANSWER_MS = 60_000


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory) -> Path:
    """A run whose model gives clips different labels (the tiny run's gives all the same one)."""
    return make_responsive_run(tiny_run, tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="module")
def recognizer(run) -> EmotionRecognizer:
    return EmotionRecognizer.load(run)


@pytest.fixture(scope="module")
def server(run, tmp_path_factory) -> Iterator[str]:
    """`aed-tf serve RUN --host 127.0.0.1 --port N` running; its URL."""
    with aed_tf_serve([str(run)], tmp_path_factory.mktemp("server")) as child:
        yield child.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"Debian's chromium is not at {CHROMIUM}: apt-get install chromium (make test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Demo:
    """The app's page, and every URL it asked for."""

    def __init__(self, page: Page, url: str):
        self.page, self.url = page, url
        self.requests: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.goto(url)
        expect(page.locator("#status")).to_contain_text("Upload an audio file")

    def status(self) -> str:
        """The status Markdown's own text: #status also holds Gradio's progress timer ("0.1s")
        while an answer is pending."""
        return self.page.inner_text("#status [data-testid=markdown]").strip()

    def label(self) -> str | None:
        """The label shown above the probability bars; None when none is shown."""
        shown = self.page.locator("#probabilities [data-testid=label-output-value]")
        return shown.inner_text().strip() if shown.count() else None

    def bars(self) -> list[str]:
        """The classes with a probability bar, top first."""
        return [m.get_attribute("aria-label") for m in self.page.locator("#probabilities meter").all()]

    def upload(self, path: Path) -> str:
        """Uploads `path` as a person would (after clearing what is there) and waits for the
        answer that names it; returns the status line."""
        clear = self.page.locator("#audio button[aria-label=Clear]")
        if clear.count():
            clear.click()
            expect(self.page.locator("#status")).to_contain_text("Upload an audio file")
        self.page.locator("#audio input[type=file]").set_input_files(str(path))
        expect(self.page.locator("#status [data-testid=markdown]")).to_contain_text(
            f" {path.name}", timeout=ANSWER_MS
        )
        return self.status()

    def elsewhere(self) -> list[str]:
        """Requests to any host but the app's own."""
        return [u for u in self.requests if not u.startswith((self.url, "data:", "blob:"))]


@pytest.fixture
def demo(browser, server) -> Iterator[Demo]:
    context = browser.new_context(viewport={"width": 1100, "height": 1300}, permissions=["microphone"])
    yield Demo(context.new_page(), server)
    context.close()


def test_an_uploaded_clip_shows_the_label_of_predict(demo, recognizer, shared_datasets, tmp_path):
    labels = []
    for clip in (RAVDESS_CLIP, TESS_CLIP):
        expected = recognizer.predict(clip)
        status = demo.upload(clip)
        expect(demo.page.locator("#probabilities [data-testid=label-output-value]")).to_have_text(
            expected.label
        )
        assert status.startswith(
            f"{expected.label} ({expected.probabilities[expected.label]:.0%}) in {clip.name}"
        )
        assert demo.bars() == sorted(expected.probabilities, key=expected.probabilities.get, reverse=True)
        # Longer than the 0.5 s window: the timeline and its segments are shown too.
        expect(demo.page.locator("#timeline img")).to_be_visible()
        expect(demo.page.locator("#segments")).to_contain_text(expected.label)
        labels.append(expected.label)
        demo.page.screenshot(path=tmp_path / f"{clip.stem}.png", full_page=True)
    assert labels[0] != labels[1]  # the page follows the audio, not a constant
    assert demo.elsewhere() == []


def _write_bad(case: str, folder: Path) -> Path:
    make, _ = BAD_FILES[case]
    path = folder / (re.sub(r"\W+", "-", case) + (".flac" if "FLAC" in case else ".wav"))
    make(path)
    return path


def test_a_file_that_cannot_be_used_shows_the_reason(demo, recognizer, tmp_path):
    for case in BAD_FILES:  # empty, not audio, truncated, zero samples, NaN, infinite
        path = _write_bad(case, tmp_path)
        with pytest.raises(AudioError) as raised:
            recognizer.predict(path)
        assert demo.upload(path) == f"Could not use {path.name}: {raised.value.reason}"
        assert demo.label() is None and not demo.page.locator("#timeline img").is_visible()
    assert demo.elsewhere() == []


def test_silence_short_clipped_stereo_and_low_rate_audio(demo, recognizer, shared_datasets, tmp_path):
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(3 * 16000, np.float32), 16000)
    status = demo.upload(silence)
    assert status.startswith("No speech found in silence.wav") and "No emotion is given" in status
    assert demo.label() is None and not demo.page.locator("#timeline img").is_visible()

    speech = decode(RAVDESS_CLIP).samples
    loudest = int(np.argmax(np.convolve(speech**2, np.ones(1600), mode="same")))
    short = tmp_path / "short.wav"
    sf.write(short, speech[loudest - 2400 : loudest + 2400], 16000, subtype="FLOAT")  # 0.3 s
    clipped = tmp_path / "clipped-stereo-44k.wav"
    loud = np.clip(soxr.resample(speech * 30, 16000, 44100), -1, 1)
    sf.write(clipped, np.stack([loud, loud * 0.9], axis=1), 44100, subtype="PCM_16")
    low_rate = tmp_path / "phone-8k.wav"
    sf.write(low_rate, soxr.resample(speech, 16000, 8000), 8000, subtype="PCM_16")
    for path, warning in (
        (short, "shorter than the 0.5 s window"),
        (clipped, "clipping: "),
        (low_rate, "recorded at 8000 Hz"),
    ):
        with pytest.warns(UserWarning):
            expected = recognizer.predict(path)
        status = demo.upload(path)
        assert demo.label() == expected.label and f"warning: {warning}" in status
    assert "44100 Hz, 2 channels" in demo.upload(clipped)
    assert demo.elsewhere() == []


def test_a_recording_from_the_microphone_is_recognised(demo):
    """Chromium's fake microphone plays a beep; the recording reaches the recognizer as a file."""
    demo.page.locator("#audio button[aria-label='Record audio']").click()
    demo.page.locator("#audio button", has_text=re.compile(r"^\s*Record\s*$")).click()
    demo.page.wait_for_timeout(2500)
    demo.page.locator("#audio button", has_text=re.compile(r"^\s*Stop\s*$")).first.click()
    expect(demo.page.locator("#status")).not_to_contain_text("Upload an audio file", timeout=ANSWER_MS)
    assert re.match(r"(\w+ \(\d+%\)|No speech found) in \S+\.wav: [\d.]+ s of audio", demo.status()), (
        demo.status()
    )
    assert demo.elsewhere() == []
