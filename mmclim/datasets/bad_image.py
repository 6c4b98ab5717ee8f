# Copyright (c) mmclim contributors. All rights reserved.
"""What makes an image unusable once training runs, and the error that names it.

An image can pass the start-up checks of :class:`mmclim.datasets.CaptionDataset` (its file
exists, its entry has captions) and still be unusable when the pipeline loads it: the file is
truncated, is not an image, is empty or has disappeared, or the decoded image is too small or has
channels a mosaic cannot hold. Whoever finds such an image raises :class:`BadImageError` with one
of the reasons below; the caption datasets count it under that reason and skip the sample, or
stop, as their ``on_bad_entry`` says.
"""
import os.path as osp
from typing import Optional

# The reasons a :class:`BadImageError` is counted under (``CaptionDataset.bad_images`` keys).
MISSING_IMAGE = 'missing image files'
EMPTY_IMAGE = 'empty image files'
UNDECODABLE_IMAGE = 'undecodable image files'
TOO_SMALL_IMAGE = 'images smaller than min_image_size'
TOO_SMALL_FOR_CELL = 'images too small for a mosaic cell'
UNSUPPORTED_CHANNELS = 'images with unsupported channels'


class BadImageError(ValueError):
    """An image that cannot be used, with its file and the reason it is counted under.

    Args:
        path (str): The image file (or, where there is no file, the image's id).
        reason (str): Why, one of the reason constants of this module.
        message (str): The full message, naming ``path``.
    """

    def __init__(self, path: str, reason: str, message: str) -> None:
        # ``args`` holds every argument so that the error pickles (dataloader workers).
        super().__init__(path, reason, message)
        self.path = path
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


def load_failure_reason(path: str, error: Optional[BaseException]) -> str:
    """The reason a loading transform failed on ``path``.

    Args:
        path (str): The image file.
        error (BaseException, optional): What the loading transform raised; None when it
            returned None (``LoadImageFromFile(ignore_empty=True)``).

    Returns:
        str: :data:`MISSING_IMAGE`, :data:`EMPTY_IMAGE` (a local file of 0 bytes) or
        :data:`UNDECODABLE_IMAGE`.
    """
    local = '://' not in path
    if isinstance(error, FileNotFoundError) or (error is None and local and not osp.exists(path)):
        return MISSING_IMAGE
    if local and osp.isfile(path) and osp.getsize(path) == 0:
        return EMPTY_IMAGE
    return UNDECODABLE_IMAGE
