from __future__ import annotations

import random

import pytest

from edgectl.runtime.detokenize import (
    REPLACEMENT_CHAR,
    AnchoredDecoder,
    StreamHoldback,
    find_anchor_id,
)

# Not in the fixture's training corpus, so it is spelled in byte pieces (checked below).
UNSEEN_EMOJI = "🦜"
ASCII_TEXT = "The quick brown fox jumps over the lazy dog. What is the capital of France?"
MIXED_TEXT = f"Café {UNSEEN_EMOJI} au lait, 東京 déjà vu 🚀 über {UNSEEN_EMOJI}!"


class LetterTokenizer:
    """Id i decodes to one ASCII letter; never produces U+FFFD."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + i % 26) for i in ids)


class StripLeadingSpaceTokenizer:
    """Drops the space at the start of a decode, like SentencePiece's Metaspace does."""

    VOCAB = {0: "a", 1: " hello", 2: " world"}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.VOCAB[i] for i in ids).lstrip(" ")


def letters_holdback(stop_words=()) -> StreamHoldback:
    return StreamHoldback(AnchoredDecoder(LetterTokenizer(), 0), stop_words)


def random_chunks(ids: list[int], cuts: list[int]) -> list[list[int]]:
    bounds = [0, *sorted(cuts), len(ids)]
    return [ids[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def char_boundaries(decoder: AnchoredDecoder, ids: list[int]) -> list[int]:
    """Cut points after which the decoded prefix ends on a complete character."""
    return [k for k in range(1, len(ids)) if not decoder.decode(ids[:k]).endswith(REPLACEMENT_CHAR)]


def stream(holdback: StreamHoldback, ids: list[int], final_at_end=True) -> list[list[int]]:
    """Feed ids one by one as the engine does and collect the released chunks."""
    chunks, sent = [], 0
    for n in range(1, len(ids) + 1):
        pending = ids[sent:n]
        count = holdback.releasable(pending, final=final_at_end and n == len(ids))
        if count:
            chunks.append(pending[:count])
            sent += count
    return chunks


# -- the tokenizer fixture really splits characters -----------------------------------------


def test_fixture_spells_unseen_emoji_in_several_tokens(bpe, anchored):
    ids = bpe.encode(UNSEEN_EMOJI)
    assert len(ids) > 1
    assert anchored.decode(ids[:1]).endswith(REPLACEMENT_CHAR)
    assert anchored.decode(ids) == UNSEEN_EMOJI


# -- anchor -------------------------------------------------------------------------------------


def test_find_anchor_id_returns_a_single_token_letter(bpe):
    anchor = find_anchor_id(bpe.encode)
    assert bpe.decode([anchor]) in {"a", "x", "0", "."}


def test_find_anchor_id_falls_back_to_the_next_candidate():
    vocab = {"a": [1, 2], "x": [7]}
    assert find_anchor_id(lambda text: vocab.get(text, [1, 2])) == 7


def test_find_anchor_id_without_single_token_letter_raises():
    with pytest.raises(ValueError, match="anchor"):
        find_anchor_id(lambda text: [1, 2])


# -- anchored decoding --------------------------------------------------------------------------


def test_anchored_decode_of_nothing_is_empty(anchored):
    assert anchored.decode([]) == ""


def test_anchored_decode_keeps_the_leading_space_a_plain_decode_drops():
    tokenizer = StripLeadingSpaceTokenizer()
    decoder = AnchoredDecoder(tokenizer, anchor_id=0)
    assert tokenizer.decode([2]) == "world"
    assert decoder.decode([2]) == " world"
    assert decoder.decode([1]) + decoder.decode([2]) == tokenizer.decode([0, 1, 2])[1:]


def test_anchored_decode_of_whole_text_is_the_text(bpe, anchored):
    for text in (ASCII_TEXT, MIXED_TEXT, " leading space"):
        assert anchored.decode(bpe.encode(text)) == text


@pytest.mark.parametrize("seed", range(8))
def test_arbitrary_chunkings_of_ascii_concatenate_to_full_decode(bpe, anchored, seed):
    ids = bpe.encode(ASCII_TEXT)
    rng = random.Random(seed)
    cuts = rng.sample(range(1, len(ids)), k=rng.randint(1, len(ids) - 1))
    pieces = [anchored.decode(chunk) for chunk in random_chunks(ids, cuts)]
    assert "".join(pieces) == anchored.decode(ids)


@pytest.mark.parametrize("seed", range(8))
def test_chunkings_at_character_boundaries_concatenate_to_full_decode(bpe, anchored, seed):
    ids = bpe.encode(MIXED_TEXT)
    boundaries = char_boundaries(anchored, ids)
    assert len(boundaries) < len(ids) - 1, "the text must contain split characters"
    rng = random.Random(seed)
    cuts = rng.sample(boundaries, k=rng.randint(1, len(boundaries)))
    pieces = [anchored.decode(chunk) for chunk in random_chunks(ids, cuts)]
    assert "".join(pieces) == anchored.decode(ids) == MIXED_TEXT


# -- streaming holdback -------------------------------------------------------------------------


def test_releasable_never_ends_inside_a_multibyte_character(bpe, anchored):
    ids = bpe.encode(MIXED_TEXT)
    holdback = StreamHoldback(anchored, [])
    for n in range(1, len(ids) + 1):
        count = holdback.releasable(ids[:n], final=False)
        assert not anchored.decode(ids[:count]).endswith(REPLACEMENT_CHAR)
        # ... and holds back no more than the unfinished character.
        complete = [
            k for k in range(n + 1) if not anchored.decode(ids[:k]).endswith(REPLACEMENT_CHAR)
        ]
        assert count == max(complete)


def test_releasable_holds_a_split_emoji_until_it_is_complete(bpe, anchored):
    head, emoji = bpe.encode("ok "), bpe.encode(UNSEEN_EMOJI)
    holdback = StreamHoldback(anchored, [])
    for partial in range(1, len(emoji)):
        assert holdback.releasable(head + emoji[:partial], final=False) == len(head)
    assert holdback.releasable(head + emoji, final=False) == len(head + emoji)


def test_releasable_releases_everything_when_final(bpe, anchored):
    pending = bpe.encode("ok " + UNSEEN_EMOJI)[:-1]
    holdback = StreamHoldback(anchored, [pending[-1:]])
    assert holdback.releasable(pending, final=True) == len(pending)


def test_streamed_chunks_decode_to_the_full_text(bpe, anchored):
    ids = bpe.encode(MIXED_TEXT)
    chunks = stream(StreamHoldback(anchored, []), ids)
    assert len(chunks) > 1
    pieces = [anchored.decode(chunk) for chunk in chunks]
    assert all(REPLACEMENT_CHAR not in piece for piece in pieces)
    assert "".join(pieces) == MIXED_TEXT


@pytest.mark.parametrize(
    ("pending", "releasable"),
    [
        ([1, 2, 7], 2),  # tail [7] could grow into the stop word
        ([1, 2, 7, 8], 2),  # tail [7, 8] too
        ([1, 7, 8, 3], 4),  # the prefix did not continue into the stop word
        ([7, 7, 8], 1),  # overlapping: the last two could still become the stop word
        ([1, 2, 3], 3),
    ],
)
def test_releasable_holds_back_a_stop_word_prefix(pending, releasable):
    assert letters_holdback([[7, 8, 9]]).releasable(pending, final=False) == releasable


def test_releasable_holds_the_longest_prefix_over_several_stop_words():
    holdback = letters_holdback([[5, 6], [3, 4, 5, 9]])
    assert holdback.releasable([1, 3, 4, 5], final=False) == 1


@pytest.mark.parametrize(
    ("generated", "matched"),
    [
        ([1, 2, 7, 8, 9], 3),
        ([7, 8, 9], 3),
        ([1, 2, 4], 1),
        ([7, 8, 9, 1], 0),
        ([8, 9], 0),
        ([], 0),
    ],
)
def test_stop_match_detects_a_stop_word_at_the_end(generated, matched):
    holdback = letters_holdback([[7, 8, 9], [], [4]])
    assert holdback.stop_match(generated) == matched


def test_stop_words_never_reach_the_stream():
    chunks = stream(letters_holdback([[7, 8, 9]]), [1, 7, 8, 2, 7, 8], final_at_end=False)
    assert [i for chunk in chunks for i in chunk] == [1, 7, 8, 2]
