"""Decoder warnings are gathered per thread, so concurrent decodes never mix or lose them."""

import threading
import warnings

from lesionseg.imaging.decoder_warnings import MAX_KEPT_MESSAGES, collect_decoder_warnings


def warn_as_pillow(message: str) -> None:
    # Attributed to a Pillow module, as Pillow's own warnings are.
    warnings.warn_explicit(message, UserWarning, "TiffImagePlugin.py", 1, module="PIL.TiffImagePlugin")


def test_each_thread_counts_only_its_own_warnings():
    counts: dict[int, int] = {}
    start = threading.Barrier(4)

    def decode(thread_index: int) -> None:
        with collect_decoder_warnings() as collected:
            start.wait()
            for tag in range(1000 * (thread_index + 1)):
                warn_as_pillow(f"Skipping tag {tag}")
        counts[thread_index] = collected.count

    threads = [threading.Thread(target=decode, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts == {0: 1000, 1: 2000, 2: 3000, 3: 4000}


def test_few_messages_are_kept_each_shortened():
    with collect_decoder_warnings() as collected:
        for tag in range(50):
            warn_as_pillow(f"Skipping tag {tag} " + "x" * 1000)
    assert collected.count == 50
    assert len(collected.messages) == MAX_KEPT_MESSAGES and all(len(message) <= 200 for message in collected.messages)


def test_warnings_outside_a_decode_are_left_alone(recwarn):
    with collect_decoder_warnings():
        pass
    warnings.warn("an ordinary warning", UserWarning, stacklevel=1)
    assert [str(warning.message) for warning in recwarn] == ["an ordinary warning"]
