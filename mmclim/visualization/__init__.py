# Copyright (c) mmclim contributors. All rights reserved.
from .response_maps import (compose_mosaic, draw_response_panels, normalize_images, pointing_game,
                            text_response_maps)

__all__ = [
    'compose_mosaic', 'draw_response_panels', 'normalize_images', 'pointing_game',
    'text_response_maps'
]
