"""Turning an MMEB item's text into the user turn a backbone's chat template wraps.

MMEB rows carry the Phi-3.5-V image placeholder ``<|image_1|>`` followed by a newline, then the instruction and
the query text. Each backbone names its own placeholder; this is the only place that rewrites it.
"""

from __future__ import annotations

MMEB_IMAGE_TOKEN = "<|image_1|>"


def user_content(text: str, *, has_image: bool, image_token: str) -> str:
    """The item's text with the backbone's image token where MMEB puts the image.

    - image and placeholder: the placeholder becomes ``image_token``;
    - image without placeholder: ``image_token`` and a newline go first (MMEB's own layout);
    - placeholder without image (e.g. WebQA queries): the placeholder and its newline are dropped.
    """
    body = text.strip()
    if has_image:
        if MMEB_IMAGE_TOKEN in body:
            return body.replace(MMEB_IMAGE_TOKEN, image_token, 1).replace(MMEB_IMAGE_TOKEN, "")
        return f"{image_token}\n{body}" if body else image_token
    return body.replace(f"{MMEB_IMAGE_TOKEN}\n", "").replace(MMEB_IMAGE_TOKEN, "").strip()
